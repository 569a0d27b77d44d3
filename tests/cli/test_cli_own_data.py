"""Training on the user's own npz files: the input shape, predict inputs, missing splits."""

import json

import numpy as np
import pytest
import yaml

from nnrun.notices import collected

from .test_cli import assert_ok, assert_one_line_error, invoke, write

SPEC = """
data: {dataset: npz, path: d.npz, validation_split: 0.2}
model:
  INPUT
  layers: [{type: dense, units: 3}]
train: {epochs: 1}
"""


def _files(tmp_path, input_line=""):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 4)).astype("f4"), y=rng.integers(0, 3, 40))
    return write(tmp_path / "s.yaml", SPEC.replace("INPUT", input_line))


def test_the_input_shape_is_read_from_the_file_when_not_given(tmp_path):
    """DESIGN.md: input_shape is optional when the dataset is known; npz and csv data make it
    known in their file's header, which validate, summary and train read (no data)."""
    spec = _files(tmp_path)
    assert "s.yaml: ok" in assert_ok(invoke("validate", spec)).stdout
    assert "input [4]" in assert_ok(invoke("summary", spec)).stdout
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    assert "input_shape: [4]" in (tmp_path / "run" / "spec.yaml").read_text()
    assert_ok(invoke("train", spec, "--resume", tmp_path / "run", "--epochs", 2, "--quiet"))
    (tmp_path / "t.csv").write_text("a,label,b,c\n" + "".join(f"{i},{i % 2},1,2\n"
                                                              for i in range(20)))
    csv = write(tmp_path / "c.yaml", SPEC.replace("npz, path: d.npz", "csv, path: t.csv")
                .replace("INPUT", ""))
    assert_ok(invoke("train", csv, "--out", tmp_path / "csv-run", "--quiet"))
    assert "input_shape: [3]" in (tmp_path / "csv-run" / "spec.yaml").read_text()


def test_a_file_whose_shape_changed_is_a_change_on_resume(tmp_path):
    spec = _files(tmp_path)
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    np.savez(tmp_path / "d.npz", x=np.zeros((40, 5), "f4"), y=np.zeros(40, int))
    line = assert_one_line_error(invoke("train", spec, "--resume", tmp_path / "run"), "run")
    assert "input_shape" in line


def test_a_data_file_gone_before_a_resume_is_said_so(tmp_path):
    # Not "the spec differs (model.input_shape: 4 -> None)": the file gave that shape.
    spec = _files(tmp_path)
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    (tmp_path / "d.npz").rename(tmp_path / "moved.npz")
    line = assert_one_line_error(invoke("train", spec, "--resume", tmp_path / "run"), "d.npz")
    assert "not found" in line and "differs" not in line


def test_without_its_file_validate_names_the_file_where_it_would_ask_for_the_input_shape(
        tmp_path):
    """It said "input_shape is needed ... (missing, or its features are not [N, ...])": now
    the file and why, at data.path, as with --data (session 44)."""
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", ""))  # d.npz does not exist
    line = assert_one_line_error(invoke("validate", spec), spec)
    assert ": error: data.path: " in line and "d.npz: no such file (data.path is relative to " \
        "the spec file): the model's input shape is read from it; fix data.path, or give " \
        "model.input_shape" in line and "input_shape is needed" not in line
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert "not found" in line and not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["summary"], ["graph"], ["bench", "--steps", "1"],
                                     ["gradcheck"], ["check-backends"]])
def test_every_command_names_the_missing_file_that_was_to_give_the_input_shape(
        tmp_path, command):
    """summary, graph, bench, gradcheck and check-backends asked for model.input_shape "(missing,
    or its features are not [N, ...])" where validate named the file and why."""
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", ""))  # d.npz does not exist
    line = assert_one_line_error(invoke(*command, spec), spec)
    assert line.startswith(f"{spec}:") and line.endswith(
        f": error: data.path: {tmp_path / 'd.npz'}: no such file (data.path is relative to the "
        "spec file): the model's input shape is read from it; fix data.path, or give "
        "model.input_shape")


def test_a_data_path_that_names_a_directory_is_said_without_data_too(tmp_path):
    """validate said "ok" (input_shape given) or asked for input_shape "(missing, or its
    features are not [N, ...])" (the second review); train refuses it."""
    (tmp_path / "d.npz").mkdir()
    for input_shape, severity, code, needed in (
            ("input_shape: [4]", "warning", 0, "train needs it"),
            ("", "error", 1, "the model's input shape is read from it; fix data.path, or give "
                             "model.input_shape")):
        spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", input_shape))
        result = invoke("validate", spec)
        assert result.exit_code == code and "Traceback" not in result.output
        (line,) = result.stderr.splitlines()
        assert f": {severity}: data.path: " in line and "d.npz: a directory, not a file (data." \
            f"path is relative to the spec file): {needed}" in line


def test_labels_of_more_classes_than_samples_are_called_wrong(tmp_path):
    """Labels up to 1e12 asked for a last layer of 1000000000001 units."""
    spec = _files(tmp_path, "input_shape: [4]")
    with np.load(tmp_path / "d.npz") as data:
        x, y = data["x"], data["y"].copy()
    y[7] = 10**12
    np.savez(tmp_path / "d.npz", x=x, y=y)
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert "labels go up to 1000000000000, far more classes than the 40 labels" in line
    assert "look wrong" in line and "units to" not in line
    for top in (5, 100):  # a few classes too many, or a small split of many classes:
        y[7] = top        # the output layer is what to change
        np.savez(tmp_path / "d.npz", x=x, y=y)
        line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
        assert f"set units: {top + 1} in model.layers[0] (dense_1)" in line
    assert not (tmp_path / "run").exists()


def test_labels_beyond_one_output_say_one_output(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(12, 4)), y=np.arange(12) % 2)
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz}\n"
                 "model:\n  layers: [{type: dense, units: 1}]\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    # the newcomer audit: one output of 0/1 labels under the default loss means bce, likely
    assert line.endswith("labels go up to 1 but the model has 1 output; set units: 2 in "
                         "model.layers[0] (dense_1), or loss: binary_cross_entropy with its one "
                         "output")


def test_labels_that_are_all_left_out_are_one_line_not_an_internal_error(tmp_path):
    """Every label equal to loss.ignore_index: the class check took the max of nothing (exit
    70)."""
    spec = _files(tmp_path, "input_shape: [4]")
    with np.load(tmp_path / "d.npz") as data:
        x = data["x"]
    np.savez(tmp_path / "d.npz", x=x, y=np.full(len(x), 2))
    spec.write_text(spec.read_text() + "loss: {type: cross_entropy, ignore_index: 2}\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert "every label of the data is loss.ignore_index (2)" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("split", ["training", "validation", "test"])
def test_a_split_whose_every_label_is_left_out_is_one_line(tmp_path, split):
    """The report audit: a validation split of ignored labels only printed val_loss 0.0000
    every epoch, and that 0 chose epoch 1's weights as the final model (test accuracy 0.907
    against the last epoch's 0.980)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 4)), rng.integers(0, 3, 20)
    arrays = {"x": x, "y": y, "x_val": x[:5], "y_val": y[:5], "x_test": x[:4], "y_test": y[:4]}
    key = {"training": "y", "validation": "y_val", "test": "y_test"}[split]
    arrays[key] = np.full(len(arrays[key]), 9)
    np.savez(tmp_path / "d.npz", **arrays)
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz}\n"
                 "model: {layers: [{type: dense, units: 3}]}\n"
                 "loss: {type: cross_entropy, ignore_index: 9}\ntrain: {epochs: 1}\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert f"every label of the {split} split is loss.ignore_index (9)" in line
    assert not (tmp_path / "run").exists()


def test_predict_reads_a_npy_files_array_and_eval_names_the_missing_split(tmp_path):
    """The predict audit: np.save's file, the first form a user tries, was refused as 'not a
    readable .npz file (File is not a zip file)'."""
    spec = _files(tmp_path, "input_shape: [4]")
    assert invoke("train", spec, "--out", tmp_path / "run", "--quiet").exit_code == 0
    x = np.random.default_rng(1).normal(size=(3, 4))
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    for name in ("x.npy", "x.npz"):
        result = invoke("predict", tmp_path / "run", tmp_path / name, "--out",
                        tmp_path / f"p-{name}.npy")
        assert result.exit_code == 0, result.output
    assert np.array_equal(np.load(tmp_path / "p-x.npy.npy"), np.load(tmp_path / "p-x.npz.npy"))
    np.save(tmp_path / "o.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    (tmp_path / "t.npy").write_bytes((tmp_path / "x.npy").read_bytes()[:140])
    np.save(tmp_path / "w.npy", np.zeros((2, 5)))
    for name, said in (("o.npy", "not a readable .npy file (the array holds Python objects"),
                       ("t.npy", "not a readable .npy file (the array declares 96 bytes of data "
                                 "but holds 12)"),
                       ("w.npy", "x must be [N, 4], got shape [2, 5]")):
        result = invoke("predict", tmp_path / "run", tmp_path / name, "--out", tmp_path / "q.npy")
        assert said in assert_one_line_error(result, name)
    assert not (tmp_path / "q.npy").exists()
    line = assert_one_line_error(invoke("eval", tmp_path / "run", "--split", "test"), "d.npz")
    assert "x_test" in line


# --- regression targets ---------------------------------------------------------------------

REGRESSION = """
data: {dataset: DATASET, path: FILE, validation_split: 0.25}
model:
  input_shape: [2]
  layers: [{type: dense, units: 8, activation: tanh}, {type: dense, units: UNITS}]
loss: LOSS
train: {epochs: 1, metrics: [mae]}
"""


def _regression_files(tmp_path, dataset="npz", loss="mse", units=1, y_shape=(40,)):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    y = (x[:, :1] - 0.5 * x[:, 1:]).repeat(y_shape[1] if len(y_shape) > 1 else 1, axis=1)
    y = y.reshape(y_shape)
    if dataset == "npz":
        np.savez(tmp_path / "r.npz", x=x, y=y)
    else:
        rows = ["a,b,label"] + [f"{a},{b},{t}" for (a, b), t in zip(x, y)]
        (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    text = (REGRESSION.replace("DATASET", dataset).replace("FILE", f"r.{dataset}")
            .replace("LOSS", loss).replace("UNITS", str(units)))
    return write(tmp_path / "r.yaml", text)


def test_float_targets_train_under_each_regression_loss(tmp_path):
    for dataset, loss, units, shape in [("npz", "mse", 1, (40,)), ("csv", "mae", 1, (40,)),
                                        ("npz", "huber", 2, (40, 2))]:
        spec = _regression_files(tmp_path, dataset, loss, units, shape)
        out = tmp_path / f"run-{dataset}-{loss}"
        result = invoke("train", spec, "--out", out, "--quiet")
        assert result.exit_code == 0, result.output
        predicted = invoke("eval", out, "--split", "val", "--format", "json")
        assert predicted.exit_code == 0 and "val_mae" in predicted.stdout
    # eval's default split is test, which a csv file cannot hold: the line says what to do
    line = assert_one_line_error(invoke("eval", tmp_path / "run-csv-mae"), "r.csv")
    assert "a csv dataset has none" in line and "--split val" in line


@pytest.mark.parametrize("loss, units, labels", [
    ("cross_entropy", 3, "integer class labels"),
    ("binary_cross_entropy", 1, "binary_cross_entropy needs labels 0 or 1")])  # not 0..k-1
def test_float_targets_under_a_class_loss_name_the_fix(tmp_path, loss, units, labels):
    spec = _regression_files(tmp_path, "csv", loss, units)
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "r.csv")
    assert labels in line and "loss: mse" in line


def test_targets_must_match_the_outputs(tmp_path):
    spec = _regression_files(tmp_path, "npz", "mse", 3)
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "r.npz")
    assert line.endswith("the targets have one value per sample, the model's outputs are [3] "
                         "(3 values); set units: 1 in model.layers[1] (dense_2)"), line


def test_a_regression_loss_on_class_labels_needs_a_vector_output(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", x=rng.random((40, 1, 8, 8)).astype("f4"),
             y=rng.integers(0, 3, 40))
    spec = write(tmp_path / "c.yaml", "data: {dataset: npz, path: c.npz}\nmodel:\n  layers:\n"
                 "    - {type: conv2d, filters: 3, kernel_size: 3}\nloss: mse\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "c.npz")
    assert "mse on class labels compares one-hot targets" in line and "[3, 6, 6]" in line


def test_a_regression_loss_on_label_maps_needs_one_score_per_position(tmp_path):
    """Label maps are not made one-hot: [classes, H, W] outputs under mse stop training with
    the fix, not an internal error; so do classes beyond 0/1 that one score per position would
    be read as by the confusion metrics."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", x=rng.random((8, 1, 4, 4)).astype("f4"),
             masks=rng.integers(0, 3, (8, 4, 4)))
    spec = write(tmp_path / "m.yaml", "data: {dataset: npz, path: m.npz, validation_split: 0}\n"
                 "model:\n  layers:\n    - {type: conv2d, filters: 3, kernel_size: 1}\n"
                 "loss: mse\ntrain: {epochs: 1, batch_size: 4}\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "m.npz")
    assert "label maps [4, 4] with one score per position, [1, 4, 4]" in line
    assert "set filters: 1 in model.layers[0] (conv2d_1)" in line and "cross_entropy" in line
    one_score = ("--set", "model.layers[0].filters=1")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "one", *one_score),
                                 "m.npz")
    assert "accuracy reads one score per position as class 0 or 1" in line
    assert "up to 2" in line
    assert "set filters: 3 in model.layers[0] (conv2d_1) with loss: cross_entropy" in line
    assert_ok(invoke("train", spec, "--out", tmp_path / "mae", "--quiet", *one_score,
                     "--set", "train.metrics=[mae]"))


def test_accuracy_on_real_targets_names_the_fix(tmp_path):
    spec = _regression_files(tmp_path)
    result = invoke("train", spec, "--out", tmp_path / "run", "--set", "train.metrics=[accuracy]")
    assert "metrics: [mae]" in assert_one_line_error(result, "r.npz")


def test_metrics_left_out_follow_the_targets(tmp_path):
    """Without train.metrics, regression targets get mae (accuracy has no meaning for them) and
    class labels accuracy; the run's spec.yaml leaves the default out, so a resume reads the
    same default from the same file."""
    spec = _regression_files(tmp_path)
    spec.write_text(spec.read_text().replace(", metrics: [mae]", ""))
    out = tmp_path / "run"
    assert_ok(invoke("train", spec, "--out", out, "--quiet"))
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert "train_mae" in row and "val_mae" in row and "val_accuracy" not in row
    assert "metrics" not in yaml.safe_load((out / "spec.yaml").read_text())["train"]
    assert "val_mae" in assert_ok(invoke("eval", out, "--split", "val")).stdout
    assert_ok(invoke("train", spec, "--resume", out, "--epochs", 2, "--quiet"))
    classes = _files(tmp_path)
    assert_ok(invoke("train", classes, "--out", tmp_path / "classes", "--quiet"))
    row = json.loads((tmp_path / "classes" / "metrics.jsonl").read_text().splitlines()[0])
    assert "val_accuracy" in row and "val_mae" not in row


def test_regression_targets_that_cannot_fit_name_the_fix(tmp_path):
    rng = np.random.default_rng(0)
    spec = write(tmp_path / "r.yaml", "data: {dataset: npz, path: r.npz}\nmodel:\n  layers:\n"
                 "    - {type: dense, units: 1}\nloss: mse\n")
    np.savez(tmp_path / "r.npz", x=rng.random((20, 3)), y=rng.integers(-4, 5, 20))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "a"), "r.npz")
    assert "labels must be >= 0" in line and "y.astype(float)" in line
    np.savez(tmp_path / "r.npz", x=rng.random((20, 3)), y=np.zeros((20, 0)))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "b"), "r.npz")
    assert "the targets are empty ([20, 0]" in line and "units to 0" not in line


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_labels_marked_with_a_negative_ignore_index_train_and_evaluate(tmp_path, loss):
    """Labels -100 (PyTorch's default ignore_index) are left out of the loss and of accuracy,
    in train and in eval, as a label map's 255 is."""
    rng = np.random.default_rng(0)
    x, x_test = rng.standard_normal((120, 3)), rng.standard_normal((40, 3))
    y, y_test = (x[:, 0] > 0).astype(np.int64), (x_test[:, 0] > 0).astype(np.int64)
    y[::4] = y_test[::4] = -100
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x_test, y_test=y_test)
    units = 2 if loss == "cross_entropy" else 1
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz, normalize: none}\n"
                 f"model:\n  layers:\n    - {{type: dense, units: {units}}}\n"
                 f"loss: {{type: {loss}, ignore_index: -100}}\n"
                 "optimizer: {type: adam, lr: 0.1}\n"
                 "train: {epochs: 3, batch_size: 16, metrics: [accuracy]}\n")
    out = tmp_path / "run"
    assert_ok(invoke("train", spec, "--out", out, "--quiet"))
    np.savez(tmp_path / "x.npz", x=x_test)
    assert_ok(invoke("predict", out, tmp_path / "x.npz", "--out", tmp_path / "p.npy"))
    scores = np.load(tmp_path / "p.npy")
    # predict gives the last layer's outputs: logits here, the sigmoid being the loss's
    predicted = scores.argmax(1) if units == 2 else (scores[:, 0] > 0).astype(np.int64)
    labelled = y_test != -100
    expected = np.mean(predicted[labelled] == y_test[labelled])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["test_accuracy"] == pytest.approx(expected)


