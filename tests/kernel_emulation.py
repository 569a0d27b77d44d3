"""The CuPy backend's raw kernels run on the CPU: their C source compiled with g++ under
raw_kernels.CPU_PRELUDE (every thread index in turn) and called through ctypes on NumPy arrays;
and a stand-in `cupy` module (NumPy plus those kernels) under which backends/cupy_kernels.py
and the CuPy backend run unchanged, self-checks included.

Out-of-bounds accesses show under AddressSanitizer (checked so, all clean):
    NNRUN_KERNEL_CFLAGS="-fsanitize=address" ASAN_OPTIONS=detect_leaks=0 \
    LD_PRELOAD=$(gcc -print-file-name=libasan.so) pytest tests/backends -k "not compile"
"""

from __future__ import annotations

import ctypes
import os
import functools
import hashlib
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest

from nnrun.backends import raw_kernels

needs_gcc = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

_C_SCALARS = {np.int64: ctypes.c_longlong, np.int32: ctypes.c_int, np.float32: ctypes.c_float,
              np.float64: ctypes.c_double}


@functools.cache
def compiled(code: str):
    """A shared library built from CUDA-prelude or CPU-prelude source (the former swapped)."""
    code = code.replace(raw_kernels.CUDA_PRELUDE, raw_kernels.CPU_PRELUDE)
    stem = hashlib.sha1(code.encode()).hexdigest()[:12]
    # Removed once loaded: the process keeps the library mapped, and /tmp stays clean.
    with tempfile.TemporaryDirectory(prefix="nnrun-kernels-") as name:
        folder = Path(name)
        (folder / f"{stem}.cpp").write_text(code)
        # No contraction into fused multiply-adds, as the CUDA build (--fmad=false).
        flags = os.environ.get("NNRUN_KERNEL_CFLAGS", "").split()
        subprocess.run(["g++", "-O1", "-ffp-contract=off", *flags, "-shared", "-fPIC",
                        f"{stem}.cpp", "-o", f"{stem}.so"], cwd=folder, check=True,
                       capture_output=True)
        return ctypes.CDLL(str(folder / f"{stem}.so"))


def _argument(value):
    value = getattr(value, "kernel_argument", value)  # strict_cupy.DeviceArray's memory
    if isinstance(value, np.ndarray):
        return ctypes.c_void_p(value.ctypes.data)
    return _C_SCALARS[type(value)](value)


def call(function, args) -> None:
    function(*(_argument(a) for a in args))


def run_plan(plan) -> None:
    for family, dtype, name, threads, args in plan:
        index, args = raw_kernels.index_form(threads, args)
        call(getattr(compiled(raw_kernels.source(family, dtype, index=index)), name), args)


class _RawModule:
    def __init__(self, code, options=()):
        self.code = code

    def get_function(self, name):
        function = getattr(compiled(self.code), name)

        def launch(grid, block, args):
            _CAPTURE.note(f"kernel {name}", (grid, block, args))
            _CAPTURE.launch(function, args)
        return launch


class _Capture:
    """Stream capture as CUDA does it for kernels: a launch on a capturing stream is recorded,
    not run, and the graph replays the recorded launches. Anything else (NumPy standing for
    CuPy's own array calls) would run at once and not be replayed, so a test that replays a
    graph shows whether everything captured was a kernel."""

    def __init__(self):
        self.recording = None
        self.streams = []
        self.calls = None  # strict_cupy.FakeGraphCapture's log of a launch's calls

    def note(self, what: str, arguments) -> None:
        """Adds a call to the log a launch keeps, if one is kept: what it is and, as a
        replayed graph would freeze them, its arguments' dtypes, shapes and scalars."""
        if self.calls is not None:
            self.calls.append((what, described(arguments)))

    def launch(self, function, args):
        if self.recording is not None and self.current().capturing:
            self.recording.append((function, args))
        else:
            call(function, args)

    def current(self):
        return self.streams[-1] if self.streams else _DEFAULT_STREAM


class _Stream:
    def __init__(self, non_blocking=False):
        self.capturing = False

    def __enter__(self):
        _CAPTURE.streams.append(self)
        return self

    def __exit__(self, *exc):
        _CAPTURE.streams.pop()

    def is_capturing(self):
        return self.capturing

    def begin_capture(self):
        self.capturing, _CAPTURE.recording = True, []

    def end_capture(self):
        launches, _CAPTURE.recording = _CAPTURE.recording, None
        self.capturing = False
        return types.SimpleNamespace(launch=lambda stream=None: [call(f, a) for f, a in launches])

    def synchronize(self):
        pass


_CAPTURE = _Capture()
_DEFAULT_STREAM = _Stream()


