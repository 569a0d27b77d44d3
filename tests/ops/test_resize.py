"""Linear upsampling along a long axis (two neighbours per output, phase by phase) against the
interpolation matrix it replaces there: one function, whichever way it is computed."""

import numpy as np
import pytest

from nnrun.backends import get_backend
from nnrun.compiler.ops import REGISTRY, resize
from nnrun.compiler.ops.resize import UpsampleAttrs

numpy_backend = get_backend("numpy")


@pytest.mark.parametrize("scale, shape", [((2,), (3, 2, 9)), ((5,), (1, 3, 1)), ((4,), (2, 1, 2)),
                                          ((2, 3), (2, 2, 5, 4)), ((1, 4), (1, 1, 3, 7))])
def test_the_phase_form_equals_the_matrix_form(scale, shape, monkeypatch):
    rng = np.random.default_rng(0)
    attrs = UpsampleAttrs(scale, "linear" if len(scale) == 1 else "bilinear")
    name = f"upsample{len(scale)}d"
    x = rng.standard_normal(shape)
    g = rng.standard_normal((*shape[:2], *(n * s for n, s in zip(shape[2:], scale))))

    def both(length):
        monkeypatch.setattr(resize, "MATRIX_LENGTH", length)
        return (REGISTRY[name].forward(numpy_backend, attrs, x),
                REGISTRY[f"{name}_grad"].forward(numpy_backend, attrs, g))

    # 4: one axis of a 2-D map long, the other short (the spare buffer sized for the one)
    for length in (0, 4):
        for by_phase, by_matrix in zip(both(length), both(10**9)):
            np.testing.assert_allclose(by_phase, by_matrix, rtol=1e-13, atol=1e-14)
