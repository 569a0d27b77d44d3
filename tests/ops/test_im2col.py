"""backends/base.py: im2col and col2im against naive loops, 1-D and 2-D, with stride and
dilation; col2im is the adjoint of im2col."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nnrun.backends import get_backend
from nnrun.backends.base import window_count
from nnrun.compiler.ir import TensorType
from nnrun.compiler.ops import REGISTRY
from nnrun.compiler.ops.conv import ColumnsAttrs, ConvColumnsAttrs
from nnrun.compiler.shapes import ShapeError

# (spatial, kernel, stride, dilation); several leave input elements that no window reaches.
CONFIGS = [
    ((7,), (3,), (1,), (1,)),
    ((9,), (3,), (2,), (1,)),
    ((10,), (2,), (3,), (2,)),
    ((8,), (3,), (1,), (3,)),
    ((5, 5), (3, 3), (1, 1), (1, 1)),
    ((6, 7), (2, 3), (2, 1), (1, 2)),
    ((7, 6), (3, 2), (3, 2), (2, 1)),
    ((4, 4), (1, 1), (2, 2), (1, 1)),
    ((5, 4), (5, 4), (1, 1), (1, 1)),
]
IDS = [f"n{s}-k{k}-s{st}-d{d}" for s, k, st, d in CONFIGS]


def out_sizes(spatial, kernel, stride, dilation):
    return tuple((n - d * (k - 1) - 1) // s + 1
                 for n, k, s, d in zip(spatial, kernel, stride, dilation))


def im2col_naive(x, kernel, stride, dilation):
    """cols[b, c, *k, *o] = x[b, c, o*s + k*d], one element at a time."""
    batch, channels, *spatial = x.shape
    out = out_sizes(spatial, kernel, stride, dilation)
    cols = np.zeros((batch, channels, *kernel, *out))
    for b, c in np.ndindex(batch, channels):
        for o in itertools.product(*(range(m) for m in out)):
            for k in itertools.product(*(range(n) for n in kernel)):
                source = tuple(oi * s + ki * d for oi, ki, s, d in zip(o, k, stride, dilation))
                cols[(b, c, *k, *o)] = x[(b, c, *source)]
    return cols


def col2im_naive(cols, shape, kernel, stride, dilation):
    batch, channels, *spatial = shape
    out = out_sizes(spatial, kernel, stride, dilation)
    x = np.zeros(shape)
    for b, c in np.ndindex(batch, channels):
        for o in itertools.product(*(range(m) for m in out)):
            for k in itertools.product(*(range(n) for n in kernel)):
                target = tuple(oi * s + ki * d for oi, ki, s, d in zip(o, k, stride, dilation))
                x[(b, c, *target)] += cols[(b, c, *k, *o)]
    return x


@pytest.fixture(scope="module")
def be():
    return get_backend("numpy")


def _inputs(spatial, kernel, stride, dilation, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, *spatial))
    cols = rng.standard_normal((2, 3, *kernel, *out_sizes(spatial, kernel, stride, dilation)))
    return x, cols


@pytest.mark.parametrize("spatial, kernel, stride, dilation", CONFIGS, ids=IDS)
def test_im2col_matches_loops(be, spatial, kernel, stride, dilation):
    x, _ = _inputs(spatial, kernel, stride, dilation)
    got = be.im2col(x, kernel, stride, dilation)
    np.testing.assert_array_equal(got, im2col_naive(x, kernel, stride, dilation))


@pytest.mark.parametrize("spatial, kernel, stride, dilation", CONFIGS, ids=IDS)
def test_col2im_matches_loops(be, spatial, kernel, stride, dilation):
    x, cols = _inputs(spatial, kernel, stride, dilation)
    got = be.col2im(cols, x.shape, kernel, stride, dilation)
    np.testing.assert_allclose(got, col2im_naive(cols, x.shape, kernel, stride, dilation),
                               rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("spatial, kernel, stride, dilation", CONFIGS, ids=IDS)
def test_col2im_is_the_adjoint_of_im2col(be, spatial, kernel, stride, dilation):
    """<im2col(x), c> == <x, col2im(c)>: what makes col2im the gradient of im2col."""
    x, cols = _inputs(spatial, kernel, stride, dilation, seed=1)
    left = np.sum(be.im2col(x, kernel, stride, dilation) * cols)
    right = np.sum(x * be.col2im(cols, x.shape, kernel, stride, dilation))
    assert left == pytest.approx(right, rel=1e-12)


@pytest.mark.parametrize("spatial, kernel, stride, dilation", CONFIGS, ids=IDS)
@pytest.mark.parametrize("rest", [(), (5,)])  # (5,): the batch-last layout's runs
def test_col2im_by_phases_is_the_same_additions_bit_for_bit(be, spatial, kernel, stride,
                                                           dilation, rest):
    """With a spare buffer, col2im sums each phase (every s-th position) there and copies it
    out: the same additions in the same order as the strided ones, so the same bits."""
    from nnrun.backends.base import phase_elements

    rng = np.random.default_rng(2)
    out = out_sizes(spatial, kernel, stride, dilation)
    cols = rng.standard_normal((2, 3, *kernel, *out, *rest)).astype(np.float32)
    shape = (2, 3, *spatial, *rest)
    plain = be.col2im_into(cols, kernel, stride, dilation, np.full(shape, np.nan, np.float32))
    spare = np.full(phase_elements(shape, kernel, stride) + 3, np.nan, np.float32)
    phased = be.col2im_into(cols, kernel, stride, dilation, np.full(shape, np.nan, np.float32),
                            spare)
    np.testing.assert_array_equal(phased, plain)
    assert np.isnan(spare[-3:]).all()  # the largest phase fits: nothing written past it
    if not rest:
        np.testing.assert_allclose(phased, col2im_naive(cols, shape, kernel, stride, dilation),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel, stride, dilation, phases", [
    ((4, 4), (2, 2), (1, 1), True),  # the FCN's 2x upsampling: two taps a phase per axis
    ((3, 1), (2, 1), (1, 1), True),
    ((2, 2), (2, 2), (1, 1), False),  # one tap a phase: the strided additions are the copy
    ((3, 3), (2, 2), (2, 2), True),  # taps 2 apart at stride 2: all on one phase
    ((3, 3), (1, 1), (1, 1), False),  # stride 1: one phase
    ((6, 6), (3, 3), (1, 1), False),  # nine phases: slower than the strided additions
])
def test_a_strided_transposed_convolution_plans_a_phase_buffer_where_it_pays(kernel, stride,
                                                                             dilation, phases):
    from nnrun.compiler.ops.conv import ConvTransposeAttrs, _phase_scratch

    attrs = ConvTransposeAttrs(stride, (0, 0), (0, 0), dilation).conv()
    padded = TensorType((4, 3, 11, 11), "float32")
    planned = _phase_scratch(attrs, padded, kernel)
    assert bool(planned) == phases
    if phases:  # the largest phase of every sample's [C, *padded]
        largest = [-(-11 // s) for s in stride]
        assert planned[0].shape == (4, 3 * largest[0] * largest[1])


def test_im2col_keeps_dtype_and_layout(be):
    x = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    cols = be.im2col(x, (2,), (1,), (1,))
    assert cols.dtype == np.float32 and cols.shape == (2, 3, 2, 4)
    assert cols[1, 0, :, 2].tolist() == x[1, 0, 2:4].tolist()  # the window at output 2
    assert cols[1, 0, 1].tolist() == x[1, 0, 1:5].tolist()  # kernel offset 1 at every output


@pytest.mark.parametrize("n, k, s, d, expected", [(7, 3, 1, 1, 5), (9, 3, 2, 1, 4),
                                                   (10, 2, 3, 2, 3), (8, 3, 1, 3, 2)])
def test_window_count(n, k, s, d, expected):
    assert window_count(n, k, s, d) == expected


@pytest.mark.parametrize("layout", [{"batch_last": True, "by_sample": True},
                                    {"values_batch_last": True},
                                    {"values_batch_last": True, "by_sample": True}])
def test_column_ops_refuse_two_layouts_at_once(layout):
    """The columns' layouts exclude each other; batch-last values need batch-last columns."""
    attrs = ColumnsAttrs((3, 3), **layout)
    x = TensorType((2, 3, 8, 8), "float32")
    with pytest.raises(ShapeError):
        REGISTRY["im2col"].shape(attrs, x)
    if "values_batch_last" not in layout:
        cols = TensorType((2, 27, 36), "float32")
        with pytest.raises(ShapeError):
            REGISTRY["conv_columns"].shape(ConvColumnsAttrs((6, 6), **layout), cols,
                                           TensorType((4, 3, 3, 3), "float32"))
