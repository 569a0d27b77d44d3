"""`nnrun train` names the regularisation in force before its first epoch (the course's
augmentation, dropout, weight decay, early stopping and pruning, and label smoothing), from the
spec's own values; a run without any prints no such line."""

from __future__ import annotations

import pytest

from nnrun.compiler.frontend import load_spec_text
from nnrun.runtime.regularisation import regularisation_lines
from invoking import assert_ok, invoke

pytest.importorskip("sklearn")  # the digits dataset

PLAIN = """
name: plain
data: {dataset: digits, validation_split: 0.1, limit: 200}
model:
  layers:
    - {type: flatten}
    - {type: dense, units: 16, activation: relu}
    - {type: dense, units: 10}
optimizer: {type: sgd, lr: 0.05}
train: {epochs: 2, batch_size: 50}
"""

REGULARISED = """
name: regularised
data:
  dataset: digits
  validation_split: 0.1
  limit: 200
  augment: [{type: random_shift, max_shift: 1}, {type: gaussian_noise, std: 0.2}]
model:
  layers:
    - {type: flatten}
    - {type: dense, units: 16, activation: relu}
    - {type: dropout, rate: 0.25}
    - {type: dense, units: 10}
loss: {type: cross_entropy, label_smoothing: 0.05}
optimizer: {type: sgd, lr: 0.05, weight_decay: 0.0005}
train:
  epochs: 3
  batch_size: 50
  early_stopping: {monitor: val_accuracy, patience: 2, min_delta: 0.01}
  pruning: {target_sparsity: 0.6, start_epoch: 2}
"""


def lines_of(text: str, *overrides: str) -> list[str]:
    return regularisation_lines(load_spec_text(text, "spec.yaml", list(overrides)).spec)


def test_train_prints_the_regularisation_in_force_before_the_first_epoch(tmp_path):
    spec = tmp_path / "regularised.yaml"
    spec.write_text(REGULARISED)
    result = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    lines = result.stderr.splitlines()
    start = lines.index("regularisation:")
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch 1/3"))
    block = lines[start + 1:first_epoch]
    assert [line.split()[0] for line in block] == [
        "augmentation", "dropout", "weight", "label", "early", "pruning"]
    text = "\n".join(block)
    assert "random_shift (max_shift 1), gaussian_noise (std 0.2)" in text
    assert "dropout_1 0.25" in text
    assert "0.0005 on every parameter, as an L2 penalty: g = g + 0.0005 * p" in text
    assert "label smoothing  0.05" in text
    assert "stops after 2 epochs without a better val_accuracy (higher by more than 0.01)" in text
    assert "the smallest 60% of each weight tensor (not biases) zeroed, ramped from epoch 2 to 3" \
        in text


def test_a_run_without_regularisation_prints_none_and_quiet_prints_nothing(tmp_path):
    spec = tmp_path / "plain.yaml"
    spec.write_text(PLAIN)
    result = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    assert "regularisation" not in result.stderr
    assert result.stderr.splitlines()[0].startswith("epoch 1/2")
    regularised = tmp_path / "regularised.yaml"
    regularised.write_text(REGULARISED)
    quiet = assert_ok(invoke("train", regularised, "--out", tmp_path / "quiet", "--quiet"))
    assert quiet.stderr == ""


def test_a_resume_names_it_again(tmp_path):
    spec = tmp_path / "regularised.yaml"
    spec.write_text(REGULARISED)
    run = tmp_path / "run"
    assert_ok(invoke("train", spec, "--out", run, "--epochs", "1"))
    resumed = assert_ok(invoke("train", run / "spec.yaml", "--resume", run, "--epochs", "2"))
    assert "regularisation:" in resumed.stderr.splitlines()


def test_each_kind_is_said_as_its_settings_make_it():
    assert lines_of(PLAIN) == []
    assert lines_of(PLAIN, "model.layers[1]={type: dropout, rate: 0.0}") == []
    adamw = lines_of(PLAIN, "optimizer={type: adamw, lr: 0.01}")
    assert adamw == ["regularisation:", "  weight decay  0.01 on every parameter, decoupled: "
                     "p = p * (1 - lr * 0.01) each step"]
    stopping = lines_of(PLAIN, "train.early_stopping={restore_best: false}")
    assert stopping[1].endswith("without a better val_loss (lower by more than 0); keeps the "
                                "last epoch's weights")
    pruning = lines_of(PLAIN, "train.pruning={target_sparsity: 0.5, start_epoch: 1, end_epoch: 1}")
    assert pruning[1].endswith("ramped from epoch 1 to 1")


