"""Whole-step CUDA graphs on CuPy: capture a step once, replay it each step.

`GraphCapture` warms a step up and captures it on a side stream; `CapturedGraph.launch` replays
it on the current stream, after the caller has copied the step's inputs into the buffers the
graph reads. Memory the captured kernels allocate comes from a memory pool of the graph's own,
kept alive with it: nothing else is ever handed memory a replay writes.

CuPy refuses to call cuBLAS while a stream is capturing (its wrapper raises
`NotImplementedError: calling cuBLAS API during stream capture`, from `setStream` in
cupy_backends/cuda/libs/cublas.pyx). cuBLAS itself can be captured when its handle has the
capturing stream and a workspace set beforehand, so during warm-up and capture `matmul_into`
calls `cublas{S,D}gemm_v2` and the strided-batched forms directly, through ctypes on the very
libcublas CuPy loaded, with CuPy's handle. The GEMM arguments come from gemm_layout.py.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager

import cupy

from . import CaptureUnavailable
from .gemm_layout import layout_of, plan_gemm

WORKSPACE_BYTES = 32 << 20  # cuBLAS's recommended workspace on Hopper GPUs (4 MiB before)
_OPERATION = {False: 0, True: 1}  # CUBLAS_OP_N, CUBLAS_OP_T
_POINTER_MODE_HOST = 0
_DIRECT = {"active": False}  # matmul_into calls cuBLAS directly (warm-up and capture)


def matmul_into(a, b, out) -> None:
    if _DIRECT["active"] and a.dtype == b.dtype == out.dtype and out.dtype.char in "fd":
        _direct_matmul(a, b, out)
    else:
        cupy.matmul(a, b, out=out)


def _direct_matmul(a, b, out) -> None:
    if out.size == 0:
        return
    if a.shape[-1] == 0:
        out.fill(0)
        return
    arrays = {"a": a, "b": b, "out": out}
    call, copied = plan_gemm(layout_of(a), layout_of(b), layout_of(out)), set()
    while isinstance(call, str):  # an operand no call reads as it is: a C-contiguous copy
        if call in copied:
            raise RuntimeError(f"no cuBLAS call for {a.shape} @ {b.shape} -> {out.shape}")
        copied.add(call)
        arrays[call] = (cupy.empty(out.shape, out.dtype) if call == "out"
                        else cupy.ascontiguousarray(arrays[call]))
        call = plan_gemm(*(layout_of(arrays[name]) for name in ("a", "b", "out")))
    _cublas().gemm(call, arrays)
    if arrays["out"] is not out:
        out[...] = arrays["out"]


class _Cublas:
    """The GEMM entry points of the libcublas CuPy has loaded, on CuPy's handle."""

    def __init__(self):
        # CuPy loads its libcublas with its first handle: before that, the search below finds
        # none among the process's libraries
        cupy.cuda.device.get_cublas_handle()
        # By the major version of CuPy's CUDA: a process may map another cuBLAS beside it
        # (a PyTorch built for another CUDA), and CuPy's handle is valid in its own only.
        soname = f"libcublas.so.{cupy.cuda.runtime.runtimeGetVersion() // 1000}"
        path = _pathfinders_library("cublas")
        if path is None or not os.path.basename(path).startswith(soname):
            path = _loaded_library(soname)
        if path is None:
            raise CaptureUnavailable(f"the cuBLAS library CuPy loaded ({soname}) was not found "
                                     "among the process's libraries (/proc/self/maps)")
        try:
            self.library = library = ctypes.CDLL(path)
            self.set_stream = _function(library.cublasSetStream_v2, ctypes.c_void_p)
            self.get_stream = _function(library.cublasGetStream_v2, ctypes.c_void_p)
            self.set_workspace = _function(library.cublasSetWorkspace_v2, ctypes.c_void_p,
                                           ctypes.c_size_t)
            self.set_pointer_mode = _function(library.cublasSetPointerMode_v2, ctypes.c_int)
            self.get_pointer_mode = _function(library.cublasGetPointerMode_v2, ctypes.c_void_p)
            self.gemm_functions = {
                "f": (library.cublasSgemm_v2, library.cublasSgemmStridedBatched, ctypes.c_float),
                "d": (library.cublasDgemm_v2, library.cublasDgemmStridedBatched, ctypes.c_double)}
        except (OSError, AttributeError) as error:
            raise CaptureUnavailable(f"cuBLAS at {path} cannot be called directly ({error})")
        integer, pointer, stride = ctypes.c_int, ctypes.c_void_p, ctypes.c_longlong
        for single, batched, _ in self.gemm_functions.values():  # as in cublas_api.h
            _function(single, *(integer,) * 5, pointer, pointer, integer, pointer, integer,
                      pointer, pointer, integer)
            _function(batched, *(integer,) * 5, pointer, pointer, integer, stride, pointer,
                      integer, stride, pointer, pointer, integer, stride, integer)
        self.workspaces = {}

    @property
    def handle(self) -> ctypes.c_void_p:
        # CuPy's handle of this thread and device, asked for at each call: another thread's
        # (or device's) products would set the stream of one kept from the first caller
        return ctypes.c_void_p(cupy.cuda.device.get_cublas_handle())

    def call(self, function, *arguments) -> None:
        status = function(self.handle, *arguments)
        if status != 0:
            raise RuntimeError(f"cuBLAS call {function.__name__} failed with status {status}")

    def gemm(self, call, arrays) -> None:
        single, batched, scalar = self.gemm_functions[arrays["out"].dtype.char]
        alpha, beta = scalar(1), scalar(0)
        first, second, out = call.first, call.second, call.out

        def pointer(operand):
            return ctypes.c_void_p(arrays[operand.name].data.ptr)

        head = (_OPERATION[first.transpose], _OPERATION[second.transpose], call.m, call.n,
                call.k, ctypes.byref(alpha))
        if call.batch == 1:
            self.call(single, *head, pointer(first), first.ld, pointer(second), second.ld,
                      ctypes.byref(beta), pointer(out), out.ld)
            return
        self.call(batched, *head, pointer(first), first.ld, first.batch_stride,
                  pointer(second), second.ld, second.batch_stride, ctypes.byref(beta),
                  pointer(out), out.ld, out.batch_stride, call.batch)

    @contextmanager
    def on_stream(self, stream):
        """The handle on `stream`, with a workspace of its own and host scalars, for the
        duration: what cuBLAS needs to be captured."""
        saved_stream, saved_mode = ctypes.c_void_p(), ctypes.c_int()
        self.call(self.get_stream, ctypes.byref(saved_stream))
        self.call(self.get_pointer_mode, ctypes.byref(saved_mode))
        workspace = self.workspace()
        # In this order: cublasSetStream puts the handle back on cuBLAS's default workspace.
        self.call(self.set_stream, ctypes.c_void_p(stream.ptr))
        self.call(self.set_workspace, ctypes.c_void_p(workspace.data.ptr), workspace.nbytes)
        self.call(self.set_pointer_mode, _POINTER_MODE_HOST)
        _DIRECT["active"] = True
        try:
            yield
        finally:
            _DIRECT["active"] = False
            self.call(self.set_pointer_mode, saved_mode.value)
            self.call(self.set_stream, saved_stream)

    def workspace(self):
        # One per device, allocated once and never freed: every graph captured with it keeps
        # writing it at each replay. CuPy's own products do not use it (each of its cuBLAS
        # calls sets the stream, which restores cuBLAS's default workspace).
        device = cupy.cuda.Device().id
        if device not in self.workspaces:
            self.workspaces[device] = cupy.empty(WORKSPACE_BYTES, dtype=cupy.uint8)
        return self.workspaces[device]


