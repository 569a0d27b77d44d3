"""Large matrix products on NumPy run on BLAS's own threads, and only those (numpy_backend.py)."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info

from nnrun.backends import numpy_backend
from nnrun.backends.base import run_in_slices
from nnrun.backends.numpy_backend import NumpyBackend
from nnrun.runtime.threads import thread_limit


def _blas_threads_now() -> set:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_only_large_products_outside_the_workers_take_blas_threads(monkeypatch):
    asked = []
    real = numpy_backend._blas_threads

    def spy(count):
        asked.append(count)
        return real(count)

    monkeypatch.setattr(numpy_backend, "_blas_threads", spy)
    backend = NumpyBackend()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((128, 784)).astype(np.float32)
    b = rng.standard_normal((784, 256)).astype(np.float32)
    out = np.empty((128, 256), np.float32)
    with thread_limit(2):
        backend.matmul_into(a, b, out)  # 51 MFLOP: BLAS's threads
        assert _blas_threads_now() == {1}  # and back to one after it
        np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-4)
        backend.matmul_into(a[:8], b[:, :8], out[:8, :8])  # small: one thread
        # on nnrun's workers BLAS stays on one thread, whatever the size
        run_in_slices(lambda rows: backend.matmul_into(a[rows], b, out[rows]), 128, 1 << 30)
    assert asked == [2]
    with thread_limit(1):
        backend.matmul_into(a, b, out)
    assert asked == [2]


def test_a_product_on_blas_threads_is_the_same_run_to_run():
    backend = NumpyBackend()
    rng = np.random.default_rng(1)
    a = rng.standard_normal((256, 512)).astype(np.float32)
    b = rng.standard_normal((512, 384)).astype(np.float32)
    results = []
    with thread_limit(2):
        for _ in range(3):
            out = np.empty((256, 384), np.float32)
            backend.matmul_into(a, b, out)
            results.append(out)
    for out in results[1:]:
        np.testing.assert_array_equal(out, results[0])
