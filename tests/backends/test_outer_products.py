"""A product whose inner dimension is 1 (one input feature; a one-output head's input gradient)
is an outer product, which NumPy's matmul computes without BLAS at 4x the time of a multiply
(the speed audit: a dense layer of one input at 8x PyTorch's inference). The NumPy backend
multiplies instead, from OUTER_MULTIPLY_MIN output values: the same numbers, bit for bit."""

import tracemalloc

import numpy as np
import pytest

from nnrun.backends import get_backend
from nnrun.backends.numpy_backend import OUTER_MULTIPLY_MIN, SHORT_BUFFER

numpy_backend = get_backend("numpy")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes", [((7, 1), (1, 5)), ((3, 7, 1), (3, 1, 5)), ((7, 1), (1, 1)),
                                    ((300, 1), (1, 100)), ((4, 70, 1), (4, 1, 60)),
                                    ((20000, 1), (1, 1))])
def test_an_outer_product_is_matmuls_to_the_bit(dtype, shapes):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(shape).astype(dtype) for shape in shapes)
    out = np.empty(np.broadcast_shapes(a.shape[:-1] + (1,), b.shape[:-2] + (1, b.shape[-1])),
                   dtype)
    numpy_backend.matmul_into(a, b, out)
    np.testing.assert_array_equal(out, np.matmul(a, b))


def test_a_transposed_column_as_the_backward_passes_it():
    rng = np.random.default_rng(1)
    g, weight = rng.standard_normal((64, 1)), rng.standard_normal((32, 1))
    out = np.empty((64, 32))
    numpy_backend.matmul_into(g, weight.T, out)
    np.testing.assert_array_equal(out, g @ weight.T)


def test_a_small_outer_product_takes_no_buffers_of_numpys():
    """The docs audit: csv-regression's step peaked 14.7% over its estimate, from the multiply's
    broadcast over rows shorter than NumPy's buffer size (about 4 KB of buffers of its own);
    below OUTER_MULTIPLY_MIN matmul takes its place."""
    a, b = np.ones((32, 1), np.float32), np.ones((1, 32), np.float32)
    out = np.empty((32, 32), np.float32)
    assert out.size < OUTER_MULTIPLY_MIN
    saved = np.setbufsize(SHORT_BUFFER)  # as the planned executor runs a step
    tracemalloc.start()
    try:
        numpy_backend.matmul_into(a, b, out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        np.setbufsize(saved)
    assert peak < 1024, peak
    np.testing.assert_array_equal(out, a @ b)
