"""train.log_grad_norms: per-layer gradient norms per epoch and per step, the epoch line's
extremes, the same norms on both executors, and a diverged run's metrics kept."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import nnrun
from nnrun.runtime.model import Model
from nnrun.runtime.train import TrainingError

SPECS = Path(__file__).resolve().parents[2] / "specs"

MLP = """\
name: norms
seed: 0
data: {dataset: digits, validation_split: 0.1, limit: 300}
model:
  layers:
    - {type: flatten}
    - {type: dense, units: 16, activation: sigmoid}
    - {type: dense, units: 16, activation: sigmoid}
    - {type: dense, units: 10}
optimizer: {type: sgd, lr: 0.1}
train: {epochs: 2, batch_size: 32, log_grad_norms: {every_steps: 3}}
"""


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_epoch_rows_and_step_rows(tmp_path, capsys):
    nnrun.train(nnrun.load_spec_text(MLP), out_dir=tmp_path / "run")
    epochs = rows(tmp_path / "run" / "metrics.jsonl")
    steps = rows(tmp_path / "run" / "grad-norms.jsonl")
    batches = math.ceil(270 / 32)
    assert [row["step"] for row in steps] == list(range(3, 2 * batches + 1, 3))
    assert {row["epoch"] for row in steps} == {1, 2}
    for row in steps:  # a layer's norm is that of its weight and bias gradients together
        for layer in ("dense_1", "dense_2", "dense_3"):
            together = math.hypot(row[f"grad_norm/{layer}.weight"], row[f"grad_norm/{layer}.bias"])
            assert row[f"layer_grad_norm/{layer}"] == pytest.approx(together, rel=1e-12)
    for row in epochs:
        layers = {k.split("/")[1]: v for k, v in row.items() if k.startswith("layer_grad_norm/")}
        assert set(layers) == {"dense_1", "dense_2", "dense_3"}
        assert row["grad_norm_min"] == min(layers.values())
        assert row["grad_norm_max"] == max(layers.values())
        assert layers[row["grad_norm_min_layer"]] == row["grad_norm_min"]
        assert row["grad_norm_min_layer"] == "dense_1"  # sigmoids: the first layer's vanishes
    epoch_line = capsys.readouterr().err.splitlines()[0]
    assert (f"grad_norm {epochs[0]['grad_norm_min']:.3g} (dense_1) to "
            f"{epochs[0]['grad_norm_max']:.3g} ({epochs[0]['grad_norm_max_layer']})") in epoch_line


def test_true_logs_epochs_only(tmp_path):
    text = MLP.replace("log_grad_norms: {every_steps: 3}", "log_grad_norms: true")
    nnrun.train(nnrun.load_spec_text(text), out_dir=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "grad-norms.jsonl").exists()
    assert "grad_norm_max" in rows(tmp_path / "run" / "metrics.jsonl")[0]


def test_the_planned_executor_gives_the_reference_norms():
    source = nnrun.load_spec_text(MLP)
    x = np.random.default_rng(0).normal(size=(8, 1, 8, 8))
    y = np.arange(8)
    norms = []
    for optimized in (False, True):
        model = Model(source, optimized=optimized)
        feeds = model.step_feeds(model.train_state(), x, y, 0.1, 1, 0)
        outputs, _ = model.step_executor.run(feeds)
        norms.append({k: float(v) for k, v in outputs.items() if k.startswith("grad_norm/")})
    assert norms[0].keys() == norms[1].keys() and len(norms[0]) == 6
    for name in norms[0]:
        assert norms[1][name] == pytest.approx(norms[0][name], rel=1e-5)
    # and they are the norms of the gradients
    _, grads = Model(source).loss_and_grads(Model(source).init_params(), x, y)
    for name, grad in grads.items():
        assert norms[0][f"grad_norm/{name}"] == pytest.approx(np.linalg.norm(grad), rel=1e-5)


DIVERGING = f"""\
name: diverging
seed: 0
data: {{dataset: csv, path: {SPECS / "data" / "sine-regression.csv"}, normalize: none}}
model:
  input_shape: [3]
  layers:
    - {{type: dense, units: 16, activation: relu}}
    - {{type: dense, units: 1}}
