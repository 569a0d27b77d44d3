"""The NumPy backend: the generic kernels of base.py with numpy as the array module."""

from __future__ import annotations

import numpy as np
from scipy import special

from .base import ArrayBackend


class NumpyBackend(ArrayBackend):
    name = "numpy"
    xp = np

    def to_host(self, array):
        return np.asarray(array)

    def rng(self, seed):
        return np.random.default_rng(seed)

    def erf(self, x):
        return special.erf(x).astype(x.dtype, copy=False)
