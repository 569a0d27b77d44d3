"""A strict stand-in for cupy: device arrays that refuse what CuPy refuses where NumPy would let
it pass, and a log of every copy between host and device.

kernel_emulation.FakeCupy is NumPy itself, so a NumPy call on a device array, or a NumPy array
given to a cupy function, passes there and fails on a GPU. Here a device array is a wrapper
around a NumPy array (its "device memory"):
- converting it to NumPy implicitly (np.asarray, a NumPy array mixed into a cupy call or an
  operator) raises TypeError, as CuPy does;
- ndarray attributes CuPy's arrays lack (ctypes, __array_interface__, ...) raise AttributeError;
- every read to the host (get, asnumpy, float(), bool(), item(), a boolean-mask index) and every
  copy to the device (asarray of host data) is counted by the nnrun line that asked for it, and
  raises while the current stream is capturing: a CUDA graph cannot hold it.
`install(monkeypatch)` puts it in place of cupy, as kernel_emulation.install_fake_cupy does;
`FakeGraphCapture` runs a step "captured" (stream capturing) at capture and at each launch.
"""

from __future__ import annotations

import collections
import itertools
import traceback
import types
import weakref
from pathlib import Path

import numpy as np
import kernel_emulation
from kernel_emulation import _CAPTURE, _RawModule, _ScatterAdd, _Stream

REPOSITORY = Path(__file__).resolve().parents[1]
TESTS = REPOSITORY / "tests"

# Attributes of numpy.ndarray that cupy.ndarray does not have.
MISSING_ATTRIBUTES = frozenset({
    "ctypes", "__array_interface__", "__array_struct__", "tostring", "itemset", "newbyteorder",
    "byteswap", "resize", "getfield", "setfield", "setflags", "__buffer__", "device",
    "to_device", "__array_namespace__"})
# cupy functions whose result size depends on the data: they read it to the host first.
READING_FUNCTIONS = frozenset({"nonzero", "unique", "argwhere", "flatnonzero", "extract",
                               "compress", "bincount", "histogram", "allclose", "array_equal"})


class CaptureError(RuntimeError):
    pass


class Transfers:
    """Copies between host and device, counted by (direction, the nnrun line that asked)."""

    def __init__(self):
        self.counts = collections.Counter()

    def record(self, direction: str, what: str) -> None:
        site = _nnrun_caller()
        if _CAPTURE.current().capturing:
            raise CaptureError(f"{what} ({direction}) at {site} during stream capture")
        self.counts[direction, site] += 1

    def total(self, direction: str) -> int:
        return sum(n for (kind, _), n in self.counts.items() if kind == direction)


TRANSFERS = Transfers()


def _nnrun_caller() -> str:
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        if path.is_relative_to(REPOSITORY) and not path.is_relative_to(TESTS):
            return f"{path.relative_to(REPOSITORY)}:{frame.lineno}"
    return "?"


def _refuse_host_array(what: str):
    raise TypeError(f"Unsupported type <class 'numpy.ndarray'> in {what}: cupy takes device "
                    "arrays only (cupy.asarray copies a host array to the device)")


def unwrap(value, what: str):
    """The device memory of device arrays in `value`; a host array refused."""
    if isinstance(value, DeviceArray):
        return value.memory
    if isinstance(value, np.ndarray):
        _refuse_host_array(what)
    if isinstance(value, (list, tuple)):
        return type(value)(unwrap(item, what) for item in value)
    return value


_WRAPPERS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def wrap(value):
    """Device arrays for the arrays in `value`: one wrapper per array, so that `view.base is
    base` holds as on CuPy (the optimizer's flat buffers rely on it)."""
    if isinstance(value, np.ndarray):
        known = _WRAPPERS.get(id(value))
        if known is None or known.memory is not value:
            known = _WRAPPERS[id(value)] = DeviceArray(value)
        return known
    if isinstance(value, np.generic):
        return DeviceArray(np.asarray(value))  # cupy's reductions give 0-d arrays
    if isinstance(value, (list, tuple)):
        return type(value)(wrap(item) for item in value)
    return value


def _on_device(function, what: str):
    def call(*args, **kwargs):
        _CAPTURE.note(what, (args, kwargs))
        return wrap(function(*unwrap(args, what),
                             **{key: unwrap(value, what) for key, value in kwargs.items()}))
    return call