loss: mse
optimizer: {{type: sgd, lr: 0.05, schedule: {{type: exponential, gamma: 10}}}}
train: {{epochs: 6, batch_size: 40, metrics: [mae], log_grad_norms: {{every_steps: 4}}}}
"""


@pytest.mark.parametrize("norms_on_resume", [True, False])
def test_a_diverged_run_keeps_its_metrics_up_to_the_divergence(tmp_path, norms_on_resume):
    """The learning rate grows 10x per epoch until the loss overflows. The resume from the
    last checkpoint drops the diverged step's norms also where it logs none itself (the
    review: turned off, a free change now, they were kept, NaN and all)."""
    text = DIVERGING
    with pytest.raises(TrainingError, match="loss became"):
        nnrun.train(nnrun.load_spec_text(text), out_dir=tmp_path / "run", quiet=True)
    epochs = rows(tmp_path / "run" / "metrics.jsonl")
    last = epochs[-1]
    assert len(epochs) >= 2 and "diverged_at_batch" in last
    assert all("diverged_at_batch" not in row for row in epochs[:-1])
    assert last["epoch"] == len(epochs)
    steps = rows(tmp_path / "run" / "grad-norms.jsonl")
    diverged = steps[-1]
    assert (diverged["epoch"], diverged["batch"]) == (last["epoch"], last["diverged_at_batch"])
    assert last["batches"] == diverged["batches"]  # where a plot draws the epoch's means
    assert not math.isfinite(diverged["loss"])
    # resuming from the last checkpoint drops the diverged epoch's rows
    calmer = text.replace("gamma: 10", "gamma: 1")
    if not norms_on_resume:
        calmer = calmer.replace("log_grad_norms: {every_steps: 4}", "log_grad_norms: false")
    nnrun.train(nnrun.load_spec_text(calmer), resume=tmp_path / "run", allow_changes=True,
                quiet=True)
    resumed = rows(tmp_path / "run" / "metrics.jsonl")
    assert len(resumed) == 6 and all("diverged_at_batch" not in row for row in resumed)
    steps = rows(tmp_path / "run" / "grad-norms.jsonl")
    assert steps and all(math.isfinite(row["loss"]) for row in steps)
    if not norms_on_resume:  # the epochs before the divergence, as logged then
        assert {row["epoch"] for row in steps} == set(range(1, last["epoch"]))


def test_specs_show_the_two_profiles(tmp_path):
    profiles = {}
    for name in ("vanishing-gradients.yaml", "vanishing-gradients-relu.yaml"):
        spec = nnrun.load_spec(SPECS / name, ["train.epochs=1"])
        nnrun.train(spec, out_dir=tmp_path / name, quiet=True)
        row = rows(tmp_path / name / "metrics.jsonl")[0]
        profiles[name] = row["layer_grad_norm/dense_1"] / row["layer_grad_norm/dense_6"]
    assert profiles["vanishing-gradients.yaml"] < 0.01  # the first layer's gradient vanishes
    assert profiles["vanishing-gradients-relu.yaml"] > 0.5  # ReLU and He keep it


def test_a_resume_may_start_or_stop_logging_norms_without_allow_changes(tmp_path):
    """The norms are outputs of the step, not part of its arithmetic: turning them on for the
    epochs a user wants to look at trains exactly as the run would have trained."""
    plain = MLP.replace("log_grad_norms: {every_steps: 3}", "log_grad_norms: false")
    nnrun.train(nnrun.load_spec_text(plain, overrides=["train.epochs=4"]),
                out_dir=tmp_path / "whole", quiet=True)
    nnrun.train(nnrun.load_spec_text(plain), out_dir=tmp_path / "run", quiet=True)
    nnrun.train(nnrun.load_spec_text(MLP, overrides=["train.epochs=3"]), resume=tmp_path / "run",
                quiet=True)
    nnrun.train(nnrun.load_spec_text(plain, overrides=["train.epochs=4"]), resume=tmp_path / "run",
                quiet=True)
    records = rows(tmp_path / "run" / "spec-changes.jsonl")  # the record keeps every change
    assert ["train.log_grad_norms" in record["changes"] for record in records] == [True, True]
    assert {row["epoch"] for row in rows(tmp_path / "run" / "grad-norms.jsonl")} == {3}
    logged = ["grad_norm_max" in row for row in rows(tmp_path / "run" / "metrics.jsonl")]
    assert logged == [False, False, True, False]
    whole = np.load(tmp_path / "whole" / "last.npz")
    resumed = np.load(tmp_path / "run" / "last.npz")
    for name in whole.files:
        if name != "meta":
            assert np.array_equal(whole[name], resumed[name]), name


def test_a_damaged_norms_file_is_named_with_what_the_resume_can_do_without(tmp_path):
    """A resume reads grad-norms.jsonl to drop its rows past the checkpoint, also when it logs
    none: a damaged line is one error whose way out fits an optional log (moved away, the
    resume goes on without the earlier per-step norms), not that of metrics.jsonl."""
    from nnrun.runtime.run_dir import RunDirectoryError

    nnrun.train(nnrun.load_spec_text(MLP), out_dir=tmp_path / "run", quiet=True)
    norms = tmp_path / "run" / "grad-norms.jsonl"
    lines = norms.read_text().splitlines()
    norms.write_text("\n".join([lines[0], "{damaged", *lines[1:]]) + "\n")
    plain = MLP.replace("log_grad_norms: {every_steps: 3}", "log_grad_norms: false")
    resume = nnrun.load_spec_text(plain, overrides=["train.epochs=3"])
    with pytest.raises(RunDirectoryError, match="line 2 is damaged.*move it away to resume "
                                                "without the per-step norms"):
        nnrun.train(resume, resume=tmp_path / "run", quiet=True)
    norms.rename(tmp_path / "norms.jsonl")
    nnrun.train(resume, resume=tmp_path / "run", quiet=True)
    assert len(rows(tmp_path / "run" / "metrics.jsonl")) == 3


def test_a_torn_norms_line_before_the_checkpoint_is_lost_rows_not_a_crash(tmp_path):
    """The run-directory audit: grad-norms.jsonl cut inside epoch 1's rows, last.npz of epoch
    2, was said to have "dropped its torn last line" and went on without epoch 2's rows for
    good. A torn line is of an epoch after the checkpoint's (its rows come before it); one
    that follows rows of an earlier epoch means rows were lost, refused as metrics.jsonl's."""
    from nnrun.runtime.run_dir import RunDirectoryError

    nnrun.train(nnrun.load_spec_text(MLP), out_dir=tmp_path / "run", quiet=True)
    norms = tmp_path / "run" / "grad-norms.jsonl"
    whole = norms.read_text()
    epoch_1 = [line for line in whole.splitlines() if '"epoch": 1,' in line]
    norms.write_text("\n".join(epoch_1) + '\n{"step": 1')  # torn inside epoch 1's rows
    resume = nnrun.load_spec_text(MLP, overrides=["train.epochs=3"])
    with pytest.raises(RunDirectoryError, match=r"its last line is torn, and it lacks the rows "
                                                r"after step 9 \(epoch 1\) through epoch 2, "
                                                "which last.npz has trained"):
        nnrun.train(resume, resume=tmp_path / "run", quiet=True)
    norms.write_text(whole + '{"step": 19, "epoch": 3, "lo')  # a crash in epoch 3's append
    nnrun.train(resume, resume=tmp_path / "run", quiet=True)
    assert {row["epoch"] for row in rows(norms)} == {1, 2, 3}