def _whole_number_files(tmp_path, metrics: str = ""):
    """Counts 0..5 saved as floats, one output under mse."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "w.npz", x=rng.random((40, 3)), y=rng.integers(0, 6, 40).astype("f4"),
             x_test=rng.random((10, 3)), y_test=rng.integers(0, 6, 10).astype("f4"))
    return write(tmp_path / "w.yaml", "data: {dataset: npz, path: w.npz}\nmodel:\n  layers:\n"
                 f"    - {{type: dense, units: 1}}\nloss: mse\ntrain: {{epochs: 1{metrics}}}\n")


def test_the_warning_of_whole_numbers_says_the_range_they_span(tmp_path):
    """Ratings 1..10 are not "the labels 0..10"."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "r.npz", x=rng.random((40, 3)), y=rng.integers(1, 11, 40).astype("f4"))
    spec = write(tmp_path / "r.yaml", "data: {dataset: npz, path: r.npz, validation_split: 0}\n"
                 "model:\n  layers: [{type: dense, units: 1}]\nloss: mse\ntrain: {epochs: 1}\n")
    result = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    assert "regresses the labels 1..10 as numbers" in result.stderr


def test_whole_numbers_one_output_regresses_are_tracked_by_mae_and_warned(tmp_path):
    """Counts, ratings or prices are whole numbers: accuracy over one output means nothing."""
    spec = _whole_number_files(tmp_path)
    result = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    assert "regresses the labels 0..5 as numbers, tracked by mae" in result.stderr
    assert "set units: 6" in result.stderr and "train.metrics: [mae]" in result.stderr
    final = json.loads((tmp_path / "run" / "summary.json").read_text())["final"]
    assert "test_mae" in final and "test_accuracy" not in final
    shown = json.loads(assert_ok(invoke("eval", tmp_path / "run", "--format", "json")).stdout)
    assert shown["test_mae"] == pytest.approx(final["test_mae"])
    np.savez(tmp_path / "x.npz", x=np.load(tmp_path / "w.npz")["x_test"])
    assert_ok(invoke("predict", tmp_path / "run", tmp_path / "x.npz", "--out", tmp_path / "p.npy"))
    by_hand = np.abs(np.load(tmp_path / "p.npy")[:, 0] - np.load(tmp_path / "w.npz")["y_test"])
    assert final["test_mae"] == pytest.approx(by_hand.mean(), rel=1e-5)


def test_whole_numbers_declared_by_their_metric_are_not_warned(tmp_path):
    spec = _whole_number_files(tmp_path, ", metrics: [mae]")
    result = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    assert "warning" not in result.stderr


def test_whole_numbers_one_output_regresses_under_accuracy_are_warned_as_classes(tmp_path):
    spec = _whole_number_files(tmp_path, ", metrics: [accuracy]")
    result = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    assert "regresses the class labels 0..5 as numbers" in result.stderr
    assert "set units: 6" in result.stderr and "use train.metrics: [mae]" in result.stderr


def test_a_run_without_a_split_has_null_keys_for_each_metric(tmp_path):
    spec = _regression_files(tmp_path)
    spec.write_text(spec.read_text().replace("validation_split: 0.25", "validation_split: 0"))
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    final = json.loads((tmp_path / "run" / "summary.json").read_text())["final"]
    assert final["val_loss"] is None and final["val_mae"] is None and "test_mae" in final


def test_the_default_spelled_out_or_left_out_is_the_same_spec(tmp_path):
    """A run whose spec.yaml spells the default out (as nnrun wrote it before the default
    followed the targets) resumes with the spec that leaves it out, and the reverse; diff
    shows no difference either. Another list measures more or less, not otherwise: it
    resumes too (train.metrics is free on a resume, as train.epochs is)."""
    spelled = _regression_files(tmp_path)
    left_out = write(tmp_path / "left.yaml", spelled.read_text().replace(", metrics: [mae]", ""))
    for first, then in ((spelled, left_out), (left_out, spelled)):
        out = tmp_path / f"run-{first.stem}"
        assert_ok(invoke("train", first, "--out", out, "--quiet"))
        assert_ok(invoke("train", then, "--resume", out, "--epochs", 2, "--quiet"))
    settings = json.loads(assert_ok(invoke("diff", tmp_path / "run-r", tmp_path / "run-left",
                                           "--format", "json")).stdout)["settings"]
    assert "train.metrics" not in settings
    other = write(tmp_path / "mse.yaml", spelled.read_text().replace("[mae]", "[mse]"))
    assert_ok(invoke("train", other, "--resume", tmp_path / "run-left", "--epochs", 3,
                     "--quiet"))
    last = json.loads((tmp_path / "run-left" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "train_mse" in last and "train_mae" not in last


def test_an_early_stopping_monitor_of_the_default_metrics(tmp_path):
    """Before npz or csv data is read, either default metric may be monitored; training, with
    the targets known, refuses the one that will not be tracked."""
    spec = _regression_files(tmp_path)
    spec.write_text(spec.read_text().replace(
        ", metrics: [mae]", ", early_stopping: {monitor: val_accuracy}"))
    assert_ok(invoke("validate", spec))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "monitor")
    assert "'val_accuracy' is not a metric of this run" in line and "val_mae" in line
    assert "add accuracy" not in line  # which real-valued targets refuse (an advice audit)
    spec.write_text(spec.read_text().replace("val_accuracy", "val_mae"))
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    digits = write(tmp_path / "d.yaml", "data: {dataset: digits, validation_split: 0.2}\n"
                   "model: {layers: [{type: flatten}, {type: dense, units: 10}]}\n"
                   "train: {early_stopping: {monitor: val_mae}}\n")
    result = invoke("validate", digits)
    assert result.exit_code == 1 and "'val_mae' will not be a metric" in result.output


# --- several 0/1 labels per sample ----------------------------------------------------------

MULTI_LABEL = """
data: {dataset: npz, path: m.npz}
model:
  input_shape: INPUT
  layers: [{type: LAYER, UNITS: 4, KERNEL}]
loss: binary_cross_entropy
train: {epochs: 1, metrics: []}
"""


def _multi_label(tmp_path, y_dtype, input_shape=(5,)):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", x=rng.random((40, *input_shape)).astype("f4"),
             y=rng.integers(0, 2, (40, 4)).astype(y_dtype))
    vector = len(input_shape) == 1
    text = (MULTI_LABEL.replace("INPUT", str(list(input_shape)))
            .replace("LAYER", "dense" if vector else "conv1d")
            .replace("UNITS: 4", "units: 4" if vector else "filters: 1")
            .replace(", KERNEL", "" if vector else ", kernel_size: 1"))
    return write(tmp_path / "m.yaml", text)


def test_several_labels_per_sample_train_under_binary_cross_entropy(tmp_path):
    """[N, k] 0/1 labels for a [k] output (multi-label, PyTorch's BCEWithLogitsLoss on such
    targets) were refused by training though model.loss_and_grads took them: accuracy counts
    each label, the loss is the mean over them, and eval and predict read them alike."""
    spec = _multi_label(tmp_path, "i8")
    text = spec.read_text().replace("metrics: []", "metrics: [accuracy]")
    spec.write_text(text.replace("m.npz}", "m.npz, validation_split: 0}"))
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    data = np.load(tmp_path / "m.npz")
    assert_ok(invoke("predict", tmp_path / "run", tmp_path / "m.npz", "--out", tmp_path / "p.npy"))
    logits = np.load(tmp_path / "p.npy").astype(np.float64)  # no sigmoid layer: the logits
    y = data["y"]
    loss = np.mean(np.logaddexp(0, logits) - y * logits)
    final = json.loads((tmp_path / "run" / "summary.json").read_text())["final"]
    evaluated = json.loads(invoke("eval", tmp_path / "run", "--split", "train", "--format",
                                  "json").stdout)
    assert evaluated["train_accuracy"] == pytest.approx(((logits > 0) == y).mean())
    assert evaluated["train_loss"] == pytest.approx(loss, rel=1e-5)
    assert final["train_loss"] > 0


def test_several_labels_per_sample_that_do_not_fit_the_outputs_name_the_fix(tmp_path):
    """As floats they are told to be saved as integers (as 0/1 maps are); beside an output of
    another size, the units to set."""
    spec = _multi_label(tmp_path, "f4")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "f4"), "m.npz")
    assert line.endswith("the labels are [4] per sample, floats read as values; "
                         "binary_cross_entropy takes several 0/1 labels a sample as integers: "
                         "save y.astype(int)")
    for y_dtype in ("i8", "f4"):
        spec = _multi_label(tmp_path, y_dtype)
        spec.write_text(spec.read_text().replace("units: 4", "units: 3"))
        line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / y_dtype),
                                     "m.npz")
        assert line.endswith("the labels are [4] per sample (several 0/1 labels each), the "
                             "model ends with [3]; binary_cross_entropy needs one output per "
                             "label: set units: 4 in model.layers[0] (dense_1) (for one of 4 "
                             "classes a "
                             "sample, use y [N] with cross_entropy)"), line
        assert not (tmp_path / y_dtype).exists()


def test_top_k_accuracy_of_several_labels_a_sample_is_refused_as_for_label_maps(tmp_path):
    spec = _multi_label(tmp_path, "i8")
    spec.write_text(spec.read_text().replace("metrics: []", "metrics: [{type: top_k_accuracy, "
                                                            "k: 2}]"))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "m.npz")
    assert line.endswith("top_k_accuracy is for one label per sample; for several labels a "
                         "sample use accuracy (of each label)")


def test_several_labels_a_sample_count_their_labelled_positions_with_ignore_index(tmp_path):
    """ignore_index leaves labels out of the loss and of accuracy and mean_iou, which count
    the labels as positions; a validation split holds samples out whole."""
    spec = _multi_label(tmp_path, "i8")
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (40, 4))
    y[rng.random((40, 4)) < 0.25] = 255
    np.savez(tmp_path / "m.npz", x=rng.random((40, 5)).astype("f4"), y=y)
    spec.write_text(spec.read_text().replace("metrics: []", "metrics: [accuracy, mean_iou]")
                    .replace("binary_cross_entropy", "{type: binary_cross_entropy, "
                                                     "ignore_index: 255}")
                    .replace("m.npz}", "m.npz, validation_split: 0}"))
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    assert_ok(invoke("predict", tmp_path / "run", tmp_path / "m.npz", "--out", tmp_path / "p.npy"))
    said = json.loads(invoke("eval", tmp_path / "run", "--split", "train", "--format",
                             "json").stdout)
    logits = np.load(tmp_path / "p.npy").astype(np.float64)
    labelled = y != 255
    assert said["train_accuracy"] == pytest.approx(((logits > 0) == y)[labelled].mean())
    terms = (np.logaddexp(0, logits) - y * logits)[labelled]
    assert said["train_loss"] == pytest.approx(terms.mean(), rel=1e-5)
    positive, truth = (logits > 0)[labelled], (y == 1)[labelled]
    iou = [(p & t).sum() / (p | t).sum() for p, t in ((positive, truth), (~positive, ~truth))]
    assert said["train_mean_iou"] == pytest.approx(np.mean(iou))
    spec.write_text(spec.read_text().replace("validation_split: 0}", "validation_split: 0.25}"))
    assert_ok(invoke("train", spec, "--out", tmp_path / "held", "--quiet"))
    final = json.loads((tmp_path / "held" / "summary.json").read_text())["final"]
    assert 0 <= final["val_accuracy"] <= 1 and 0 <= final["val_mean_iou"] <= 1


def test_one_label_a_sample_beside_several_outputs_is_refused_as_the_api_refuses_it(tmp_path):
    """units: 2 under binary_cross_entropy with y [N]: an internal error (exit 70) in the
    accuracy once several outputs were labels of their own; before, each output learned the
    same label."""
    spec = _multi_label(tmp_path, "i8")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", x=rng.random((40, 5)).astype("f4"), y=rng.integers(0, 2, 40))
    spec.write_text(spec.read_text().replace("units: 4", "units: 2"))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "m.npz")
    assert line.endswith("one 0/1 label per sample, the model ends with [2]; "
                         "binary_cross_entropy compares each output with a label of its own; "
                         "set units: 1 in model.layers[0] (dense_1) (or, for 2 classes, use loss: "
                         "cross_entropy)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("values, said", [
    ((-1, 1), "the labels are -1 and +1, two classes as a perceptron writes them: save them as "
              "0 and 1, (y > 0).astype(int)"),
    ((0, 1, 2), "the data also holds 2: each of several labels a sample is 0 or 1 (for one of "
                "k classes a sample, use y [N] with cross_entropy)"),
    ((0, 1, -1), "the data also holds -1; to leave out the positions labelled -1, set "
                 "loss.ignore_index: -1"),
])
def test_several_labels_a_sample_beyond_0_and_1_name_their_fix(tmp_path, values, said):
    """They were told the data has k classes and to use cross_entropy with k units, which
    cannot take y [N, 4]."""
    spec = _multi_label(tmp_path, "i8")
    y = np.resize(np.array(values), (40, 4))
    np.savez(tmp_path / "m.npz", x=np.random.default_rng(0).random((40, 5)).astype("f4"), y=y)
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "m.npz")
    assert line.endswith(said), line


def test_plus_minus_one_labels_in_one_split_are_told_so_not_to_ignore_minus_one(tmp_path):
    """With the test split saved as 0/1, -1/+1 training labels were told to set
    loss.ignore_index: -1, which then trained on the positive labels alone."""
    spec = _multi_label(tmp_path, "i8")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", x=rng.random((40, 5)).astype("f4"),
             y=2 * rng.integers(0, 2, (40, 4)) - 1, x_test=rng.random((10, 5)).astype("f4"),
             y_test=rng.integers(0, 2, (10, 4)))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "m.npz")
    assert line.endswith("save them as 0 and 1, (y > 0).astype(int)"), line


@pytest.mark.parametrize("y_shape, units, said", [
    ((40,), 3, "binary_cross_entropy needs 0/1 labels, but the data has 3 classes (labels "
               "0..2); use loss: cross_entropy"),  # the model has 3 outputs already
    ((40, 4), 1, "the data also holds 2: each of several labels a sample is 0 or 1 (for one of "
                 "k classes a sample, use y [N] with cross_entropy)"),
])
def test_labels_beyond_0_and_1_are_said_before_the_outputs_they_need(tmp_path, y_shape, units,
                                                                     said):
    """The outputs' fix came first and called them 0/1 labels; followed, it met this one."""
    spec = _multi_label(tmp_path, "i8")
    spec.write_text(spec.read_text().replace("units: 4", f"units: {units}"))
    np.savez(tmp_path / "m.npz", x=np.random.default_rng(0).random((40, 5)).astype("f4"),
             y=np.resize(np.array([0, 1, 2]), y_shape))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "m.npz")
    assert line.endswith(said), line


