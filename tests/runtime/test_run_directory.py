"""What a run directory promises: `predict`, `eval` and `nnrun.load_run` see inputs as training
did (stored preprocessing), and every number `train` reports comes from the checkpoint that
`eval` and `predict` use by default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import nnrun
from nnrun import DataError
from nnrun.cli import main
from nnrun.notices import collected
from nnrun.runtime.data import load_dataset
from nnrun.runtime.data.preprocessing import IDENTITY
from nnrun.runtime.evaluate import evaluate_run

from invoking import assert_ok, assert_one_line_error, invoke

SHUFFLED_DIGITS = """\
name: shuffled-digits
seed: 3
data: {dataset: digits, validation_split: 0.2, normalize: standard, permute_features: true,
       limit: 300}
model:
  layers:
    - {type: flatten}
    - {type: dense, units: 16, activation: relu}
    - {type: dense, units: 10}
optimizer: {type: adam, lr: 0.01}
train: {epochs: 2, batch_size: 32}
"""


@pytest.fixture(scope="module")
def shuffled_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shuffled")
    (root / "spec.yaml").write_text(SHUFFLED_DIGITS)
    nnrun.train(root / "spec.yaml", out_dir=root / "run", quiet=True, max_steps=4)
    return root / "run"


def datasets(run_dir: Path):
    """The pipeline's own processed data, and the same samples raw."""
    spec = nnrun.load_spec(run_dir / "spec.yaml").spec
    options = dict(spec_dir=run_dir, seed=spec.seed, dtype=spec.dtype)
    return load_dataset(spec.data, **options), load_dataset(spec.data, **options,
                                                            preprocessing=IDENTITY)


def test_predict_on_raw_inputs_matches_the_processed_data(shuffled_run, tmp_path):
    processed, raw = datasets(shuffled_run)
    run = nnrun.load_run(shuffled_run)
    expected = run.model.forward(run.params, processed.test.x)
    np.savez(tmp_path / "raw.npz", x=raw.test.x)
    result = CliRunner().invoke(main, ["predict", str(shuffled_run), str(tmp_path / "raw.npz"),
                                       "--out", str(tmp_path / "out.npy")])
    assert result.exit_code == 0, result.output
    assert f"outputs of best.npz (epoch {run.epoch})" in result.output
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run.predict(raw.test.x), expected, rtol=1e-5, atol=1e-6)


def test_no_preprocessing_feeds_the_inputs_as_they_are(shuffled_run, tmp_path):
    processed, _ = datasets(shuffled_run)
    run = nnrun.load_run(shuffled_run)
    expected = run.model.forward(run.params, processed.test.x)
    np.testing.assert_allclose(run.predict(processed.test.x, preprocess=False), expected)
    np.savez(tmp_path / "processed.npz", x=processed.test.x)
    result = CliRunner().invoke(main, ["predict", str(shuffled_run),
                                       str(tmp_path / "processed.npz"), "--out",
                                       str(tmp_path / "out.npy"), "--no-preprocessing"])
    assert result.exit_code == 0, result.output
    assert "inputs as given (--no-preprocessing)" in result.output  # the line said nothing
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-5, atol=1e-6)


def test_preprocessing_is_stored_and_used_by_eval(shuffled_run):
    with np.load(shuffled_run / "preprocessing.npz", allow_pickle=False) as stored:
        assert {"shift", "scale", "permutation"} <= set(stored.files)
        assert sorted(stored["permutation"]) == list(range(64))
    summary = json.loads((shuffled_run / "summary.json").read_text())
    assert evaluate_run(shuffled_run)["test_loss"] == pytest.approx(summary["final"]["test_loss"])
    raw = evaluate_run(shuffled_run, preprocess=False)
    assert raw["test_loss"] != pytest.approx(summary["final"]["test_loss"])


def test_a_run_without_stored_preprocessing_fits_it_again(shuffled_run, tmp_path):
    copy = tmp_path / "old-run"
    copy.mkdir()
    for path in shuffled_run.iterdir():
        if path.name != "preprocessing.npz":
            (copy / path.name).write_bytes(path.read_bytes())
    processed, raw = datasets(shuffled_run)
    run = nnrun.load_run(copy)
    np.testing.assert_allclose(run.predict(raw.test.x),
                               run.model.forward(run.params, processed.test.x), rtol=1e-5)


