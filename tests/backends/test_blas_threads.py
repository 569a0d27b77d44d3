"""Large matrix products on NumPy run on BLAS's own threads, and only those (numpy_backend.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from nnrun.backends import base, numpy_backend
from nnrun.backends.base import (BLAS_THREADS, WORKER_THREADS, run_in_slices, step_threads,
                                 work_counters)
from nnrun.backends.numpy_backend import NumpyBackend
from nnrun.runtime import executor
from nnrun.runtime.threads import thread_limit


def _blas_threads_now() -> set:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


@pytest.fixture
def asked(monkeypatch) -> list:
    """The thread counts BLAS was asked to run on, one per product given BLAS's threads."""
    calls, real = [], numpy_backend._blas_threads
    monkeypatch.setattr(numpy_backend, "_blas_threads",
                        lambda count: calls.append(count) or real(count))
    return calls


def test_only_large_products_outside_the_workers_take_blas_threads(asked):
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


def test_a_step_on_the_workers_splits_its_large_products_over_them(asked):
    """BLAS's threads busy-wait after a call, taking the cores nnrun's workers need next, so a
    step uses one kind of thread (base.step_threads)."""
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
def test_a_step_chooses_its_threads_from_its_first_run(monkeypatch, tmp_path, copies_dominate,
                                                       asked):
    """Kernels moving many bytes per flop of the products: everything on the workers; else
    the products on BLAS's threads and the kernels on one thread."""
    monkeypatch.setattr(base, "PARALLEL_MIN_BYTES", 1)  # every batch-parallel kernel counts
    monkeypatch.setattr(executor, "WORKERS_MIN_BYTES_PER_FLOP", 0 if copies_dominate else 1e9)
    model, feeds = _mlp(tmp_path, 128)
    with thread_limit(2):
        model.step_executor.run(feeds)  # the first run: on the workers, counting
        asked.clear()
        model.step_executor.run(feeds)
    chosen = model.step_executor.program(128).threads
    if copies_dominate:
        assert chosen == {2: WORKER_THREADS} and asked == []
    else:
        assert chosen == {2: BLAS_THREADS} and asked and set(asked) == {2}


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


def test_a_kernel_takes_the_way_that_has_been_faster_and_now_and_then_the_other():
    costs = base.SplitCosts()
    assert costs.worth_splitting("k")  # nothing measured: split first
    costs.record("k", True, 9e-3)  # the first call, which touches its memory first: not kept
    assert costs.worth_splitting("k")
    costs.record("k", True, 400e-6)
    assert not costs.worth_splitting("k")  # then once on one thread
    costs.record("k", False, 60e-6)
    answers = [costs.worth_splitting("k") for _ in range(2 * costs.PROBE_EVERY)]
    assert answers.count(True) == 2  # one thread, but a split every PROBE_EVERY calls
    costs.record("k", True, 5e-3)  # one stall of the host changes nothing
    assert not costs.worth_splitting("k")
    for _ in range(costs.KEPT):  # the host quiet again: splits got fast
        costs.record("k", True, 30e-6)
    assert costs.worth_splitting("k")


def test_a_kernel_gives_the_same_numbers_split_or_not(monkeypatch):
    """When a split does not pay, the split's slices run one after the other on the calling
    thread: the same calls, so the same numbers, bit for bit, as split."""
    import nnrun
    from nnrun.runtime.gradcheck import random_batch
    from stepping import train_steps

    monkeypatch.setattr(base, "PARALLEL_MIN_BYTES", 0)
    results = []
    for pays in (True, False):
        monkeypatch.setattr(base.SPLIT_COSTS, "worth_splitting", lambda key, pays=pays: pays)
        model = nnrun.compile(str(Path(__file__).parents[2] / "benchmarks/workloads/lenet5.yaml"))
        x, y = random_batch(model, 12, np.random.default_rng(3))
        with thread_limit(2):
            results.append(train_steps(model, x, y, steps=2)[1])
    for name, value in results[0].items():
        np.testing.assert_array_equal(value, results[1][name], err_msg=name)


@pytest.mark.parametrize("starting", [0, 1])
def test_a_split_whose_workers_cannot_start_runs_each_slice_once_here(monkeypatch, starting):
    """Under an address-space limit a worker thread could not start: `nnrun eval` ended in an
    internal error (RuntimeError: can't start new thread). Its slice, queued already, must not
    run later or twice (the session's review): no worker runs when not all can start."""
    import threading

    start = threading.Thread.start
    started = []

    def limited(thread):
        if thread.name.startswith(base._WORKER_PREFIX):
            if len(started) >= starting:
                raise RuntimeError("can't start new thread")
            started.append(thread)
        start(thread)

    monkeypatch.setitem(base._WORKERS, "pool", None)
    monkeypatch.setitem(base._WORKERS, "pool_size", 0)
    monkeypatch.setattr(threading.Thread, "start", limited)
    done = []
    base._split_over_workers(lambda part: done.append((part.start, threading.current_thread())),
                             base.batch_bounds(10, 3))
    assert sorted(start for start, _ in done) == [0, 3, 6]
    assert all(thread is threading.current_thread() for _, thread in done)
    for thread in started:
        thread.join(timeout=5)
    assert len(done) == 3  # nothing ran afterwards on a worker that did start


