"""Pruning as the course means it (runtime/pruning.py): pruned weights stay zero, also across
--resume with more epochs; the masks are part of the checkpoint; the best checkpoint is chosen
among the epochs at the final sparsity, or the run says it is less sparse; `nnrun summary
RUN_DIR` shows each layer's sparsity."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import nnrun
from nnrun.cli import main
from nnrun.runtime.checkpoint import load_checkpoint

pytest.importorskip("sklearn")  # the digits dataset

SPEC = """
name: pruned
data: {dataset: digits, validation_split: 0.1, limit: 400}
model:
  layers:
    - {type: flatten}
    - {type: dense, units: 32, activation: relu}
    - {type: dense, units: 10}
optimizer: {type: sgd, lr: 0.05, momentum: 0.9}
train: {epochs: 4, batch_size: 32, pruning: {target_sparsity: 0.8, start_epoch: 2}}
"""
WEIGHTS = ("dense_1.weight", "dense_2.weight")


def _train(run_dir, *overrides, resume=False, quiet=True):
    text = (run_dir / "spec.yaml").read_text() if resume else SPEC
    source = nnrun.load_spec_text(text, overrides=list(overrides))
    nnrun.train(source, out_dir=None if resume else run_dir, resume=run_dir if resume else None,
                quiet=quiet, allow_changes=resume)
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resuming_with_more_epochs_keeps_pruned_weights_zero(tmp_path):
    run = tmp_path / "run"
    _train(run)
    pruned_at_4, _ = load_checkpoint(run / "last.npz")
    rows = _train(run, "train.epochs=6", resume=True)
    # Before: the ramp stretched to the new last epoch and epoch 5 fell back to 64%.
    assert [round(r["sparsity"], 2) for r in rows] == [0.0, 0.27, 0.53, 0.8, 0.8, 0.8]
    state, _ = load_checkpoint(run / "last.npz")
    for name in WEIGHTS:
        assert (state[name][pruned_at_4[name] == 0] == 0).all()


def test_the_masks_are_in_the_checkpoint_and_resume_exactly(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    _train(whole)
    _train(split, "train.epochs=3", "train.pruning.end_epoch=4")
    saved, meta = load_checkpoint(split / "last.npz")
    for name in WEIGHTS:
        mask = saved[f"mask/{name}"]
        assert mask.dtype == bool and mask.shape == saved[name].shape
        assert ((saved[name] == 0) | mask).all() and abs(1 - mask.mean() - 0.8 * 2 / 3) < 0.01
    assert meta["pruning_sparsity"] == pytest.approx(0.8 * 2 / 3)
    _train(split, "train.epochs=4", "train.pruning.end_epoch=4", resume=True)
    expected, _ = load_checkpoint(whole / "last.npz")
    resumed, _ = load_checkpoint(split / "last.npz")
    for name in expected:
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)


def test_the_best_checkpoint_is_chosen_among_epochs_at_the_final_sparsity(tmp_path):
    # At 97% the loss is worse than on the ramp's first, lightly pruned epoch: without the rule
    # the best checkpoint would be that dense one.
    run = tmp_path / "run"
    rows = _train(run, "train.pruning={target_sparsity: 0.97, start_epoch: 2, end_epoch: 3}")
    assert min(rows, key=lambda r: r["val_loss"])["epoch"] < 3  # the case the rule is for
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] >= 3
    assert summary["final"]["sparsity"] == pytest.approx(0.97, abs=0.005)
    best, meta = load_checkpoint(run / "best.npz")
    assert meta["epoch"] == summary["best_epoch"]
    assert all(abs((best[name] == 0).mean() - 0.97) < 0.01 for name in WEIGHTS)


def test_a_run_that_ends_before_the_target_says_it_is_less_sparse(tmp_path, capsys):
    run = tmp_path / "run"
    _train(run, "train.pruning.end_epoch=8", quiet=False)
    message = capsys.readouterr().err
    assert "best.npz" in message and "less than train.pruning.target_sparsity 80.0%" in message
    sparsity = json.loads((run / "summary.json").read_text())["final"]["sparsity"]
    assert sparsity < 0.5 and f"is pruned to {sparsity:.1%}," in message  # as summary.json says


def test_summary_of_a_run_directory_shows_each_layers_sparsity(tmp_path):
    run = tmp_path / "run"
    _train(run)
    result = CliRunner().invoke(main, ["summary", str(run)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line}
    assert lines["dense_1"].endswith("79.98%") and lines["dense_2"].endswith("80.00%")
    assert lines["flatten_1"].endswith("-")
    assert "of the weights are zero" in result.stdout
    data = json.loads(CliRunner().invoke(main, ["summary", str(run), "--format", "json"]).stdout)
    assert data["layers"][1]["sparsity"] == pytest.approx(0.7998, abs=1e-4)
    epoch = json.loads((run / "summary.json").read_text())["final"]["epoch"]
    assert (data["checkpoint"], data["checkpoint_epoch"]) == ("best.npz", epoch)
    assert f"checkpoint best.npz (epoch {epoch}):" in result.stdout


def test_summary_of_a_directory_without_a_run_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["summary", str(tmp_path)])
    assert result.exit_code == 1 and "not a run directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_checkpoint_without_masks_resumes_with_masks_rebuilt_from_its_zeros(tmp_path):
    # Checkpoints of an older nnrun hold no masks: the zeros of the weights are kept.
    run = tmp_path / "run"
    _train(run, "train.epochs=3", "train.pruning.end_epoch=4")
    with np.load(run / "last.npz") as archive:
        arrays = {key: archive[key] for key in archive.files if not key.startswith("mask/")}
    meta = json.loads(str(arrays["meta"]))
    del meta["pruning_sparsity"], meta["best_sparsity"]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(run / "last.npz", **arrays)
    zeros_before = {name: arrays[f"params/{name}"] == 0 for name in WEIGHTS}
    _train(run, "train.epochs=4", "train.pruning.end_epoch=4", resume=True)
    state, _ = load_checkpoint(run / "last.npz")
    for name in WEIGHTS:
        assert (state[name][zeros_before[name]] == 0).all()
        assert abs((state[name] == 0).mean() - 0.8) < 0.01


def test_early_stopping_waits_for_the_target_sparsity(tmp_path):
    # lr 1e-9: nothing improves after epoch 1, so patience 1 would stop at epoch 2, mid-ramp.
    run = tmp_path / "run"
    rows = _train(run, "optimizer.lr=1e-9", "train.epochs=6",
                  "train.pruning={target_sparsity: 0.8, start_epoch: 2, end_epoch: 4}",
                  "train.early_stopping={patience: 1, min_delta: 0.01}")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_early"] and summary["best_epoch"] == 4
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert summary["final"]["sparsity"] == pytest.approx(0.8, abs=0.005)


def test_a_ramp_that_ends_before_it_starts_is_refused_at_end_epoch():
    from nnrun.compiler.diagnostics import SpecError
    from nnrun.compiler.frontend import load_spec_text

    text = ("model:\n  input_shape: [4]\n  layers:\n    - {type: dense, units: 2}\n"
            "train:\n  pruning: {target_sparsity: 0.5, start_epoch: 4,\n            end_epoch: 2}\n")
    with pytest.raises(SpecError) as caught:
        load_spec_text(text)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.line == 7 and "end_epoch 2 is before start_epoch 4" in diagnostic.message


def test_pruning_a_model_without_weights_is_a_spec_error(tmp_path):
    """The command audit: pruning a relu alone was accepted, said it zeroed 50% of each weight
    tensor, and on resume stretched its ramp, so early stopping waited for a target that no
    weight could reach."""
    from nnrun.compiler.frontend import check, load_spec_text

    text = ("data: {dataset: xor}\nmodel:\n  input_shape: [2]\n  layers: [{type: relu}]\n"
            "train:\n  pruning: {target_sparsity: 0.5}\n")
    def errors(text):
        return [d for d in check(load_spec_text(text, "s.yaml")).diagnostics
                if d.severity == "error"]

    (error,) = errors(text)
    assert (error.line, error.where) == (6, "train.pruning")
    assert error.message.startswith("the model has no weight tensor to prune")
    assert not errors(text.replace("{type: relu}", "{type: dense, units: 2}"))
    (tmp_path / "s.yaml").write_text(text)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(tmp_path / "s.yaml"), "--out", str(out)])
    assert result.exit_code == 1 and not out.exists(), result.output
    assert "s.yaml:6:" in result.stderr and "no weight tensor to prune" in result.stderr


def test_pruning_set_on_a_resume_of_a_model_without_weights_is_refused(tmp_path):
    """The review: a resume reads its spec as a checkpoint's, whose compile skipped the check;
    --allow-changes --set train.pruning=... pruned nothing and said it zeroed weights."""
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: xor}\nmodel:\n  input_shape: [2]\n  layers: [{type: relu}]\n"
                    "loss: mse\ntrain: {epochs: 1}\n")
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    result = CliRunner().invoke(main, ["train", str(spec), "--resume", str(tmp_path / "run"),
                                       "--allow-changes", "--epochs", "2", "--set",
                                       "train.pruning={target_sparsity: 0.5}", "--quiet"])
    assert result.exit_code == 1, result.output
    assert "the model has no weight tensor to prune" in result.stderr
