"""backends/cuda_graph.py's direct cuBLAS path without a GPU: the real `matmul_into`,
`_direct_matmul`, `_Cublas.gemm` and `on_stream`, on NumPy arrays standing in for CuPy's, with
a stand-in libcublas that does what cuBLAS's GEMM does with the raw pointers, leading
dimensions and batch strides it is given (column-major, op N or T), and CuPy's streams and
pools standing in for capture. Needs neither a GPU nor CuPy; the same path runs on a GPU in
test_cuda_graph.py."""

from __future__ import annotations

import ctypes
import sys
import types

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided
from test_gemm_layout import ops_layouts


def _import_cuda_graph():
    """The module, with CuPy or without: it needs only CuPy's name at import, and every use of
    it here is replaced by a stand-in."""
    try:
        import cupy  # noqa: F401
    except ImportError:
        sys.modules["cupy"] = types.ModuleType("cupy")
        try:
            from nnrun.backends import cuda_graph
        finally:
            del sys.modules["cupy"]
            sys.modules.pop("nnrun.backends.cuda_graph", None)  # not left for a real import
        return cuda_graph
    from nnrun.backends import cuda_graph
    return cuda_graph


cuda_graph = _import_cuda_graph()


class DeviceArray(np.ndarray):
    """A NumPy array with CuPy's `.data.ptr`; its views stay DeviceArrays."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)


def _matrices(pointer, dtype, rows, columns, ld, batch, stride):
    """What cuBLAS reads at `pointer`: `batch` column-major rows x columns matrices."""
    item = np.dtype(dtype).itemsize
    span = (batch - 1) * stride + (columns - 1) * ld + rows
    ctype = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    flat = np.ctypeslib.as_array(ctypes.cast(pointer.value, ctypes.POINTER(ctype)), (span,))
    return as_strided(flat, (batch, rows, columns), (stride * item, item, ld * item))


def _stand_in_gemm(dtype, calls):
    def batched(handle, op_a, op_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta,
                c, ldc, stride_c, batch):
        calls.append((op_a, op_b, m, n, k, lda, ldb, ldc, batch))
        first = _matrices(a, dtype, *((k, m) if op_a else (m, k)), lda, batch, stride_a)
        second = _matrices(b, dtype, *((n, k) if op_b else (k, n)), ldb, batch, stride_b)
        first = first.transpose(0, 2, 1) if op_a else first
        second = second.transpose(0, 2, 1) if op_b else second
        out = _matrices(c, dtype, m, n, ldc, batch, stride_c)
        out[...] = alpha._obj.value * (first @ second) + beta._obj.value * out
        return 0

    def single(handle, op_a, op_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        return batched(handle, op_a, op_b, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc,
                       0, 1)

    return single, batched


@pytest.fixture
def stand_in_cublas(monkeypatch):
    """The real _Cublas over a stand-in library; CuPy's allocation functions on NumPy."""
    library = cuda_graph._Cublas.__new__(cuda_graph._Cublas)
    library.calls, library.settings = [], []

    def setting(name, value=None):
        def function(handle, *arguments):
            library.settings.append(name)
            if value is not None:
                arguments[0]._obj.value = value  # what cublasGet* writes
            return 0
        function.__name__ = name
        return function

    library.set_stream, library.get_stream = setting("set_stream"), setting("get_stream", 7)
    library.set_workspace = setting("set_workspace")
    library.set_pointer_mode = setting("set_pointer_mode")
    library.get_pointer_mode = setting("get_pointer_mode", 1)
    library.gemm_functions = {"f": (*_stand_in_gemm(np.float32, library.calls), ctypes.c_float),
                              "d": (*_stand_in_gemm(np.float64, library.calls), ctypes.c_double)}
    workspace = np.empty(16, np.uint8).view(DeviceArray)
    monkeypatch.setattr(library, "workspace", lambda: workspace, raising=False)
    monkeypatch.setitem(cuda_graph._LIBRARY, "cublas", library)
    fake_cupy = types.SimpleNamespace(
        empty=lambda shape, dtype: np.empty(shape, dtype).view(DeviceArray),
        ascontiguousarray=lambda a: np.ascontiguousarray(a).view(DeviceArray),
        matmul=lambda a, b, out: np.matmul(a, b, out=out),
        cuda=types.SimpleNamespace(device=types.SimpleNamespace(get_cublas_handle=lambda: 1234)))
    monkeypatch.setattr(cuda_graph, "cupy", fake_cupy)
    return library


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_path_matches_matmul_on_every_ops_layout(stand_in_cublas, dtype):
    stream = types.SimpleNamespace(ptr=99)
    for name, a, b, out in ops_layouts(np, np.random.default_rng(0), dtype):
        a, b, out = (x.view(DeviceArray) for x in (a, b, out))
        stand_in_cublas.calls.clear()
        with stand_in_cublas.on_stream(stream):
            cuda_graph.matmul_into(a, b, out)
        assert stand_in_cublas.calls, f"{name}: cuBLAS was not called"
        np.testing.assert_allclose(out, np.matmul(a, b), rtol=1e-5, atol=1e-5, err_msg=name)