# --- one checkpoint behind every number ------------------------------------------------------


def train_tiny(tmp_path: Path, stopping: str) -> tuple[Path, dict, list[dict]]:
    spec = SHUFFLED_DIGITS.replace("epochs: 2", f"epochs: 3, early_stopping: {stopping}")
    (tmp_path / "spec.yaml").write_text(spec)
    summary = nnrun.train(tmp_path / "spec.yaml", out_dir=tmp_path / "run", quiet=True,
                          max_steps=3)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return tmp_path / "run", summary, rows


def test_final_numbers_come_from_the_best_checkpoint(tmp_path):
    # Monitoring train_loss for a maximum makes epoch 1 the best of 3: best != last.
    run_dir, summary, rows = train_tiny(tmp_path, "{monitor: train_loss, mode: max, patience: 5}")
    final = summary["final"]
    assert summary["best_epoch"] == 1 and len(rows) == 3
    assert final["checkpoint"] == "best.npz" and final["epoch"] == 1
    assert final["train_loss"] == rows[0]["train_loss"]
    assert final["val_loss"] == pytest.approx(rows[0]["val_loss"])
    evaluated = evaluate_run(run_dir)
    assert evaluated["checkpoint"] == "best.npz" and evaluated["epoch"] == 1
    assert evaluated["test_accuracy"] == pytest.approx(final["test_accuracy"])


def test_restore_best_false_makes_last_the_final_checkpoint(tmp_path):
    run_dir, summary, rows = train_tiny(
        tmp_path, "{monitor: train_loss, mode: max, patience: 5, restore_best: false}")
    final = summary["final"]
    assert final["checkpoint"] == "last.npz" and final["epoch"] == 3
    assert final["train_loss"] == rows[2]["train_loss"]
    evaluated = evaluate_run(run_dir)
    assert evaluated["checkpoint"] == "last.npz"
    assert evaluated["test_loss"] == pytest.approx(final["test_loss"])


def test_a_missing_best_checkpoint_is_replaced_only_when_not_asked_for(tmp_path):
    run_dir, summary, _ = train_tiny(tmp_path, "{monitor: train_loss, mode: max, patience: 5}")
    (run_dir / "best.npz").unlink()
    with collected() as notices:  # the API walk: the numbers are not those train reported
        assert evaluate_run(run_dir)["checkpoint"] == "last.npz"  # the default falls back
    assert [(kind, message.split(" is missing")[1]) for kind, message in notices] == [(
        "warning", ", though train reported its numbers (summary.json): last.npz is used, whose "
        "numbers differ unless the two were the same epoch; put best.npz back for the numbers "
        "train reported")]
    line = assert_one_line_error(invoke("eval", run_dir, "--checkpoint", "best"),
                                 run_dir / "best.npz")
    assert "no such checkpoint" in line and "--checkpoint last" in line
    with pytest.raises(nnrun.RunDirectoryError, match="no such checkpoint"):
        nnrun.load_run(run_dir, "best")


def test_an_old_run_whose_data_is_gone_says_what_to_do(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(30, 2)), y=rng.integers(0, 2, 30))
    (tmp_path / "spec.yaml").write_text(
        "data: {dataset: npz, path: d.npz}\nmodel: {input_shape: [2], layers: "
        "[{type: dense, units: 2}]}\ntrain: {epochs: 1}\n")
    nnrun.train(tmp_path / "spec.yaml", out_dir=tmp_path / "run", quiet=True)
    (tmp_path / "run" / "preprocessing.npz").unlink()
    (tmp_path / "d.npz").unlink()
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 2)))
    runner = CliRunner()
    arguments = ["predict", str(tmp_path / "run"), str(tmp_path / "x.npz"), "--out",
                 str(tmp_path / "y.npy")]
    result = runner.invoke(main, arguments)
    assert result.exit_code == 1 and "--no-preprocessing" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert runner.invoke(main, [*arguments, "--no-preprocessing"]).exit_code == 0
    # the API's words, and its way forward
    with pytest.raises(nnrun.DataError, match=r"pass preprocess=False to feed inputs as they"):
        nnrun.load_run(tmp_path / "run")
    run = nnrun.load_run(tmp_path / "run", preprocess=False)
    x = np.array([[1.0, -2.0]])
    assert np.array_equal(run.predict(x), run.predict(x, preprocess=False))
    with pytest.raises(TypeError, match="preprocess must be True or False"):
        nnrun.load_run(tmp_path / "run", preprocess="no")