def _function(function, *argtypes):
    function.argtypes = (ctypes.c_void_p, *argtypes)
    function.restype = ctypes.c_int
    return function


def _pathfinders_library(name: str) -> str | None:
    """The library CuPy 14 loads, by the path cuda.pathfinder found (cached there: asking
    again loads nothing new; it names a copy already in the process first)."""
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
    except ImportError:  # an older CuPy, linked against its libraries
        return None
    try:
        return load_nvidia_dynamic_lib(name).abs_path
    except Exception:  # noqa: BLE001 -- not found its way: look among the mapped libraries
        return None


def _loaded_library(prefix: str) -> str | None:
    """The path of the loaded shared library whose file name starts with `prefix`."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(maxsplit=5)[-1].strip() for line in maps if prefix in line}
    except OSError:
        return None
    found = sorted(p for p in paths if os.path.basename(p).startswith(prefix))
    return found[0] if found else None


_LIBRARY = {}


def _cublas() -> _Cublas:
    if "cublas" not in _LIBRARY:
        _LIBRARY["cublas"] = _Cublas()
    return _LIBRARY["cublas"]


def _end_failed_capture(stream) -> None:
    try:  # leaves capture mode; the capture itself is lost, and its error is the one to report
        stream.end_capture()
    except Exception:  # noqa: BLE001
        pass


class CapturedGraph:
    """A captured step, with the memory pool its allocations came from and its stream."""

    def __init__(self, graph, pool, stream):
        self.graph, self.pool, self.stream = graph, pool, stream

    def launch(self) -> None:
        self.graph.launch(cupy.cuda.get_current_stream())

    def held_bytes(self) -> int:
        """Device memory the graph's own pool holds (beside CuPy's default pool)."""
        return self.pool.total_bytes()


class GraphCapture:
    """Warm-up and capture of a step on the current device (CupyBackend.graph_capture)."""

    def __init__(self):
        if cupy.cuda.runtime.is_hip or not hasattr(cupy.cuda.Stream, "begin_capture"):
            raise CaptureUnavailable(f"CuPy {cupy.__version__} here has no CUDA graph capture")
        self.cublas = _cublas()
        self.cublas.workspace()  # allocated now, outside any capture and its memory pool

    def warm(self, run) -> None:
        """`run` as it will be captured (cuBLAS called directly), uncaptured: CuPy compiles its
        kernels, cuBLAS loads its own, the constants ops cache are made."""
        with self.cublas.on_stream(cupy.cuda.get_current_stream()):
            run()

    def capture(self, run) -> CapturedGraph:
        pool = cupy.cuda.MemoryPool()
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream, cupy.cuda.using_allocator(pool.malloc), self.cublas.on_stream(stream):
            stream.begin_capture()
            try:
                run()
            except BaseException:
                _end_failed_capture(stream)
                raise
            graph = stream.end_capture()
        return CapturedGraph(graph, pool, stream)
