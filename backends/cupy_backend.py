"""The CuPy backend: the generic kernels of base.py with cupy as the array module.

Imported only when `--backend cupy` is asked for. Its own kernels (cupy_kernels.py) replace
the generic code of the fused ops: bias + activation, the optimizer update over the flat
parameter buffer, max pooling with its argmax and its gradient, convolution columns (im2col,
batch columns, col2im), softmax cross-entropy."""

from __future__ import annotations

import cupy

cupy.cuda  # noqa: B018 - a CuPy that failed to load says so at first use: at this import
from cupyx.scipy import special  # noqa: E402

from . import OR_USE_NUMPY, BackendUnavailable, cuda_graph, cupy_kernels
from .base import ArrayBackend, refuse_during_capture


class CupyBackend(ArrayBackend):
    name = "cupy"
    xp = cupy
    check_first_step = True  # a device's paths each checked once against the reference
    host_threads = False  # one stream orders the launches
    short_runs_by_copy_below = 0

    def __init__(self):
        try:
            devices = cupy.cuda.runtime.getDeviceCount()
        except cupy.cuda.runtime.CUDARuntimeError as error:
            devices, reason = 0, str(error)
        else:
            reason = "no CUDA device found"
        if devices == 0:
            raise BackendUnavailable(
                f"backend 'cupy': CuPy is installed but has no usable CUDA device ({reason}); "
                "run on a machine with an NVIDIA GPU and its driver, with the CuPy of that "
                "driver's CUDA (pip install 'nnrun[cuda13]' for CUDA 13, 'nnrun[cuda12]' for "
                f"CUDA 12){OR_USE_NUMPY}")

    def from_host(self, array):
        return cupy.asarray(array)

    def to_host(self, array):
        return cupy.asnumpy(array)

    def rng(self, seed):
        return cupy.random.default_rng(int(seed))

    def run_in_slices(self, task, size: int, nbytes: int, flops: int = 0, site=None) -> None:
        task(slice(0, size))  # one stream: host threads would only reorder the launches

    def synchronize(self) -> None:
        cupy.cuda.get_current_stream().synchronize()

    def refuse_during_capture(self, what: str) -> None:
        refuse_during_capture(cupy.cuda.get_current_stream().is_capturing(), what)

    def free_device_bytes(self) -> int:
        # The device's free memory counts the blocks CuPy's pool keeps cached as used; they
        # are free to CuPy's own allocations
        free, _ = cupy.cuda.runtime.memGetInfo()
        pool = cupy.get_default_memory_pool()
        return int(free) + pool.total_bytes() - pool.used_bytes()

    def device_pool_bytes(self, emptied: bool = False) -> int:
        # CuPy's pool keeps what it once allocated: emptied first, what it grows to is a peak.
        if emptied:
            self.release_cached_memory()
        return cupy.get_default_memory_pool().total_bytes()

    def release_cached_memory(self) -> None:
        self.synchronize()
        cupy.get_default_memory_pool().free_all_blocks()

    def matmul_into(self, a, b, out) -> None:
        cuda_graph.matmul_into(a, b, out)

    def graph_capture(self):
        return cuda_graph.GraphCapture()

    def failed_kernels(self) -> list[str]:
        return cupy_kernels.failed_self_checks()

    def erf(self, x):
        return special.erf(x)

    def erf_into(self, x, out):
        special.erf(x, out=out)

    # --- kernels of its own (cupy_kernels.py), each falling back to the generic code --------

    def im2col_into(self, x, kernel, stride, dilation, cols):
        if not cupy_kernels.run_columns("im2col", x, cols, kernel, stride, dilation):
            super().im2col_into(x, kernel, stride, dilation, cols)
        return cols

    def batch_columns_into(self, x, kernel, stride, dilation, cols):
        if not cupy_kernels.run_columns("im2col", x, cols, kernel, stride, dilation, layout=1):
            super().batch_columns_into(x, kernel, stride, dilation, cols)
        return cols

    def col2im_into(self, cols, kernel, stride, dilation, x, spare=None):
        if not cupy_kernels.run_columns("col2im", x, cols, kernel, stride, dilation):
            super().col2im_into(cols, kernel, stride, dilation, x, spare)
        return x

    def activation_into(self, activation, alpha, x, out) -> None:
        if not cupy_kernels.run_activation(activation, alpha, x, None, out[0]):
            super().activation_into(activation, alpha, x, out)

    def bias_activation_into(self, activation, alpha, x, b, out) -> None:
        if not cupy_kernels.run_activation(activation, alpha, x, b, out[0]):
            super().bias_activation_into(activation, alpha, x, b, out)

    def optimizer_update_into(self, rule, attrs, out, p, g, lr, step, *state) -> None:
        if not cupy_kernels.run_update(rule, attrs, out, p, g, lr, step, *state):
            super().optimizer_update_into(rule, attrs, out, p, g, lr, step, *state)

    def max_pool_index_into(self, padded, kernel, stride, dilation, positions, out) -> None:
        if not cupy_kernels.run_max_pool_index(padded, kernel, stride, dilation, *out[:2]):
            super().max_pool_index_into(padded, kernel, stride, dilation, positions, out)

    def max_pool_grad_index_into(self, g, index, kernel, stride, dilation, sample_starts,
                                 target, positions) -> None:
        if not cupy_kernels.run_max_pool_grad_index(g, index, kernel, stride, dilation, target):
            super().max_pool_grad_index_into(g, index, kernel, stride, dilation, sample_starts,
                                             target, positions)

    def softmax_cross_entropy_into(self, attrs, logits, labels, label_starts, out) -> None:
        if not cupy_kernels.run_cross_entropy(attrs, logits, labels, out):
            super().softmax_cross_entropy_into(attrs, logits, labels, label_starts, out)

    def softmax_cross_entropy_grad_into(self, attrs, g, logits, labels, label_starts,
                                        out) -> None:
        if not cupy_kernels.run_cross_entropy(attrs, logits, labels, out, g):
            super().softmax_cross_entropy_grad_into(attrs, g, logits, labels, label_starts, out)

    def softmax_cross_entropy_with_grad_into(self, attrs, g, logits, labels, label_starts,
                                             out) -> None:
        # the kernels above, one after the other (each reduces its rows on its own)
        loss, grad, *scratch = out
        self.softmax_cross_entropy_into(attrs, logits, labels, label_starts, (loss, *scratch))
        self.softmax_cross_entropy_grad_into(attrs, g, logits, labels, label_starts,
                                             (grad, *scratch))