def test_eval_of_a_run_whose_data_file_moved_says_where_to_point_it(tmp_path):
    """The API walk: "d.npz: not found (data.path, relative to the spec file, ...)", of a
    run's spec.yaml that holds the path absolute, with no way forward."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2))
    np.savez(tmp_path / "d.npz", x=x, y=rng.integers(0, 2, 30), x_test=x[:5],
             y_test=np.zeros(5, int))
    (tmp_path / "spec.yaml").write_text(
        "data: {dataset: npz, path: d.npz}\nmodel: {input_shape: [2], layers: "
        "[{type: dense, units: 2}]}\ntrain: {epochs: 1}\n")
    nnrun.train(tmp_path / "spec.yaml", out_dir=tmp_path / "run", quiet=True)
    (tmp_path / "d.npz").rename(tmp_path / "e.npz")
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.stderr.strip().endswith(
        f"put the file back there, or set data.path in {tmp_path / 'run' / 'spec.yaml'} to "
        "where it is now")
    spec = tmp_path / "run" / "spec.yaml"
    spec.write_text(spec.read_text().replace(str(tmp_path / "d.npz"), str(tmp_path / "e.npz")))
    assert CliRunner().invoke(main, ["eval", str(tmp_path / "run")]).exit_code == 0


def test_eval_and_predict_of_a_run_whose_data_file_changed_in_place_warn(tmp_path):
    """The predict audit: a data file grown since training was scored without a word (a
    validation split of 80 samples, drawn again from the new 400, where training held out 60
    of 300), and preprocessing fitted again from it likewise; a resume refuses it already."""
    rng = np.random.default_rng(0)

    def save(count: int) -> None:
        x = rng.normal(size=(count, 2))
        np.savez(tmp_path / "d.npz", x=x, y=(x[:, 0] > 0).astype(int))

    save(300)
    (tmp_path / "spec.yaml").write_text(
        "data: {dataset: npz, path: d.npz, validation_split: 0.2}\nmodel: {input_shape: [2], "
        "layers: [{type: dense, units: 2}]}\ntrain: {epochs: 1}\n")
    run_dir = tmp_path / "run"
    nnrun.train(tmp_path / "spec.yaml", out_dir=run_dir, quiet=True)
    with collected() as notices:
        assert evaluate_run(run_dir, "val")["samples"] == 60
    assert notices == []
    save(400)
    with collected() as notices:
        assert evaluate_run(run_dir, "val")["samples"] == 80
    assert notices == [("warning", f"the data file {tmp_path / 'd.npz'} changed since best.npz "
                                   "was written (another SHA-256): these are the model's numbers "
                                   "on the new data, not the ones train reported; the validation "
                                   "split is drawn again from the new samples, and may hold "
                                   "samples the model trained on")]
    (run_dir / "preprocessing.npz").unlink()
    from nnrun.runtime.data import fingerprint

    read, sha256_of = [], fingerprint.sha256_of
    fingerprint.sha256_of = lambda path: read.append(path) or sha256_of(path)
    try:  # the re-read: statistics fitted again and the scores ask once, the file unchanged
        save(400)
        evaluate_run(run_dir, "val")
    finally:
        fingerprint.sha256_of = sha256_of
    assert len(read) == 1
    with collected() as notices:
        nnrun.load_run(run_dir)
    assert notices == [("warning", f"{run_dir}: has no preprocessing.npz, so its statistics are "
                                   f"fitted again from the data, and the data file "
                                   f"{tmp_path / 'd.npz'} changed since training (another "
                                   "SHA-256): the inputs are not preprocessed as the model's "
                                   "training inputs were")]


def test_a_run_without_preprocessing_says_its_datas_warning_once(tmp_path):
    """Fitting the statistics again loaded the data a first time, whose warnings eval's own
    load then said again (the data audit)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_val=x[:5], y_val=y[:5])
    (tmp_path / "s.yaml").write_text("data: {dataset: npz, path: d.npz, validation_split: 0.2}\n"
                                     "model: {layers: [{type: dense, units: 2}]}\n"
                                     "train: {epochs: 1}\n")
    assert_ok(invoke("train", tmp_path / "s.yaml", "--out", tmp_path / "run", "--quiet"))
    (tmp_path / "run" / "preprocessing.npz").unlink()
    with collected() as notices:
        evaluate_run(tmp_path / "run", "val")
    assert [message.split(": ")[1] for _, message in notices] == ["x_val and y_val are left out"]
    with collected() as notices:
        nnrun.load_run(tmp_path / "run")  # predict's: its inputs are not the training data
    assert notices == []


