"""The training loop's traffic with the device: the dataset is copied to the backend once, and
an epoch reads from it once plus once per progress-bar refresh, whatever its number of steps.
Counted on a NumPy backend that counts its transfers; the same on CuPy where there is one."""

import io
import json

import numpy as np
import pytest
from rich.console import Console

import nnrun
from nnrun.backends import BackendUnavailable
from nnrun.backends.numpy_backend import NumpyBackend
from nnrun.compiler.schema import Accuracy, MseMetric, TopKAccuracy
from nnrun.runtime import batches, progress
from nnrun.runtime.memory import MemoryLimitError
from nnrun.runtime.metrics import Totals, metric_total
from nnrun.runtime.progress import EpochProgress
from nnrun.runtime.train import TrainingError

SPEC = """
data: {dataset: digits, validation_split: 0.1}
model:
  layers:
    - {type: flatten}
    - {type: dense, units: 16, activation: relu}
    - {type: dropout, rate: 0.1}
    - {type: dense, units: 10}
optimizer: {type: adam, lr: 0.003}
train: {epochs: 2, batch_size: 16, metrics: [accuracy, mse]}
"""

DIVERGING = """
data: {dataset: blobs}
model:
  input_shape: [2]
  layers:
    - {type: dense, units: 8}
    - {type: dense, units: 8}
    - {type: dense, units: 1}
loss: mse
optimizer: {type: sgd, lr: 0.05, schedule: {type: exponential, gamma: 10}}
train: {epochs: 6, batch_size: 40, metrics: [mae]}
"""


def counting(base):
    """`base` with its transfers counted: reads (device to host) and the shapes copied in."""

    class Counting(base):
        def __init__(self):
            super().__init__()
            self.reads, self.copied = 0, []

        def to_host(self, array):
            self.reads += 1
            return super().to_host(array)

        def from_host(self, array):
            self.copied.append(np.shape(array))
            return super().from_host(array)

    return Counting


CountingNumpy = counting(NumpyBackend)


def train(tmp_path, backend, text=SPEC, name="run", **options):
    out = tmp_path / name
    nnrun.train(nnrun.load_spec_text(text), backend=backend, out_dir=out, quiet=True, **options)
    return rows(out)


def rows(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("epoch_s", "samples_per_s")}
            for line in lines]


def image_copies(backend) -> list:
    """The copies of input images ([N, 1, 8, 8]): whole splits, or batches."""
    return [shape for shape in backend.copied if len(shape) == 4]


@pytest.fixture
def every_step_refresh(monkeypatch):
    """A progress bar that wants the running loss after every step."""
    monkeypatch.setattr(EpochProgress, "refresh_due", lambda self: True)


def test_reads_do_not_grow_with_the_steps_and_the_data_is_copied_once(tmp_path):
    short, long = CountingNumpy(), CountingNumpy()
    train(tmp_path, short, name="short", max_steps=3)
    train(tmp_path, long, name="long", max_steps=24)
    assert short.reads == long.reads
    # train, val and test, each once: no batch is copied
    assert [shape[0] for shape in image_copies(long)] == [1293, 144, 360]


def test_each_progress_refresh_is_one_read(tmp_path, every_step_refresh):
    refreshed, quiet = CountingNumpy(), CountingNumpy()
    train(tmp_path, refreshed, name="refreshed", max_steps=24)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpochProgress, "refresh_due", lambda self: False)
        train(tmp_path, quiet, name="quiet", max_steps=24)
    assert refreshed.reads - quiet.reads == 2 * 24  # 2 epochs of 24 steps


def test_the_running_loss_shown_includes_the_step_just_taken(tmp_path, every_step_refresh,
                                                             monkeypatch):
    shown = []
    monkeypatch.setattr(EpochProgress, "update",
                        lambda self, running_loss=None: shown.append(running_loss))
    history = train(tmp_path, NumpyBackend(), max_steps=3)
    assert len(shown) == 6 and None not in shown  # 2 epochs of 3 steps, each one read
    for epoch, row in enumerate(history):
        assert shown[3 * epoch + 2] == pytest.approx(row["train_loss"], rel=1e-12)


def test_data_over_the_budget_goes_batch_by_batch(tmp_path, monkeypatch):
    monkeypatch.setenv(batches.LIMIT_VARIABLE, "0")
    backend = CountingNumpy()
    train(tmp_path, backend, max_steps=5)
    copies = [shape[0] for shape in image_copies(backend)]
    assert copies == [16] * 5 + [144] + [16] * 5 + [144] + [144, 360]  # the final evaluation


