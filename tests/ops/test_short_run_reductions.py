"""Softmax and softmax cross-entropy over the channels of a small map: each channel's values lie
in runs of H*W, which NumPy reduces one run at a time (the maximum over the 64 channels of
[256, 64, 4, 4] took 0.5 ms, 10x the same over a channel-major copy). The planned forms reduce
a channel-major copy there, along rows of B*H*W, and give the plain forwards' numbers."""

import kernel_emulation
import numpy as np
import pytest

from nnrun.backends import get_backend
from nnrun.backends.numpy_backend import NumpyBackend
from nnrun.compiler.ir import TensorType
from nnrun.compiler.ops import REGISTRY
from nnrun.compiler.ops.activation import AxisAttrs
from nnrun.compiler.ops.loss import CrossEntropyAttrs


class RecordingNumpy:
    """numpy, recording for each max or sum along an axis the length of the runs it reduces:
    the elements that lie one after the other at each step along the axis."""

    def __init__(self):
        self.runs = []

    def __getattr__(self, name):
        function = getattr(np, name)
        if name not in ("max", "sum"):
            return function

        def reduction(a, axis=None, **options):
            if axis is not None:
                self.runs.append(int(np.prod(a.shape[axis % a.ndim + 1:])))
            return function(a, axis=axis, **options)

        return reduction


def _recording_backend():
    backend = NumpyBackend()
    backend.xp = RecordingNumpy()
    return backend


def _buffers(op, attrs, *inputs):
    types = [TensorType(a.shape, str(a.dtype)) for a in inputs]
    outputs = op.shape(attrs, *types)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return tuple(np.full(t.shape, 7, t.dtype) for t in (*outputs, *op.scratch(attrs, *types)))


def _plain(name, attrs, *inputs):
    return REGISTRY[name].forward(get_backend("numpy"), attrs, *inputs)


def _run(name, attrs, *inputs):
    """The op's forward_into on a recording backend: (its outputs, the runs it reduced)."""
    backend, op = _recording_backend(), REGISTRY[name]
    out = _buffers(op, attrs, *inputs)
    op.forward_into(backend, attrs, out, *inputs)
    return out, backend.xp.runs


BATCH, CHANNELS, MAP = 8, 16, (4, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_over_channels_reduces_along_rows_of_the_whole_batch(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, CHANNELS, *MAP)).astype(dtype) * 5
    g = rng.standard_normal(x.shape).astype(dtype)
    (y, *_), runs = _run("softmax", AxisAttrs(1), x)
    (dx, *_), grad_runs = _run("softmax_grad", AxisAttrs(1), g, y)
    rows = BATCH * MAP[0] * MAP[1]
    assert runs == [rows, rows] and grad_runs == [rows]  # before: 16 each
    np.testing.assert_array_equal(y, _plain("softmax", AxisAttrs(1), x))
    np.testing.assert_array_equal(dx, _plain("softmax_grad", AxisAttrs(1), g, y))


@pytest.mark.parametrize("attrs", [CrossEntropyAttrs(), CrossEntropyAttrs(0.1, 255)])
def test_cross_entropy_per_pixel_of_a_small_map_reduces_along_rows_of_the_whole_batch(attrs):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((BATCH, CHANNELS, *MAP)).astype(np.float32) * 5
    labels = rng.integers(0, CHANNELS, (BATCH, *MAP))
    if attrs.ignore_index is not None:
        labels[rng.random(labels.shape) < 0.25] = attrs.ignore_index
    (loss, grad, *_), runs = _run("softmax_cross_entropy_with_grad", attrs, logits, labels)
    assert runs == [BATCH * MAP[0] * MAP[1]] * 2  # the maximum and the sum; before: 16 each
    want_loss, want_grad = _plain("softmax_cross_entropy_with_grad", attrs, logits, labels)
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(grad, want_grad)


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (4, 10)])
def test_long_runs_and_the_last_axis_are_reduced_where_they_lie(shape):
    """Runs of 256 reduce as fast in place; along the last axis NumPy sums pairwise, which a
    channel-major sum (one channel after the other) would not match."""
    x = np.random.default_rng(2).standard_normal(shape)
    (y, *_), runs = _run("softmax", AxisAttrs(1), x)
    assert runs == [int(np.prod(shape[2:]))] * 2
    np.testing.assert_array_equal(y, _plain("softmax", AxisAttrs(1), x))


def test_a_backend_that_reduces_short_runs_as_fast_makes_no_copy(monkeypatch):
    """A GPU's reductions gain nothing from the copy but its kernels: CuPy's backend says so
    (short_runs_by_copy_below 0), and the softmax and its cross-entropy reduce in place."""
    _, _, cupy_backend = kernel_emulation.install_fake_cupy(monkeypatch)
    assert cupy_backend.CupyBackend.short_runs_by_copy_below == 0
    rng = np.random.default_rng(3)
    x = rng.standard_normal((BATCH, CHANNELS, *MAP))
    labels = rng.integers(0, CHANNELS, (BATCH, *MAP))
    backend = _recording_backend()
    backend.short_runs_by_copy_below = 0
    for name, attrs, inputs in [("softmax", AxisAttrs(1), (x,)),
                                ("softmax_cross_entropy", CrossEntropyAttrs(), (x, labels))]:
        op = REGISTRY[name]
        out = _buffers(op, attrs, *inputs)
        op.forward_into(backend, attrs, out, *inputs)
        np.testing.assert_array_equal(out[0], _plain(name, attrs, *inputs))
    assert set(backend.xp.runs) == {MAP[0] * MAP[1]}, backend.xp.runs