def test_eval_of_one_sample_says_one_sample(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(41, 3)), rng.integers(0, 2, 41)
    np.savez(tmp_path / "d.npz", x=x[:40], y=y[:40], x_test=x[40:], y_test=y[40:])
    (tmp_path / "s.yaml").write_text("data: {dataset: npz, path: d.npz}\n"
                                     "model: {layers: [{type: dense, units: 2}]}\n"
                                     "train: {epochs: 1}\n")
    assert_ok(invoke("train", tmp_path / "s.yaml", "--out", tmp_path / "run", "--quiet"))
    first = assert_ok(invoke("eval", tmp_path / "run")).stdout.splitlines()[0]
    assert first.endswith("test split, 1 sample"), first


def test_eval_says_it_ran_without_preprocessing_and_why_its_loss_is_not_finite(shuffled_run,
                                                                             tmp_path):
    """The predict audit: `eval --no-preprocessing` was not told apart from an eval in its
    text or JSON (predict says it), and a checkpoint whose outputs overflow float32 scored a
    NaN loss without a word (predict warns)."""
    raw = invoke("eval", shuffled_run, "--no-preprocessing")
    assert raw.exit_code == 0
    assert raw.stdout.splitlines()[0].endswith("; inputs as given (--no-preprocessing)")
    assert json.loads(invoke("eval", shuffled_run, "--format", "json").stdout)["preprocessing"]
    run_dir = tmp_path / "run"
    shutil.copytree(shuffled_run, run_dir)
    saved = dict(np.load(run_dir / "best.npz"))
    saved["params/dense_2.weight"] = saved["params/dense_2.weight"] * np.float32(3e38)
    np.savez(run_dir / "best.npz", **saved)
    result = invoke("eval", run_dir)
    assert result.exit_code == 0
    assert ("test_loss is nan: the model's outputs are inf or NaN on some samples, beyond "
            "float32 (its largest weight in best.npz is ") in result.stderr
    assert invoke("eval", shuffled_run).stderr == ""


def test_a_broken_preprocessing_file_is_one_line(shuffled_run, tmp_path):
    copy = tmp_path / "broken-run"
    copy.mkdir()
    for path in shuffled_run.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    np.savez(copy / "preprocessing.npz", shift=np.zeros(1))  # no scale
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 1, 8, 8)))
    result = CliRunner().invoke(main, ["predict", str(copy), str(tmp_path / "x.npz"), "--out",
                                       str(tmp_path / "y.npy")])
    assert result.exit_code == 1 and "preprocessing.npz: not a readable" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("fields, problem", [
    ({"shift": np.zeros(3), "scale": np.ones(3)}, "'shift' has shape [3]"),
    ({"scale": np.zeros((1, 1, 1, 1))}, "'scale' holds 0"),
    ({"shift": np.full((1, 1, 1, 1), np.inf)}, "'shift' holds NaN or inf"),
    ({"permutation": np.zeros(64, dtype=np.int64)}, "'permutation' is not a permutation"),
    ({"permutation": np.arange(15)}, "'permutation' is int64 [15]"),
])
@pytest.mark.parametrize("command", ["eval", "predict", "export"])
def test_a_preprocessing_file_with_wrong_fields_is_one_line(shuffled_run, tmp_path, fields,
                                                            problem, command):
    """Shapes against the model's input, finite values, scale > 0 and a true permutation: else
    a broadcast error, a reshape error, or NaN metrics with exit 0."""
    copy = tmp_path / "damaged-run"
    copy.mkdir()
    for path in shuffled_run.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    with np.load(shuffled_run / "preprocessing.npz") as stored:
        arrays = {**stored, **fields}
    np.savez(copy / "preprocessing.npz", **arrays)
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 1, 8, 8)))
    arguments = {"eval": [copy], "predict": [copy, tmp_path / "x.npz", "--out", tmp_path / "y.npy"],
                 "export": [copy, "--out", tmp_path / "m.onnx"]}[command]
    line = assert_one_line_error(invoke(command, *arguments), copy / "preprocessing.npz")
    assert problem in line and "delete it to fit the preprocessing again" in line
    assert not (tmp_path / "y.npy").exists() and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("dropped, problem", [
    (("shift", "scale"), "has no fitted 'shift' and 'scale', though spec.yaml has "
                         "normalize: standard"),
    (("permutation",), "has no 'permutation', though spec.yaml has permute_features: true"),
])
def test_a_preprocessing_file_at_odds_with_the_spec_is_one_line(shuffled_run, tmp_path, dropped,
                                                               problem):
    """Read as it was, a file without the statistics the spec fits (or with others: another
    run's) fed the model other inputs than it was trained on (exit 0, other numbers): it is
    refused as the damaged ones are."""
    copy = tmp_path / "damaged-run"
    copy.mkdir()
    for path in shuffled_run.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    with np.load(shuffled_run / "preprocessing.npz") as stored:
        arrays = {name: stored[name] for name in stored.files if name not in dropped}
    np.savez(copy / "preprocessing.npz", **arrays)
    line = assert_one_line_error(invoke("eval", copy), copy / "preprocessing.npz")
    assert problem in line and "delete it to fit the preprocessing again" in line
    with pytest.raises(DataError, match="spec.yaml"):
        nnrun.load_run(copy)