def test_a_torn_norms_line_after_epochs_that_logged_no_row_resumes_at_another_batch(tmp_path):
    """The review: rows every 5 steps of epochs of 3 leave some epochs without one; a resume
    that changed the batch size counted the epochs' steps at the new size (17) and took a torn
    line after the checkpoint for lost rows."""
    spec = MLP.replace("batch_size: 32, log_grad_norms: {every_steps: 3}",
                       "batch_size: 128, log_grad_norms: {every_steps: 5}")
    nnrun.train(nnrun.load_spec_text(spec, overrides=["train.epochs=6"]),
                out_dir=tmp_path / "run", quiet=True)
    norms = tmp_path / "run" / "grad-norms.jsonl"
    assert 6 not in {row["epoch"] for row in rows(norms)}  # steps 16-18: no multiple of 5
    norms.write_text(norms.read_text() + '{"step": 20, "epoch": 7, "lo')
    resume = nnrun.load_spec_text(spec, overrides=["train.epochs=7", "train.batch_size=16"])
    nnrun.train(resume, resume=tmp_path / "run", allow_changes=True, quiet=True)
    assert len(rows(tmp_path / "run" / "metrics.jsonl")) == 7


def test_a_rank_that_writes_nothing_lets_its_step_rows_go_each_epoch():
    """Only rank 0 appends the per-step rows to grad-norms.jsonl; the other ranks logged them
    too, and held every one until the run ended (a review of the append change)."""
    from types import SimpleNamespace

    from nnrun.runtime.grad_norms import GradNormLog
    from nnrun.runtime.train import Trainer

    log = GradNormLog(SimpleNamespace(every_steps=1), {"w": "dense_1"})
    for step in (1, 2):
        log.add({"grad_norm/w": 0.5}, step, epoch=1, batch=step, loss=1.0, batches=2)
    assert len(log.step_rows) == 2
    rank_1 = SimpleNamespace(
        train_epoch=lambda epoch, guard: {"epoch": epoch}, grad_norms=log, history="rank 0's",
        ranks=SimpleNamespace(from_root=lambda decide: "rank 0's"),  # rank 0 decides, writes
        check_signals=lambda guard: None)
    Trainer._train_and_save(rank_1, None, 1, None)
    assert log.step_rows == [] and rank_1.saved_epoch == 1
