"""The NumPy backend: the generic kernels of base.py with numpy as the array module."""

from __future__ import annotations

import math
from functools import cache, lru_cache

import numpy as np

from .base import (PARALLEL_MIN_FLOPS, WORKER_THREADS, ArrayBackend, count_product,
                   current_step_threads, split_where_it_pays, splitting, workers)

# A matrix product of at least base.PARALLEL_MIN_FLOPS runs on `--threads` threads rather than
# on one: BLAS's own, measured on 2 cores 1.9x faster at 51 MFLOP (the MLP's first layer at
# batch 128) and 1.3-1.6x at 8-12 MFLOP, where splitting its rows over nnrun's workers gained
# 1.3x; but in a step whose threads are nnrun's workers (base.step_threads), over those.
# Smaller products stay on one thread: handing them to other threads costs more than it saves.


@cache
def _scipy_erf():
    # scipy is optional (the `scipy` extra; the `datasets` extra brings it too): its erf is
    # about 6x faster than math.erf applied element by element, and both are exact to an ulp,
    # so the light core install does without it. Imported at the first erf only: scipy loads
    # a BLAS library of its own, which _blas_threads would then set for every large product.
    try:
        from scipy.special import erf
    except ImportError:
        return None
    return erf


_math_erf = np.vectorize(math.erf, otypes=[np.float64])


class NumpyBackend(ArrayBackend):
    name = "numpy"
    xp = np

    @property
    def fast_erf(self):
        return _scipy_erf()

    def to_host(self, array):
        return np.asarray(array)

    def rng(self, seed):
        return np.random.default_rng(seed)

    def erf(self, x):
        out = np.empty_like(x)
        self.erf_into(x, out)
        return out

    def matmul_into(self, a, b, out) -> None:
        count, flops = workers(), 2 * out.size * a.shape[-1]
        if count < 2 or splitting() or flops < PARALLEL_MIN_FLOPS:
            np.matmul(a, b, out=out)
            return
        count_product(flops)
        if current_step_threads() != WORKER_THREADS:
            with _blas_threads(count):
                np.matmul(a, b, out=out)
        elif out.ndim != 2 or not _matmul_on_workers(a, b, out, flops):
            np.matmul(a, b, out=out)

    def relu_into(self, x, y) -> None:
        # NumPy's maximum runs its SIMD loop only when both operands are arrays; against the
        # scalar 0 it takes an element-by-element loop (measured 3-4x slower on 1 MB, NumPy
        # 2.4). So the zeros come from a block kept for the purpose, a chunk at a time.
        if x.size <= ZERO_BLOCK:
            np.maximum(x, _zeros(x.shape, x.dtype), out=y)
            return
        if not (x.flags.c_contiguous and y.flags.c_contiguous):
            np.maximum(x, 0, out=y)
            return
        x_flat, y_flat = x.reshape(-1), y.reshape(-1)
        for start in range(0, x.size, ZERO_BLOCK):
            end = min(start + ZERO_BLOCK, x.size)
            np.maximum(x_flat[start:end], _zeros((end - start,), x.dtype), out=y_flat[start:end])

    # Over strided or broadcast operands (col2im's additions, pooling's window offsets, a
    # reduction over a window axis, a per-channel scale), NumPy's ufuncs allocate buffers of
    # bufsize elements per operand at each call (3 x 32 KB by default), which a step that
    # allocates nothing (issue 7) cannot have: the planned executor runs its steps with
    # short buffers (begin_short_buffers). 512 elements keep them at 6 KB in float32, at the
    # same speed (docs/benchmarks.md, Memory; 256 was 2-3% slower on small convs).
    def begin_short_buffers(self) -> int:
        return np.setbufsize(SHORT_BUFFER)

    def end_short_buffers(self, saved: int) -> None:
        np.setbufsize(saved)

    def take_into(self, table, indices, out, axis=None) -> None:
        # mode="raise", the default, checks bounds through a temporary copy of the output
        np.take(table, indices, axis=axis, out=out, mode="clip")

    def erf_into(self, x, out):
        if self.fast_erf is not None:
            self.fast_erf(x, out=out)
        else:
            out[...] = _math_erf(x)


ZERO_BLOCK = 32768  # elements: 128 KiB of float32, within a core's L2 cache
SHORT_BUFFER = 512  # elements per operand of NumPy's ufunc buffers, within short_buffers


@lru_cache(maxsize=256)
def _zeros(shape: tuple, dtype) -> np.ndarray:
    """Read-only zeros of a shape of at most ZERO_BLOCK elements, for relu_into: views of one
    block per dtype, kept by shape so that a call builds none."""
    return _zero_block(dtype)[:math.prod(shape)].reshape(shape)


@cache
def _zero_block(dtype) -> np.ndarray:
    zeros = np.zeros(ZERO_BLOCK, dtype=dtype)
    zeros.flags.writeable = False
    return zeros


def _matmul_on_workers(a, b, out, flops: int) -> bool:
    """out = a @ b (2-d), its longer axis split over nnrun's workers where that pays (False:
    not run)."""
    rows, columns = out.shape
    if rows >= columns:
        return split_where_it_pays(lambda part: np.matmul(a[part], b, out=out[part]), rows,
                                   flops)
    return split_where_it_pays(lambda part: np.matmul(a, b[:, part], out=out[:, part]),
                               columns, flops)


class _blas_threads:
    """BLAS on `count` threads for the block (runtime/threads.py keeps it on one otherwise).
    A class rather than a generator: entered for every large product (a few us saved each)."""

    def __init__(self, count: int):
        self.count = count

    def __enter__(self):
        self.libraries = _blas_libraries()
        self.saved = [library.num_threads for library in self.libraries]
        for library in self.libraries:
            library.set_num_threads(self.count)

    def __exit__(self, *exception):
        for library, threads in zip(self.libraries, self.saved):
            library.set_num_threads(threads)


@cache
def _blas_libraries() -> list:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas").lib_controllers