class DeviceArray:
    __slots__ = ("memory", "__weakref__")
    __array_priority__ = 1000
    __hash__ = None

    def __init__(self, memory: np.ndarray):
        object.__setattr__(self, "memory", memory)

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        function = ufunc if method == "__call__" else getattr(ufunc, method)
        return _on_device(function, f"numpy.{ufunc.__name__}")(*inputs, **kwargs)

    def __array_function__(self, function, types_, args, kwargs):
        return _on_device(function, f"numpy.{function.__name__}")(*args, **kwargs)

    shape = property(lambda self: self.memory.shape)
    dtype = property(lambda self: self.memory.dtype)
    ndim = property(lambda self: self.memory.ndim)
    size = property(lambda self: self.memory.size)
    itemsize = property(lambda self: self.memory.itemsize)
    nbytes = property(lambda self: self.memory.nbytes)
    strides = property(lambda self: self.memory.strides)
    flags = property(lambda self: self.memory.flags)
    T = property(lambda self: wrap(self.memory.T))
    base = property(lambda self: wrap(self.memory.base))
    data = property(lambda self: types.SimpleNamespace(ptr=self.memory.ctypes.data))
    kernel_argument = property(lambda self: self.memory)  # kernel_emulation._argument

    def __getattr__(self, name):
        if name in MISSING_ATTRIBUTES:
            raise AttributeError(f"'cupy.ndarray' object has no attribute '{name}'")
        attribute = getattr(self.memory, name)
        if not callable(attribute):
            return wrap(attribute)
        if name in ("item", "tolist", "tobytes"):
            TRANSFERS.record("to host", f"ndarray.{name}")
        return _on_device(attribute, f"ndarray.{name}")

    def __setattr__(self, name, value):
        setattr(self.memory, name, unwrap(value, f"ndarray.{name} ="))

    def get(self, *args, **kwargs) -> np.ndarray:
        TRANSFERS.record("to host", "ndarray.get")
        return self.memory.copy()

    def set(self, array, *args, **kwargs) -> None:
        TRANSFERS.record("to device", "ndarray.set")
        self.memory[...] = array

    def __len__(self):
        return len(self.memory)

    def __iter__(self):
        return (wrap(self.memory[i]) for i in range(len(self.memory)))

    def _index(self, key):
        def one(part):
            if isinstance(part, DeviceArray):
                if part.dtype == np.bool_:  # the result's size is read first
                    TRANSFERS.record("to host", "boolean-mask index")
                return part.memory
            if isinstance(part, np.ndarray):
                _refuse_host_array("an index")
            return part
        return tuple(map(one, key)) if isinstance(key, tuple) else one(key)

    def __getitem__(self, key):
        _CAPTURE.note("ndarray.__getitem__", (self, key))
        return wrap(self.memory[self._index(key)])

    def __setitem__(self, key, value):
        _CAPTURE.note("ndarray.__setitem__", (self, key, value))
        self.memory[self._index(key)] = unwrap(value, "ndarray.__setitem__")

    def _read_scalar(self, convert, what):
        TRANSFERS.record("to host", what)
        if self.memory.size != 1:
            raise TypeError("only size-1 arrays can be converted to Python scalars")
        return convert(self.memory.reshape(()))

    def __float__(self):
        return self._read_scalar(float, "float()")

    def __int__(self):
        return self._read_scalar(int, "int()")

    def __index__(self):
        return self._read_scalar(lambda value: value.__index__(), "an index")

    def __bool__(self):
        return self._read_scalar(bool, "bool()")

    def __repr__(self):
        TRANSFERS.record("to host", "repr()")
        return f"device {self.memory!r}"

    def __format__(self, spec):
        TRANSFERS.record("to host", "format()")
        return format(self.memory.item() if self.memory.ndim == 0 else self.memory, spec)

    __str__ = __repr__


def _operator(name):
    function = getattr(np.ndarray, f"__{name}__")

    def operator(self, *others):
        _CAPTURE.note(f"operator {name}", (self, others))
        return wrap(function(self.memory, *unwrap(others, f"operator {name}")))
    return operator


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or",
              "xor", "lshift", "rshift", "lt", "le", "eq", "ne", "gt", "ge", "neg", "pos", "abs",
              "invert", "radd", "rsub", "rmul", "rtruediv", "rfloordiv", "rmod", "rpow",
              "rmatmul", "rand", "ror", "rxor", "iadd", "isub", "imul", "itruediv", "ifloordiv",
              "imod", "ipow", "iand", "ior", "ixor", "ilshift", "irshift"):
    setattr(DeviceArray, f"__{_name}__", _operator(_name))


class _Ufunc:
    """A cupy ufunc: NumPy's on device arrays; `add.at` takes CuPy's dtypes only."""

    def __init__(self, ufunc, name):
        self.ufunc, self.name = ufunc, name

    def __call__(self, *args, **kwargs):
        return _on_device(self.ufunc, f"cupy.{self.name}")(*args, **kwargs)

    def __getattr__(self, name):
        if self.name == "add" and name == "at":
            return _on_device(_ScatterAdd().at, "cupy.add.at")
        return _on_device(getattr(self.ufunc, name), f"cupy.{self.name}.{name}")


