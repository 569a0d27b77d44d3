"""Training-loop behaviour: early stopping, pruning, gradient-norm logging, metrics."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import nnrun
from nnrun.runtime.checkpoint import load_checkpoint
from nnrun.runtime.train import TrainingError
from nnrun.runtime.metrics import metric_total, predicted_labels
from nnrun.compiler.schema import Accuracy

DIGITS_MLP = """
data: {dataset: digits, validation_split: 0.1, limit: 400}
model:
  layers:
    - {type: flatten}
    - {type: dense, units: 32, activation: relu}
    - {type: dense, units: 10}
optimizer: {type: adam, lr: 0.003}
train: {epochs: 4, batch_size: 32}
"""


def _train(tmp_path, text, *overrides):
    source = nnrun.load_spec_text(text, overrides=list(overrides))
    summary = nnrun.train(source, out_dir=tmp_path / "run", quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return summary, rows


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path):
    # lr 1e-9: the validation loss cannot improve by min_delta, so epoch 1 stays the best.
    summary, rows = _train(tmp_path, DIGITS_MLP, "optimizer.lr=1e-9",
                           "train.early_stopping={monitor: val_loss, patience: 2, min_delta: 0.01}")
    assert summary["stopped_early"] and summary["epochs_run"] == 3 and summary["best_epoch"] == 1
    assert len(rows) == 3


def test_restore_best_reports_the_best_epoch_weights(tmp_path):
    summary, _ = _train(tmp_path, DIGITS_MLP, "train.early_stopping={patience: 10}")
    best, meta = load_checkpoint(tmp_path / "run" / "best.npz")
    assert meta["epoch"] == summary["best_epoch"]


def test_pruning_reaches_the_target_sparsity_and_keeps_weights_zero(tmp_path):
    summary, rows = _train(tmp_path, DIGITS_MLP,
                           "train.pruning={target_sparsity: 0.75, start_epoch: 2, end_epoch: 3}")
    assert [round(r["sparsity"], 2) for r in rows] == [0.0, 0.38, 0.75, 0.75]
    state, _ = load_checkpoint(tmp_path / "run" / "last.npz")
    for name in ("dense_1.weight", "dense_2.weight"):
        assert abs((state[name] == 0).mean() - 0.75) < 0.01
    assert (state["dense_1.bias"] != 0).any()  # biases are not pruned
    assert summary["final"]["val_accuracy"] > 0.3  # chance is 0.1


def test_log_grad_norms_adds_one_column_per_parameter(tmp_path):
    _, rows = _train(tmp_path, DIGITS_MLP, "train.log_grad_norms=true", "train.epochs=1")
    norms = {k: v for k, v in rows[0].items() if k.startswith("grad_norm/")}
    assert set(norms) == {f"grad_norm/dense_{i}.{p}" for i in (1, 2) for p in ("weight", "bias")}
    assert all(v > 0 for v in norms.values())


def test_mse_on_class_labels_uses_one_hot_targets(tmp_path):
    summary, _ = _train(tmp_path, DIGITS_MLP, "loss=mse", "optimizer.lr=0.01")
    assert summary["final"]["val_accuracy"] > 0.5


def test_one_sigmoid_output_is_a_class_at_one_half():
    probabilities = np.array([[0.2], [0.7], [0.51]])
    assert predicted_labels(probabilities, probabilities, None).tolist() == [0, 1, 1]
    labels = np.array([0, 1, 0])
    assert metric_total(Accuracy(type="accuracy"), probabilities, probabilities, labels)[0] == 2.0


def test_one_logit_under_binary_cross_entropy_is_class_one_above_zero():
    """A model that ends in logits (the sigmoid left to the loss) is read after the sigmoid, as
    the loss and pixel_accuracy read it: a logit of 0.3 is class 1, not below 0.5."""
    logits = np.array([[0.3], [-0.2], [2.0], [0.0]])
    labels = np.array([1, 0, 1, 0])
    total = metric_total(Accuracy(type="accuracy"), logits, logits, labels,
                         "binary_cross_entropy")[0]
    assert total == 4


def test_mse_metric_on_class_labels_compares_with_one_hot_targets():
    from nnrun.compiler.schema import MseMetric

    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]])
    labels = np.array([0, 1])
    total = metric_total(MseMetric(type="mse"), probabilities, probabilities, labels)[0]
    assert np.isclose(total, (0.01 + 0.01) / 2 + (0.04 + 0.04) / 2)  # per-sample means, summed


def test_mse_metric_of_a_classifier_is_on_probabilities_not_logits():
    from nnrun.compiler.schema import MaeMetric, MseMetric

    logits = np.array([[4.0, -3.0, 0.5], [-8.0, 12.0, 1.0]])
    labels = np.array([0, 1])
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    brier = ((probabilities - np.eye(3)[labels]) ** 2).mean(axis=1).sum()
    total = metric_total(MseMetric(type="mse"), logits, logits, labels, "cross_entropy")[0]
    assert np.isclose(total, brier) and total < 2  # on logits it would be about 55
    sigmoid_logits = np.array([[-800.0], [3.0]])
    absolute = metric_total(MaeMetric(type="mae"), sigmoid_logits, sigmoid_logits,
                            np.array([0, 1]), "binary_cross_entropy")[0]
    assert np.isclose(absolute, 1 / (1 + np.exp(3.0)))


def test_mse_metric_of_a_trained_classifier_is_bounded(tmp_path):
    summary, _ = _train(tmp_path, DIGITS_MLP, "train.metrics=[accuracy, mse, mae]")
    final = summary["final"]
    assert 0 <= final["val_mse"] <= 2 and 0 <= final["val_mae"] <= 2 / 10


def test_every_metric_is_tracked_on_the_training_batches_too(tmp_path):
    """As train_accuracy is: a regression's train_mae and train_mse beside its val_ ones, and
    under mse loss without augmentation or dropout, train_mse is the epoch's train_loss."""
    _, rows = _train(tmp_path, DIGITS_MLP, "train.metrics=[mae, mse]", "loss=mse")
    for row in rows:
        assert {"train_mae", "train_mse", "val_mae", "val_mse"} <= set(row)
        assert np.isclose(row["train_mse"], row["train_loss"], rtol=1e-5)


