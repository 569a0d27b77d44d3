"""Helpers the ops share (compiler/ops/common.py)."""

from __future__ import annotations

import itertools

import numpy as np

from nnrun.compiler.ops.common import moved


def test_moved_is_moveaxis():
    x = np.arange(120.0).reshape(2, 3, 4, 5)
    for source, destination in itertools.product(range(-4, 4), repeat=2):
        want = np.moveaxis(x, source, destination)
        got = moved(x, source, destination)
        assert got.shape == want.shape and got.strides == want.strides
        assert np.shares_memory(got, x)
        np.testing.assert_array_equal(got, want)