def test_what_pruning_and_early_stopping_really_do_within_this_run():
    """The review: a ramp past the run's end, a start after it, a rounded target, and early
    stopping that waits for the ramp, were said as if they did not happen."""
    late = lines_of(PLAIN, "train.pruning={target_sparsity: 0.999, start_epoch: 5}")
    assert late[1].endswith("to 99.9%, from epoch 5: after this run's last epoch (2), so no "
                            "weight is pruned")
    long = lines_of(PLAIN, "train.pruning={target_sparsity: 0.8, end_epoch: 4}")
    assert long[1].endswith("ramped from epoch 1 to 4, reaching 40% by this run's last epoch (2)")
    both = lines_of(PLAIN, "train.pruning={target_sparsity: 0.5}", "train.early_stopping={}")
    assert "not while pruning ramps up: the best epoch is counted from the first at the target " \
        "sparsity" in both[1]


def test_early_stopping_is_said_off_where_pruning_never_reaches_its_target():
    """It waits for the target sparsity (runtime/train.py _should_stop): without it, no stop."""
    never = lines_of(PLAIN, "train.pruning={target_sparsity: 0.5, start_epoch: 1, end_epoch: 9}",
                     "train.early_stopping={}")
    assert never[1] == ("  early stopping  off in this run: it waits for pruning to reach its "
                        "target sparsity, which this run does not reach by its last epoch (2)")
    assert lines_of(PLAIN, "train.pruning={target_sparsity: 0.99995}")[1].endswith(
        "the smallest 99.995% of each weight tensor (not biases) zeroed, ramped from epoch 1 to 2")


def test_a_resume_at_the_target_sparsity_says_it_is_kept(tmp_path):
    spec = tmp_path / "pruned.yaml"
    spec.write_text(PLAIN.replace("train: {epochs: 2, batch_size: 50}",
                                  "train: {epochs: 2, batch_size: 50, early_stopping: {}, "
                                  "pruning: {target_sparsity: 0.5}}"))
    run = tmp_path / "run"
    assert_ok(invoke("train", spec, "--out", run))
    resumed = assert_ok(invoke("train", run / "spec.yaml", "--resume", run, "--epochs", "4"))
    lines = resumed.stderr.splitlines()
    assert "  pruning         magnitude: the smallest 50% of each weight tensor (not biases) " \
        "zeroed already, and kept at zero" in lines
    stopping = next(line for line in lines if line.startswith("  early stopping"))
    assert "ramps up" not in stopping  # nothing left to wait for


@pytest.mark.parametrize("override, pruned, said", [
    # a resume with a lower target keeps the masks' 80% (the level never goes down)
    ("{target_sparsity: 0.5}", 0.8, "the smallest 80% of each weight tensor (not biases) "
                                    "zeroed already, and kept at zero"),
    # one whose ramp now starts after the run keeps the 40% it has
    ("{target_sparsity: 0.8, start_epoch: 20}", 0.4,
     "the smallest 40% of each weight tensor (not biases) zeroed already, and kept at zero "
     "(short of the target, 80%)"),
    ("{target_sparsity: 0.8, start_epoch: 2, end_epoch: 2}", 0.4,
     "ramped from epoch 2 to 2, from the 40% zeroed already"),
    ("{target_sparsity: 0.0}", 0.0, "magnitude, to 0%, a target of 0, so no weight is pruned"),
    # what the schedule gives, to a tenth of a percent as the closing line (11.11111111% was
    # printed: the course audit), in full where that would read 0%
    ("{target_sparsity: 0.5, start_epoch: 1, end_epoch: 9}", 0.0,
     "ramped from epoch 1 to 9, reaching 11.1% by this run's last epoch (2)"),
    ("{target_sparsity: 0.5, start_epoch: 3, end_epoch: 9}", 0.00004,
     "the smallest 0.004% of each weight tensor (not biases) zeroed already, and kept at zero "
     "(short of the target, 50%)")])
def test_pruning_says_the_sparsity_the_masks_hold(override, pruned, said):
    """The third review: the line read the spec alone, not the level a resume restores."""
    lines = regularisation_lines(load_spec_text(PLAIN, "spec.yaml",
                                                [f"train.pruning={override}"]).spec, pruned)
    assert lines[1].endswith(said), lines
