"""Each of the CuPy backend's own kernels against the generic code it replaces, on the GPU.

For every kernel, at the sizes of the benchmark workloads (MLP 784-256-128-10 and LeNet-5,
batch 128 and 1024): the backend member with its kernel and the same member's generic code
(backends/fused.py, backends/base.py) on CuPy. Each side is warmed up (the kernel's compile and
self-check included), then timed with CUDA events around a run of calls: the median over
repetitions of the time per call. A kernel that fell back to the generic code is marked.

    python benchmarks/cupy_kernels.py [--json OUT.json] [--repetitions 9] [--calls 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import numpy as np


def _backends():
    from nnrun.backends import get_backend

    with_kernels = get_backend("cupy")  # first: without CuPy, nnrun's line that says so
    from nnrun.backends import cupy_kernels

    return cupy_kernels.generic_backend(), with_kernels


def _workloads(cupy, batches=(128, 1024), sizes=(61706, 235146)):
    """(label, a function of the backend that runs one call)."""
    from nnrun.compiler.ops.loss import CrossEntropyAttrs
    from nnrun.compiler.ops.optim import AdamAttrs, SgdAttrs

    rng = np.random.default_rng(0)

    def array(shape, dtype=cupy.float32, scale=1.0):
        return cupy.asarray(rng.standard_normal(shape) * scale, dtype=dtype)

    cases = []
    for batch in batches:
        x, b = array((batch, 256)), array(256)
        y, pre = cupy.empty_like(x), cupy.empty_like(x)
        e, d, values = cupy.empty_like(x), cupy.empty_like(x), cupy.empty_like(x)
        mask = cupy.empty(x.shape, bool)
        for activation in ("relu", "sigmoid", "tanh"):
            cases.append((f"bias+{activation} [{batch},256]",
                          lambda be, a=activation, x=x, b=b, out=(y, pre, e, d, mask, values):
                          be.bias_activation_into(a, 0.0, x, b, out)))
        image = array((batch, 6, 28, 28))
        out = cupy.empty_like(image)
        cases.append((f"bias+relu [{batch},6,28,28]",
                      lambda be, x=image, out=out, b=array(6): be.bias_activation_into(
                          "relu", 0.0, x, b, (out,))))
        pooled = (batch, 6, 14, 14)
        y, index = cupy.empty(pooled, cupy.float32), cupy.empty(pooled, cupy.int64)
        work = (cupy.empty(pooled, cupy.int8), cupy.empty(pooled, cupy.int8),
                cupy.empty(pooled, bool))
        starts = cupy.asarray(np.arange(6)[None, :, None, None] * 784
                              + (np.arange(14) * 56)[:, None] + np.arange(14) * 2
                              + np.zeros((batch, 1, 1, 1), np.int64), dtype=cupy.int64)
        offsets = cupy.asarray([0, 1, 28, 29], dtype=cupy.int64)
        cases.append((f"max_pool 2x2 [{batch},6,28,28]",
                      lambda be, x=image, out=(y, index, *work), p=(starts, offsets):
                      be.max_pool_index_into(x, (2, 2), (2, 2), (1, 1), p, out)))
        g, grad = array(pooled), cupy.empty_like(image)
        sample = cupy.asarray(np.arange(batch)[:, None, None, None] * 6 * 784
                              + np.zeros(pooled, np.int64), dtype=cupy.int64)
        positions = cupy.empty(pooled, cupy.int64)
        cases.append((f"max_pool grad [{batch},6,28,28]",
                      lambda be, g=g, i=index, s=sample, t=grad, p=positions:
                      be.max_pool_grad_index_into(g, i, (2, 2), (2, 2), (1, 1), s, t, p)))
        for label, shape, kernel in (("conv1 5x5", (batch, 1, 32, 32), (5, 5)),
                                     ("conv2 5x5", (batch, 6, 14, 14), (5, 5))):
            source = array(shape)
            out_size = [n - k + 1 for n, k in zip(shape[2:], kernel)]
            cols = cupy.empty((shape[1], *kernel, batch, *out_size), cupy.float32)
            cases.append((f"im2col {label} [{','.join(map(str, shape))}]",
                          lambda be, x=source, c=cols, k=kernel:
                          be.batch_columns_into(x, k, (1, 1), (1, 1), c)))
            back = array((batch, shape[1], *kernel, *out_size))
            target = cupy.empty(shape, cupy.float32)
            cases.append((f"col2im {label} [{','.join(map(str, shape))}]",
                          lambda be, c=back, t=target, k=kernel:
                          be.col2im_into(c, k, (1, 1), (1, 1), t)))
        logits, labels = array((batch, 10), scale=3), cupy.asarray(
            rng.integers(0, 10, batch), dtype=cupy.int64)
        scratch = (cupy.empty_like(logits), cupy.empty_like(logits),
                   cupy.empty((batch, 1), cupy.float32), cupy.empty(batch, cupy.int64),
                   cupy.empty(batch, cupy.float32))
        label_starts = cupy.arange(batch, dtype=cupy.int64) * 10
        loss, grad_logits, one = (cupy.empty((), cupy.float32), cupy.empty_like(logits),
                                  cupy.asarray(1.0, cupy.float32))
        ce = CrossEntropyAttrs()
        cases.append((f"cross-entropy [{batch},10]",
                      lambda be, out=(loss, *scratch), l=logits, y=labels, s=label_starts:
                      be.softmax_cross_entropy_into(ce, l, y, s, out)))
        cases.append((f"cross-entropy grad [{batch},10]",
                      lambda be, out=(grad_logits, *scratch), l=logits, y=labels,
                      s=label_starts: be.softmax_cross_entropy_grad_into(ce, one, l, y, s, out)))
    lr, step = cupy.asarray(0.01, cupy.float32), cupy.asarray(3, cupy.float32)
    names = {61706: "LeNet-5", 235146: "MLP 784-256-128-10"}
    for label, size in ((names.get(size, "parameters"), size) for size in sizes):
        p, g = array(size), array(size)
        state = [cupy.abs(array(size)) for _ in range(2)]
        scratch = [cupy.empty_like(p) for _ in range(2)]
        for rule, attrs, slots in (("sgd_update", SgdAttrs(momentum=0.9), 1),
                                   ("adam_update", AdamAttrs(), 2)):
            out = (p, *state[:slots], *scratch)  # in place, as the planned executor updates
            cases.append((f"{rule} {label} ({size})",
                          lambda be, r=rule, a=attrs, out=out, p=p, g=g, s=state[:slots]:
                          be.optimizer_update_into(r, a, out, p, g, lr, step, *s)))
    return cases


def _time(cupy, call, repetitions: int, calls: int) -> float:
    """Median microseconds per call, CUDA events around `calls` calls."""
    for _ in range(3):
        call()
    cupy.cuda.get_current_stream().synchronize()
    times = []
    for _ in range(repetitions):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(calls):
            call()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end) * 1000 / calls)
    return statistics.median(times)


def _launches(cupy_kernels, call) -> int:
    """How many kernels of nnrun's own one call launched (none: the generic code ran)."""
    real, count = cupy_kernels._launch, [0]

    def counting(plan):
        count[0] += 1
        real(plan)

    cupy_kernels._launch = counting
    try:
        call()
    finally:
        cupy_kernels._launch = real
    return count[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--repetitions", type=int, default=9)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args(argv)
    from nnrun.backends import BackendUnavailable

    try:
        generic, with_kernels = _backends()
        import cupy
    except BackendUnavailable as missing:  # no CuPy, no device: one line
        # nnrun's line, less its --backend numpy: this script has no such option
        print(f"cupy_kernels benchmark: {str(missing).replace(', or use --backend numpy', '')}",
              file=sys.stderr)
        return 1
    from nnrun.backends import cupy_kernels

    rows = []
    print(f"{'kernel':<42} {'generic us':>11} {'kernel us':>10} {'speed-up':>9}  used")
    for label, run in _workloads(cupy):
        generic_us = _time(cupy, lambda: run(generic), args.repetitions, args.calls)
        kernel_us = _time(cupy, lambda: run(with_kernels), args.repetitions, args.calls)
        used = "kernel" if _launches(cupy_kernels, lambda: run(with_kernels)) else "FELL BACK"
        print(f"{label:<42} {generic_us:>11.1f} {kernel_us:>10.1f} "
              f"{generic_us / kernel_us:>8.1f}x  {used}")
        rows.append({"kernel": label, "generic_us": generic_us, "kernel_us": kernel_us,
                     "used": used})
    print("self-checks:", {" ".join(map(str, key)): trusted
                           for key, trusted in cupy_kernels._VERDICTS.items()})
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"rows": rows, "device": cupy.cuda.runtime.getDeviceProperties(0)[
                "name"].decode(), "cupy": cupy.__version__}, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