def test_several_labels_a_sample_beside_maps_are_told_to_flatten_to_as_many_units(tmp_path):
    """They were told to keep positions a flatten had taken away, which none had."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", x=rng.random((40, 1, 6, 6)).astype("f4"),
             y=rng.integers(0, 2, (40, 3)))
    spec = write(tmp_path / "m.yaml", MULTI_LABEL.replace("INPUT", "[1, 6, 6]").replace(
        "LAYER", "conv2d").replace("UNITS: 4", "filters: 1").replace("KERNEL", "kernel_size: 1"))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "m.npz")
    assert line.endswith("binary_cross_entropy needs one output per label: end the model with "
                         "{type: flatten} and a dense layer of units: 3 (for one of 3 classes a "
                         "sample, use y [N] with cross_entropy)"), line
    spec.write_text(spec.read_text().replace(
        "kernel_size: 1}]", "kernel_size: 1}, {type: flatten}, {type: dense, units: 3}]"))
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))


COUNTS = """
data: {dataset: npz, path: c.npz}
model:
  input_shape: [4]
  layers: [{type: dense, units: 3}]
loss: LOSS
train: {epochs: 1, batch_size: 16}
"""


@pytest.mark.parametrize("whole_numbers", ["y", "y_test"])
@pytest.mark.parametrize("outputs", [3, 1])
def test_whole_numbers_beside_real_valued_targets_are_values_under_mse(tmp_path, whole_numbers,
                                                                        outputs):
    """Integer counts [N, 3] (read alone as 1-D label maps, which the model then tells apart)
    beside a held-out split of floats were refused as targets of two kinds; so were counts
    [N] of one output (read alone as class labels: the consistency audit)."""
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, (48, 3) if outputs == 3 else 48)
    arrays = {"y": counts[:32], "y_test": counts[32:]}
    real = 0.5 if outputs == 1 else 0  # one output's whole floats are class labels too
    arrays = {name: y if name == whole_numbers else y.astype("f4") + real
              for name, y in arrays.items()}
    x = rng.random((48, 4)).astype("f4")
    np.savez(tmp_path / "c.npz", x=x[:32], x_test=x[32:], **arrays)
    spec = write(tmp_path / "c.yaml", COUNTS.replace("LOSS", "mse")
                 .replace("units: 3", f"units: {outputs}"))
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert "train_mae" in metrics
    assert "test_mae" in assert_ok(invoke("eval", tmp_path / "run")).output
    if whole_numbers == "y" and outputs == 3:  # under cross_entropy the integers are label
        spec = write(tmp_path / "c.yaml", COUNTS.replace("LOSS", "cross_entropy"))  # maps
        line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "r2"), "c.npz")
        assert line.endswith("holds real-valued targets, but y holds 1-D label maps or several "
                             "labels a sample; save both splits' targets alike"), line


@pytest.mark.parametrize("split", ["test", "val"])
@pytest.mark.parametrize("outputs", [1, 2])
def test_negative_whole_numbers_held_out_beside_real_valued_targets_are_values(tmp_path, split,
                                                                               outputs):
    """Rounded measurements [N] below zero held out beside y's floats were refused as class
    labels ("labels must be >= 0 ... save them as floats", which y was): [N, 2] were taken."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 4)).astype("f4")
    y = x[:, :outputs] * 3 + 0.1 * rng.normal(size=(48, outputs))
    y = y[:, 0] if outputs == 1 else y
    np.savez(tmp_path / "c.npz", x=x[:32], y=y[:32], **{f"x_{split}": x[32:],
                                                        f"y_{split}": np.round(y[32:]).astype(int)})
    spec = write(tmp_path / "c.yaml", COUNTS.replace("LOSS", "mse")
                 .replace("units: 3", f"units: {outputs}"))
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    assert f"{split}_mae" in assert_ok(invoke("eval", tmp_path / "run", "--split", split)).output


def test_a_test_split_of_one_label_a_sample_beside_several_names_both_readings(tmp_path):
    spec = _multi_label(tmp_path, "i8")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", x=rng.random((40, 5)).astype("f4"),
             y=rng.integers(0, 2, (40, 4)), x_test=rng.random((10, 5)).astype("f4"),
             y_test=rng.integers(0, 2, 10))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "m.npz")
    assert line.endswith("holds class labels, but y holds 1-D label maps or several labels a "
                         "sample; save both splits' targets alike"), line


def test_eval_shifts_the_inputs_of_several_labels_a_sample_as_many_as_the_positions(tmp_path):
    """Labels [8] beside inputs [1, 8] were taken for label maps, and a shift refused."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", x=rng.random((40, 1, 8)).astype("f4"),
             y=rng.integers(0, 2, (40, 8)))
    spec = write(tmp_path / "m.yaml", MULTI_LABEL.replace("INPUT", "[1, 8]").replace(
        "{type: LAYER, UNITS: 4, KERNEL}", "{type: flatten}, {type: dense, units: 8}"))
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    assert_ok(invoke("eval", tmp_path / "run", "--split", "train", "--shift", "1"))


def test_several_labels_a_sample_under_cross_entropy_are_told_of_binary_cross_entropy(tmp_path):
    """They were told to end the model with a convolution of one filter per class."""
    spec = _multi_label(tmp_path, "i8")
    spec.write_text(spec.read_text().replace("binary_cross_entropy", "cross_entropy"))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "m.npz")
    assert line.endswith("the labels are [4] per sample, each 0 or 1 (several labels a sample); "
                         "cross_entropy takes one class a sample, y [N]; for several labels a "
                         "sample use loss: binary_cross_entropy")


def test_one_positive_label_a_sample_is_a_multi_label_set_under_binary_cross_entropy(tmp_path):
    """Rows of one 1 (one-hot) beside as many outputs are told to save the class index under
    cross_entropy; under binary_cross_entropy they are k yes/no labels, one per output."""
    _multi_label(tmp_path, "i8")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", x=rng.random((40, 5)).astype("f4"),
             y=np.eye(4, dtype="i8")[rng.integers(0, 4, 40)])
    assert_ok(invoke("train", tmp_path / "m.yaml", "--out", tmp_path / "run", "--quiet"))


def test_float_one_dimensional_label_maps_name_the_integer_fix(tmp_path):
    spec = _multi_label(tmp_path, "f4", input_shape=(1, 4))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "m.npz")
    assert "as integers" in line, line
    np.savez(tmp_path / "m.npz", x=np.random.default_rng(0).random((40, 1, 4)).astype("f4"),
             y=np.random.default_rng(1).integers(0, 2, (40, 4)))
    assert invoke("train", spec, "--out", tmp_path / "run", "--quiet").exit_code == 0


def test_binary_maps_against_several_output_channels_name_the_fix(tmp_path):
    """0/1 maps [N, L] with a model ending [3, L] passed the checks and crashed in training
    (internal error, exit 70) reshaping the maps to the output."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", x=rng.random((40, 1, 6)).astype("f4"),
             y=rng.integers(0, 2, (40, 6)))
    spec = write(tmp_path / "m.yaml", MULTI_LABEL.replace("INPUT", "[1, 6]").replace(
        "LAYER", "conv1d").replace("UNITS: 4", "filters: 3").replace("KERNEL", "kernel_size: 1"))
    for command in (["train", spec, "--out", tmp_path / "run"], ["trace", spec]):
        line = assert_one_line_error(invoke(*command), "m.npz")
        assert "set filters: 1 in model.layers[0] (conv1d_1)" in line and "[3, 6]" in line, line
    assert not (tmp_path / "run").exists()


def test_eval_of_a_file_whose_samples_changed_shape_is_one_line(tmp_path):
    """A column added to the data after training reached the stored normalisation as an
    internal error (operands could not be broadcast)."""
    spec = _files(tmp_path)
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    np.savez(tmp_path / "d.npz", x=np.zeros((40, 5), "f4"), y=np.zeros(40, int))
    line = assert_one_line_error(invoke("eval", tmp_path / "run", "--split", "val"), "d.npz")
    assert "samples have shape [5], the run was trained on [4]" in line


def test_files_as_other_programs_write_them_train(tmp_path):
    """A bool x (its shape read from the header all the same), float16 labels (no NumPy
    warning under --quiet), a csv with every value quoted (Python's csv.QUOTE_ALL) and one
    that starts with a byte-order mark (a spreadsheet's "CSV UTF-8") before its label column."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "b.npz", x=rng.random((40, 3)) > 0.5, y=rng.integers(0, 2, 40))
    np.savez(tmp_path / "h.npz", x=rng.random((40, 3)).astype("f4"),
             y=rng.integers(0, 2, 40).astype(np.float16))
    rows = [(i % 2, *rng.random(3)) for i in range(40)]
    (tmp_path / "q.csv").write_text('"label","a","b","c"\n' + "".join(
        ",".join(f'"{v}"' for v in row) + "\n" for row in rows))
    (tmp_path / "m.csv").write_bytes(b"\xef\xbb\xbf" + ("label,a,b,c\r\n" + "".join(
        ",".join(map(str, row)) + "\r\n" for row in rows)).encode())
    for name, data in [("b", "npz, path: b.npz"), ("h", "npz, path: h.npz"),
                       ("q", "csv, path: q.csv"), ("m", "csv, path: m.csv")]:
        spec = write(tmp_path / f"{name}.yaml", SPEC.replace("npz, path: d.npz", data)
                     .replace("INPUT", ""))
        assert "ok" in assert_ok(invoke("validate", spec)).stdout
        result = assert_ok(invoke("train", spec, "--out", tmp_path / f"run-{name}", "--quiet"))
        assert result.stderr == "", (name, result.stderr)
        assert "input_shape: [3]" in (tmp_path / f"run-{name}" / "spec.yaml").read_text()


def test_validate_compares_a_declared_input_shape_with_the_file(tmp_path):
    """Training refuses the mismatch once the data loads; validate says it first, at the line."""
    spec = _files(tmp_path, "input_shape: [5]")
    line = assert_one_line_error(invoke("validate", spec), "s.yaml:4:")
    assert "input_shape [5] does not match the samples of d.npz, [4]; use [4]" in line
    # Said alone: the layers are checked with the file's shape, which the advice gives (a
    # dense layer's "add a flatten" of [1, 2, 2] was said after it, the second mutation fuzz)
    lines = invoke("validate", _files(tmp_path, "input_shape: [1, 2, 2]")).stderr.splitlines()
    assert len(lines) == 1 and "does not match the samples of d.npz, [4]; use [4]" in lines[0]
    assert "s.yaml: ok" in assert_ok(invoke("validate", _files(tmp_path, "input_shape: [4]"))).stdout
    # a csv's alike
    (tmp_path / "d.csv").write_text("a,b,c,d,label\n1,2,3,4,0\n5,6,7,8,1\n")
    spec = write(tmp_path / "c.yaml", SPEC.replace("dataset: npz, path: d.npz",
                                                   "dataset: csv, path: d.csv")
                 .replace("INPUT", "input_shape: [1, 4]"))
    line = assert_one_line_error(invoke("validate", spec), "c.yaml:4:")
    assert line.endswith("does not match the samples of d.csv, [4]; use [4], or leave "
                         "input_shape out: it is read from the file")


def test_binary_cross_entropy_on_more_classes_says_how_many_as_validate_does(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", x=rng.random((20, 3)), y=rng.integers(0, 4, 20))
    spec = write(tmp_path / "c.yaml", "data: {dataset: npz, path: c.npz}\nmodel:\n  layers:\n"
                 "    - {type: dense, units: 1}\nloss: binary_cross_entropy\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "c.npz")
    assert line.endswith("binary_cross_entropy needs 0/1 labels, but the data has 4 classes "
                         "(labels 0..3); use loss: cross_entropy, and set units: 4 in "
                         "model.layers[0] (dense_1)")


def test_binary_cross_entropy_on_0_1_maps_with_a_void_value_suggests_ignore_index(tmp_path):
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 2, (12, 6, 6))
    masks[:, 0, 0] = 255
    np.savez(tmp_path / "m.npz", x=rng.random((12, 1, 6, 6)), y=masks)
    spec = write(tmp_path / "m.yaml", "data: {dataset: npz, path: m.npz}\nmodel:\n  layers:\n"
                 "    - {type: conv2d, filters: 1, kernel_size: 3, padding: same}\n"
                 "loss: binary_cross_entropy\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "a"), "m.npz")
    assert line.endswith("the data also holds 255; to leave out the positions labelled 255, "
                         "set loss.ignore_index: 255")
    assert_ok(invoke("train", spec, "--out", tmp_path / "b", "--quiet", "--set",
                     "loss.ignore_index=255", "--set", "train.epochs=1"))


def test_whole_numbers_beyond_1_in_the_test_split_alone_are_numbers_too(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "s.npz", x=rng.random((40, 3)), y=rng.integers(0, 2, 40).astype("f4"),
             x_test=rng.random((10, 3)), y_test=rng.integers(0, 4, 10).astype("f4"))
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: s.npz}\nmodel:\n  layers:\n"
                 "    - {type: dense, units: 1}\nloss: mse\ntrain: {epochs: 1}\n")
    result = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    assert "regresses the labels 0..3 as numbers, tracked by mae" in result.stderr


def test_a_named_datasets_classes_stay_classes_under_mse_with_one_output(tmp_path):
    """digits' labels are classes: validate warns of one output, spec.yaml, eval and resume
    track accuracy, and train must too (it tracked mae, as for a user's whole numbers)."""
    spec = write(tmp_path / "d.yaml", "data: {dataset: digits, limit: 100}\nmodel:\n  layers:\n"
                 "    - {type: flatten}\n    - {type: dense, units: 1}\nloss: mse\n"
                 "train: {epochs: 1}\n")
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    final = json.loads((tmp_path / "run" / "summary.json").read_text())["final"]
    shown = json.loads(assert_ok(invoke("eval", tmp_path / "run", "--format", "json")).stdout)
    assert "test_accuracy" in final and "test_accuracy" in shown and "test_mae" not in final


# --- an audit of users' files at the edges --------------------------------------------------

MLP3 = ("data: {{dataset: npz, path: {path}}}\nmodel:\n  layers:\n    - {{type: flatten}}\n"
        "    - {{type: dense, units: 8, activation: relu}}\n    - {{type: dense, units: 3}}\n"
        "train: {{epochs: 1, batch_size: 4}}\n")


def test_samples_of_four_axes_are_refused_before_training(tmp_path):
    """A run was trained on them, recording an input_shape nothing could load again."""
    np.savez(tmp_path / "d.npz", x=np.ones((8, 1, 2, 2, 2), "f4"), y=np.arange(8) % 3)
    spec = write(tmp_path / "s.yaml", MLP3.format(path="d.npz"))
    for command in (["validate", spec], ["train", spec, "--out", tmp_path / "run"]):
        line = assert_one_line_error(invoke(*command), "data.path")
        assert "are [1, 2, 2, 2], 4 axes" in line and "reshape x to [N, 2, 2, 2]" in line
    assert not (tmp_path / "run").exists()
    declared = write(tmp_path / "t.yaml", MLP3.format(path="d.npz").replace(
        "model:\n", "model:\n  input_shape: [8]\n"))
    assert "4 axes" in assert_one_line_error(invoke("validate", declared), "input_shape")


def test_eval_checks_the_labels_against_the_model(tmp_path):
    """The data file changed after training: an IndexError, or a loss of another sample's
    scores, where train refuses the same file in one line."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 4)).astype("f4")
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(12) % 3, x_test=x[:4], y_test=np.arange(4) % 3)
    spec = write(tmp_path / "s.yaml", MLP3.format(path="d.npz"))
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    np.savez(tmp_path / "run" / "d.npz", x=x, y=np.arange(12) % 3, x_test=x[:4],
             y_test=np.array([0, 1, 4, 5]))
    (tmp_path / "d.npz").write_bytes((tmp_path / "run" / "d.npz").read_bytes())
    line = assert_one_line_error(invoke("eval", tmp_path / "run"), "d.npz")
    # the API walk: a fix to the model's layers is for a new run, the run's model stays (the
    # fix came first, "set units: 6 ...", with the run's part after it)
    assert line.endswith("d.npz (x_test, y_test): labels go up to 5 but the model has 3 "
                         "outputs: the run was "
                         "trained on other data; evaluate on data like its own, or train a new "
                         "run on this data: set units: 6 in model.layers[2] (dense_2)")
    # real-valued targets in its place (the errors audit: no word that the run's data changed)
    real = rng.normal(size=12)
    for where in (tmp_path / "run" / "d.npz", tmp_path / "d.npz"):
        np.savez(where, x=x, y=real, x_test=x[:4], y_test=real[:4])
    line = assert_one_line_error(invoke("eval", tmp_path / "run"), "d.npz")
    assert "needs integer class labels" in line and "trained on other data" in line


@pytest.mark.parametrize("split", ["test", "val"])
def test_labels_beyond_the_model_in_a_held_out_split_alone_name_its_arrays(tmp_path, split):
    """The data audit: "d.npz: labels go up to 3", where y goes up to 2 and y_test to 3."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype("f4")
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(60) % 3,
             **{f"x_{split}": x[:5], f"y_{split}": np.array([0, 1, 2, 3, 0])})
    spec = write(tmp_path / "s.yaml", MLP3.format(path="d.npz"))
    for command in (("validate", spec, "--data"), ("train", spec, "--out", tmp_path / "run")):
        line = assert_one_line_error(invoke(*command), "d.npz")
        assert f"d.npz (x_{split}, y_{split}): labels go up to 3 but the model has 3 " \
               "outputs" in line, line
    # numbered from 1 in that split alone: its fix names its array (the data-file mutation
    # fuzz: "save y - 1" put -1 into y)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(60) % 3,
             **{f"x_{split}": x[:6], f"y_{split}": np.array([1, 2, 3, 1, 2, 3])})
    line = assert_one_line_error(invoke("validate", spec, "--data"), "d.npz")
    assert line.endswith(f"numbered from 1 (no label 0)? save y_{split} - 1, classes 0..2"), line
    # in y as well: the file's labels, as before
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(60) % 4,
             **{f"x_{split}": x[:5], f"y_{split}": np.array([0, 1, 2, 3, 0])})
    line = assert_one_line_error(invoke("validate", spec, "--data"), "d.npz")
    assert "d.npz: labels go up to 3" in line and f"x_{split}" not in line


