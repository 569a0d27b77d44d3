"""A product whose inner dimension is 1 (one input feature; a one-output head's input gradient)
is an outer product, which NumPy's matmul computes without BLAS at 4x the time of a multiply
(the speed audit: a dense layer of one input at 8x PyTorch's inference). The NumPy backend
multiplies instead: the same numbers, bit for bit."""

import numpy as np
import pytest

from nnrun.backends import get_backend

numpy_backend = get_backend("numpy")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes", [((7, 1), (1, 5)), ((3, 7, 1), (3, 1, 5)), ((7, 1), (1, 1))])
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