def _totals_of(metrics, loss, ignore_index, logits, labels) -> dict:
    from nnrun.backends import get_backend
    from nnrun.runtime.metrics import Totals

    class Batch:
        def __len__(self):
            return len(labels)

    Batch.labels = labels
    totals = Totals(metrics, loss, ignore_index, get_backend("numpy"))
    totals.add({"loss": np.float32(1.0), "logits": logits, "prediction": logits}, Batch())
    totals.read()
    return totals.means("val_")


def test_mae_and_mse_of_label_maps_compare_each_pixel_with_its_one_hot_label():
    """Scores [B, K, H, W] against maps [B, H, W]: each pixel's probabilities against its
    one-hot label, averaged over the classes and the labelled pixels (255 left out)."""
    from nnrun.compiler.schema import MaeMetric, MseMetric

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 4, 5, 2))
    labels = rng.integers(0, 4, (3, 5, 2))
    labels[0, :4] = 255
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = np.moveaxis(shifted / shifted.sum(axis=1, keepdims=True), 1, -1)
    labelled = labels != 255
    one_hot = np.eye(4)[np.where(labelled, labels, 0)]
    difference = (probabilities - one_hot)[labelled]  # [labelled pixels, K]
    means = _totals_of([MseMetric(type="mse"), MaeMetric(type="mae")], "cross_entropy", 255,
                       logits, labels)
    assert np.isclose(means["val_mse"], (difference**2).mean())
    assert np.isclose(means["val_mae"], np.abs(difference).mean())
    whole = _totals_of([MseMetric(type="mse")], "cross_entropy", None, logits,
                       np.where(labelled, labels, 0))
    everywhere = probabilities - np.eye(4)[np.where(labelled, labels, 0)]
    assert np.isclose(whole["val_mse"], (everywhere**2).mean())


def test_top_k_mae_and_mse_leave_out_the_samples_ignore_index_marks():
    from nnrun.compiler.schema import MaeMetric, MseMetric, TopKAccuracy

    logits = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [0.0, 9.0, 8.0]])
    labels = np.array([1, 9, 9, 0])  # top-2 hit, ignored, ignored, miss
    means = _totals_of([TopKAccuracy(type="top_k_accuracy", k=2)], "cross_entropy", 9, logits,
                       labels)
    assert means["val_top_2_accuracy"] == 0.5
    outputs = np.array([[0.9], [40.0], [0.2]])
    targets = np.array([1.0, 255.0, 0.0])
    means = _totals_of([MseMetric(type="mse"), MaeMetric(type="mae")], "mse", 255, outputs,
                       targets)
    assert np.isclose(means["val_mse"], (0.01 + 0.04) / 2)
    assert np.isclose(means["val_mae"], (0.1 + 0.2) / 2)


