"""Bias and relu on NumPy over the maps of a conv net: fewer calls and passes than the generic
kernels (backends/fused.py), the same numbers to the bit."""

import kernel_emulation
import numpy as np
import pytest

from nnrun.backends import numpy_backend
from nnrun.backends.fused import FusedKernels
from nnrun.backends.numpy_backend import BLOCK, NumpyBackend


class RecordingNumpy:
    """numpy, recording the name of each function called through it."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        function = getattr(np, name)
        if not callable(function):
            return function

        def recorded(*args, **options):
            self.calls.append(name)
            return function(*args, **options)

        return recorded


def _recording_backend(monkeypatch):
    recording = RecordingNumpy()
    monkeypatch.setattr(numpy_backend, "np", recording)
    backend = NumpyBackend()
    backend.xp = recording
    return backend, recording


def _generic(backend, kernel, *arrays):
    """The kernel of backends/fused.py, as CuPy's fallback and the previous NumPy code ran it."""
    getattr(FusedKernels, kernel)(backend, *arrays)


def _values(shape, dtype=np.float32, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[::7], flat[1::11], flat[-1] = 0.0, -0.0, np.nan  # relu's edges: zeros of both signs, NaN
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(16, 16, 64, 64), (3, 5, 40, 41), (4, 6, 14, 14), (128, 120)])
def test_bias_add_gives_the_copy_forms_bits(shape, dtype):
    x, b = _values(shape, dtype), _values(shape[1:2], dtype, seed=1)
    y, expected = np.empty_like(x), np.empty_like(x)
    NumpyBackend().bias_add_into(x, b, y)
    _generic(NumpyBackend(), "bias_add_into", x, b, expected)
    assert y.tobytes() == expected.tobytes()


def test_bias_add_over_long_runs_is_one_call_and_short_runs_keep_the_copy(monkeypatch):
    """Along 4,096 positions the broadcast addition is one pass (277 -> 170 us at [16, 16, 64,
    64]); along 196 the copy and the addition stay (the broadcast was 1.5x slower there)."""
    backend, recording = _recording_backend(monkeypatch)
    for shape, calls in [((2, 3, 64, 64), ["add"]), ((2, 3, 14, 14), ["copyto", "add"])]:
        recording.calls.clear()
        backend.bias_add_into(np.ones(shape), np.ones(shape[1]), np.empty(shape))
        assert [c for c in recording.calls if c in ("add", "copyto")] == calls, shape


@pytest.mark.parametrize("shape", [(16, 16, 64, 64), (2, 3, 70001), (5, 131073), (7, 3000)])
def test_relu_gives_the_scalar_maximums_bits(shape):
    x, y = _values(shape), np.empty(shape, np.float32)
    NumpyBackend().relu_into(x, y)
    assert y.tobytes() == np.maximum(x, 0).tobytes()


def test_relu_over_a_large_array_is_one_call_over_rows_of_a_divisor(monkeypatch):
    """A call a block of zeros cost about 2 us (32 calls for 1M values); rows of a divisor of
    the size take the block broadcast down them in one."""
    backend, recording = _recording_backend(monkeypatch)
    x = _values((16, 16, 64, 64))
    backend.relu_into(x, x)
    assert recording.calls.count("maximum") == 1
    assert numpy_backend._row_length(x.size) == BLOCK
    assert numpy_backend._row_length(5 * 131073) == 0  # no divisor long enough: block by block


def test_a_gpu_backend_keeps_the_generic_bias_addition(monkeypatch):
    """The broadcast form is NumPy's (measured there only)."""
    _, _, cupy_backend = kernel_emulation.install_fake_cupy(monkeypatch)
    assert cupy_backend.CupyBackend.bias_add_into is FusedKernels.bias_add_into