def test_outside_capture_cupy_matmul_runs(stand_in_cublas):
    a, b = np.ones((3, 4), np.float32), np.ones((4, 2), np.float32)
    out = np.zeros((3, 2), np.float32)
    cuda_graph.matmul_into(a, b, out)
    assert not stand_in_cublas.calls and np.all(out == 4)


def test_on_stream_sets_the_stream_before_the_workspace_and_restores(stand_in_cublas):
    with stand_in_cublas.on_stream(types.SimpleNamespace(ptr=5)):
        assert cuda_graph._DIRECT["active"]
        assert stand_in_cublas.settings == ["get_stream", "get_pointer_mode", "set_stream",
                                            "set_workspace", "set_pointer_mode"]
    assert not cuda_graph._DIRECT["active"]
    assert stand_in_cublas.settings[-2:] == ["set_pointer_mode", "set_stream"]


def test_a_zero_inner_size_fills_zeros(stand_in_cublas):
    out = np.ones((3, 2), np.float32).view(DeviceArray)
    with stand_in_cublas.on_stream(types.SimpleNamespace(ptr=5)):
        cuda_graph.matmul_into(np.ones((3, 0), np.float32).view(DeviceArray),
                               np.ones((0, 2), np.float32).view(DeviceArray), out)
    assert not stand_in_cublas.calls and not np.any(out)


class _Stream:
    """CuPy's Stream as capture uses it: a context, begin/end capture, a pointer."""

    current = None
    log: list = []

    def __init__(self, non_blocking=False):
        self.ptr, self.capturing = 42, False

    def __enter__(self):
        self.previous, _Stream.current = _Stream.current, self
        return self

    def __exit__(self, *exc):
        _Stream.current = self.previous

    def begin_capture(self):
        self.capturing = True
        _Stream.log.append("begin")

    def end_capture(self):
        self.capturing = False
        _Stream.log.append("end")
        return types.SimpleNamespace(launch=lambda stream: _Stream.log.append(("launch", stream)))


@pytest.fixture
def fake_cuda(stand_in_cublas, monkeypatch):
    from contextlib import contextmanager

    @contextmanager
    def using_allocator(malloc):
        _Stream.log.append("own pool")
        yield

    default = _Stream()
    _Stream.current, _Stream.log = default, []
    cuda = types.SimpleNamespace(
        Stream=_Stream,
        MemoryPool=lambda: types.SimpleNamespace(malloc=None, total_bytes=lambda: 64),
        using_allocator=using_allocator, get_current_stream=lambda: _Stream.current,
        runtime=types.SimpleNamespace(is_hip=False),
        device=types.SimpleNamespace(get_cublas_handle=lambda: 1234))
    monkeypatch.setattr(cuda_graph, "cupy", types.SimpleNamespace(cuda=cuda, __version__="14"))
    return default