def test_top_k_accuracy_ranks_equal_outputs_lower_class_first_as_accuracy_does():
    """Ties decided by the sort's whim made top_k_accuracy of tied outputs vary by layout."""
    from nnrun.compiler.schema import Accuracy, TopKAccuracy

    logits = np.random.default_rng(0).integers(0, 2, (2, 1000)).astype(float)
    logits[1] = logits[0]  # classes 0, 1, 2 are among the tied highest (NumPy's default sort
    labels = np.array([0, 1])  # ranked 982, 19 and 18 first)
    means = _totals_of([TopKAccuracy(type="top_k_accuracy", k=3), Accuracy(type="accuracy")],
                       "cross_entropy", None, logits, labels)
    assert logits[0, :3].tolist() == [1, 1, 1]
    assert means["val_top_3_accuracy"] == 1.0
    assert means["val_accuracy"] == 0.5


def test_the_epoch_loss_with_ignore_index_is_the_mean_over_the_labelled_positions(tmp_path):
    """Each batch's loss weighed by its labelled positions, not by its samples: a batch of
    ignored labels counted as loss 0 for each of its samples (train_loss 1.30 against
    val_loss 1.74 on the same data and weights). With lr 1e-12 the weights stay put, so the
    training, validation and test losses, of batches of 2, 1000 and 3, are one loss."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((8, 3)), rng.integers(0, 3, 8)
    y[[0, 1, 4]] = -1  # a first batch of ignored labels, and one of half
    np.savez(tmp_path / "d.npz", x=x, y=y, x_val=x, y_val=y, x_test=x, y_test=y)
    (tmp_path / "s.yaml").write_text(
        "seed: 0\ndtype: float64\ndata: {dataset: npz, path: d.npz, normalize: none}\n"
        "model: {layers: [{type: dense, units: 3}]}\n"
        "loss: {type: cross_entropy, ignore_index: -1}\noptimizer: {type: sgd, lr: 1.0e-12}\n"
        "train: {epochs: 1, batch_size: 2, shuffle: false}\n")
    summary = nnrun.train(nnrun.load_spec(tmp_path / "s.yaml"), out_dir=tmp_path / "run",
                          quiet=True)
    (row,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    run = nnrun.load_run(tmp_path / "run")
    logits = torch.tensor(x @ run.params["dense_1.weight"] + run.params["dense_1.bias"])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor(y), ignore_index=-1).item()
    for loss in (row["train_loss"], row["val_loss"], summary["final"]["test_loss"]):
        assert loss == pytest.approx(expected, rel=1e-9)
    from nnrun.runtime.metrics import evaluate  # evaluation batches of 3 give it too
    state = {name: run.model.backend.from_host(value) for name, value in run.params.items()}
    split = type("Split", (), {"x": x, "y": y})()
    metrics = evaluate(run.model, state, split, "val", [], batch_size=3)
    assert metrics["val_loss"] == pytest.approx(expected, rel=1e-9)


def test_accuracy_leaves_out_the_labels_ignore_index_marks():
    """As pixel_accuracy does: 1 of the 2 labelled samples is right, not 1 of 4."""
    from nnrun.backends import get_backend
    from nnrun.runtime.metrics import Totals

    class Batch:
        labels = np.array([0, 3, 1, 3])

        def __len__(self):
            return 4

    logits = np.array([[2.0, 0, 0, 0], [0, 0, 0, 2.0], [2.0, 0, 0, 0], [0, 2.0, 0, 0]])
    totals = Totals([Accuracy(type="accuracy")], "cross_entropy", 3, get_backend("numpy"))
    totals.add({"loss": np.float32(1.0), "logits": logits, "prediction": logits}, Batch())
    totals.read()
    assert totals.means("val_")["val_accuracy"] == 0.5


def test_a_spec_without_data_is_refused_at_its_position_before_a_run_directory(tmp_path):
    """DESIGN.md: every error names the YAML position; the DESIGN audit found train's refusal
    of a spec without data as a bare line. The Python API raises it as the spec's error."""
    from click.testing import CliRunner

    from nnrun.cli import main

    spec = tmp_path / "nodata.yaml"
    spec.write_text("model:\n  input_shape: [2]\n  layers: [{type: dense, units: 2}]\n")
    result = CliRunner().invoke(main, ["train", str(spec), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"{spec}:1:1: error: data: training needs a data section")
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    try:
        nnrun.train(spec, out_dir=tmp_path / "run")
    except nnrun.SpecError as error:
        # a dataset of the model's samples (digits' [1, 8, 8] led to an input_shape error)
        assert "e.g. data: {dataset: xor}" in str(error)
    else:
        raise AssertionError("trained without data")
    for shape, example in (("[3]", "data: {dataset: npz, path: data.npz} (a file of arrays x "
                                   "and y)"), ("[1, 8, 8]", "data: {dataset: digits}")):
        spec.write_text(f"model:\n  input_shape: {shape}\n  layers: [{{type: flatten}}, "
                        "{type: dense, units: 2}]\n")
        result = CliRunner().invoke(main, ["train", str(spec), "--out", str(tmp_path / "run")])
        assert f"e.g. {example} (docs/spec-reference.md, data)" in result.stderr


def test_a_run_without_a_validation_split_writes_its_val_keys_as_null(tmp_path):
    """DESIGN.md lists val_loss and val_accuracy in every line of metrics.jsonl; a run
    without a validation split left them out, where summary.json's final holds them as null."""
    spec = nnrun.load_spec_text("data: {dataset: xor, n_samples: 64}\nmodel:\n  layers:\n"
                                "    - {type: dense, units: 4, activation: tanh}\n"
                                "    - {type: dense, units: 1, activation: sigmoid}\n"
                                "loss: binary_cross_entropy\n"
                                "train: {epochs: 2, batch_size: 16, metrics: [accuracy, mae]}\n")
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [(row["val_loss"], row["val_accuracy"], row["val_mae"]) for row in rows] == \
        [(None, None, None)] * 2
    assert all(isinstance(row["train_mae"], float) for row in rows)
    final = json.loads((tmp_path / "run" / "summary.json").read_text())["final"]
    assert final["val_loss"] is None and final["test_loss"] is not None


def _overflowing_validation(tmp_path) -> Path:
    """Training data that trains, and a validation split whose values overflow float32 in the
    first layer: val_loss is NaN from epoch 1 on while the training loss stays finite."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8)).astype("f4")
    y = (x[:, 0] > 0).astype(np.int64)
    x_val = rng.normal(size=(20, 8)).astype("f4")
    x_val[0] = 3e38
    np.savez(tmp_path / "d.npz", x=x, y=y, x_val=x_val, y_val=y[:20])
    return _spec_file(tmp_path, """\
data: {dataset: npz, path: d.npz, normalize: none}
model:
  input_shape: [8]
  layers: [{type: dense, units: 16, activation: relu}, {type: dense, units: 2}]
optimizer: {type: sgd, lr: 0.5}
train: {epochs: 12, batch_size: 32, early_stopping: {monitor: val_loss, patience: 3}}
""")


def test_a_nan_monitor_is_never_an_improvement_so_early_stopping_still_stops(tmp_path):
    summary = nnrun.train(_overflowing_validation(tmp_path), out_dir=tmp_path / "run",
                          quiet=True)
    rows = [json.loads(line)
            for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isnan(row["val_loss"]) for row in rows)
    assert summary["stopped_early"] and summary["epochs_run"] == 4
    assert summary["best_epoch"] == 1


def test_a_loss_not_finite_before_any_update_is_not_blamed_on_the_learning_rate(tmp_path):
    spec = _spec_file(tmp_path, DIGITS_MLP)
    with pytest.raises(TrainingError) as caught:
        nnrun.train(spec, out_dir=tmp_path / "run", quiet=True,
                    overrides=["model.init={type: normal, std: 1.0e+30}", "optimizer.lr=1e-6"])
    message = str(caught.value)
    assert "at epoch 1, step 1, before any update" in message, message
    assert "initial weights" in message and "not the learning rate" in message
    assert "lower optimizer.lr" not in message


def test_a_loss_that_was_huge_from_the_start_names_the_initial_scale_first(tmp_path):
    """The course's badly initialised net (the course audit): its loss was 9e21 at the first
    step, finite, then not; the message blamed the learning rate alone."""
    spec = _spec_file(tmp_path, """\
data: {dataset: digits, validation_split: 0.1, limit: 400}
model:
  init: {type: normal, std: 1000}
  layers:
    - {type: flatten}
    - {type: dense, units: 32, activation: relu}
    - {type: dense, units: 32, activation: relu}
    - {type: dense, units: 32, activation: relu}
    - {type: dense, units: 10}
optimizer: {type: sgd, lr: 0.1}
train: {epochs: 1, batch_size: 32}
""")
    with pytest.raises(TrainingError) as caught:
        nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    message = str(caught.value)
    assert "at epoch 1, step 1," not in message, message  # a later step: updates came first
    assert "; the loss of the initial weights was already " in message, message
    assert "initial weights (the initializers' std or limit" in message
    assert "lower optimizer.lr" in message  # still a cause: the updates diverged


def _spec_file(tmp_path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def _overflowing_adam_state(tmp_path, train: str) -> Path:
    """Inputs of 1e15 against targets of 1e6: gradients of 2e21, whose squares overflow
    Adam's float32 state while the loss, 1e12, stays finite."""
    x = np.full((8, 1), 1e15, np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.full(8, 1e6, np.float32))
    return _spec_file(tmp_path, f"""\
data: {{dataset: npz, path: d.npz, normalize: none}}
model: {{input_shape: [1], layers: [{{type: dense, units: 1, weights: [[0.0]], bias: [0.0]}}]}}
loss: mse
optimizer: {{type: adam, lr: 1.0e-20}}
train: {train}
""")


def test_a_state_that_overflows_under_a_finite_loss_keeps_the_epochs_row_and_norms(tmp_path):
    """The run stops, and the epoch's row and step norms show why."""
    spec = _overflowing_adam_state(tmp_path, "{batch_size: 4, shuffle: false, epochs: 2, "
                                             "log_grad_norms: {every_steps: 1}}")
    with pytest.raises(TrainingError, match="exp_avg_sq' overflowed"):
        nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    [row] = [json.loads(line)
             for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert row["epoch"] == 1 and row["overflowed"] == "opt/dense_1.weight.exp_avg_sq"
    assert math.isfinite(row["train_loss"]) and row["layer_grad_norm/dense_1"] > 1e21
    steps = (tmp_path / "run" / "grad-norms.jsonl").read_text().splitlines()
    assert len(steps) == 2 and json.loads(steps[0])["layer_grad_norm/dense_1"] > 1e21


def test_a_resumed_runs_first_step_that_diverges_keeps_the_learning_rate_as_a_cause(tmp_path):
    """The checkpoint's weights came of updates at the run's learning rate: the first step
    after a resume is not 'before any update' (the error of w + b - 0.5 triples each step, and
    its square passes float32's range at epoch 2, step 1)."""
    np.savez(tmp_path / "d.npz", x=np.ones((42, 1), np.float32), y=np.full(42, 0.5, np.float32))
    spec = _spec_file(tmp_path, """\
data: {dataset: npz, path: d.npz, normalize: none}
model: {input_shape: [1], layers: [{type: dense, units: 1, weights: [[1.0]], bias: [0.0]}]}
loss: mse
optimizer: {type: sgd, lr: 1.0}
train: {epochs: 2, batch_size: 1, shuffle: false}
""")
    run = tmp_path / "run"
    with pytest.raises(TrainingError) as whole:
        nnrun.train(spec, out_dir=run, quiet=True)
    assert "at epoch 2, step 1; the learning rate (1) may be too high" in str(whole.value)
    shutil.rmtree(run)
    nnrun.train(spec, out_dir=run, quiet=True, overrides=["train.epochs=1"])
    with pytest.raises(TrainingError) as resumed:
        nnrun.train(run / "spec.yaml", resume=run, quiet=True, overrides=["train.epochs=2"])
    message = str(resumed.value)
    assert "at epoch 2, step 1; the learning rate (1) may be too high" in message, message
    assert "before any update" not in message


def test_an_optimizer_state_that_overflows_names_the_gradients_scale_first(tmp_path):
    spec = _overflowing_adam_state(tmp_path, "{batch_size: 4, epochs: 1}")
    with pytest.raises(TrainingError) as caught:
        nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    message = str(caught.value)
    assert "the optimizer's state keeps the gradients or their squares, which the learning " \
           "rate does not scale: gradients this large come from inputs, targets or initial " \
           "weights of a large scale: scale them down" in message, message
    assert "set optimizer.clip_grad_norm" in message
    assert "the learning rate (1e-20) may be too high" not in message
    nnrun.train(spec, out_dir=tmp_path / "clipped", quiet=True,
                overrides=["optimizer.clip_grad_norm=1.0"])
