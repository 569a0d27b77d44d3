"""The coefficients of backends/numpy_backend.py's float32 GELU CDF term, fitted again, and
their error.

    python benchmarks/erf_fit.py          # needs scipy (its float64 erfc is the reference)

erfc(z) = t * exp(P(t) - z^2) for z >= 0, t = 1 / (1 + z / 2): P(t) = log(erfc(z) / t) + z^2 is
smooth on t in (0, 1] (it tends to -log(2 sqrt(pi)) as z grows), so a polynomial of degree 9,
fitted by least squares on Chebyshev nodes, gives erfc within 5e-8 relative (evaluated in
float64) from z = 0 to past float32's range. Prints the coefficients, lowest degree first, and
the float32 kernel's largest error (1 + erf(x / sqrt(2))), and GELU's through it beside
PyTorch's float32 GELU (if torch is installed), against float64.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial import chebyshev, polynomial
from scipy.special import erf, erfc

DEGREE, NODES, Z_MAX = 9, 4000, 10.0  # erfc(10) = 2e-45: below float32's smallest number


def fitted() -> np.ndarray:
    low = 1 / (1 + Z_MAX / 2)
    nodes = np.cos(np.pi * (np.arange(NODES) + 0.5) / NODES)  # on [-1, 1]
    t = low + (nodes + 1) * (1 - low) / 2
    z = 2 * (1 - t) / t
    in_chebyshev = chebyshev.chebfit(nodes, np.log(erfc(z) / t) + z * z, DEGREE)
    # as a polynomial of t: u = (2 t - (1 + low)) / (1 - low)
    coefficients = np.zeros(1)
    for c in chebyshev.cheb2poly(in_chebyshev)[::-1]:
        coefficients = polynomial.polyadd(
            polynomial.polymul(coefficients, [-(1 + low) / (1 - low), 2 / (1 - low)]), [c])
    return coefficients


def main() -> None:
    coefficients = fitted()
    print("coefficients, lowest degree first:", [float(c) for c in coefficients])
    z = np.linspace(0, 9.5, 400_001)
    t = 1 / (1 + z / 2)
    relative = np.abs(t * np.exp(polynomial.polyval(t, coefficients) - z * z) / erfc(z) - 1)
    print(f"erfc in float64: largest relative error {relative.max():.2e}")
    from nnrun.backends.numpy_backend import NumpyBackend

    x = np.linspace(-10, 10, 4_000_001, dtype=np.float32)
    cdf = np.empty_like(x)
    NumpyBackend().gelu_cdf_into(x, cdf)
    exact_cdf = 1 + erf(x.astype(np.float64) / math.sqrt(2))
    print(f"1 + erf(x / sqrt(2)) in float32: largest absolute error "
          f"{np.abs(cdf - exact_cdf).max():.2e}")
    try:
        import torch
    except ImportError:
        return
    exact = 0.5 * x.astype(np.float64) * exact_cdf
    theirs = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    for name, values in (("nnrun", np.float32(0.5) * x * cdf), ("PyTorch", theirs)):
        print(f"GELU in float32, {name}: largest absolute error "
              f"{np.abs(values - exact).max():.2e}")


if __name__ == "__main__":
    main()