def described(value):
    """What a CUDA graph fixes of a call's argument at capture: an array's dtype and shape (not
    its values, read at each replay; nor its address: what a captured step allocates has the
    graph's fixed address on a GPU, a new one at each launch here), a scalar's value."""
    if isinstance(value, type):
        return ("dtype", str(np.dtype(value))) if issubclass(value, np.generic) else value
    if isinstance(value, np.dtype):
        return ("dtype", str(value))
    if isinstance(value, np.generic):
        return (str(value.dtype), described(value.item()))
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return (str(value.dtype), tuple(value.shape))
    if isinstance(value, (list, tuple)):
        return tuple(described(item) for item in value)
    if isinstance(value, dict):
        return tuple((key, described(item)) for key, item in value.items())
    if isinstance(value, slice):
        return ("slice", value.start, value.stop, value.step)
    if isinstance(value, float):  # its repr: exact, and a NaN equals the NaN it was
        return repr(value)
    return value if value is None or isinstance(value, (bool, int, str)) else type(value)


class _ScatterAdd:
    """np.add, whose `at` takes only the types CuPy's does (its atomicAdd's: see
    cupy/_core/_routines_indexing.pyx, _scatter_op_single); NumPy's takes any."""

    TYPES = (np.int32, np.uint32, np.uint64, np.float16, np.float32, np.float64)

    def __call__(self, *args, **kwargs):
        return np.add(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(np.add, name)

    def at(self, a, indices, values):
        if a.dtype.type not in self.TYPES:
            raise TypeError(f"cupy.add.at only supports int32, float16, float32, float64, "
                            f"uint32, uint64, as data type (not {a.dtype})")
        np.add.at(a, indices, values)


class FakeCupy(types.ModuleType):
    """cupy as NumPy, with RawModule compiled for the CPU and kernel launches captured by
    streams. `capturing` pretends a capture is in progress on the current stream."""

    def __init__(self):
        super().__init__("cupy")
        self.RawModule = _RawModule
        self.asnumpy = np.array  # a copy, as from the device
        self.add = _ScatterAdd()
        runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, CUDARuntimeError=RuntimeError,
                                        memGetInfo=lambda: (8 << 30, 16 << 30))
        self.cuda = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0),
                                          get_current_stream=_CAPTURE.current, Stream=_Stream,
                                          runtime=runtime)
        # NumPy's memory is the host's: nothing cached to hand back, nothing counted
        pool = types.SimpleNamespace(free_all_blocks=lambda: None, total_bytes=lambda: 0,
                                     used_bytes=lambda: 0)
        self.get_default_memory_pool = lambda: pool

    def __getattr__(self, name):
        return getattr(np, name)

    @property
    def capturing(self):
        return _CAPTURE.current().capturing

    @capturing.setter
    def capturing(self, value):
        _CAPTURE.current().capturing = value


def _numpy_erf(x, out=None):
    from nnrun.backends.numpy_backend import NumpyBackend

    return NumpyBackend().erf(x) if out is None else NumpyBackend().erf_into(x, out)


def install_fake_cupy(monkeypatch, fake=None, erf=_numpy_erf):
    """Import cupy_kernels and cupy_backend afresh against `fake` (FakeCupy by default; undone
    after the test), with `erf` as cupyx.scipy.special.erf; returns (the fake, cupy_kernels,
    cupy_backend)."""
    import importlib

    fake = fake or FakeCupy()
    special = types.SimpleNamespace(erf=erf)
    scipy = types.SimpleNamespace(special=special)
    for name, module in (("cupy", fake), ("cupyx", types.SimpleNamespace(scipy=scipy)),
                         ("cupyx.scipy", scipy), ("cupyx.scipy.special", special)):
        monkeypatch.setitem(sys.modules, name, module)
    import nnrun.backends
    from nnrun.compiler.ops import common

    # constants cached for "cupy" belong to the cupy they were made under
    monkeypatch.setattr(common, "_CONSTANTS", {})
    for name in ("cuda_graph", "cupy_kernels", "cupy_backend"):  # each imports cupy
        # Recorded as they are (present or not) and then removed, so that the test imports
        # them afresh and the undo restores them, or removes the ones the test imported.
        monkeypatch.setitem(sys.modules, f"nnrun.backends.{name}", None)
        del sys.modules[f"nnrun.backends.{name}"]
        monkeypatch.setattr(nnrun.backends, name, None, raising=False)
        delattr(nnrun.backends, name)
    kernels = importlib.import_module("nnrun.backends.cupy_kernels")
    backend = importlib.import_module("nnrun.backends.cupy_backend")
    _CAPTURE.current().capturing = False
    return fake, kernels, backend
