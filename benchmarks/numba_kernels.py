"""Would numba pay for the CPU kernels? Times numba kernels against nnrun's NumPy kernels on
LeNet-5's copy-bound shapes (batch 128): im2col, max pooling with its argmax, and the max
pooling gradient. Both sides write into preallocated buffers; each is warmed up (numba
compiles on the first call) and timed alternately, median of several runs.

    pip install numba && python benchmarks/numba_kernels.py [--threads 1]

The result decides whether numba becomes a dependency of the CPU backend (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse

import numpy as np

from nnrun.backends.numpy_backend import NumpyBackend
from nnrun.compiler.ir import TensorType
from nnrun.compiler.ops import REGISTRY
from nnrun.compiler.ops.pool import PoolAttrs, PoolGradAttrs
from nnrun.runtime.bench import median_step_seconds
from nnrun.runtime.threads import thread_limit


def numba_kernels():
    try:
        import numba
    except ImportError:
        raise SystemExit("numba is not installed (it is no dependency of nnrun): "
                         "pip install numba") from None

    @numba.njit(cache=False, nogil=True)
    def im2col(x, kh, kw, cols):
        batch, channels, height, width = x.shape
        oh, ow = height - kh + 1, width - kw + 1
        for b in range(batch):
            for c in range(channels):
                for i in range(kh):
                    for j in range(kw):
                        row = (c * kh + i) * kw + j
                        for y in range(oh):
                            cols[b, row, y * ow:(y + 1) * ow] = x[b, c, y + i, j:j + ow]

    @numba.njit(cache=False, nogil=True)
    def max_pool_argmax(x, k, y, index):
        batch, channels, height, width = x.shape
        for b in range(batch):
            for c in range(channels):
                for oy in range(y.shape[2]):
                    for ox in range(y.shape[3]):
                        best = x[b, c, oy * k, ox * k]
                        at = (oy * k) * width + ox * k
                        for i in range(k):
                            for j in range(k):
                                value = x[b, c, oy * k + i, ox * k + j]
                                if value > best:
                                    best = value
                                    at = (oy * k + i) * width + ox * k + j
                        y[b, c, oy, ox] = best
                        index[b, c, oy, ox] = c * height * width + at

    @numba.njit(cache=False, nogil=True)
    def scatter(g, index, gx):
        batch = g.shape[0]
        flat = gx.reshape(batch, -1)
        flat[:] = 0
        rows = g.reshape(batch, -1)
        positions = index.reshape(batch, -1)
        for b in range(batch):
            for i in range(rows.shape[1]):
                flat[b, positions[b, i]] += rows[b, i]

    return im2col, max_pool_argmax, scatter


def median_ms(call, repeats: int) -> float:
    return median_step_seconds(call, repeats, warmup=1, synchronize=lambda: None) * 1e3


def compare(repeats: int) -> list[tuple[str, float, float]]:
    be = NumpyBackend()
    im2col, max_pool_argmax, scatter = numba_kernels()
    rng = np.random.default_rng(0)
    rows = []
    for channels, size in ((1, 32), (6, 14)):  # LeNet-5's two convolutions (conv1 pre-padded)
        x = rng.standard_normal((128, channels, size, size)).astype(np.float32)
        out = size - 4
        cols = np.empty((128, channels * 25, out * out), np.float32)
        cols_numpy = cols.reshape(128, channels, 5, 5, out, out)
        rows.append((f"im2col {channels}x{size}x{size}, 5x5",
                     median_ms(lambda: be.im2col_into(x, (5, 5), (1, 1), (1, 1), cols_numpy),
                               repeats),
                     median_ms(lambda: im2col(x, 5, 5, cols), repeats)))
    pool = PoolAttrs((2, 2), (2, 2), (0, 0), (1, 1))
    for channels, size in ((6, 28), (16, 10)):  # LeNet-5's two poolings
        x = rng.standard_normal((128, channels, size, size)).astype(np.float32)
        x_type = TensorType(x.shape, "float32")
        op = REGISTRY["max_pool_index"]
        y_type, index_type = op.shape(pool, x_type)
        buffers = [np.empty(t.shape, t.dtype) for t in (y_type, index_type,
                                                          *op.scratch(pool, x_type))]
        y, index = np.empty(y_type.shape, np.float32), np.empty(y_type.shape, np.int64)
        rows.append((f"max pool + argmax {channels}x{size}x{size}",
                     median_ms(lambda: op.forward_into(be, pool, tuple(buffers), x), repeats),
                     median_ms(lambda: max_pool_argmax(x, 2, y, index), repeats)))
        grad = REGISTRY["max_pool_grad_index"]
        grad_attrs = PoolGradAttrs((2, 2), (2, 2), (0, 0), (1, 1), (size, size))
        g = rng.standard_normal(y.shape).astype(np.float32)
        gx = np.empty_like(x)
        scratch = [np.empty(t.shape, t.dtype) for t in grad.scratch(
            grad_attrs, TensorType(g.shape, "float32"), TensorType(index.shape, "int64"))]
        rows.append((f"max pool gradient {channels}x{size}x{size}",
                     median_ms(lambda: grad.forward_into(be, grad_attrs, (gx, *scratch), g,
                                                         buffers[1]), repeats),
                     median_ms(lambda: scatter(g, index, gx), repeats)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with thread_limit(args.threads):
        rows = compare(args.repeats)
    print(f"{'kernel':<34} {'NumPy ms':>10} {'numba ms':>10}")
    for name, numpy_ms, numba_ms in rows:
        print(f"{name:<34} {numpy_ms:>10.3f} {numba_ms:>10.3f}")


if __name__ == "__main__":
    main()