def test_a_column_of_labels_is_named_so(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((8, 4), "f4"), y=(np.arange(8) % 3)[:, None])
    spec = write(tmp_path / "s.yaml", MLP3.format(path="d.npz"))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert "the labels are a column, [N, 1]" in line and "y.ravel()" in line


def test_a_column_of_labels_beside_vectors_is_a_map_of_one_position_where_the_model_ends_so(
        tmp_path):
    """Vectors reshaped into sequences may end in [classes, 1], class scores at one position:
    y [N, 1] was refused as a column before the model was known, y [N] after ("give label
    maps, y [N, 1]"), each message's fix the other's error."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(10, 6)), y=(np.arange(10) % 4)[:, None])
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz}\nmodel:\n  layers:\n"
                 "    - {type: reshape, shape: [2, 3]}\n"
                 "    - {type: conv1d, filters: 4, kernel_size: 3}\n"
                 "train: {epochs: 1, batch_size: 4}\n")
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(10, 6)), y=np.arange(10) % 4,
             x_test=np.ones((2, 6)), y_test=np.array([[0], [1]]))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run2"), "d.npz")
    assert "(x_test, y_test): the labels are a column, [N, 1]" in line
    assert "save y_test.ravel()" in line  # its own array, not y (the data-file mutation fuzz)
    # y one-hot (or a column) beside class labels in y_test: which one to change, and how
    for y, fix in ((np.eye(4)[np.arange(10) % 4], "y is one-hot: save y.argmax(axis=1)"),
                   ((np.arange(10) % 4)[:, None], "y is a column: save y.ravel()")):
        np.savez(tmp_path / "d.npz", x=rng.normal(size=(10, 6)), y=y, x_test=np.ones((2, 6)),
                 y_test=np.array([0, 1]))
        line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run3"), "d.npz")
        assert line.endswith(fix), line


@pytest.mark.parametrize("x_layout, fix", [
    (lambda x: x[:, None], "save x.reshape(-1, 1, 6, 6)"),
    (lambda x: x.transpose(0, 2, 3, 1), "the samples are channels last; save "
                                        "numpy.moveaxis(x, -1, 1), the channels first")])
def test_x_at_odds_with_held_out_splits_that_agree_is_the_one_told(tmp_path, x_layout, fix):
    """The data-file mutation fuzz: x [N, 1, 1, 6, 6] beside right x_test and x_val was told
    to change x_test, then x_val, then x; the fix, followed, trains."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 1, 6, 6)).astype("f4"), np.arange(20) % 2
    held = {"x_test": x[:4], "y_test": y[:4], "x_val": x[:4], "y_val": y[:4]}
    np.savez(tmp_path / "d.npz", x=x_layout(x), y=y, **held)
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz}\nmodel:\n  input_shape: "
                 "[1, 6, 6]\n  layers: [{type: flatten}, {type: dense, units: 2}]\n"
                 "train: {epochs: 1}\n")
    line = assert_one_line_error(invoke("validate", spec, "--data"), "d.npz")
    assert line.endswith(f"(x, y): samples are {list(x_layout(x).shape[1:])}, in x_test and "
                         f"x_val [1, 6, 6]; {fix}"), line
    np.savez(tmp_path / "d.npz", x=x, y=y, **held)  # as told
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))


def test_a_csv_line_of_spaces_is_a_blank_line(tmp_path):
    rows = "".join(f"{i / 10},{i / 5},{i % 3}\n" for i in range(12))
    (tmp_path / "d.csv").write_text(f"a,b,label\n{rows}   \n\t\n")
    spec = write(tmp_path / "s.yaml", "data: {dataset: csv, path: d.csv}\n"
                 "model: {layers: [{type: dense, units: 3}]}\ntrain: {epochs: 1}\n")
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))


def test_label_maps_of_an_npz_a_few_positions_longer_than_the_outputs_get_a_fix_that_works(
        tmp_path):
    """The claims audit: maps [20] against outputs [3, 18] were told "upsample to the labels'
    size", which no whole factor does; the named datasets' check and this one now share
    their advice."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(6, 1, 20)), masks=rng.integers(0, 3, (6, 20)))
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz}\n"
                 "model: {layers: [{type: conv1d, filters: 3, kernel_size: 3}]}\n"
                 "train: {epochs: 1}\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert "the maps fall 2 short of the labels: pad the convolutions more (padding: same" in line
    fixed = spec.read_text().replace("kernel_size: 3", "kernel_size: 3, padding: same")
    spec.write_text(fixed)
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))


@pytest.mark.parametrize("value, column, said", [
    ("inf", "b", "inf"), ("nan", "b", "nan"), ("-inf", "label", "-inf"), ("NaN", "b", "NaN"),
    ("1e400", "b", "1e400 (read as inf: beyond float64's range, about 1.8e308)"),
    ('"-1E999"', "label", '"-1E999" (read as -inf: beyond float64\'s range, about 1.8e308)')])
def test_a_csv_value_that_is_no_finite_number_is_named_by_its_line_and_column(
        tmp_path, value, column, said):
    """The claims audit: "(first at sample 4)", counted from 0 after the header, where every
    other csv error names the file's line (here 6: a comment and a blank line come first).
    A number past float64's range is quoted as written, not as the inf it became."""
    row = f"5,{value},0" if column == "b" else f"5,6,{value}"
    (tmp_path / "d.csv").write_text(f"a,b,label\n# kept\n1,2,0\n\n3,4,1\n{row}\n")
    spec = write(tmp_path / "s.yaml", "data: {dataset: csv, path: d.csv}\n"
                 "model: {layers: [{type: dense, units: 3}]}\ntrain: {epochs: 1}\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.csv")
    assert f"d.csv: line 6, column '{column}': {said}, where a csv dataset holds finite " \
        "numbers (no NaN or inf)" in line


def test_blank_lines_before_a_csv_header_are_blank_lines(tmp_path):
    """The datasets audit: a blank first line made the file "empty"; the data rows skip blank
    lines, and so does the header now, and a bad row is named by its own line."""
    rows = "".join(f"{i / 10},{i / 5},{i % 3}\n" for i in range(12))
    (tmp_path / "d.csv").write_text(f"\n  \na,b,label\n{rows}")
    spec = write(tmp_path / "s.yaml", "data: {dataset: csv, path: d.csv}\n"
                 "model: {layers: [{type: dense, units: 3}]}\ntrain: {epochs: 1}\n")
    assert_ok(invoke("validate", spec))
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    (tmp_path / "d.csv").write_text("\na,b,label\n0.1,x,1\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run2"), "d.csv")
    assert "line 3, column 'b': 'x' is not a number" in line
    # an empty file (blanks and comments only) is said alike by validate and train
    (tmp_path / "d.csv").write_text("# nothing yet\n\n")
    for command in (["validate", spec], ["train", spec, "--out", tmp_path / "run4"]):
        result = invoke(*command)
        assert result.exit_code == 1 and "d.csv: empty file; expected a header row" in \
            result.stdout + result.stderr
    # comments, as the data rows have them, before and on the header too (the second review)
    (tmp_path / "d.csv").write_text(f"# by hand\na,b,label # the header\n{rows}# the end\n")
    assert_ok(invoke("validate", spec))
    assert_ok(invoke("train", spec, "--out", tmp_path / "run3", "--quiet"))


def test_fit_errors_name_the_file_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / "d.npz", x=np.ones((8, 4), "f4"), y=np.arange(8) % 5)
    spec = write(tmp_path / "sub" / "s.yaml", MLP3.format(path="d.npz"))
    monkeypatch.chdir(tmp_path)
    line = assert_one_line_error(invoke("train", "sub/s.yaml", "--out", "run"), "sub/d.npz")
    assert "labels go up to 4" in line and spec.exists()


def test_label_maps_smaller_than_the_output_advise_pooling(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((4, 1, 8, 8), "f4"),
             masks=np.zeros((4, 4, 4), np.int64))
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz}\n"
                 "model: {layers: [{type: conv2d, filters: 3, kernel_size: 3, padding: same}]}\n"
                 "train: {epochs: 1, batch_size: 2}\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert "label maps are [4, 4], the model ends with [3, 8, 8]" in line
    assert ("the maps are 2x2 too large: pool or stride down once more ({type: maxpool2d, "
            "pool_size: 2} at the end)") in line


@pytest.mark.parametrize("axis", [1, -1])
def test_one_hot_label_maps_under_cross_entropy_are_told_argmax(tmp_path, axis):
    """The runtime follow-the-fix audit: one-hot maps [N, 3, 8, 8] (or [N, 8, 8, 3]) under a
    3-filter output were told the samples had no 3-D positions to label."""
    labels = np.random.default_rng(0).integers(0, 3, (4, 8, 8))
    one_hot = np.moveaxis(np.eye(3, dtype=np.int64)[labels], -1, 1 if axis == 1 else -1)
    np.savez(tmp_path / "d.npz", x=np.ones((4, 1, 8, 8), "f4"), y=one_hot)
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz}\n"
                 "model: {layers: [{type: conv2d, filters: 3, kernel_size: 3, padding: same}]}\n"
                 "train: {epochs: 1, batch_size: 2}\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert line.endswith("one-hot (a 0/1 map per class); cross_entropy takes a class index per "
                         f"position, maps [8, 8]: save y.argmax(axis={axis}) as y")
    np.savez(tmp_path / "d.npz", x=np.ones((4, 1, 8, 8), "f4"), y=one_hot.argmax(axis=axis))
    assert invoke("train", spec, "--out", tmp_path / "run2", "--quiet").exit_code == 0


def test_label_maps_after_a_flatten_advise_keeping_the_positions(tmp_path):
    """The FCN audit: a model ending in a flatten was told to upsample its vector."""
    np.savez(tmp_path / "d.npz", x=np.ones((4, 1, 8, 8), "f4"), y=np.zeros((4, 8, 8), np.int64))
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz}\n"
                 "model: {layers: [{type: conv2d, filters: 3, kernel_size: 3, padding: same},"
                 " {type: flatten}]}\ntrain: {epochs: 1, batch_size: 2}\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert "the model ends with [192]" in line and "upsample" not in line
    assert ("a flatten, dense, global pool or reshape took the positions away: keep them, and "
            "end with a convolution of kernel_size 1 and one filter per class") in line


def test_mse_on_label_maps_with_a_vector_output_is_one_line(tmp_path):
    """The review: mse on label maps after a flatten and dense was an internal error (a
    reshape of the targets)."""
    np.savez(tmp_path / "d.npz", x=np.ones((4, 1, 8, 8), "f4"), y=np.zeros((4, 8, 8), np.int64))
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz}\nloss: mse\n"
                 "model: {layers: [{type: conv2d, filters: 3, kernel_size: 3, padding: same},"
                 " {type: flatten}, {type: dense, units: 3}]}\n"
                 "train: {epochs: 1, batch_size: 2}\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert "mse compares the label maps [8, 8] with one score per position, [1, 8, 8], the " \
        "model ends with [3]" in line and "kernel_size 1 and one filter)" in line


def test_a_negative_marker_without_ignore_index_names_it(tmp_path):
    y = np.arange(8) % 3
    y[::3] = -100
    np.savez(tmp_path / "d.npz", x=np.ones((8, 4), "f4"), y=y)
    spec = write(tmp_path / "s.yaml", MLP3.format(path="d.npz"))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert "if -100 marks samples to leave out of the loss, set loss.ignore_index: -100" in line


def test_an_object_array_is_advised_to_become_numbers(tmp_path):
    """Saving it again as it is would store the same objects (never unpickled)."""
    np.savez(tmp_path / "d.npz", x=np.array([[1, None]] * 4, dtype=object), y=np.zeros(4, int))
    spec = write(tmp_path / "s.yaml", MLP3.format(path="d.npz"))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert "holds Python objects or records, not numbers" in line
    assert "save its arrays as numbers (e.g. x.astype('float32'))" in line


def test_targets_that_are_not_finite_name_the_sample(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((4, 2)), y=np.array([0.5, np.nan, 1.5, 2.5]))
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz}\n"
                 "model: {layers: [{type: dense, units: 1}]}\nloss: mse\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert "targets contain NaN or inf (first at sample 1); replace those values" in line