def test_capture_runs_the_step_between_begin_and_end_on_its_own_stream(fake_cuda):
    capture = cuda_graph.GraphCapture()
    seen = []

    def step():
        seen.append((_Stream.current is not fake_cuda, _Stream.current.capturing,
                     cuda_graph._DIRECT["active"]))

    capture.warm(step)
    graph = capture.capture(step)
    assert seen == [(False, False, True), (True, True, True)]  # warm: uncaptured, same stream
    assert _Stream.log == ["own pool", "begin", "end"]
    assert not cuda_graph._DIRECT["active"] and _Stream.current is fake_cuda
    graph.launch()
    assert _Stream.log[-1] == ("launch", fake_cuda)  # replayed on the current stream
    assert graph.held_bytes() == 64


def test_a_failed_capture_ends_it_and_raises_the_step_error(fake_cuda):
    def step():
        raise NotImplementedError("calling cuBLAS API during stream capture")

    with pytest.raises(NotImplementedError, match="cuBLAS"):
        cuda_graph.GraphCapture().capture(step)
    assert _Stream.log[-2:] == ["begin", "end"] and not cuda_graph._DIRECT["active"]


def test_no_graphs_on_hip_is_known_ahead(fake_cuda, monkeypatch):
    monkeypatch.setattr(cuda_graph.cupy.cuda.runtime, "is_hip", True)
    with pytest.raises(cuda_graph.CaptureUnavailable, match="no CUDA graph capture"):
        cuda_graph.GraphCapture()


def test_a_cublas_of_another_cuda_found_first_is_passed_over(monkeypatch):
    """The path cuda.pathfinder gives first may be another CUDA's cuBLAS (a PyTorch built for
    CUDA 12 beside CuPy's 13): CuPy's handle is valid only in CuPy's own."""
    runtime = types.SimpleNamespace(runtimeGetVersion=lambda: 13000)
    device = types.SimpleNamespace(get_cublas_handle=lambda: 1234)
    monkeypatch.setattr(cuda_graph, "cupy", types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=runtime, device=device)))
    monkeypatch.setattr(cuda_graph, "_pathfinders_library",
                        lambda name: "/torch/lib/libcublas.so.12")
    asked = []
    monkeypatch.setattr(cuda_graph, "_loaded_library",
                        lambda prefix: asked.append(prefix) or f"/missing/{prefix}")
    with pytest.raises(cuda_graph.CaptureUnavailable, match="/missing/libcublas.so.13"):
        cuda_graph._Cublas()
    assert asked == ["libcublas.so.13"]


def test_cupys_cublas_is_loaded_before_it_is_looked_for(monkeypatch):
    """CuPy loads its libcublas with its first handle; searched for before that (no product
    has run when a capture is first set up), it is not among the process's libraries."""
    order = []
    runtime = types.SimpleNamespace(runtimeGetVersion=lambda: 13000)
    device = types.SimpleNamespace(get_cublas_handle=lambda: order.append("handle") or 1234)
    monkeypatch.setattr(cuda_graph, "cupy", types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=runtime, device=device)))
    monkeypatch.setattr(cuda_graph, "_pathfinders_library",
                        lambda name: order.append("pathfinder") and None)
    monkeypatch.setattr(cuda_graph, "_loaded_library",
                        lambda prefix: order.append("maps") and None)
    with pytest.raises(cuda_graph.CaptureUnavailable):
        cuda_graph._Cublas()
    assert order == ["handle", "pathfinder", "maps"]


def test_each_call_is_on_the_handle_of_the_calling_thread(stand_in_cublas, monkeypatch):
    """CuPy keeps a handle per thread and device; the first caller's, kept, would be another
    thread's, whose own products set its stream under a capture."""
    import threading

    handles = {}
    monkeypatch.setattr(cuda_graph.cupy.cuda.device, "get_cublas_handle",
                        lambda: handles.setdefault(threading.get_ident(), 100 + len(handles)))
    seen = []

    def record(handle, *arguments):
        seen.append(handle.value)
        return 0

    thread = threading.Thread(target=stand_in_cublas.call, args=(record,))
    stand_in_cublas.call(record)
    thread.start()
    thread.join()
    assert seen == [100, 101]
