"""ELU and softplus in float32 compute expm1 and log1p from tanh and log (NumPy's float32
expm1 and log1p are not vectorised): within 5.5 units in the last place of float64's (a scan of
every float32 in [-16, 16] found 5.34 at most, softplus at -4.152139: the float32 exp and log's
own errors, which log(1 + e) ~ e passes on), also near 0, where exp(x) - 1 and log(1 + e) lose
every digit."""

import numpy as np
import pytest

from nnrun.backends import get_backend
from nnrun.compiler.ops import REGISTRY, NoAttrs
from nnrun.compiler.ops.activation import AlphaAttrs

numpy_backend = get_backend("numpy")


def _values() -> np.ndarray:
    rng = np.random.default_rng(0)
    tiny = rng.uniform(-1e-6, 1e-6, 2000)
    wide = rng.standard_normal(20000) * 8
    edges = [0.0, -0.0, -1e-30, 1e-30, -20.0, 20.0, -88.0, 88.0, np.inf, -np.inf,
             -0.0032025564, -2.8488111,  # a review's worst: 3.27 and 4.02 units
             -4.152139, -3.453807, -2.7568996]  # a numerics audit's: 5.34, 5.31, 5.12
    return np.concatenate([tiny, wide, edges]).astype(np.float32)


@pytest.mark.parametrize("name, attrs", [("elu", AlphaAttrs(1.0)), ("elu", AlphaAttrs(0.3)),
                                         ("softplus", NoAttrs())])
def test_float32_is_within_five_and_a_half_units_in_the_last_place(name, attrs):
    x = _values()
    got = REGISTRY[name].forward(numpy_backend, attrs, x)
    want = REGISTRY[name].forward(numpy_backend, attrs, x.astype(np.float64)).astype(np.float32)
    assert got.dtype == np.float32
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite], want[~finite])
    exact = REGISTRY[name].forward(numpy_backend, attrs, x.astype(np.float64))[finite]
    ulps = np.abs(got[finite] - exact) / np.spacing(np.abs(want[finite]))
    assert ulps.max() <= 5.5, (ulps.max(), x[finite][ulps.argmax()])


# GELU's CDF term, 1 + erf(x / sqrt(2)), in float32: a polynomial form of erfc in NumPy's
# vectorised operations (backends/numpy_backend.py), not SciPy's erf an element at a time (the
# speed audit: GELU took 7x PyTorch's inference time).

def _exact_cdf_term(x: np.ndarray) -> np.ndarray:
    import math

    return np.array([math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])


def test_gelus_float32_cdf_term_is_within_5e_7_and_relatively_exact_in_the_negative_tail():
    rng = np.random.default_rng(1)
    x = np.concatenate([_values(), rng.uniform(-14, 14, 20000),
                        np.linspace(-12, 0, 5001)]).astype(np.float32)
    finite = np.isfinite(x)
    got = np.empty_like(x)
    numpy_backend.gelu_cdf_into(x, got)
    exact = _exact_cdf_term(x[finite])
    assert np.abs(got[finite] - exact).max() <= 5e-7  # PyTorch's GELU: 4e-7 from the exact
    tail = (x[finite] < 0) & (x[finite] >= -12)  # where 1 + erf would have lost every digit
    assert (np.abs(got[finite][tail] - exact[tail]) / exact[tail]).max() <= 2e-5
    edges = np.float32([np.inf, -np.inf, np.nan, 0.0, -0.0, 3e38, -3e38])
    numpy_backend.gelu_cdf_into(edges, edges)  # in place, as the step calls it
    np.testing.assert_array_equal(edges, np.float32([2, 0, np.nan, 1, 1, 2, 0]))


def test_gelus_cdf_term_is_erfs_elsewhere():
    """float64, and float32 views that are not contiguous, take 1 + erf(x / sqrt(2)) as before:
    exact to an ulp."""
    rng = np.random.default_rng(2)
    wide = rng.standard_normal((64, 8)).astype(np.float32)
    strided, out = wide[:, ::2], np.empty((64, 4), np.float32)
    numpy_backend.gelu_cdf_into(strided, out)
    expected = (1 + numpy_backend.erf((strided / np.float32(np.sqrt(2))).astype(np.float32)))
    np.testing.assert_array_equal(out, expected.astype(np.float32))
    x = rng.standard_normal(1000) * 4
    got = np.empty_like(x)
    numpy_backend.gelu_cdf_into(x, got)
    np.testing.assert_allclose(got, _exact_cdf_term(x), rtol=1e-14, atol=1e-15)


def test_a_float32_gelu_nets_gradients_are_float64s_within_float32_rounding():
    """The review: gradcheck runs in float64, so nothing checked the gradients through the
    float32 CDF term (its forward value and gelu_grad_cdf's use of it)."""
    import nnrun

    text = ("model:\n  input_shape: [16]\n  layers:\n"
            "    - {type: dense, units: 32, activation: gelu}\n"
            "    - {type: dense, units: 4}\nloss: cross_entropy\n")
    wide, narrow = (nnrun.compile(nnrun.load_spec_text(text + f"dtype: {dtype}\n"))
                    for dtype in ("float64", "float32"))
    params = wide.init_params(seed=0)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((64, 16)) * 2, rng.integers(0, 4, 64)
    loss64, grads64 = wide.loss_and_grads(params, x, y)
    loss32, grads32 = narrow.loss_and_grads(
        {name: value.astype(np.float32) for name, value in params.items()}, x, y)
    assert abs(loss32 - loss64) <= 1e-6 * abs(loss64)
    for name, grad in grads64.items():
        np.testing.assert_allclose(grads32[name], grad, rtol=2e-4, atol=2e-6 * np.abs(grad).max())
