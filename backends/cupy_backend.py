"""The CuPy backend: the generic kernels of base.py with cupy as the array module.

Imported only when `--backend cupy` is asked for. Kernels of its own (fused elementwise ops,
a gather-form col2im) will be added here where a benchmark shows they pay."""

from __future__ import annotations

import cupy
from cupyx.scipy import special

from . import BackendUnavailable, cuda_graph
from .base import ArrayBackend


class CupyBackend(ArrayBackend):
    name = "cupy"
    xp = cupy
    check_first_step = True  # the planned and captured steps have yet to run on a GPU

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
                "run on a machine with an NVIDIA GPU and its driver, or use --backend numpy")

    def from_host(self, array):
        return cupy.asarray(array)

    def to_host(self, array):
        return cupy.asnumpy(array)

    def rng(self, seed):
        return cupy.random.default_rng(int(seed))

    def run_in_slices(self, task, size: int, nbytes: int) -> None:
        task(slice(0, size))  # one stream: host threads would only reorder the launches

    def synchronize(self) -> None:
        cupy.cuda.get_current_stream().synchronize()

    def matmul_into(self, a, b, out) -> None:
        cuda_graph.matmul_into(a, b, out)

    def graph_capture(self):
        return cuda_graph.GraphCapture()

    def erf(self, x):
        return special.erf(x)

    def erf_into(self, x, out):
        special.erf(x, out=out)
