"""Large matrix products on NumPy run on BLAS's own threads, and only those (numpy_backend.py)."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info

from nnrun.backends import base, numpy_backend
from nnrun.backends.base import kernels_split, products_on_workers, run_in_slices
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


def test_products_go_to_the_workers_within_a_step_that_splits_other_kernels(monkeypatch):
    """BLAS's threads busy-wait after a call, taking the cores nnrun's workers need next, so a
    step uses one kind of thread: BLAS's where no kernel is split, else nnrun's workers."""
    asked = []
    real = numpy_backend._blas_threads

    def spy(count):
        asked.append(count)
        return real(count)

    monkeypatch.setattr(numpy_backend, "_blas_threads", spy)
    backend = NumpyBackend()
    rng = np.random.default_rng(2)
    for shape in [(512, 96), (96, 512)]:  # split by rows, then by columns
        a = rng.standard_normal((shape[0], 784)).astype(np.float32)
        b = rng.standard_normal((784, shape[1])).astype(np.float32)
        out = np.empty(shape, np.float32)
        with thread_limit(2), products_on_workers(True):
            before = kernels_split()
            backend.matmul_into(a, b, out)
            assert kernels_split() == before  # a product is not counted as a kernel split
        assert asked == []
        np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-4)


def test_a_step_takes_blas_threads_only_when_it_splits_no_kernel(monkeypatch, tmp_path):
    import nnrun
    from nnrun.runtime.gradcheck import random_batch

    asked = []
    real = numpy_backend._blas_threads
    monkeypatch.setattr(numpy_backend, "_blas_threads",
                        lambda count: asked.append(count) or real(count))
    spec = tmp_path / "mlp.yaml"
    spec.write_text("model: {input_shape: [784], layers: [{type: dense, units: 256, "
                    "activation: relu}, {type: dense, units: 10}]}\nloss: cross_entropy\n"
                    "optimizer: {type: sgd, lr: 0.1}\ntrain: {batch_size: 128}\n")
    for threshold in [1, 1 << 40]:  # every batch-parallel kernel split, then none
        monkeypatch.setattr(base, "PARALLEL_MIN_BYTES", threshold)
        asked.clear()
        model = nnrun.compile(spec)
        x, y = random_batch(model, 128, np.random.default_rng(0))
        feeds = model.step_feeds(model.train_state(), x, y, 0.1, 1, 0)
        with thread_limit(2):
            for _ in range(3):
                model.step_executor.run(feeds)
        if threshold == 1:
            assert asked == []  # the products went to the workers
        else:  # the first run finds that no kernel splits; later runs use BLAS's threads
            assert asked and set(asked) == {2}