def test_samples_that_look_channel_last_are_warned_with_the_fix(tmp_path):
    """Images saved [N, H, W, C] read as C-first train without a shape error (12 channels of
    12 x 3 here): validate and train say so; an input_shape in the spec says it is meant."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 12, 12, 3)).astype("f4"),
             y=rng.integers(0, 3, 40))
    conv = "layers: [{type: conv2d, filters: 2, kernel_size: 3}, {type: flatten}, " \
           "{type: dense, units: 3}]"
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "").replace(
        "layers: [{type: dense, units: 3}]", conv))
    result = assert_ok(invoke("validate", spec))
    assert "warning: data.path: the samples of d.npz are [12, 12, 3]" in result.stderr
    assert "numpy.moveaxis(x, -1, 1)" in result.stderr
    assert invoke("validate", "--strict", spec).exit_code == 1
    trained = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    assert "moveaxis" in trained.stderr
    # An image's [H, W, C] declared is no layout anyone means (the learners' audit: the
    # advice to declare it led there): said, with the order to write
    assert "set model.input_shape" not in result.stderr
    declared = write(tmp_path / "declared.yaml", spec.read_text().replace(
        "model:\n", "model:\n  input_shape: [12, 12, 3]\n"))
    result = assert_ok(invoke("validate", declared))
    assert ("warning: model.input_shape: input_shape [12, 12, 3] is read channels first: 12 "
            "channels of 12 x 3; for 12 x 12 images of 3 channels write [3, 12, 12]") \
        in result.stderr and "save the npz's x so too: numpy.moveaxis(x, -1, 1)" in result.stderr
    # Sequences of 8 channels saved last, [64, 8]: their layout may be meant, and declared
    np.savez(tmp_path / "d.npz", x=rng.random((40, 64, 8)).astype("f4"),
             y=rng.integers(0, 3, 40))
    conv1d = write(tmp_path / "c1.yaml", spec.read_text().replace("conv2d", "conv1d"))
    assert "set model.input_shape: [64, 8]" in assert_ok(invoke("validate", conv1d)).stderr
    meant = write(tmp_path / "meant.yaml", conv1d.read_text().replace(
        "model:\n", "model:\n  input_shape: [64, 8]\n"))
    assert "warning" not in assert_ok(invoke("validate", "--strict", meant)).stderr
    # A model whose first layer to read the axes flattens them: the layout does not matter
    flat = write(tmp_path / "flat.yaml", SPEC.replace("INPUT", "").replace(
        "layers: [{type: dense, units: 3}]",
        "layers: [{type: dropout, rate: 0.1}, {type: relu}, {type: flatten}, {type: dense, "
        "units: 3}]"))
    assert "warning" not in assert_ok(invoke("validate", "--strict", flat)).stderr
    np.savez(tmp_path / "d.npz", x=rng.random((40, 3, 12, 12)).astype("f4"),
             y=rng.integers(0, 3, 40))
    assert "warning" not in assert_ok(invoke("validate", "--strict", spec)).stderr


def test_a_loop_of_symbolic_links_is_one_line_where_a_spec_names_a_file(tmp_path):
    """Path.resolve raised RuntimeError on it: an internal error (exit 70) from train."""
    (tmp_path / "a.npz").symlink_to("b.npz")
    (tmp_path / "b.npz").symlink_to("a.npz")
    (tmp_path / "gone.npz").symlink_to("nothing.npz")
    spec = _files(tmp_path, "input_shape: [4]")
    for setting in ("data.path=a.npz", "model.init_from=a.npz", "model.layers[0].init_from=a.npz"):
        line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run", "--set",
                                            setting), "a.npz")
        assert "a loop of symbolic links" in line
        assert not (tmp_path / "run").exists()
    line = assert_one_line_error(invoke("validate", spec, "--set", "model.init_from=gone.npz"),
                                 "gone.npz")
    assert "a symbolic link to nothing.npz, which is not there" in line
    # A run's own file that loops is not the --out file a command would replace
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    (tmp_path / "run" / "summary.json").unlink()
    (tmp_path / "run" / "summary.json").symlink_to("summary.json")
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 4), "f4"))
    (tmp_path / "p.npy").write_text("")
    # (the summary that loops cannot say which checkpoint train reported: one is named)
    predicted = invoke("predict", tmp_path / "run", tmp_path / "x.npz", "--out",
                       tmp_path / "p.npy", "--checkpoint", "best")
    assert predicted.exit_code == 0, predicted.output
    assert np.load(tmp_path / "p.npy").shape == (2, 3)


MOVE = "the samples are channels last; save numpy.moveaxis(x, -1, 1) (and x_test, x_val), " \
       "the channels first"
ADD_AXIS = "the samples have no channel axis; save x[:, None] (and x_test, x_val), one " \
           "channel first"


@pytest.mark.parametrize("x_shape, declared, fix", [
    ((20, 6, 6, 3), [3, 6, 6], MOVE), ((20, 9, 2), [2, 9], MOVE),
    ((20, 16, 9), [9, 16], MOVE), ((20, 16, 16, 13), [13, 16, 16], MOVE),  # sensors, bands
    ((20, 6, 6), [1, 6, 6], ADD_AXIS), ((20, 9), [1, 9], ADD_AXIS)])
def test_samples_in_another_layout_are_told_how_to_save_them(tmp_path, x_shape, declared, fix):
    """They were told to set model.input_shape to the file's [6, 6, 3] (6 channels of 6 x 3),
    or [6, 6], which a conv2d cannot read."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random(x_shape), y=rng.integers(0, 3, 20))
    conv = "conv2d" if len(declared) == 3 else "conv1d"
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", f"input_shape: {declared}").replace(
        "layers: [", f"layers: [{{type: {conv}, filters: 2, kernel_size: 1}}, {{type: flatten}}, "))
    said = assert_one_line_error(invoke("validate", spec), "s.yaml:4:")
    assert said.endswith(fix)
    # train says it as validate does, at model.input_shape (the review: at data.path before)
    assert assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz") == said


@pytest.mark.parametrize("loss, units", [("cross_entropy", 3), ("binary_cross_entropy", 1)])
@pytest.mark.parametrize("dtype", ["float64", "int64"])
def test_one_hot_labels_are_told_to_save_the_class_index(tmp_path, loss, units, dtype):
    """Keras' to_categorical labels were told to save label maps as integers (floats), or that
    a flatten took the positions away (integers)."""
    rng = np.random.default_rng(0)
    classes = 3 if loss == "cross_entropy" else 2
    labels = np.arange(40) % classes
    np.savez(tmp_path / "d.npz", x=rng.random((40, 4)),
             y=np.eye(classes, dtype=dtype)[labels])
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "").replace("units: 3", f"units: "
                                                                        f"{units}")
                 + f"loss: {loss}\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    label = "one class index" if loss == "cross_entropy" else "one 0/1 label"
    assert line.endswith(f"the labels are one-hot, [N, {classes}]; {loss} takes {label} per "
                         "sample, y [N]: save y.argmax(axis=1)")
    np.savez(tmp_path / "d.npz", x=rng.random((40, 4)), y=labels)  # as the advice says
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))


@pytest.mark.parametrize("loss, filters", [("mse", 1), ("cross_entropy", 3)])
def test_label_maps_saved_flat_are_told_to_take_the_outputs_positions(tmp_path, loss, filters):
    """Integer maps [N, 36] beside a model ending [1, 6, 6] were told that a flatten, dense,
    global pool or reshape took the positions away, and to end with the convolution it did."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 1, 6, 6))
    maps = np.clip(np.round(x[:, 0] + 1), 0, 2).astype(int)
    np.savez(tmp_path / "d.npz", x=x, y=maps.reshape(30, 36))
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz}\nmodel: {layers: "
                 f"[{{type: conv2d, filters: {filters}, kernel_size: 3, padding: same}}]}}\n"
                 f"loss: {loss}\ntrain: {{epochs: 1, metrics: "
                 f"[{'mae' if loss == 'mse' else 'accuracy'}]}}\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert line.endswith("(save the label maps in the output's positions, [6, 6] a sample: "
                         "y.reshape(len(y), 6, 6))"), line
    np.savez(tmp_path / "d.npz", x=x, y=maps.reshape(len(maps), 6, 6))  # as the advice says
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))


def test_labels_of_the_whole_sample_beside_output_maps_are_told_to_pool(tmp_path):
    """The review: one-hot labels [N, 3] beside a model ending [3, 6, 6] were told to save
    them in the output's positions, [6, 6] a sample, which 3 values cannot be."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(30, 1, 6, 6)),
             y=np.eye(3, dtype=int)[np.arange(30) % 3])
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz}\nmodel: {layers: "
                 "[{type: conv2d, filters: 3, kernel_size: 3, padding: same}]}\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert line.endswith("(the labels, [3] a sample, are no maps of the output's positions "
                         "[6, 6]: for labels of the whole sample, end the model with a global "
                         "pool, or a flatten and a dense layer)"), line
    spec.write_text(spec.read_text().replace("same}", "same}, {type: global_avgpool}"))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert line.endswith("save y.argmax(axis=1)"), line  # the next step, as a dense model's


def test_a_monitor_suggested_before_the_file_is_read_says_which_targets_it_needs(tmp_path):
    """The mutation audit: val_acc on a csv of real-valued targets under mae was offered
    val_accuracy, which validate then took and train refused: which metrics a run tracks
    follows the file's targets, which validate alone does not read."""
    rng = np.random.default_rng(0)
    rows = "".join(f"{a:.4f},{b:.4f},{a + b:.5f}\n" for a, b in rng.random((40, 2)))
    (tmp_path / "reg.csv").write_text("u,v,label\n" + rows)
    spec = write(tmp_path / "s.yaml", "data: {dataset: csv, path: reg.csv, validation_split: "
                 "0.2}\nmodel: {layers: [{type: dense, units: 1}]}\nloss: mae\ntrain: "
                 "{epochs: 1, early_stopping: {monitor: val_acc}}\n")
    line = assert_one_line_error(invoke("validate", spec), "s.yaml:4:")
    assert line.endswith("did you mean 'val_accuracy'? choose one of: train_loss, "
                         "train_accuracy, train_mae, val_loss, val_accuracy, val_mae (*_accuracy "
                         "where the file's targets are class labels, *_mae where they are real "
                         "values: validate --data checks the one chosen against them)"), line
    chosen = invoke("validate", spec, "--data", "--set", "train.early_stopping.monitor="
                    "val_accuracy")
    assert assert_one_line_error(chosen, "--set:1:1:").endswith(
        "is not a metric of this run; choose one of: train_loss, train_mae, val_loss, val_mae")
    # an npz without x_val says so too (the review: train_accuracy offered without a word)
    np.savez(tmp_path / "reg.npz", x=rng.random((40, 2)), y=rng.random(40))
    spec = write(tmp_path / "n.yaml", "data: {dataset: npz, path: reg.npz}\nmodel: {layers: "
                 "[{type: dense, units: 1}]}\nloss: mse\ntrain: {epochs: 1, early_stopping: "
                 "{monitor: val_mae}}\n")
    assert assert_one_line_error(invoke("validate", spec), "n.yaml:4:").endswith(
        "(reg.npz holds no x_val and y_val) (*_accuracy where the file's targets are class "
        "labels, *_mae where they are real values: validate --data checks the one chosen "
        "against them)")


@pytest.mark.parametrize("units, warned", [
    (7, "the labels of every split name 4 classes (0..3), the model has 7 outputs: no label "
        "is of outputs 4..6; set units: 4 in model.layers[0] (dense_1), unless more classes "
        "are meant"),
    (5, "outputs: no label is of output 4;"), (4, None)])
def test_more_outputs_than_the_labels_name_is_a_warning(tmp_path, units, warned):
    """The mutation audit: labels 0..3 of an npz beside 7 outputs trained without a word,
    where a named dataset's class count refuses it."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", x=rng.normal(size=(40, 3)), y=np.arange(40) % 4)
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: c.npz}\nmodel: {layers: "
                 f"[{{type: dense, units: {units}}}]}}\ntrain: {{epochs: 1}}\n")
    stderr = assert_ok(invoke("train", spec, "--out", tmp_path / "run")).stderr
    assert (warned in stderr) if warned else "no label is of" not in stderr, stderr
    if warned:
        assert warned in invoke("validate", spec, "--data").stderr
        # a limit's cut: its own warning names the classes it leaves out (the review: told
        # to shrink the outputs, which the whole file then refused)
        limited = invoke("train", spec, "--out", tmp_path / "r2", "--set", "data.limit=20")
        assert "no label is of" not in assert_ok(limited).stderr


def test_maps_no_whole_factor_below_labels_of_another_size_than_the_inputs(tmp_path):
    """The FCN audit: maps [8, 5] below labels [12, 10] of inputs [16, 10] were told to
    "upsample back to the input size", which then missed the labels."""
    rng = np.random.default_rng(0)
    line = _refusal(tmp_path, "[{type: conv2d, filters: 4, kernel_size: 3, padding: same}, "
                    "{type: maxpool2d, pool_size: 2}, {type: conv2d, filters: 2, kernel_size: 1}]",
                    "cross_entropy", {"x": rng.random((20, 1, 16, 10)),
                                      "y": rng.integers(0, 2, (20, 12, 10))})
    assert line.endswith("(the maps are 0.667x0.5 the labels' size, not a whole factor: change "
                         "the layers' strides, pools or upsampling so that the last gives 12x10 "
                         "(nnrun summary shows each layer's output))"), line


@pytest.mark.parametrize("input_line", ["", "input_shape: [2]"])
def test_validate_names_a_csv_column_without_a_name_as_train_does(tmp_path, input_line):
    """pandas' index (`df.to_csv(path)`) was counted as a feature by validate, and trained:
    the row number told the sorted classes apart (the practitioner audit)."""
    (tmp_path / "d.csv").write_text(",a,label\n" + "".join(f"{i},{i / 7},{i // 10}\n"
                                                           for i in range(30)))
    spec = write(tmp_path / "s.yaml", SPEC.replace("npz, path: d.npz", "csv, path: d.csv")
                 .replace("INPUT", input_line))
    expected = "column 1 has no name in the header row (pandas writes its index so"
    assert expected in assert_one_line_error(invoke("validate", spec), "s.yaml:2:")
    assert expected in assert_one_line_error(invoke("train", spec, "--out", tmp_path / "r"),
                                             "d.csv")


@pytest.mark.parametrize("input_line", ["", "input_shape: [2]"])
def test_validate_names_a_csv_that_is_no_utf8_text_as_train_does(tmp_path, input_line):
    """The hostile-input audit: a Latin-1 csv was asked for input_shape by validate, which
    then said ok, and train refused the file's bytes."""
    (tmp_path / "d.csv").write_bytes("\u00e9,b,label\n".encode("latin-1") + "".join(
        f"{i},{i / 7},{i // 10}\n" for i in range(30)).encode())
    spec = write(tmp_path / "s.yaml", SPEC.replace("npz, path: d.npz", "csv, path: d.csv")
                 .replace("INPUT", input_line))
    expected = "d.csv: cannot read ('utf-8' codec can't decode byte 0xe9"
    line = assert_one_line_error(invoke("validate", spec), "s.yaml:2:")
    assert expected in line and line.endswith("save it as UTF-8 text")
    assert expected in assert_one_line_error(invoke("train", spec, "--out", tmp_path / "r"),
                                             "d.csv")


@pytest.mark.parametrize("header", ['a,"b\nx",c,label', 'label,a,"b\nx",c'])
def test_validate_and_train_name_a_header_quote_left_open(tmp_path, header):
    """The audit: a quoted name broken over two lines was 'no label column in the header row
    (a, b)' though the file has one; with label before it, validate said ok."""
    (tmp_path / "d.csv").write_text(header + "\n" + "".join(f"{i},{i / 7},1,{i % 2}\n"
                                                            for i in range(30)))
    spec = write(tmp_path / "s.yaml", SPEC.replace("npz, path: d.npz", "csv, path: d.csv")
                 .replace("INPUT", ""))
    expected = ("d.csv: the header row's quote (\") before 'b' is not closed on its line; a "
                "column name cannot span lines: close the quote where the name ends, or remove it")
    assert expected in assert_one_line_error(invoke("validate", spec), "s.yaml:2:")
    assert expected in assert_one_line_error(invoke("train", spec, "--out", tmp_path / "r"),
                                             "s.yaml:2:")


@pytest.mark.parametrize("dtype", ["int64", "float64"])
def test_labels_minus_one_and_one_are_told_to_save_0_and_1(tmp_path, dtype):
    """They were told to set loss.ignore_index: -1 (integers), which left one class and an
    accuracy of 1.0 (the practitioner audit)."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 4)), y=np.where(np.arange(40) % 2, 1, -1)
             .astype(dtype))
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "").replace("units: 3", "units: 1")
                 + "loss: binary_cross_entropy\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert "save them as 0 and 1, (y > 0).astype(int)" in line and "ignore_index" not in line
    # the loader does not know the loss: ±1 targets of a regression stay offered (the review)
    assert ("for regression targets save them as floats" in line) == (dtype == "int64")


@pytest.mark.parametrize("x_shape", [(20, 1, 4, 4), (20, 2, 6)])
@pytest.mark.parametrize("dtype", ["int64", "float64"])
def test_a_column_of_class_labels_beside_images_is_told_to_ravel(tmp_path, x_shape, dtype):
    """[N, 1] labels beside image samples were read as label maps (integers: "end with a
    convolution of kernel_size 1"; floats: "save y.astype(int)", which gave the integers)."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random(x_shape), y=(np.arange(20) % 3)[:, None]
             .astype(dtype))
    conv = "conv2d" if len(x_shape) == 4 else "conv1d"
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "").replace(
        "layers: [", f"layers: [{{type: {conv}, filters: 2, kernel_size: 1}}, {{type: flatten}}, "))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert "the labels are a column, [N, 1]" in line and "save y.ravel()" in line