def test_a_product_on_the_workers_gives_the_same_numbers_split_or_not(monkeypatch):
    backend = NumpyBackend()
    rng = np.random.default_rng(5)
    a = rng.standard_normal((300, 700)).astype(np.float32)
    b = rng.standard_normal((700, 200)).astype(np.float32)
    results = []
    for pays in (True, False):
        monkeypatch.setattr(base.SPLIT_COSTS, "worth_splitting", lambda key, pays=pays: pays)
        out = np.empty((300, 200), np.float32)
        with thread_limit(2), step_threads(WORKER_THREADS):
            backend.matmul_into(a, b, out)
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])


def test_a_step_resumed_in_a_new_process_rounds_as_the_one_that_went_on(tmp_path):
    """The determinism audit: a step's first run is on the workers (it counts the work that
    chooses the threads) and the later ones on BLAS's threads, whose products round otherwise.
    A run resumed from a checkpoint, or `nnrun eval` in a new process, made its first run on
    the workers where the run that went on was on BLAS's threads: different weights, a
    different val_loss. The first run is now run again on the threads it chose."""
    model, feeds = _mlp(tmp_path, 256)
    with thread_limit(2):
        _, updates = model.step_executor.run(feeds)
        first = {name: np.array(value) for name, value in updates.items()}  # the checkpoint
        feeds.update(updates)
        _, went_on = model.step_executor.run(feeds)
    assert model.step_executor.program(256).threads == {2: BLAS_THREADS}
    resumed, resumed_feeds = _mlp(tmp_path, 256)
    resumed_feeds.update(first)
    with thread_limit(2):
        _, after_resume = resumed.step_executor.run(resumed_feeds)
    for name, value in went_on.items():
        np.testing.assert_array_equal(after_resume[name], value, err_msg=name)


def test_the_slices_on_workers_keep_the_callers_numpy_error_settings(monkeypatch):
    """np.errstate is the thread's own: an overflow the caller silenced (evaluation of weights
    that overflow) printed NumPy's warning from the worker that ran its slice."""
    import warnings

    monkeypatch.setattr(base.SPLIT_COSTS, "worth_splitting", lambda key: True)
    big = np.full((64, 4), 3e38, np.float32)
    out = np.empty((64, 4), np.float32)
    with thread_limit(2), warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="ignore"):
            assert base.split_where_it_pays(lambda part: np.multiply(big[part], 10,
                                                                     out=out[part]), 64, 1)
    assert np.isinf(out).all()


def test_the_slices_on_workers_keep_the_callers_error_callback(monkeypatch):
    """np.geterr() gives the modes, not the callback: a caller's errstate(call=...) became a
    NameError in the worker (the third review)."""
    monkeypatch.setattr(base.SPLIT_COSTS, "worth_splitting", lambda key: True)
    big = np.full((64, 4), 3e38, np.float32)
    out = np.empty((64, 4), np.float32)
    seen = []
    with thread_limit(2), np.errstate(over="call", call=lambda kind, flag: seen.append(kind)):
        assert base.split_where_it_pays(lambda part: np.multiply(big[part], 10, out=out[part]),
                                        64, 1)
    assert seen == ["overflow", "overflow"]


def test_an_evaluation_chooses_its_threads_per_batch_size(monkeypatch):
    """The review of the per-executor choice: a run's evaluation met its small validation
    batches first, took nnrun's workers, and its test batches of 1000 inherited them, where
    `nnrun eval` in a new process chose BLAS's threads for them: the final test_loss and eval's
    differed in the last digits. Evaluation graphs (no state to undo) choose per batch size;
    only a training step's choice, made on its full batch, serves its smaller last batch."""
    import nnrun

    chosen = []

    def by_size(before, after):  # the first run's counters: large products only at 1000
        chosen.append(BLAS_THREADS if after[1] - before[1] > 10**8 else WORKER_THREADS)
        return chosen[-1]

    monkeypatch.setattr(executor, "_threads_for", by_size)
    spec = nnrun.load_spec_text("model:\n  input_shape: [64]\n  layers:\n"
                                "    - {type: dense, units: 1000, activation: relu}\n"
                                "    - {type: dense, units: 10}\n")
    x = np.random.default_rng(0).normal(size=(1000, 64))
    outputs = []
    for first in (None, 5):
        model = nnrun.compile(spec)
        params = model.init_params()
        with thread_limit(2):
            if first:
                model.forward(params, x[:first])
            outputs.append(model.forward(params, x))
        planned = getattr(model.forward_executor, "planned", model.forward_executor)
        assert planned.threads[1000, 2] == BLAS_THREADS
    np.testing.assert_array_equal(*outputs)