def test_the_budget_takes_the_splits_in_order_while_they_fit(tmp_path, monkeypatch):
    model = nnrun.compile(nnrun.load_spec_text(SPEC))
    split = type("Split", (), {})
    small, large = split(), split()
    small.x, small.y = np.zeros((10, 1, 8, 8), np.float32), np.zeros(10, np.int64)
    large.x, large.y = np.zeros((1000, 1, 8, 8), np.float32), np.zeros(1000, np.int64)
    size = batches.host_batch(model, small.x, small.y).nbytes
    splits = {"train": large, "val": small, "test": small}
    assert list(batches.resident_splits(model, splits, 2 * size)) == ["val", "test"]
    assert list(batches.resident_splits(model, splits, 10**9)) == ["train", "val", "test"]
    monkeypatch.setenv(batches.LIMIT_VARIABLE, "2MiB")
    assert batches.device_data_budget(model, 16) == (2 * 2**20, batches.LIMIT_VARIABLE)
    monkeypatch.setenv(batches.LIMIT_VARIABLE, "lots")
    with pytest.raises(MemoryLimitError, match="NNRUN_DEVICE_DATA_LIMIT: 'lots' is not a size"):
        batches.device_data_budget(model, 16)


def test_the_paths_give_the_same_numbers_bit_for_bit(tmp_path, monkeypatch):
    resident = train(tmp_path, "numpy", name="resident")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpochProgress, "refresh_due", lambda self: True)
        read_every_step = train(tmp_path, "numpy", name="every-step")
    monkeypatch.setenv(batches.LIMIT_VARIABLE, "0")
    on_host = train(tmp_path, "numpy", name="host")
    assert resident == read_every_step == on_host


def test_totals_are_the_sums_of_reading_each_batch(tmp_path):
    """Totals on the backend add what the loop once read batch by batch, in float64, in the
    same order: the same numbers bit for bit."""
    rng = np.random.default_rng(0)
    metrics = [Accuracy(type="accuracy"), TopKAccuracy(type="top_k_accuracy", k=2),
               MseMetric(type="mse")]
    totals = Totals(metrics, "cross_entropy", backend=NumpyBackend())
    loss, sums, count = 0.0, [0.0, 0.0, 0.0], 0
    for n in (7, 16, 16, 3):
        logits = rng.normal(size=(n, 4)).astype(np.float32)
        labels = rng.integers(0, 4, n)
        outputs = {"loss": np.float32(rng.random()).reshape(()), "logits": logits,
                   "prediction": logits}
        totals.add(outputs, batches.Batch(logits, labels, labels))
        loss += float(outputs["loss"]) * n
        count += n
        sums = [total + float(metric_total(metric, logits, logits, labels, "cross_entropy")[0])
                for total, metric in zip(sums, metrics)]
    totals.read()
    assert (totals.loss, totals.count, totals.steps) == (loss, count, 4)
    assert list(totals.metrics.values()) == [(total, count) for total in sums]


def test_a_divergence_found_at_a_later_read_names_its_step(tmp_path, every_step_refresh):
    with pytest.raises(TrainingError, match="loss became") as at_once:
        train(tmp_path, "numpy", DIVERGING, name="at-once")
    lazy = CountingNumpy()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpochProgress, "refresh_due", lambda self: False)
        with pytest.raises(TrainingError, match="loss became") as later:
            train(tmp_path, lazy, DIVERGING, name="later")
    step = str(at_once.value).split(";")[0]
    assert step == str(later.value).split(";")[0] and "step" in step
    # what the epoch measured up to the step, and no checkpoint of the diverged epoch
    measured = rows(tmp_path / "later")
    assert measured == rows(tmp_path / "at-once") and "diverged_at_batch" in measured[-1]
    meta = json.loads(str(np.load(tmp_path / "later" / "last.npz")["meta"]))
    assert meta["epoch"] == measured[-1]["epoch"] - 1


def test_a_quiet_progress_bar_never_asks_for_a_read():
    progress = EpochProgress(1, 1, 10, disabled=True)
    assert not any(progress.refresh_due() for _ in range(10))


def test_a_bar_on_a_terminal_asks_for_a_read_a_few_times_per_second(monkeypatch):
    monkeypatch.setattr(progress, "stderr_console", lambda: Console(
        file=io.StringIO(), force_terminal=True, width=80, color_system=None))
    clock = [100.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    bar = EpochProgress(1, 1, 10)
    assert bar.refresh_due() and not bar.refresh_due()  # the first step's loss, then a pause
    clock[0] += progress.REFRESH_S
    assert bar.refresh_due() and not bar.refresh_due()
    bar.close({"epoch": 1, "train_loss": 0.5})


@pytest.mark.gpu
def test_on_cupy_the_reads_do_not_grow_with_the_steps(tmp_path):
    try:
        from nnrun.backends.cupy_backend import CupyBackend

        short, long = counting(CupyBackend)(), counting(CupyBackend)()
    except (ImportError, BackendUnavailable) as error:
        pytest.skip(str(error))
    train(tmp_path, short, name="short", max_steps=3)
    on_gpu = train(tmp_path, long, name="long", max_steps=24)
    assert short.reads == long.reads
    assert [shape[0] for shape in image_copies(long)] == [1293, 144, 360]
    on_cpu = train(tmp_path, "numpy", name="cpu", max_steps=24)
    for gpu_row, cpu_row in zip(on_gpu, on_cpu, strict=True):
        assert gpu_row.keys() == cpu_row.keys()
        # the losses after 24 float32 steps of each backend's own summation order (a class
        # count such as accuracy may move by one sample)
        for key in ("train_loss", "val_loss"):
            assert gpu_row[key] == pytest.approx(cpu_row[key], rel=1e-3), key