def test_an_npz_of_keras_names_is_told_so_by_validate_as_by_train(tmp_path):
    """validate asked for input_shape ("could not be read"); given it, validate said ok and
    train refused (the practitioner audit)."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.random((20, 4)), y_train=np.arange(20) % 3,
             x_test=rng.random((5, 4)), y_test=np.arange(5) % 3)
    fix = ("an npz dataset needs arrays 'x' and 'y' (found x_test, x_train, y_test, y_train); "
           "save x_train and y_train as x and y (and x_test, y_test): numpy.savez(path, "
           "x=x_train, y=y_train, ...)")
    for input_line in ("", "input_shape: [4]"):
        spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", input_line))
        assert assert_one_line_error(invoke("validate", spec), "s.yaml:2:").endswith(fix)
        line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "r"), "d.npz")
        assert line.endswith(fix)


@pytest.mark.parametrize("arrays, fix", [
    (("X", "Y"), "save X as x and Y as y: numpy.savez(path, x=X, y=Y)"),
    (("images", "labels"), "save images as x and labels as y: numpy.savez(path, x=images, "
                           "y=labels)"),
    # the data-file audit: these were told only that label maps may be named masks
    (("X_train", "Y_train"), "save X_train and Y_train as x and y (and x_test, y_test): "
                             "numpy.savez(path, x=X_train, y=Y_train, ...)"),
    (("images", "masks"), "save images as x: numpy.savez(path, x=images, masks=masks)"),
    (("X", "masks"), "save X as x: numpy.savez(path, x=X, masks=masks)")])
def test_an_npz_of_other_names_for_x_and_y_is_told_which_to_save_as_which(tmp_path, arrays,
                                                                         fix):
    """The newcomer audit: X and Y, or images and labels, were told only that label maps may
    be named masks."""
    np.savez(tmp_path / "d.npz", **{arrays[0]: np.zeros((20, 4)), arrays[1]: np.zeros(20, int)})
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "input_shape: [4]"))
    assert assert_one_line_error(invoke("validate", spec), "s.yaml:2:").endswith(fix)


@pytest.mark.parametrize("names", [("X_test", "Y_test"), ("test_x", "test_y"),
                                   ("x_valid", "y_valid"), ("x_testing", "test_labels"),
                                   ("test_images", "test_labels"), ("images_val", "labels_val")])
def test_held_out_arrays_under_other_names_are_said_not_read(tmp_path, names):
    """The newcomer audit: X_test and Y_test trained without a test split, without a word."""
    rng = np.random.default_rng(0)
    x = rng.random((20, 4))
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 3,
             **{names[0]: x[:5], names[1]: np.arange(5) % 3})
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "input_shape: [4]"))
    meant = ["x_test", "y_test"] if "test" in names[0] else ["x_val", "y_val"]
    result = invoke("validate", spec, "--data")
    assert result.exit_code == 0
    # the review: a validation_split (this spec's) leaves x_val out too: said so
    held_out = " (x_val is read where data.validation_split is left out)" if "val" in meant[0] \
        else ""
    assert (f"d.npz: {names[0]}, {names[1]} are not read: a held-out split is read from x_test "
            f"and y_test (x_val and y_val); save them as {meant[0]}, {meant[1]}{held_out}\n"
            ) in result.stderr


def test_held_out_arrays_under_other_names_beside_x_val_left_out_are_not_told_to_be_x_val(
        tmp_path):
    """The review: x_val and y_val left out by a validation_split, and val_images beside
    them, were told to be saved as x_val, y_val, which the file holds already."""
    rng = np.random.default_rng(0)
    x = rng.random((20, 4))
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 3, x_val=x[:5], y_val=np.arange(5) % 3,
             val_images=x[:5], val_labels=np.arange(5) % 3)
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "input_shape: [4]"))
    result = invoke("validate", spec, "--data")
    assert result.exit_code == 0, result.output
    assert "x_val and y_val are left out" in result.stderr
    assert "save them as" not in result.stderr


def test_labels_numbered_from_1_are_offered_y_minus_1(tmp_path):
    """Labels 1..3 for 3 units were told to set units to 4 alone: a class 0 no sample has."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 4)), y=np.arange(40) % 3 + 1)
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", ""))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert line.endswith("set units: 4 in model.layers[0] (dense_1); numbered from 1 (no label "
                         "0)? save "
                         "y - 1, classes 0..2")


@pytest.mark.parametrize("test_shape, fix", [
    ((5, 6, 6), "the samples have no channel axis; save x_test[:, None], one channel first"),
    ((5, 6, 6, 1), "the samples are channels last; save numpy.moveaxis(x_test, -1, 1), the "
                   "channels first")])
def test_test_samples_in_another_layout_are_told_how_to_save_them(tmp_path, test_shape, fix):
    """They were told "samples are (6, 6), in x (1, 6, 6)", with no fix."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((20, 1, 6, 6)), y=np.arange(20) % 3,
             x_test=rng.random(test_shape), y_test=np.arange(5) % 3)
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "").replace(
        "layers: [", "layers: [{type: flatten}, "))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert line.endswith(f"samples are {list(test_shape[1:])}, in x [1, 6, 6]; {fix}")


def test_a_run_on_an_npz_validation_pair_reports_and_evaluates_it(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 4)), y=np.arange(40) % 3,
             x_val=rng.random((9, 4)), y_val=np.arange(9) % 3)
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "").replace(
        ", validation_split: 0.2", ""))
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    final = json.loads((tmp_path / "run" / "summary.json").read_text())["final"]
    evaluated = json.loads(assert_ok(invoke("eval", tmp_path / "run", "--split", "val",
                                            "--format", "json")).stdout)
    assert evaluated["samples"] == 9 and evaluated["val_loss"] == pytest.approx(final["val_loss"])


@pytest.mark.parametrize("scale, warned, whole", [(1e6, True, False), (1e-6, True, False),
                                                  (1.0, False, False), (1e6, True, True)])
def test_targets_far_from_unit_scale_are_warned_of(tmp_path, scale, warned, whole):
    """They are not normalised, as documented; at 1e6 the run ended no better than the mean,
    without a word (the practitioner audit). Whole numbers too: prices saved as integers
    (the review)."""
    rng = np.random.default_rng(0)
    x = rng.random((40, 4))
    y = scale * (x @ [1.0, -2.0, 0.5, 1.0])
    np.savez(tmp_path / "d.npz", x=x, y=np.abs(y).astype(np.int64) if whole else y)
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "").replace("units: 3", "units: 1")
                 + "loss: mse\n")
    result = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    assert ("nnrun normalises the inputs, not the targets" in result.stderr) == warned


def test_npz_samples_without_a_channel_axis_are_offered_one_in_the_file(tmp_path):
    """The reshape alone was offered, whose samples `normalize` standardises per time step
    (a 1-D CNN reached 0.85 against 1.00 with x[:, None], the practitioner audit)."""
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((20, 16)),
             y=np.arange(20) % 3)
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "").replace(
        "layers: [", "layers: [{type: conv1d, filters: 2, kernel_size: 3}, {type: flatten}, "))
    line = assert_one_line_error(invoke("validate", spec), "s.yaml:")
    assert line.endswith("conv1d expects a [channels, length] sample, got shape [16]; give the "
                         "npz's samples a channel axis (save x[:, None], and x_test; input_shape "
                         "[1, 16]), or add {type: reshape, shape: [1, 16]} before it (a channel "
                         "axis)")


def test_early_stopping_on_an_npz_validation_pair_passes_validate_and_trains(tmp_path):
    """validate refused val_loss ("needs data.validation_split > 0"), whose advice train then
    refused, where train took the spec (the review)."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 4)), y=np.arange(40) % 3,
             x_val=rng.random((9, 4)), y_val=np.arange(9) % 3)
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "").replace(
        ", validation_split: 0.2", "").replace("train: {epochs: 1}",
                                             "train: {epochs: 3, early_stopping: {patience: 1}}"))
    assert "s.yaml: ok" in assert_ok(invoke("validate", spec)).stdout
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    np.savez(tmp_path / "d.npz", x=rng.random((40, 4)), y=np.arange(40) % 3)  # no x_val now
    line = assert_one_line_error(invoke("validate", spec), "s.yaml")  # from the file's header
    assert "'val_loss' will not be a metric" in line and "holds no x_val and y_val" in line
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run2"), "s.yaml")
    assert "val_loss" in line


def test_a_runs_predictions_do_not_read_its_training_data_file(tmp_path):
    """predict and export of a finished run were refused once its npz was saved again under
    other names (the review): they read the run's spec.yaml, with its input_shape, not data."""
    spec = _files(tmp_path)
    assert_ok(invoke("train", spec, "--out", tmp_path / "run", "--quiet"))
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", x_train=rng.random((40, 4)), y_train=np.arange(40) % 3)
    np.savez(tmp_path / "in.npz", x=rng.random((3, 4)))
    assert_ok(invoke("predict", tmp_path / "run", tmp_path / "in.npz", "--out",
                     tmp_path / "p.npy"))
    assert "needs arrays 'x' and 'y'" in assert_one_line_error(invoke("validate", spec), "s.yaml")


def test_layout_advice_is_for_npz_samples_whose_short_axis_is_last(tmp_path):
    """[2, 50] against a declared [50, 2] is 2 channels first, whose 'move' made 50 channels;
    a csv has no x to save (the review)."""
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 2, 50)), y=np.arange(20) % 3)
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "input_shape: [50, 2]"))
    assert "does not match the samples of d.npz, [2, 50]; use [2, 50]" in \
        invoke("validate", spec).stderr
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    spec = write(tmp_path / "c.yaml", SPEC.replace("npz, path: d.npz", "csv, path: d.csv")
                 .replace("INPUT", "input_shape: [1, 2]"))
    line = invoke("validate", spec).stderr.splitlines()[0]
    assert "use [2]" in line and "x[:, None]" not in line


def test_one_hot_advice_fits_the_loss_and_the_outputs(tmp_path):
    """4 one-hot classes under binary_cross_entropy were told y.argmax(axis=1), which it then
    refused; float 1-D maps with one event a row were called one-hot (the review)."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((40, 4)), y=np.eye(4)[np.arange(40) % 4])
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "").replace("units: 3", "units: 1")
                 + "loss: binary_cross_entropy\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "r1"), "d.npz")
    assert line.endswith("4 classes, where binary_cross_entropy takes two; use loss: "
                         "cross_entropy, units: 4, and save y.argmax(axis=1), one class index "
                         "per sample")
    np.savez(tmp_path / "m.npz", x=rng.random((40, 1, 16)), y=np.eye(16)[np.arange(40) % 16])
    maps = write(tmp_path / "m.yaml", "data: {dataset: npz, path: m.npz}\nmodel:\n  layers: "
                 "[{type: conv1d, filters: 1, kernel_size: 3, padding: same}]\n"
                 "loss: binary_cross_entropy\n")
    line = assert_one_line_error(invoke("train", maps, "--out", tmp_path / "r2"), "m.npz")
    assert "one-hot" not in line and "y.astype(int)" in line


@pytest.mark.parametrize("x_shape, warned", [((20, 128, 9), True), ((20, 9, 128), False),
                                             ((20, 64, 32), False)])
def test_sensors_saved_last_are_warned_as_channels_last(tmp_path, x_shape, warned):
    """Nine sensors of 128 steps saved [N, 128, 9] read as 128 channels of length 9 without a
    word: only a last axis of 4 or fewer was taken for channels (the third review)."""
    np.savez(tmp_path / "d.npz", x=np.zeros(x_shape, "f4"), y=np.arange(20) % 3)
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "").replace(
        "layers: [", "layers: [{type: conv1d, filters: 2, kernel_size: 3}, {type: flatten}, "))
    stderr = assert_ok(invoke("validate", spec)).stderr
    assert ("numpy.moveaxis(x, -1, 1)" in stderr) == warned
    flat = write(tmp_path / "f.yaml", SPEC.replace("INPUT", "").replace(  # a flattening reshape
        "layers: [", f"layers: [{{type: reshape, shape: [{x_shape[1] * x_shape[2]}]}}, "))
    assert "warning" not in assert_ok(invoke("validate", flat)).stderr


def test_one_value_per_sample_and_too_few_samples_are_said_by_validate(tmp_path):
    """x of [N] passed validate with input_shape: [1] and train refused it without a fix; a
    validation_split of a one-sample file passed validate, and train's line named no file
    (the data-file fuzzer)."""
    np.savez(tmp_path / "d.npz", x=np.arange(12.0), y=np.arange(12) % 2)
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "input_shape: [1]"))
    fix = "features must be [N, ...], one row per sample, got [12]; for one feature a sample " \
          "save x[:, None]"
    assert assert_one_line_error(invoke("validate", spec), "s.yaml:2:").endswith(fix)
    assert assert_one_line_error(invoke("train", spec, "--out", tmp_path / "r"),
                                 "d.npz").endswith(fix)
    np.savez(tmp_path / "d.npz", x=np.zeros((1, 4)), y=np.zeros(1, int))
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", ""))
    assert assert_one_line_error(invoke("validate", spec), "s.yaml:2:").endswith(
        "validation_split 0.2 of the 1 training sample of d.npz leaves none to train on; remove "
        "data.validation_split, or use more samples")
    np.savez(tmp_path / "d.npz", x=np.zeros((100, 4)), y=np.zeros(100, int))
    limited = write(tmp_path / "l.yaml", SPEC.replace("INPUT", "").replace(
        "validation_split: 0.2", "validation_split: 0.5, limit: 1"))
    lines = invoke("validate", limited).stderr.splitlines()
    assert len(lines) == 1 and "that data.limit keeps" in lines[0]  # said once (the review)
    np.savez(tmp_path / "t.npz", x=np.zeros((12, 1)), y=np.arange(12) % 2, x_test=np.zeros(4),
             y_test=np.arange(4) % 2)
    spec = write(tmp_path / "t.yaml", SPEC.replace("INPUT", "").replace("d.npz", "t.npz"))
    assert assert_one_line_error(invoke("train", spec, "--out", tmp_path / "r2"),
                                 "t.npz").endswith("save x_test[:, None]")


def test_validate_data_says_what_train_refuses_of_the_file_at_data_path(tmp_path):
    """validate --data loads the spec's own file and checks it as train does before its first
    step: what train refuses is an error at data.path (without --data, the header alone)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    y[5] = 7
    np.savez(tmp_path / "d.npz", x=rng.random((40, 4)).astype("f4"), y=y)
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", ""))
    assert "s.yaml: ok" in assert_ok(invoke("validate", spec)).stdout
    refused = invoke("train", spec, "--out", tmp_path / "run", "--quiet")
    assert refused.exit_code == 1 and "labels go up to 7" in refused.stderr
    result = invoke("validate", spec, "--data", "--format", "json")
    assert result.exit_code == 1, result.output
    [found] = json.loads(result.stdout)
    assert (found["line"], found["severity"], found["where"]) == (2, "error", "data.path")
    assert ("labels go up to 7 but the model has 3 outputs; set units: 8 in model.layers[0] "
            "(dense_1)") in found["message"]
    assert not (tmp_path / "run").exists()