@pytest.mark.parametrize("changed, problem", [
    ({"normalize: standard": "normalize: none"},
     "holds fitted 'shift' and 'scale', though spec.yaml has normalize: none"),
    ({"permute_features: true": "permute_features: false"},
     "holds a 'permutation', though spec.yaml has permute_features: false"),
    ({"permute_features: true": "permute_features: 7"},
     "holds another 'permutation' than spec.yaml's permute_features: 7 (seed 3) gives"),
])
def test_a_preprocessing_file_of_the_checkpoint_s_spec_is_used_where_spec_yaml_changed(
        shuffled_run, tmp_path, changed, problem):
    """The file is what the checkpoint was trained with (the spec text it keeps), and
    spec.yaml was changed since (by a resume stopped before its first epoch, or by hand): it
    was refused with advice to delete it, which would feed the model other inputs; it is
    used, said."""
    copy = tmp_path / "edited-run"
    copy.mkdir()
    for path in shuffled_run.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    spec = (copy / "spec.yaml").read_text()
    for old, new in changed.items():
        assert old in spec
        spec = spec.replace(old, new)
    (copy / "spec.yaml").write_text(spec)
    result = assert_ok(invoke("eval", copy))
    assert f"{copy / 'preprocessing.npz'}: {problem}; it is what the checkpoint was trained " \
           "with" in result.stderr
    assert assert_ok(invoke("eval", shuffled_run)).stdout.replace(str(shuffled_run), "") == \
        result.stdout.replace(str(copy), "")


