"""The ctypes bindings of cuBLAS in backends/cuda_graph.py against the real library, without a
GPU: on a NULL handle every call returns CUBLAS_STATUS_NOT_INITIALIZED before touching memory,
so what is checked is that each entry point exists and takes the arguments nnrun passes
(ctypes refuses a mismatch). Runs where CuPy and a cuBLAS wheel are installed; skips elsewhere."""

import ctypes
import types
from pathlib import Path

import numpy as np
import pytest

cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
pytestmark = pytest.mark.gpu  # no GPU needed, but CuPy: benchmarks/gpu.sh runs it (-m gpu)


def _cublas_wheel() -> Path:
    try:
        import nvidia
    except ImportError:
        pytest.skip("no nvidia-cublas wheel")
    for root in nvidia.__path__:
        for path in sorted(Path(root).glob("*/lib/libcublas.so*")):
            return path
    pytest.skip("no nvidia-cublas wheel")


class _DeviceArray:
    """What the bindings read of a CuPy array: its dtype and data pointer."""

    def __init__(self, array):
        self.dtype, self.data = array.dtype, types.SimpleNamespace(ptr=array.ctypes.data)


def test_every_binding_takes_the_arguments_nnrun_passes(monkeypatch):
    from nnrun.backends import cuda_graph
    from nnrun.backends.gemm_layout import layout_of, plan_gemm

    path = str(_cublas_wheel())
    ctypes.CDLL(path)
    monkeypatch.setattr(cuda_graph, "_pathfinders_library", lambda name: None)
    monkeypatch.setattr(cuda_graph, "_loaded_library", lambda prefix: path)
    monkeypatch.setattr(cupy.cuda.device, "get_cublas_handle", lambda: 0)
    library = cuda_graph._Cublas()
    cases = [(np.zeros((6, 5), "f"), np.zeros((5, 3), "f"), np.zeros((6, 3), "f")),
             (np.zeros((4, 6, 5)), np.zeros((5, 3)), np.zeros((4, 6, 3)))]
    for a, b, out in cases:
        call = plan_gemm(layout_of(a), layout_of(b), layout_of(out))
        arrays = {"a": _DeviceArray(a), "b": _DeviceArray(b), "out": _DeviceArray(out)}
        with pytest.raises(RuntimeError, match="failed with status 1"):
            library.gemm(call, arrays)
    settings = [(library.set_stream, ctypes.c_void_p(0)),
                (library.set_workspace, ctypes.c_void_p(0), 0),
                (library.set_pointer_mode, 0),
                (library.get_stream, ctypes.byref(ctypes.c_void_p())),
                (library.get_pointer_mode, ctypes.byref(ctypes.c_int()))]
    for function, *arguments in settings:
        with pytest.raises(RuntimeError, match="failed with status 1"):
            library.call(function, *arguments)
