"""Large matrix products on NumPy run on BLAS's own threads, and only those (numpy_backend.py)."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from nnrun.backends import base, numpy_backend
from nnrun.backends.base import WORKER_THREADS, run_in_slices, step_threads, work_counters
from nnrun.backends.numpy_backend import NumpyBackend
from nnrun.runtime import executor
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


def test_a_step_on_the_workers_splits_its_large_products_over_them(monkeypatch):
    """BLAS's threads busy-wait after a call, taking the cores nnrun's workers need next, so a
    step uses one kind of thread (base.step_threads)."""
    asked = []
    real = numpy_backend._blas_threads
    monkeypatch.setattr(numpy_backend, "_blas_threads",
                        lambda count: asked.append(count) or real(count))
    backend = NumpyBackend()
    rng = np.random.default_rng(2)
    for shape in [(512, 96), (96, 512)]:  # split by rows, then by columns
        a = rng.standard_normal((shape[0], 784)).astype(np.float32)
        b = rng.standard_normal((784, shape[1])).astype(np.float32)
        out = np.empty(shape, np.float32)
        with thread_limit(2), step_threads(WORKER_THREADS):
            before = work_counters()
            backend.matmul_into(a, b, out)
            assert work_counters() == (before[0], before[1] + 2 * out.size * 784)
        assert asked == []
        np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-4)


def _mlp(tmp_path, batch: int):
    import nnrun
    from nnrun.runtime.gradcheck import random_batch

    spec = tmp_path / "mlp.yaml"
    spec.write_text("model: {input_shape: [784], layers: [{type: dense, units: 256, "
                    "activation: relu}, {type: dense, units: 10}]}\nloss: cross_entropy\n"
                    "optimizer: {type: sgd, lr: 0.1}\ntrain: {batch_size: 128}\n")
    model = nnrun.compile(spec)
    x, y = random_batch(model, batch, np.random.default_rng(0))
    return model, model.step_feeds(model.train_state(), x, y, 0.1, 1, 0)


@pytest.mark.parametrize("copies_dominate", [True, False])
def test_a_step_chooses_its_threads_from_its_first_run(monkeypatch, tmp_path, copies_dominate):
    """Kernels moving many bytes per flop of the products: everything on the workers; else
    the products on BLAS's threads and the kernels on one thread."""
    asked, splits = [], []
    real_blas, real_split = numpy_backend._blas_threads, base.split_over_workers
    monkeypatch.setattr(numpy_backend, "_blas_threads",
                        lambda count: asked.append(count) or real_blas(count))
    monkeypatch.setattr(base, "split_over_workers",
                        lambda task, size: splits.append(size) or real_split(task, size))
    monkeypatch.setattr(base, "PARALLEL_MIN_BYTES", 1)  # every batch-parallel kernel counts
    monkeypatch.setattr(executor, "WORKERS_MIN_BYTES_PER_FLOP", 0 if copies_dominate else 1e9)
    model, feeds = _mlp(tmp_path, 128)
    with thread_limit(2):
        model.step_executor.run(feeds)  # the first run: on the workers, counting
        asked.clear(), splits.clear()
        model.step_executor.run(feeds)
    if copies_dominate:
        assert asked == [] and splits
    else:
        assert asked and set(asked) == {2} and splits == []


def test_the_choice_of_threads_changes_no_result_run_to_run(tmp_path):
    results = []
    for _ in range(2):
        model, feeds = _mlp(tmp_path, 256)
        with thread_limit(2):
            for _ in range(3):
                _, updates = model.step_executor.run(feeds)
                feeds.update(updates)
        results.append({name: np.array(value) for name, value in updates.items()})
    for name, value in results[0].items():
        np.testing.assert_array_equal(value, results[1][name])