class _Namespace(types.ModuleType):
    """NumPy's functions of a (sub)module as cupy's: on device arrays only."""

    def __init__(self, source, name, **own):
        super().__init__(name)
        self._source = source
        self.__dict__.update(own)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        found = getattr(self._source, name)
        if isinstance(found, np.ufunc):
            return _Ufunc(found, name)
        if isinstance(found, types.ModuleType):
            return _Namespace(found, f"{self.__name__}.{name}")
        if isinstance(found, type) or not callable(found):
            return found  # dtypes, constants
        function = _on_device(found, f"{self.__name__}.{name}")
        if name not in READING_FUNCTIONS:
            return function

        def reading(*args, **kwargs):
            TRANSFERS.record("to host", f"cupy.{name}")
            return function(*args, **kwargs)
        return reading


def _to_device(array, dtype=None, copy=True, **kwargs):
    if isinstance(array, DeviceArray):
        return wrap(np.array(array.memory, dtype=dtype, copy=copy or None))
    TRANSFERS.record("to device", "cupy.asarray")
    return wrap(np.array(array, dtype=dtype))


def _to_host(array, *args, **kwargs):
    TRANSFERS.record("to host", "cupy.asnumpy")
    return np.array(unwrap(array, "cupy.asnumpy"))


class _Generator:
    def __init__(self, seed=None):
        self.generator = np.random.default_rng(seed)

    def __getattr__(self, name):
        return _on_device(getattr(self.generator, name), f"Generator.{name}")


class StrictCupy(_Namespace):
    def __init__(self):
        random = _Namespace(np.random, "cupy.random", default_rng=_Generator,
                            Generator=_Generator)
        memory_pool = types.SimpleNamespace(free_all_blocks=lambda: None, used_bytes=lambda: 0,
                                            total_bytes=lambda: 0)
        runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, CUDARuntimeError=RuntimeError,
                                        memGetInfo=lambda: (8 << 30, 16 << 30), is_hip=False)
        cuda = types.SimpleNamespace(Device=lambda *args: types.SimpleNamespace(id=0),
                                     get_current_stream=_CAPTURE.current, Stream=_Stream,
                                     runtime=runtime)
        super().__init__(np, "cupy", ndarray=DeviceArray, asarray=_to_device, array=_to_device,
                         asnumpy=_to_host, RawModule=_RawModule, random=random, cuda=cuda,
                         get_default_memory_pool=lambda: memory_pool, __version__="14.0.0")


class FakeGraphCapture:
    """CupyBackend.graph_capture's stand-in: each launch runs the step with the stream
    capturing, so that a transfer inside it raises (Transfers.record). As a real capture, the
    capture itself runs nothing.

    A real graph replays what its capture asked for: the Python of the step runs once, and a
    scalar or a shape it passes to the device is frozen at its first value. Here the Python runs
    at every launch, so each launch's calls (their arguments' dtypes, shapes and scalars:
    kernel_emulation.described) are kept and must be those of the first launch."""

    def warm(self, run) -> None:
        run()

    def capture(self, run):
        first, launches = [], itertools.count(1)

        def launch():
            stream, calls = _Stream(), []
            with stream:
                stream.capturing, _CAPTURE.calls = True, calls
                try:
                    run()
                finally:
                    _CAPTURE.calls = None
            number = next(launches)
            if number > 1:
                _same_calls(first, calls, number)
            else:
                first.extend(calls)
        return types.SimpleNamespace(launch=launch, held_bytes=lambda: 0)


def _same_calls(first: list, later: list, launch: int) -> None:
    for number, (was, now) in enumerate(zip(first, later)):
        if was != now:
            raise CaptureError(f"launch {launch} of a captured step differs from launch 1 at "
                               f"call {number + 1}: {now} against {was}; a CUDA graph replays "
                               "the first")
    if len(first) != len(later):
        raise CaptureError(f"launch {launch} of a captured step made {len(later)} calls, "
                           f"launch 1 {len(first)}; a CUDA graph replays the first")


def _erf(x, out=None):
    from nnrun.backends.numpy_backend import NumpyBackend

    if out is None:
        return wrap(NumpyBackend().erf(unwrap(x, "erf")))
    NumpyBackend().erf_into(unwrap(x, "erf"), unwrap(out, "erf"))
    return out


def install(monkeypatch, capture: bool):
    """StrictCupy in place of cupy for the test (undone after it), the kernels' verdicts
    cleared, the transfers' counts zeroed, and the step captured by FakeGraphCapture or not at
    all; returns the cupy_backend module."""
    _, kernels, backend = kernel_emulation.install_fake_cupy(monkeypatch, StrictCupy(), _erf)
    monkeypatch.setattr(kernels, "_VERDICTS", {})
    monkeypatch.setattr(kernels, "_BACKEND", {})
    monkeypatch.setattr(backend.CupyBackend, "graph_capture",
                        (lambda self: FakeGraphCapture()) if capture else (lambda self: None))
    monkeypatch.setattr(TRANSFERS, "counts", collections.Counter())
    return backend