@pytest.mark.parametrize("where", ["layer", "model"])
def test_a_run_started_from_init_from_files_can_be_evaluated_and_resumed(tmp_path, where):
    """The run's spec.yaml holds init_from made absolute; the checkpoint's spec hash was of the
    relative path, so eval, predict, export and --resume refused the run's own checkpoints."""
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    values = {"dense_1.weight": np.full((2, 8), 0.1), "dense_1.bias": np.zeros(8)}
    if where == "layer":
        np.savez(spec_dir / "w.npz", weight=values["dense_1.weight"], bias=values["dense_1.bias"])
        model = "  layers:\n    - {type: dense, units: 8, activation: tanh, init_from: w.npz}\n"
    else:
        np.savez(spec_dir / "w.npz", **values)
        model = "  init_from: w.npz\n  layers:\n    - {type: dense, units: 8, activation: tanh}\n"
    spec = spec_dir / "s.yaml"
    spec.write_text("seed: 0\ndata: {dataset: xor}\nmodel:\n" + model +
                    "    - {type: dense, units: 2}\ntrain: {epochs: 1}\n")
    run = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(main, ["train", str(spec), "--out", str(run), "--quiet"]).exit_code == 0
    assert str(spec_dir / "w.npz") in (run / "spec.yaml").read_text()
    evaluated = runner.invoke(main, ["eval", str(run)])
    assert evaluated.exit_code == 0, evaluated.output
    resumed = runner.invoke(main, ["train", str(run / "spec.yaml"), "--resume", str(run),
                                   "--epochs", "2", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    # The run's checkpoints are its own: the file it began from may go (a deleted run whose
    # last.npz it was); what needs only the run goes on without it.
    (spec_dir / "w.npz").unlink()
    np.savez(tmp_path / "x.npz", x=np.zeros((3, 2)))
    for command in (["eval", run], ["summary", run], ["diff", run, run],
                    ["predict", run, tmp_path / "x.npz", "--out", tmp_path / "y.npy"],
                    ["export", run, "--out", tmp_path / "m.onnx"],
                    ["trace", run / "spec.yaml", "--weights", run / "last.npz"],
                    ["train", run / "spec.yaml", "--resume", run, "--epochs", "3", "--quiet"]):
        result = runner.invoke(main, [str(word) for word in command])
        assert result.exit_code == 0, (command, result.output)
    assert nnrun.load_run(run).predict(np.zeros((3, 2))).shape == (3, 2)
    started_over = runner.invoke(main, ["train", str(run / "spec.yaml"), "--out",
                                        str(tmp_path / "new"), "--quiet"])
    assert started_over.exit_code == 1 and "w.npz" in started_over.output


@pytest.mark.parametrize("summary", ['{"final": {"checkpoint": "../../etc/passwd"}}', "x",
                                     '{"final": {"checkpoint": ["last.npz"]}}', '{"epochs": 3}',
                                     '{"final": null}', "[1]"])
def test_a_summary_naming_no_checkpoint_of_the_run_is_refused(tmp_path, summary):
    """`"checkpoint": "../../etc/passwd"` asked for a checkpoint 'passwd'; then best was taken
    for any damaged summary, which the cli walk found scoring best.npz for a run whose final
    model was last.npz (restore_best: false), without a word. No summary: best."""
    from nnrun.runtime.evaluate import final_checkpoint
    from nnrun.runtime.run_dir import RunDirectoryError

    assert final_checkpoint(tmp_path) == "best"  # the run did not finish
    (tmp_path / "summary.json").write_text('{"final": {"checkpoint": "last.npz"}}')
    assert final_checkpoint(tmp_path) == "last"
    (tmp_path / "summary.json").write_text(summary)
    with pytest.raises(RunDirectoryError, match="not a readable run summary .*; name one with "
                                                "--checkpoint best or last, or restore the file"
                       ) as refused:
        final_checkpoint(tmp_path)
    assert "object" not in str(refused.value)  # in its own words, not Python's (the review)
    # a summary of nnrun before 2026-12-01 names no checkpoint: best, as eval then took
    (tmp_path / "summary.json").write_text('{"final": {"test_accuracy": 0.9}}')
    assert final_checkpoint(tmp_path) == "best"


def test_a_damaged_summary_stops_eval_until_a_checkpoint_is_named(shuffled_run, tmp_path):
    import shutil

    from nnrun.cli import main

    copy = tmp_path / "run"
    shutil.copytree(shuffled_run, copy)
    (copy / "summary.json").write_text("x")
    runner = CliRunner()
    for command in (["eval", copy], ["summary", copy]):
        result = runner.invoke(main, [str(a) for a in command])
        assert result.exit_code == 1 and "not a readable run summary" in result.output
    named = runner.invoke(main, ["eval", str(copy), "--checkpoint", "last"])
    assert named.exit_code == 0 and "(last.npz" in named.output


@pytest.mark.parametrize("target", ["best.npz", "elsewhere.npz"])  # a loop; a dangling link
def test_a_best_checkpoint_that_is_a_broken_link_is_not_passed_over(shuffled_run, tmp_path,
                                                                     target):
    """eval must not quietly use last.npz when best.npz is there but cannot be read."""
    copy = tmp_path / "run"
    copy.mkdir()
    for path in shuffled_run.iterdir():
        if path.name != "best.npz":
            (copy / path.name).write_bytes(path.read_bytes())
    (copy / "best.npz").symlink_to(target)
    result = invoke("eval", copy, "--checkpoint", "best")
    assert_one_line_error(result, "best.npz")


def test_predict_preprocesses_in_float64_as_training_did(tmp_path):
    """Features of a large offset (timestamps, years) differ by less than float32's spacing
    at their size: cast before the normalisation, they would all look alike."""
    rng = np.random.default_rng(0)
    x = 1.7e9 + rng.normal(size=(64, 3))
    np.savez(tmp_path / "data.npz", x=x, y=(x[:, 0] > 1.7e9).astype(np.int64))
    (tmp_path / "spec.yaml").write_text(
        "name: offset\ndata: {dataset: npz, path: data.npz, normalize: standard}\n"
        "model: {input_shape: [3], layers: [{type: dense, units: 2}]}\n"
        "optimizer: {type: sgd, lr: 0.1}\ntrain: {epochs: 1, batch_size: 16}\n")
    nnrun.train(tmp_path / "spec.yaml", out_dir=tmp_path / "run", quiet=True)
    run = nnrun.load_run(tmp_path / "run")
    as_trained = run.preprocessing.apply(x, "float32")  # the training pipeline's own call
    assert np.ptp(as_trained, axis=0).min() > 1  # the samples still differ once normalised
    expected = run.model.forward(run.params, as_trained)
    np.testing.assert_array_equal(run.predict(x), expected)
    np.savez(tmp_path / "raw.npz", x=x)
    invoke("predict", tmp_path / "run", tmp_path / "raw.npz", "--out", tmp_path / "out.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


def test_each_epoch_appends_its_own_rows_and_a_whole_write_replaces_the_file(tmp_path,
                                                                             monkeypatch):
    """The growth audit: metrics.jsonl (and grad-norms.jsonl) rewritten whole each epoch made a
    run's bookkeeping grow with the square of its epochs (100,000 one-step epochs: about 855 GB
    written). Each epoch appends its own rows, encoded once; a whole write (a resume's, which
    drops the rows after its checkpoint: test_a_full_disk_while_a_row_is_appended_keeps_the_
    run_resumable and tests/runtime/test_determinism_resume.py) replaces the file."""
    import nnrun.runtime.run_dir as run_dir

    appended = []
    real_append = run_dir.append_text_durably
    monkeypatch.setattr(run_dir, "append_text_durably",
                        lambda path, text: appended.append(text) or real_append(path, text))
    run = run_dir.RunDirectory(tmp_path)
    run.write_metrics([])
    rows = []
    for epoch in range(1, 6):
        rows.append({"epoch": epoch, "train_loss": 1.0 / epoch})
        run.append_metrics(rows[-1:])
    assert appended == [json.dumps(row) + "\n" for row in rows]  # one row a write

    def read_back():
        return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().split("\n")
                if line]

    assert read_back() == rows
    replaced = [dict(row) for row in rows[:2]] + [{"epoch": 3, "train_loss": 9.0}]
    run.write_metrics(replaced)
    assert read_back() == replaced and len(appended) == 5


def test_a_full_disk_while_a_row_is_appended_keeps_the_run_resumable(tmp_path, monkeypatch):
    """An append cut short by a full disk leaves a torn last line: the error names the run's
    file (os.write's own error names none), says the checkpoint is intact and how to resume,
    and the resume drops the torn line and trains the epoch again, as an uninterrupted run."""
    import errno
    import os

    import nnrun.runtime.files as files

    spec = tmp_path / "spec.yaml"
    spec.write_text(SHUFFLED_DIGITS.replace("epochs: 2", "epochs: 3"))
    nnrun.train(spec, out_dir=tmp_path / "whole", quiet=True, max_steps=4)
    real_write, writes = os.write, []

    def full_at_the_third_row(descriptor, data):
        writes.append(data)
        if len(writes) == 3:
            real_write(descriptor, data[:10])  # part of the line, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(descriptor, data)

    monkeypatch.setattr(files.os, "write", full_at_the_third_row)
    with pytest.raises(nnrun.TrainingError) as stopped:
        nnrun.train(spec, out_dir=tmp_path / "run", quiet=True, max_steps=4)
    monkeypatch.setattr(files.os, "write", real_write)
    message = str(stopped.value)
    assert f"{tmp_path / 'run' / 'metrics.jsonl'}: No space left on device" in message
    assert f"--resume {tmp_path / 'run'}" in message
    assert (tmp_path / "run" / "metrics.jsonl").read_text().endswith(writes[2][:10].decode())
    nnrun.train(spec, resume=tmp_path / "run", quiet=True, max_steps=4)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    whole = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").open()]
    timing = {"epoch_s", "samples_per_s"}
    assert ([{k: v for k, v in row.items() if k not in timing} for row in rows]
            == [{k: v for k, v in row.items() if k not in timing} for row in whole])