def test_validate_data_warns_as_train_does_and_passes_good_files(tmp_path):
    spec = _files(tmp_path)
    result = assert_ok(invoke("validate", spec, "--data"))
    assert "s.yaml: ok" in result.stdout and not result.stderr
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "r.npz", x=rng.random((40, 4)).astype("f4"),
             y=(rng.random(40) * 1e7).astype("f4"))
    regression = write(tmp_path / "r.yaml", SPEC.replace("npz, path: d.npz", "npz, path: r.npz")
                       .replace("INPUT", "").replace("units: 3", "units: 1")
                       + "loss: mse\n")
    warned = assert_ok(invoke("validate", regression, "--data"))
    assert "r.yaml:2:" in warned.stderr and "warning: data.path:" in warned.stderr
    assert "the targets' mean is " in warned.stderr
    assert "their standard deviation is" in warned.stderr
    strict = invoke("validate", regression, "--data", "--strict")
    assert strict.exit_code == 1 and "error: data.path:" in strict.stderr


SPREAD = np.tile([-1.0, 1.0], 30)  # mean 0, standard deviation 1


@pytest.mark.parametrize("y, said", [
    # far from 0 with a usual spread: the output's bias would have to travel there
    ((5e4 + SPREAD)[:, None], "the targets' mean is 50000; nnrun normalises the inputs, not the "
     "targets, and a loss of that scale trains slowly or not at all: save the targets as "
     "y - y.mean(0) and map the predictions back"),
    # two outputs: the spread is each one's around its own mean, not the columns' distance
    (np.stack([SPREAD, SPREAD - 3e3], 1), "the targets' mean is -3000 (an output's); "),
    (1e6 + 1e4 * SPREAD, "the targets' mean is 1e+06 and their standard deviation is 1e+04; "),
    # a mean within the spread: dividing is the fix
    (2e3 + 1e5 * SPREAD, "the targets' standard deviation is 1e+05; "),
    # a tiny spread: dividing alone would leave the mean at 1e5 (the review: the advice, once
    # followed, was met by the other warning)
    (1 + 1e-5 * SPREAD, "the targets' mean is 1 and their standard deviation is 1e-05; "),
    # at the boundary: the mean far once divided by the spread as the advice rounds it (the
    # second review)
    (0.010039 + 1.0049e-5 * SPREAD,
     "the targets' mean is 0.010039 and their standard deviation is 1e-05; "),
    # outputs of other scales (the data audit: y / 6.9e+05, the spread of them all, left the
    # second output at 1.4e-06, which then learned nothing): each divided by its own
    (np.stack([9.8e5 * SPREAD, 0.98 * SPREAD], 1),
     "the targets' standard deviations run from 0.98 to 9.8e+05 (per output); "),
    (np.stack([1e4 * SPREAD, SPREAD], 1),
     "the targets' standard deviations run from 1 to 1e+04 (per output); "),
    (np.stack([5e4 + 1e4 * SPREAD, SPREAD, np.full(60, 7.0)], 1),
     "the targets' mean is 50000 (an output's) and their standard deviations run from 1 to "
     "1e+04 (per output); "),
    (np.stack([1e4 * SPREAD, SPREAD, np.full(60, 7.0)], 1),
     "the targets' standard deviations run from 1 to 1e+04 (per output); "),
    # of one scale, far from the bounds: one divisor
    (np.stack([1e5 * SPREAD, 2e5 * SPREAD], 1), "the targets' standard deviation is 1.58e+05; "),
])
def test_regression_targets_far_from_zero_or_of_a_large_spread_are_warned_of(y, said):
    from nnrun.runtime.data_fit import _warn_of_target_scale

    with collected() as lines:
        _warn_of_target_scale(y, "data.path")
    [(kind, message)] = lines
    assert kind == "warning" and message.startswith("data.path: " + said), message
    fix = {"mean is": "y - y.mean(0)", "deviation": "y / 1e+05"}
    if "per output" in said:
        assert "/ y.std(0) and" in message or "/ np.where(y.std(0) > 0, y.std(0), 1) and" in \
            message
    elif "1.58e+05" in said:
        assert "save the targets as y / 1.58e+05 and" in message
    elif "mean is" in said and "deviation" in said:
        spread = said.split("deviation is ")[1].rstrip("; ")
        assert f"save the targets as (y - y.mean(0)) / {spread} and" in message
    else:
        assert f"save the targets as {fix['mean is' if 'mean is' in said else 'deviation']}" \
            in message
    # the advice followed (a NumPy expression of y) silences the warning
    advice = message.split("save the targets as ")[1].split(" and map")[0]
    with collected() as lines:
        _warn_of_target_scale(eval(advice, {"y": y, "np": np}),  # noqa: S307 - our own text
                              "data.path")
    assert lines == []


def test_targets_of_a_usual_spread_beside_nearly_constant_ones_are_not_warned_of():
    """The review: an autoencoder's pixels (y = x / 255), a few rarely lit, were told to be
    standardised each, which makes those targets +-100, beyond a sigmoid's reach."""
    from nnrun.runtime.data_fit import _warn_of_target_scale

    y = np.tile(SPREAD[:, None] / 2 + 0.5, (1, 4))
    y[:, 3] = 0.0
    y[7, 3] = 0.001  # lit once, faintly: a spread of 1.3e-4, beside the others' 0.5
    for targets in (y, np.stack([1e-5 * SPREAD, SPREAD], 1)):
        with collected() as lines:
            _warn_of_target_scale(targets, "data.path")
        assert lines == []


def test_regression_targets_near_zero_of_a_usual_spread_are_not_warned_of():
    from nnrun.runtime.data_fit import _warn_of_target_scale

    rng = np.random.default_rng(1)
    for targets in (rng.normal(900, 1, 60), rng.normal(0, 500, (60, 3)), np.zeros(0)):
        with collected() as lines:
            _warn_of_target_scale(targets, "data.path")
        assert lines == []


def test_validate_data_makes_a_missing_file_an_error_and_never_loads_a_named_dataset(
        tmp_path, monkeypatch):
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "input_shape: [4]"))
    assert "warning: data.path:" in assert_ok(invoke("validate", spec)).stderr
    missing = invoke("validate", spec, "--data")
    assert missing.exit_code == 1 and "error: data.path:" in missing.stderr
    assert "no such file" in missing.stderr

    def loaded(*args, **kwargs):
        raise AssertionError("a named dataset was loaded")

    monkeypatch.setattr("nnrun.runtime.train.load_dataset", loaded)
    named = write(tmp_path / "m.yaml", "data: {dataset: mnist}\nmodel: {layers: [{type: flatten},"
                                       " {type: dense, units: 10}]}\n")
    assert "m.yaml: ok" in assert_ok(invoke("validate", named, "--data")).stdout


def test_validate_data_leaves_memory_to_its_warning_and_an_unreadable_file_to_its_spec(
        tmp_path, monkeypatch):
    """A model over this machine's memory is validate's warning (against --warn-memory), not
    an error at data.path hiding the data's own; a file that cannot be read is said at its
    spec's data.path, and the next spec is still checked."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    y[0] = 7
    np.savez(tmp_path / "d.npz", x=rng.random((40, 4)).astype("f4"), y=y)
    huge = write(tmp_path / "huge.yaml", SPEC.replace("INPUT", "input_shape: [4]")
                 .replace("layers: [", "layers: [{type: dense, units: 2000000000}, "))
    result = invoke("validate", huge, "--data", "--warn-memory", "100TB", "--format", "json")
    [found] = json.loads(result.stdout)
    assert "labels go up to 7" in found["message"], found

    import nnrun.runtime.train as training

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "d.npz"))

    monkeypatch.setattr(training, "load_dataset", unreadable)
    first = write(tmp_path / "first.yaml", SPEC.replace("INPUT", ""))
    result = invoke("validate", first, "--data", "--format", "json", _files(tmp_path))
    assert result.exit_code == 1, result.output
    lines = json.loads(result.stdout)
    assert [line["file"] for line in lines] == [str(first), str(tmp_path / "s.yaml")]
    assert all("Permission denied" in line["message"] and line["where"] == "data.path"
               for line in lines)


def test_a_bad_label_that_the_validation_split_holds_out_is_the_one_named(tmp_path):
    """The first label that is no class was looked for in the training split alone: one held
    out was named as 0."""
    y = np.arange(40, dtype=np.float32) % 3
    y[5] = -1
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((40, 4)).astype("f4"), y=y)
    for split in ("0.2", "0.0"):
        spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "").replace("0.2", split))
        line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / f"run{split}"),
                                     "d.npz")
        assert "but the labels hold -1, below 0" in line, line


def test_validate_data_gives_trains_reason_for_a_file_that_gave_no_input_shape(tmp_path):
    """Without input_shape the file must give it: when it cannot, validate says why (not an
    npz, here: its header, which plain validate reads too) at data.path, as train does."""
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", ""))
    (tmp_path / "d.npz").write_bytes(b"not a zip file at all")
    plain = invoke("validate", spec)
    assert plain.exit_code == 1 and "data.path" in plain.stderr
    assert "not a readable .npz file" in plain.stderr
    result = invoke("validate", spec, "--data", "--format", "json")
    [found] = json.loads(result.stdout)
    assert (found["where"], found["severity"]) == ("data.path", "error"), found
    assert "not a readable .npz file" in found["message"]
    (tmp_path / "d.npz").unlink()
    missing = invoke("validate", spec, "--data")
    assert "error: data.path:" in missing.stderr and "no such file" in missing.stderr


def test_validate_reads_that_a_data_file_is_no_npz_where_input_shape_is_declared(tmp_path):
    """It passed validate (which did not open the file, input_shape being given) and failed
    train."""
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "input_shape: [4]"))
    (tmp_path / "d.npz").write_text("x1,x2,label\n0,1,1\n")
    line = assert_one_line_error(invoke("validate", spec), "d.npz")
    assert "data.path" in line and "not a readable .npz file" in line


def test_validate_tells_a_csv_file_named_as_npz_data_what_train_tells_it(tmp_path):
    """validate said "write it with numpy.savez" (init_from's words) where train says
    data.dataset: csv."""
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "input_shape: [2]")
                 .replace("d.npz", "d.csv"))
    (tmp_path / "d.csv").write_text("x1,x2,label\n0,1,1\n")
    told = [assert_one_line_error(invoke(*command), "d.csv")
            for command in (("validate", spec), ("validate", spec, "--data"),
                            ("train", spec, "--out", tmp_path / "run"))]
    assert all(line.endswith("not a readable .npz file (File is not a zip file); it is a csv "
                             "file: set data.dataset: csv") for line in told), told


def test_a_file_without_samples_says_so(tmp_path):
    """x of shape [0, 4] was told 'features must be [N, ...], one row per sample'."""
    np.savez(tmp_path / "d.npz", x=np.zeros((0, 4), np.float32), y=np.zeros(0, np.int64))
    spec = write(tmp_path / "s.yaml", SPEC.replace("INPUT", "input_shape: [4]"))
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert line.endswith("x holds no samples ([0, 4]); save the data with at least one sample")


def test_train_says_a_data_error_where_the_spec_names_the_data(tmp_path):
    """The spec-reference walk: train said `error: d.csv: ...` where validate --data said the
    same at the spec's data.path, line and column; and a split too large for what data.limit
    keeps, which validate places at data.validation_split, came from the loader without a
    place. The API's exception keeps its type, with the place as its `diagnostic`."""
    import nnrun

    (tmp_path / "d.csv").write_text("a;b;label\n" + "".join(f"{i};{i / 7};{i % 2}\n"
                                                          for i in range(30)))
    spec = write(tmp_path / "s.yaml", SPEC.replace("npz, path: d.npz", "csv, path: d.csv")
                 .replace("INPUT", "input_shape: [2]"))
    said = assert_one_line_error(invoke("validate", spec, "--data"), "s.yaml:2:")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "r"), "s.yaml:2:")
    assert line == said and "error: data.path: " in line and "separated by ';'" in line
    with pytest.raises(nnrun.DataError) as raised:
        nnrun.train(str(spec), out_dir=tmp_path / "api", quiet=True)
    assert raised.value.diagnostic.format() == line and str(raised.value) in line
    limited = write(tmp_path / "limited.yaml", "data: {dataset: digits, limit: 2,\n"
                    "       validation_split: 0.9}\nmodel: {layers: [{type: flatten}, "
                    "{type: dense, units: 10}]}\n")
    said = assert_one_line_error(invoke("validate", limited), "limited.yaml:2:")
    assert said == assert_one_line_error(invoke("train", limited, "--out", tmp_path / "l"),
                                         "limited.yaml:2:")
    assert "data.validation_split: validation_split 0.9 of the 2 training samples" in said
    assert not (tmp_path / "r").exists() and not (tmp_path / "l").exists()


@pytest.mark.parametrize("layers, fix", [
    # a softmax, batchnorm or dropout after the dense layer: the dense layer sets the outputs
    ("[{type: dense, units: 2, name: out}, {type: softmax}]",
     "set units: 3 in model.layers[0] (out)"),
    ("[{type: dense, units: 2}, {type: batchnorm}, {type: dropout, rate: 0.1}]",
     "set units: 3 in model.layers[0] (dense_1)"),
    # nothing after a flatten sets a count: a layer added at the end does
    ("[{type: flatten}]", "end the model with {type: dense, units: 3}"),
])
def test_labels_beyond_the_outputs_name_the_layer_that_sets_them(tmp_path, layers, fix):
    """'set the last layer's units to 3' named a softmax (or relu) layer, which has none."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((30, 2)).astype("f4"), y=np.arange(30) % 3)
    spec = write(tmp_path / "s.yaml", f"data: {{dataset: npz, path: d.npz}}\nmodel:\n"
                 f"  input_shape: [2]\n  layers: {layers}\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert line.endswith(f"the model has 2 outputs; {fix}"), line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("targets, fix", [
    ((3, 8, 8), "set filters: 3 in model.layers[0] (conv2d_1)"),
    ((8, 8, 3), "set filters: 3 in model.layers[0] (conv2d_1)"),  # then the layout's error
    ((8, 8), "set filters: 1 in model.layers[0] (conv2d_1)"),
    ((2, 16, 16), "add {type: upsample2d, scale: 2} at the end"),
    ((5,), "end the model with {type: flatten} and a dense layer of units: 5"),
])
def test_target_maps_of_another_size_name_the_filters_with_both_shapes(tmp_path, targets, fix):
    """Regression targets over an upsampled convolution: the message said units (the layer
    was an upsample) and gave no shapes."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", x=rng.random((12, 2, 8, 8)).astype("f4"),
             y=rng.random((12, *targets)).astype("f4"))
    spec = write(tmp_path / "m.yaml", "data: {dataset: npz, path: m.npz}\nmodel:\n"
                 "  layers:\n    - {type: conv2d, filters: 2, kernel_size: 3, padding: same}\n"
                 "    - {type: relu}\nloss: mse\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "m.npz")
    values = int(np.prod(targets))
    assert (f"the targets are {list(targets)} per sample ({values} values), the model's outputs "
            f"are [2, 8, 8] (128 values); {fix}") in line, line
    assert not (tmp_path / "run").exists()


def test_one_target_a_sample_beside_output_maps_is_told_to_end_with_a_dense_layer(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", x=rng.random((12, 2, 8, 8)).astype("f4"),
             y=rng.random(12).astype("f4"))
    spec = write(tmp_path / "m.yaml", "data: {dataset: npz, path: m.npz}\nmodel:\n"
                 "  layers:\n    - {type: conv2d, filters: 2, kernel_size: 3, padding: same}\n"
                 "loss: mse\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "m.npz")
    assert line.endswith("the targets have one value per sample, the model's outputs are "
                         "[2, 8, 8] (128 values); end the model with {type: flatten} and a "
                         "dense layer of units: 1"), line


def _refusal(tmp_path, layers: str, loss: str, arrays: dict, extra: str = "") -> str:
    """train's one-line refusal of npz `arrays` for a model of `layers` (flow YAML)."""
    np.savez(tmp_path / "d.npz", **arrays)
    spec = write(tmp_path / "s.yaml", f"data: {{dataset: npz, path: d.npz}}\nmodel:\n  layers: "
                 f"{layers}\nloss: {loss}\ntrain: {{epochs: 1, batch_size: 8{extra}}}\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.npz")
    assert not (tmp_path / "run").exists()
    return line


RNG = np.random.default_rng(0)
IMAGES = RNG.random((24, 1, 6, 6)).astype("f4")


def test_a_confusion_metric_of_one_output_on_more_classes_is_refused_not_an_internal_error(
        tmp_path):
    """pixel_accuracy of one output under mse on labels 0..3: exit 70 (an IndexError in the
    confusion matrix of two classes); validate said ok."""
    line = _refusal(tmp_path, "[{type: dense, units: 1}]", "mse",
                    {"x": RNG.random((24, 3)), "y": np.arange(24) % 4},
                    ", metrics: [pixel_accuracy]")
    assert line.endswith("pixel_accuracy reads the one output as class 0 or 1 (above 0.5), the "
                         "labels hold classes up to 3; set units: 4 in model.layers[0] (dense_1) "
                         "with loss: cross_entropy, or track train.metrics: [mae] to regress "
                         "the values"), line


def test_leaving_out_the_top_label_is_offered_only_where_it_is_a_mark_and_the_loss_has_it(
        tmp_path):
    """Labels 0..3 beside one filter were offered ignore_index: 3, then 2, then 3 again; a
    perceptron (no ignore_index) was offered it too."""
    maps = {"x": RNG.random((24, 1, 8)).astype("f4"), "y": np.arange(24 * 8).reshape(24, 8) % 4}
    line = _refusal(tmp_path, "[{type: conv1d, filters: 1, kernel_size: 1}]", "cross_entropy",
                    maps)
    assert line.endswith("set filters: 4 in model.layers[0] (conv1d_1)"), line
    maps["y"] = np.where(maps["y"] == 3, 255, maps["y"] % 2)  # 0/1 and a void mark
    layers = "[{type: conv1d, filters: 2, kernel_size: 1}]"
    line = _refusal(tmp_path, layers, "cross_entropy", maps)
    assert "or leave out the pixels labelled 255 with loss.ignore_index: 255" in line, line
    assert "ignore_index" not in _refusal(tmp_path, layers, "perceptron", maps)


@pytest.mark.parametrize("layers, y, fix", [
    # the count is the convolution's filters, before a global pool
    ("[{type: conv2d, filters: 1, kernel_size: 3, name: out}, {type: global_avgpool}]",
     np.arange(24) % 4, "use loss: cross_entropy, and set filters: 4 in model.layers[0] (out)"),
    # nothing sets the count past a flatten
    ("[{type: flatten}]", np.arange(24) % 4,
     "use loss: cross_entropy, and end the model with {type: dense, units: 4}"),
    # one label a sample beside output maps
    ("[{type: conv2d, filters: 1, kernel_size: 1}]", np.arange(24) % 4,
     "use loss: cross_entropy, and end the model with {type: flatten} and a dense layer of "
     "units: 4"),
])
def test_binary_cross_entropy_on_more_classes_names_the_layer_and_field(tmp_path, layers, y, fix):
    """"use loss: cross_entropy with units: 4" named a field the model's last count-setting
    layer lacks (filters), or no layer (a flatten last), or maps for labels a sample."""
    line = _refusal(tmp_path, layers, "binary_cross_entropy", {"x": IMAGES, "y": y})
    assert line.endswith(f"(labels 0..3); {fix}"), line


def test_one_0_1_label_a_sample_beside_output_maps_is_told_one_unit(tmp_path):
    """binary_cross_entropy: 'a dense layer, one unit per class' meant 2, which is refused."""
    line = _refusal(tmp_path, "[{type: conv2d, filters: 1, kernel_size: 1}]",
                    "binary_cross_entropy", {"x": IMAGES, "y": np.arange(24) % 2})
    assert "end the model with {type: flatten} and a dense layer of units: 1 (or give label " \
        "maps" in line


@pytest.mark.parametrize("y, filters, fix", [
    (np.zeros((24, 1, 6, 6), np.int64), 2, "set filters: 1 in model.layers[0] (conv2d_1)"),
    (np.zeros((24, 6, 6, 1), np.int64), 1, "save y[..., 0]"),
    (np.zeros((24, 6, 6, 1), np.int64), 3,
     "save y[..., 0] and set filters: 1 in model.layers[0] (conv2d_1)"),
])
def test_label_maps_with_an_axis_of_1_under_mse_are_told_the_fix(tmp_path, y, filters, fix):
    """[N, 1, H, W] beside [2, H, W] was told "[1, 1, 6, 6]" and that a flatten took the
    positions away, in a model without one."""
    line = _refusal(tmp_path, f"[{{type: conv2d, filters: {filters}, kernel_size: 1}}]", "mse",
                    {"x": IMAGES, "y": y})
    assert line.endswith(f"with one score per position, [1, 6, 6], the model ends with "
                         f"[{filters}, 6, 6]; {fix}"), line


def test_label_maps_of_vector_samples_are_not_told_positions_were_taken_away(tmp_path):
    line = _refusal(tmp_path, "[{type: dense, units: 3}]", "cross_entropy",
                    {"x": RNG.random((24, 4)).astype("f4"), "y": np.zeros((24, 8), np.int64)})
    assert line.endswith("(the samples [4] have no 1-D positions to label: give one label per "
                         "sample, y [N], or samples [channels, 8])"), line


def test_float_labels_beyond_0_and_1_under_binary_cross_entropy_are_not_called_0_1(tmp_path):
    """[N, 6] floats 0..3 were told "several 0/1 labels each" and to set units: 6."""
    line = _refusal(tmp_path, "[{type: dense, units: 3}]", "binary_cross_entropy",
                    {"x": RNG.random((24, 4)).astype("f4"),
                     "y": (np.arange(24 * 6).reshape(24, 6) % 4).astype("f4")})
    assert line.endswith("the labels are [6] per sample, floats holding 2, 3 beside 0 and 1; "
                         "binary_cross_entropy takes several 0/1 labels a sample, as integers "
                         "(for one of k classes a sample, use y [N] with cross_entropy)"), line


def test_a_void_mark_beside_the_classes_is_told_ignore_index_not_counted_a_class(tmp_path):
    """mse on maps of 0..2 and 255 was told 'cross_entropy for its 256 classes', and the
    metric's refusal 'set filters: 256' (the review)."""
    y = np.arange(24 * 36).reshape(24, 6, 6) % 3
    y[:, 0, 0] = 255
    line = _refusal(tmp_path, "[{type: conv2d, filters: 3, kernel_size: 1}]", "mse",
                    {"x": IMAGES, "y": y})
    assert line.endswith("or use loss: {type: cross_entropy, ignore_index: 255} for its 3 "
                         "classes per position"), line
    line = _refusal(tmp_path, "[{type: conv2d, filters: 1, kernel_size: 1}]", "mse",
                    {"x": IMAGES, "y": y})
    assert "the label maps hold classes up to 2 and 255; set filters: 3 in model.layers[0] " \
        "(conv2d_1) with loss: {type: cross_entropy, ignore_index: 255}" in line, line
    y = np.where(y == 255, 255, y % 2)  # 0/1 beside the mark: still no class 0 or 1 of one score
    line = _refusal(tmp_path, "[{type: conv2d, filters: 1, kernel_size: 1}]", "mse",
                    {"x": IMAGES, "y": y})  # (the check was skipped: exit 70 in accuracy)
    assert "the label maps hold classes up to 1 and 255; set filters: 2" in line, line


def test_label_maps_with_an_axis_of_1_beside_smaller_maps_are_told_both_fixes(tmp_path):
    """[N, 1, 6, 6] beside a [1, 4, 4] output was told to give samples of 4 axes (the
    review): the axis goes, then the positions."""
    line = _refusal(tmp_path, "[{type: conv2d, filters: 1, kernel_size: 3}]", "mae",
                    {"x": IMAGES, "y": np.zeros((24, 1, 6, 6), np.int64)})
    assert "(save y[:, 0], maps [6, 6]; then the maps fall 2x2 short of the labels" in line, line


@pytest.mark.parametrize("x_shape, y_shape, layer", [
    ((3, 6), (2, 6), "{type: conv1d, filters: 2, kernel_size: 1}"),
    ((1, 6, 6), (2, 6, 6), "{type: conv2d, filters: 2, kernel_size: 3, padding: same}"),
    ((1, 6, 6), (1, 6, 6), "{type: conv2d, filters: 1, kernel_size: 3, padding: same}"),
    # positions of size 1: [1, 1, 1] is [*positions, 1] too, which was refused as channels
    # last (the third random-architecture fuzz)
    ((2, 1, 1), (1, 1, 1), "{type: conv2d, filters: 1, kernel_size: 1}"),
    ((2, 1), (1, 1), "{type: conv1d, filters: 1, kernel_size: 1}"),
])
def test_0_1_label_maps_shaped_like_the_output_train_under_binary_cross_entropy(
        tmp_path, x_shape, y_shape, layer):
    """The random-architecture fuzz: y [N, 2, 6] beside an output [2, 6] was refused ("needs
    [1, 2, 6]", which that model cannot end with), though the loss compares each output with
    a 0/1 label of its own and the API's loss_and_grads takes them; [N, 1, H, W] was told its
    axis of 1 had no place in the model's [1, H, W]."""
    torch = pytest.importorskip("torch")
    import nnrun

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, *x_shape)).astype(np.float32)
    y = rng.integers(0, 2, (8, *y_shape))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    write(tmp_path / "s.yaml", f"data: {{dataset: npz, path: d.npz, validation_split: 0}}\n"
                               f"model:\n  layers: [{layer}]\nloss: binary_cross_entropy\n"
                               "train: {epochs: 2, metrics: [accuracy]}\n")
    assert_ok(invoke("validate", tmp_path / "s.yaml", "--data"))
    assert_ok(invoke("train", tmp_path / "s.yaml", "--out", tmp_path / "run", "--quiet"))
    result = assert_ok(invoke("eval", tmp_path / "run", "--split", "train", "--format", "json"))
    metrics = json.loads(result.stdout)
    logits = nnrun.load_run(tmp_path / "run").predict(x)
    want = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(logits, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
    assert metrics["train_loss"] == pytest.approx(float(want), rel=1e-5)
    assert metrics["train_accuracy"] == pytest.approx(((logits > 0) == y).mean())


@pytest.mark.parametrize("y_shape, layer, said", [
    ((2, 6, 6), "{type: conv2d, filters: 2, kernel_size: 3}",
     "label maps are [2, 6, 6] (2 0/1 maps a sample), the model ends with [2, 4, 4]; "
     "binary_cross_entropy compares each output with the label at its place: the maps fall"),
    ((2, 6, 6), "{type: conv2d, filters: 3, kernel_size: 3, padding: same}",
     "the model ends with [3, 6, 6]; binary_cross_entropy compares each output with the label "
     "at its place: set filters: 2 in model.layers[0] (conv2d_1)"),
    ((1, 6, 6), "{type: conv2d, filters: 2, kernel_size: 3, padding: same}",
     "label maps are [1, 6, 6] (1 0/1 map a sample), the model ends with [2, 6, 6]; "
     "binary_cross_entropy compares each output with the label at its place: set filters: 1"),
    ((6, 6, 2), "{type: conv2d, filters: 2, kernel_size: 3, padding: same}",
     "label maps are [6, 6, 2] (channels last), the model ends with [2, 6, 6]; "
     "binary_cross_entropy compares each output with the label at its place: save "
     "np.moveaxis(y, -1, 1), the maps channels first"),
    ((2, 6, 6, "float"), "{type: conv2d, filters: 2, kernel_size: 3, padding: same}",
     "floats read as values; binary_cross_entropy takes label maps, a whole number per "
     "position: save y.astype(int)"),
])
def test_0_1_maps_that_almost_fit_the_output_are_told_the_fix_for_them(tmp_path, y_shape,
                                                                       layer, said):
    """The review: such maps were told "needs [1, 2, 6, 6] (the samples have no 3-D positions
    to label...)", a fix for one map a sample; float ones to save one map per sample."""
    rng = np.random.default_rng(0)
    floats = y_shape[-1] == "float"
    shape = y_shape[:-1] if floats else y_shape
    y = rng.integers(0, 2, (8, *shape))
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((8, 1, 6, 6)).astype(np.float32),
             y=y.astype(np.float32) if floats else y)
    write(tmp_path / "s.yaml", f"data: {{dataset: npz, path: d.npz, validation_split: 0}}\n"
                               f"model:\n  layers: [{layer}]\nloss: binary_cross_entropy\n")
    line = assert_one_line_error(invoke("train", tmp_path / "s.yaml", "--out",
                                        tmp_path / "run"), "d.npz")
    assert said in line, line


def test_a_csv_with_an_index_column_and_input_shape_is_told_the_column_in_train_too(tmp_path):
    """The runtime follow-the-fix audit: train counted pandas' unnamed index column as a
    feature and told input_shape [4] to become [5], where validate named the column."""
    (tmp_path / "d.csv").write_text(",a,b,label\n" + "".join(f"{i},{i / 7},{i % 3},{i % 2}\n"
                                                             for i in range(30)))
    spec = write(tmp_path / "s.yaml", "data: {dataset: csv, path: d.csv}\nmodel:\n  "
                 "input_shape: [2]\n  layers: [{type: dense, units: 2}]\ntrain: {epochs: 1}\n")
    said = assert_one_line_error(invoke("validate", spec), "s.yaml:1:")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "r"), "s.yaml:1:")
    assert line == said and "column 1 has no name in the header row" in line


def test_a_file_of_the_other_kind_is_told_the_dataset_to_set(tmp_path):
    """The runtime follow-the-fix audit: a csv under dataset: npz was told to save it with
    numpy.savez, and an npz under dataset: csv got no fix at all."""
    (tmp_path / "d.csv").write_text("a,b,label\n" + "".join(f"{i},{i / 7},{i % 2}\n"
                                                            for i in range(30)))
    np.savez(tmp_path / "d.npz", x=np.ones((30, 2)), y=np.arange(30) % 2)
    for kind, other in (("npz", "csv"), ("csv", "npz")):
        spec = write(tmp_path / f"{kind}.yaml", f"data: {{dataset: {kind}, path: d.{other}}}\n"
                     "model: {layers: [{type: dense, units: 2}]}\ntrain: {epochs: 1}\n")
        line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / kind), "d.")
        assert line.endswith(f"it is {'an' if other == 'npz' else 'a'} {other} file: set "
                             f"data.dataset: {other}"), line
        fixed = spec.read_text().replace(f"dataset: {kind}", f"dataset: {other}")
        spec.write_text(fixed)
        assert invoke("train", spec, "--out", tmp_path / f"{kind}-fixed", "--quiet"
                      ).exit_code == 0


def test_cross_entropy_over_one_output_on_labels_that_fit_it_is_warned_and_scored_as_class_0(
        tmp_path):
    """The review: an npz of labels all 0 under cross_entropy with one output passed without
    a word (the loss is 0 and nothing learns), and accuracy read the output as a sigmoid's
    (class 1, always): 0.0."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((32, 3)).astype("f4"), y=np.zeros(32, int))
    spec = write(tmp_path / "s.yaml", "data: {dataset: npz, path: d.npz}\nmodel:\n  layers: "
                 "[{type: dense, units: 1}]\ntrain: {epochs: 1, batch_size: 16}\n")
    result = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    assert "cross_entropy over 1 output is over one class" in result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["train_accuracy"] == 1.0
