"""The `nnrun` command line end to end (DESIGN.md sections 5-7), in-process with CliRunner.

Every error case checks the contract of section 5: the exit code, one line on stderr, no
traceback, and a message that names the file at fault.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.abc
import importlib.util
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from invoking import assert_ok, assert_one_line_error, invoke

TINY = """\
name: tiny
seed: 0
data:
  dataset: blobs
  validation_split: 0.2
model:
  layers:
    - {type: dense, units: 8, activation: relu}
    - {type: dense, units: 3}
optimizer: {type: adam, lr: 0.01}
train:
  epochs: 2
  batch_size: 16
"""

# Like TINY but with another hidden width: its checkpoints do not fit TINY.
OTHER = TINY.replace("name: tiny", "name: other").replace("units: 8", "units: 5")

def test_trains_options_are_named_as_typed(tmp_path):
    """The design audit: --batch-size 100000 was warned of as `--set
    train.batch_size=100000`, and --epochs 1 under a warm-up as `(after --set train.epochs=1)`,
    arguments never typed."""
    from nnrun.compiler.frontend import load_spec
    from nnrun.compiler.loader import training_overrides
    from nnrun.runtime.distributed import Alone
    from nnrun.runtime.train import Launch, _start_command

    spec = tmp_path / "t.yaml"
    spec.write_text(TINY.replace("lr: 0.01}", "lr: 0.01, schedule: {type: cosine, "
                                             "warmup_epochs: 1}}"))
    result = invoke("train", spec, "--out", tmp_path / "run", "--epochs", "1", "--batch-size",
                    "100000")
    assert result.exit_code == 0, result.output
    assert ": warning: --batch-size 100000: batch_size 100000 is more than the" in result.stderr
    assert "use fewer warm-up epochs (after --epochs 1)" in result.stderr
    assert "train.epochs=" not in result.stderr and "train.batch_size=" not in result.stderr
    typed = training_overrides(["seed=3"], 1, 8, typed=True)
    assert load_spec(spec, overrides=typed).set_by(("train", "batch_size")) == \
        " (after --batch-size 8)"  # the runtime's messages of the value (the MPI audit)
    assert load_spec(spec).set_by(("train", "batch_size")) == ""
    for kept in (copy.deepcopy(typed), pickle.loads(pickle.dumps(typed))):  # the review
        assert [getattr(setting, "option", None) for setting in kept] == [None, "--epochs 1",
                                                                           "--batch-size 8"]
    command = _start_command(load_spec(spec, overrides=typed), tmp_path / "r",
                             Launch(Alone(), "numpy", True))
    assert f"--out {tmp_path / 'r'} --set seed=3 --epochs 1 --batch-size 8" in command


# One warning (13 rows and 13 columns / stride 2 leave one unused), no error.
WARNS = """\
model:
  input_shape: [1, 13, 13]
  layers:
    - {type: conv2d, filters: 2, kernel_size: 2, stride: 2}
    - {type: flatten}
    - {type: dense, units: 3}
"""

# Exactly one error: an unknown field with a did-you-mean.
ONE_ERROR = """\
model:
  input_shape: [1, 28, 28]
  layers:
    - {type: conv2d, filters: 6, kernel_size: 5, stride: 1, padd: 2}
    - {type: flatten}
    - {type: dense, units: 10}
"""

# Section 6: the CLI's summary --format json has exactly these keys.
SUMMARY_KEYS = {"name", "input_shape", "output_shape", "layers", "trainable_params",
                "non_trainable_params", "total_params", "flops_per_sample", "train_memory_bytes"}
LAYER_KEYS = {"name", "type", "output_shape", "params", "flops"}  # issue 2: exactly these
DETAILED_LAYER_KEYS = LAYER_KEYS | {"inputs", "kernel", "trainable_params", "mult_adds"}
DIAGNOSTIC_KEYS = {"file", "line", "col", "severity", "where", "message"}
METRIC_KEYS = {"epoch", "train_loss", "val_loss", "val_accuracy", "lr", "epoch_s", "samples_per_s"}
FINAL_KEYS = {"checkpoint", "epoch", "train_loss", "val_loss", "val_accuracy", "test_loss",
              "test_accuracy"}
RUN_FILES = {"spec.yaml", "metrics.jsonl", "last.npz", "best.npz", "summary.json",
             "preprocessing.npz"}


# --- helpers --------------------------------------------------------------------------------


def assert_usage_error(result, names: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, result.stderr
    assert names in error_lines[0]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def train_args(spec: Path, out: Path, *extra) -> list:
    return ["train", spec, "--out", out, "--max-steps", 3, "--quiet", *extra]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    # A command that falls back to its default run directory must not write into the checkout.
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write(tmp_path / "tiny.yaml", TINY)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One short run of TINY, shared read-only by the eval/predict tests."""
    root = tmp_path_factory.mktemp("trained")
    spec = write(root / "tiny.yaml", TINY)
    out = root / "run"
    assert_ok(invoke("train", spec, "--out", out, "--max-steps", 3, "--quiet"))
    return out


# --- validate -------------------------------------------------------------------------------


def test_validate_valid_spec(tiny):
    result = assert_ok(invoke("validate", tiny))
    assert f"{tiny}: ok" in result.stdout
    assert "51 parameters" in result.stdout
    assert result.stderr == ""


def test_validate_shipped_specs():
    specs = sorted((Path(__file__).parents[2] / "specs").glob("*.yaml"))
    assert specs
    result = assert_ok(invoke("validate", *specs))
    assert f"{len(specs)} of {len(specs)} specs valid" in result.stdout


def test_validate_invalid_spec(tmp_path):
    bad = write(tmp_path / "bad.yaml", ONE_ERROR)
    line = assert_one_line_error(invoke("validate", bad), bad)
    assert line == (f"{bad}:4:61: error: model.layers[0]: unknown field 'padd'; "
                    "did you mean 'padding'?")
    assert "ok" not in invoke("validate", bad).stdout


def test_validate_missing_file_is_usage_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert_usage_error(invoke("validate", missing), "nope.yaml")


def test_validate_bad_option_is_usage_error(tiny):
    assert_usage_error(invoke("validate", "--bogus", tiny), "--bogus")
    assert_usage_error(invoke("validate", "--format", "xml", tiny), "xml")
    assert_usage_error(invoke("validate"), "SPECS")


def test_validate_directory_is_usage_error(tmp_path):
    assert_usage_error(invoke("validate", tmp_path), str(tmp_path))


def test_validate_json_format(tmp_path):
    bad = write(tmp_path / "bad.yaml", ONE_ERROR)
    result = assert_ok(invoke("validate", "--format", "json", bad), 1)
    decoded = json.loads(result.stdout)
    assert isinstance(decoded, list) and len(decoded) == 1
    (item,) = decoded
    assert set(item) == DIAGNOSTIC_KEYS
    assert item == {"file": str(bad), "line": 4, "col": 61, "severity": "error",
                    "where": "model.layers[0]",
                    "message": "unknown field 'padd'; did you mean 'padding'?"}


def test_validate_json_format_of_valid_specs_is_empty_list(tiny):
    result = assert_ok(invoke("validate", "--format", "json", tiny))
    assert json.loads(result.stdout) == []


def test_validate_json_format_reports_warnings(tmp_path):
    warns = write(tmp_path / "warns.yaml", WARNS)
    result = assert_ok(invoke("validate", "--format", "json", warns))
    decoded = json.loads(result.stdout)
    assert {d["severity"] for d in decoded} == {"warning"}
    assert all(set(d) == DIAGNOSTIC_KEYS and d["file"] == str(warns) for d in decoded)


def test_validate_github_format(tmp_path):
    bad = write(tmp_path / "bad.yaml", ONE_ERROR)
    result = assert_ok(invoke("validate", "--format", "github", bad), 1)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("::error file=")
    assert "line=4,col=61::" in lines[0]
    assert "did you mean 'padding'?" in lines[0]


def test_validate_warning_passes_and_strict_fails(tmp_path):
    warns = write(tmp_path / "warns.yaml", WARNS)
    relaxed = assert_ok(invoke("validate", warns))
    assert f"{warns}: ok" in relaxed.stdout
    warning_lines = relaxed.stderr.strip().splitlines()
    assert warning_lines and all(f"{warns}:4:" in l and ": warning: " in l for l in warning_lines)
    assert "stride 2 leaves 1" in warning_lines[0]

    strict = invoke("validate", "--strict", warns)
    assert strict.exit_code == 1, strict.output
    assert "Traceback" not in strict.output
    assert "ok" not in strict.stdout
    # Issue 10, item 8: the lines that fail the check say so.
    strict_lines = strict.stderr.strip().splitlines()
    assert strict_lines and all(": error: " in line for line in strict_lines)
    assert [line.replace(": error: ", ": warning: ") for line in strict_lines] == warning_lines


# --- validate: what train would refuse, and shape errors beside schema errors (item 8) -------

XOR_WITH = """\
data:
  dataset: xor
{data}model:
  layers:
    - {{type: dense, units: 2}}
{extra}"""


def validate_errors(tmp_path, text: str, *options) -> list[str]:
    spec = write(tmp_path / "spec.yaml", text)
    result = assert_ok(invoke("validate", spec, *options), 1)
    return [line.replace(f"{spec}:", "") for line in result.stderr.strip().splitlines()]


@pytest.mark.parametrize("data, monitor, reason", [
    ("  validation_split: 0.2\n", "val_acc", "did you mean 'val_accuracy'? choose one of: "
                                             "train_loss, train_accuracy, val_loss, val_accuracy"),
    ("", "val_loss", "(val_* metrics need data.validation_split > 0); choose one of: "
                     "train_loss, train_accuracy"),
    # a style review: the hint to add the metric was train's alone, of three metrics; a
    # metric's key is no typo of val_loss
    ("  validation_split: 0.2\n", "val_mse", "choose one of: train_loss, train_accuracy, "
                                             "val_loss, val_accuracy (or add mse to "
                                             "train.metrics)"),
    ("", "train_top_2_accuracy", "choose one of: train_loss, train_accuracy (or add "
                                 "{type: top_k_accuracy, k: 2} to train.metrics)"),
    ("", "val_mse", "(val_* metrics need data.validation_split > 0); choose one of: "
                    "train_loss, train_accuracy"),
])
def test_validate_catches_an_early_stopping_monitor_that_will_not_exist(tmp_path, data,
                                                                        monitor, reason):
    text = XOR_WITH.format(data=data, extra=f"train:\n  early_stopping: {{monitor: {monitor}}}\n")
    (line,) = validate_errors(tmp_path, text)
    column = text.splitlines()[-1].index(monitor) + 1
    # where: the field, as train names it (it said train.early_stopping)
    assert line.startswith(f"{len(text.splitlines())}:{column}: error: "
                           f"train.early_stopping.monitor: '{monitor}' will not be a metric of "
                           "this run")
    assert line.endswith(reason)


def test_validate_names_val_metrics_for_an_npz_that_may_hold_x_val(tmp_path):
    """It said val_* metrics need a validation_split and offered train_* alone, where the
    file's x_val and y_val give them (train lists val_loss, val_accuracy)."""
    text = ("data: {dataset: npz, path: d.npz}\nmodel: {input_shape: [2], layers: [{type: dense, "
            "units: 2}]}\ntrain: {early_stopping: {monitor: val_acc}}\n")
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 2), np.float32), y=np.arange(8) % 2,
             x_val=np.zeros((4, 2), np.float32), y_val=np.arange(4) % 2)
    (line,) = validate_errors(tmp_path, text)
    assert "validation_split" not in line and "val_loss, val_accuracy" in line
    assert line.endswith("(val_* where the npz holds x_val and y_val)")
    # a file without them: its header says so, and validate with it (train refused it)
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 2), np.float32), y=np.arange(8) % 2)
    for shape in ("input_shape: [2], ", ""):
        (line,) = validate_errors(tmp_path, text.replace("input_shape: [2], ", shape)
                                  .replace("val_acc", "val_loss"))
        assert "(val_* metrics need data.validation_split > 0)" in line
        assert line.endswith("(d.npz holds no x_val and y_val)")
    # the field walk: held-out arrays under other names are named there (train warns of them,
    # but this error came first)
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 2), np.float32), y=np.arange(8) % 2,
             x_valid=np.zeros((4, 2), np.float32), y_valid=np.arange(4) % 2)
    (line,) = validate_errors(tmp_path, text.replace("val_acc", "val_loss"))
    assert line.endswith("(d.npz holds no x_val and y_val; its x_valid, y_valid are not read: "
                         "save them as x_val, y_val)")
    # an unknown name is said once, by the check of names (it came twice, two fixes apart)
    (line,) = validate_errors(tmp_path, text)
    assert line.endswith("(val_* where the npz holds x_val and y_val)")


def test_validate_catches_spatial_augmentations_on_vector_samples(tmp_path):
    augment = "  augment:\n    - {type: gaussian_noise}\n    - {type: random_flip}\n"
    (line,) = validate_errors(tmp_path, XOR_WITH.format(data=augment, extra=""))
    assert line.startswith("5:7: error: data.augment[1]: random_flip needs samples with a "
                           "spatial axis")
    assert "these are [2]" in line


@pytest.mark.parametrize("data, error", [
    ("  n_samples: 1\n", "3:14: error: data.n_samples: n_samples 1 leaves no training samples: "
                         "the test split takes the first 20% of them, one at least; use 2 or "
                         "more"),
    ("  n_samples: 3\n  validation_split: 0.9\n",
     "4:21: error: data.validation_split: validation_split 0.9 of the 2 training samples (3 less "
     "1 for the test split) leaves none to train on; lower data.validation_split, or raise "
     "data.n_samples"),
    ("  validation_split: 0.999\n",  # the default n_samples, 200
     "3:21: error: data.validation_split: validation_split 0.999 of the 160 training samples "
     "(200 less 40 for the test split) leaves none to train on; lower data.validation_split, "
     "or raise data.n_samples"),
    ("  n_samples: 30\n  limit: 1\n  validation_split: 0.1\n",
     "5:21: error: data.validation_split: validation_split 0.1 of the 1 training sample that "
     "data.limit keeps leaves none to train on; remove data.validation_split, or raise "
     "data.limit"),
])
def test_validate_catches_a_generated_dataset_too_small_for_its_splits(tmp_path, data, error):
    """validate said ok and train refused (a hostile-input audit)."""
    assert validate_errors(tmp_path, XOR_WITH.format(data=data, extra="")) == [error]
    result = invoke("train", tmp_path / "spec.yaml", "--out", tmp_path / "run", "--quiet")
    assert_one_line_error(result, "leaves n")
    assert not (tmp_path / "run").exists()


def test_validate_catches_a_validation_split_that_leaves_none_of_a_fixed_training_split(tmp_path):
    """Without a limit validate said ok (the training split's size is known: 1437 digits)."""
    text = ("data: {dataset: digits, validation_split: 0.9999}\nmodel:\n  layers:\n"
            "    - {type: flatten}\n    - {type: dense, units: 10}\n")
    (line,) = validate_errors(tmp_path, text)
    assert line.endswith("data.validation_split: validation_split 0.9999 of the 1437 training "
                         "samples of digits leaves none to train on; lower "
                         "data.validation_split")
    result = invoke("train", tmp_path / "spec.yaml", "--out", tmp_path / "run", "--quiet")
    assert_one_line_error(result, "leaves none to train on")
    spec = write(tmp_path / "spec.yaml", text.replace("0.9999", "0.999"))  # leaves one
    assert invoke("validate", spec).exit_code == 0
    # files of one's own (data.path) may hold more: train judges them (the review)
    own = text.replace("digits,", "mnist, path: idx,").replace("0.9999", "0.999992")
    assert invoke("validate", write(tmp_path / "own.yaml", own)).exit_code == 0
    assert validate_errors(tmp_path, own.replace(" path: idx,", ""))[0].endswith(
        "of the 60000 training samples of mnist leaves none to train on; lower "
        "data.validation_split")


def test_validate_catches_a_limit_too_small_for_the_validation_split_of_any_dataset(tmp_path):
    text = ("data: {dataset: digits, limit: 1, validation_split: 0.5}\nmodel:\n  layers:\n"
            "    - {type: flatten}\n    - {type: dense, units: 10}\n")
    (line,) = validate_errors(tmp_path, text)
    assert line.endswith("data.validation_split: validation_split 0.5 of the 1 training sample "
                         "that data.limit keeps leaves none to train on; remove "
                         "data.validation_split, or raise data.limit")


def test_validate_catches_a_conv_only_model_under_the_default_loss(tmp_path):
    text = "data: {dataset: mnist1d}\nmodel:\n  layers:\n    - {type: conv1d, filters: 10, " \
           "kernel_size: 40}\n"
    (line,) = validate_errors(tmp_path, text)
    assert line.startswith("4:7: error: model.layers[0] (conv1d_1): cross_entropy needs class "
                           "scores [classes], the model ends with shape [10, 1]")


README_BAD = """\
model:
  input_shape: [1, 8, 8]
  layers:
    - {type: conv2d, filters: 6, kernal_size: 5}
    - {type: conv2d, filters: 16, kernel_size: 5}
    - {type: flatten}
    - {type: dense, units: 10}
optimizer: {type: sgd, lr: -1}
"""


def test_validate_reports_shape_errors_in_layers_the_schema_errors_leave_intact(tmp_path):
    lines = validate_errors(tmp_path, README_BAD)
    assert [line.split(": ")[2] for line in lines] == [
        "model.layers[0]", "model.layers[1] (conv2d_2)", "optimizer"]
    # As DESIGN.md section 5 shows them: a schema error at its path, a shape error naming the
    # layer; the one mistake said once (no "missing kernel_size")
    assert "unknown field 'kernal_size'; did you mean 'kernel_size'?" in lines[0]
    assert lines[1].startswith("5:48: error: model.layers[1] (conv2d_2): kernel 5x5 does not "
                               "fit the 4x4 input")


def test_validate_reports_no_shape_error_that_a_schema_error_causes(tmp_path):
    # Layer 0 is broken (no kernel size): every later shape depends on it, so none is checked.
    text = README_BAD.replace("kernal_size: 5", "kernel_size: [5, 5, 5]")
    lines = validate_errors(tmp_path, text)
    assert all("model.layers[0]" in line or "optimizer" in line for line in lines), lines


@pytest.mark.parametrize("layer, still", [
    ("{nmae: stem, type: conv2d, filters: 1, kernel_size: 3, padding: same}", "name: stem"),
    ("{name: stem, type: conv2d, filters: 1, kernel_size: 3, padidng: same}", "padding: same"),
])
def test_a_misspelt_optional_field_is_read_as_meant_by_the_shape_checks(tmp_path, layer, still):
    """Dropped, its default gave the later layers shapes the user never asked for, and advice
    that would build another model ("unknown layer 'stem'; did you mean 'step'?")."""
    text = ("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - LAYER\n"
            "    - {name: step, type: conv2d, filters: 1, kernel_size: 3, padding: same}\n"
            "    - {type: add, inputs: [input, stem, step]}\n"
            "    - {type: flatten}\n    - {type: dense, units: 10}\n").replace("LAYER", layer)
    (line,) = validate_errors(tmp_path, text)
    assert "unknown field" in line and "did you mean" in line
    # The field read as meant, the spec is whole: the one error was the one mistake
    fixed = text.replace("nmae", "name").replace("padidng", "padding")
    assert still in fixed
    assert_ok(invoke("validate", write(tmp_path / "fixed.yaml", fixed)))


@pytest.mark.parametrize("first", [
    "{type: dense, units: 4, activaton: rleu}",                # a value the field refuses
    "{type: dense, units: 4, activation: {type: leaky_relu, nmae: x}}",  # inside a mapping
])
def test_a_misspelt_field_that_cannot_be_read_as_meant_hides_no_other_error(tmp_path, first):
    """Read as the field it misspells, a value that field refuses (or a key of an activation
    read as a field of the layer) made the repaired copy fail: the later layer's shape error
    was lost (the session's review)."""
    lines = validate_errors(tmp_path, "model:\n  input_shape: [4]\n  layers:\n    - " + first
                            + "\n    - {type: conv2d, filters: 2, kernel_size: 3}\n")
    assert len(lines) == 2, lines
    assert "conv2d expects a [channels, height, width] sample, got shape [4]" in lines[1]


def test_github_annotation_of_a_budget_from_set_has_no_file(tiny):
    result = assert_ok(invoke("validate", "--format", "github", tiny,
                              "--set", "limits.max_params=10"), 1)
    assert result.stdout.strip() == ("::error::--set limits.max_params=10: the model needs 51 "
                                     "parameters, over the budget of 10; make layers smaller or "
                                     "raise the budget")


def test_github_format_of_a_clean_spec_prints_nothing(tiny):
    """The DESIGN.md audit: one empty line went to standard output."""
    result = assert_ok(invoke("validate", "--format", "github", tiny))
    assert result.stdout == ""


def test_github_annotations_name_files_from_the_checkout(tmp_path, monkeypatch):
    """Run from a subdirectory (a workflow's working-directory:), the annotation must still
    name the file as the repository does."""
    (tmp_path / "repo" / "specs").mkdir(parents=True)
    bad = write(tmp_path / "repo" / "specs" / "bad.yaml", "model: [\n")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path / "repo"))
    monkeypatch.chdir(tmp_path / "repo" / "specs")
    result = assert_ok(invoke("validate", "--format", "github", "bad.yaml"), 1)
    assert result.stdout.startswith("::error file=specs/bad.yaml,line=")
    monkeypatch.delenv("GITHUB_WORKSPACE")
    assert assert_ok(invoke("validate", "--format", "github", "bad.yaml"), 1).stdout.startswith(
        "::error file=bad.yaml,line=")
    assert bad.exists()


def test_budget_errors_come_in_the_order_of_the_arguments(tiny):
    result = assert_ok(invoke("validate", tiny, "--set", "limits.max_train_memory_mb=0.0001",
                              "--set", "limits.max_params=10"), 1)
    lines = result.stderr.strip().splitlines()[:2]
    assert lines[0].startswith("--set:1:1: error: --set limits.max_train_memory_mb=0.0001")
    assert "over the budget of 0.0001 MB" in lines[0]
    assert lines[1].startswith("--set:2:1: error: --set limits.max_params=10")


def test_a_set_error_names_its_spec_when_there_are_several(tmp_path, tiny):
    other = write(tmp_path / "other.yaml", TINY)
    result = assert_ok(invoke("validate", tiny, other, "--set", "model.layers[7].units=3"), 1)
    lines = [line for line in result.stderr.splitlines() if line.startswith("--set:")]
    assert [f"(on {path})" in line for line, path in zip(lines, (tiny, other))] == [True, True]


def test_validate_several_files_one_bad(tmp_path, tiny):
    bad = write(tmp_path / "bad.yaml", ONE_ERROR)
    also_good = write(tmp_path / "good.yaml", WARNS)
    result = invoke("validate", tiny, bad, also_good)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"{tiny}: ok" in result.stdout
    assert f"{also_good}: ok" in result.stdout
    assert f"{bad}: ok" not in result.output
    assert f"{bad}:4:61: error:" in result.stderr
    assert "2 of 3 specs valid" in result.output


def test_validate_several_files_json_holds_all(tmp_path):
    bad = write(tmp_path / "bad.yaml", ONE_ERROR)
    warns = write(tmp_path / "warns.yaml", WARNS)
    result = assert_ok(invoke("validate", "--format", "json", bad, warns), 1)
    files = {d["file"] for d in json.loads(result.stdout)}
    assert files == {str(bad), str(warns)}


def test_validate_set_override(tiny):
    assert_ok(invoke("validate", tiny, "--set", "model.layers[0].units=4"))
    result = invoke("validate", tiny, "--set", "model.layers[0].units=0")
    line = assert_one_line_error(result, "--set model.layers[0].units=0")
    assert "units" in line


def test_a_set_split_in_two_arguments_shows_the_one_argument(tiny):
    for command in ("validate", "train", "summary"):
        result = invoke(command, tiny, "--set", "optimizer.lr", "0.01")
        assert result.exit_code == 2, result.output
        assert "--set optimizer.lr=0.01" in result.stderr and "extra argument" not in result.stderr


def test_a_set_without_equals_is_a_usage_error_that_never_takes_the_spec_as_its_value(tiny):
    for args in (("validate", "--set", "a.b", tiny), ("train", tiny, "--set", "a.b", "--out", "x"),
                 ("train", tiny, "--set=a.b"), ("summary", "--set", "a.b", tiny.parent)):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert "--set takes PATH=VALUE, got 'a.b'; e.g. --set optimizer.lr=0.01" in result.stderr
        assert str(tiny) not in result.stderr.split("Error:")[-1]


def test_validate_set_bad_path(tiny):
    result = invoke("validate", tiny, "--set", "model.layers[7].units=4")
    line = assert_one_line_error(result, "--set model.layers[7].units=4")
    assert "2 entries" in line


def test_validate_python_tag_is_rejected_and_not_run(tmp_path):
    marker = tmp_path / "PWNED"
    evil = write(tmp_path / "evil.yaml", f"""\
        name: !!python/object/apply:os.system ["touch {marker}"]
        model:
          input_shape: [2]
          layers: [{{type: dense, units: 3}}]
        """)
    line = assert_one_line_error(invoke("validate", evil), f"{evil}:1:7:")
    assert "!!python/object/apply:os.system" in line
    assert not marker.exists()
    out = tmp_path / "evil-run"
    assert_one_line_error(invoke("train", evil, "--out", out), evil)
    assert not marker.exists()
    assert not out.exists()


# --- summary --------------------------------------------------------------------------------


def test_summary_text(tiny):
    result = assert_ok(invoke("summary", tiny))
    text = result.stdout
    assert "model tiny: input [2]" in text
    assert "dense_1" in text and "dense_2" in text
    assert "2 per multiply-accumulate" in text  # the FLOP convention is stated
    assert "training memory at batch size 16" in text


def test_summary_says_the_specs_warnings_beside_its_table(tmp_path):
    """The course audit: course.md says summary warns of a stride that skips input rows;
    only validate, train and trace did."""
    spec = write(tmp_path / "g.yaml", "model:\n  input_shape: [1, 9, 9]\n  layers:\n"
                 "    - {type: conv2d, filters: 3, kernel_size: 2, stride: 3}\n"
                 "    - {type: flatten}\n    - {type: dense, units: 2}\n")
    for fmt in ("text", "json"):
        result = assert_ok(invoke("summary", spec, "--format", fmt))
        assert "conv2d_1" in result.stdout
        assert [line.split(": warning: ")[1].split(":")[0] for line in
                result.stderr.splitlines()] == ["model.layers[0] (conv2d_1)"] * 2
        assert "no window reads rows 2, 5 and 8" in result.stderr


def test_sizes_keep_a_readable_unit():
    """A tiny model's memory read 0.00 MB in every part."""
    from nnrun.compiler.tables import byte_size

    assert [byte_size(n) for n in (0, 776, 1024, 241_100, 2**20, 31_180_000, 3 * 2**30)] == [
        "0 B", "776 B", "1.0 KB", "235.4 KB", "1.00 MB", "29.74 MB", "3.00 GB"]
    assert byte_size(-1536, signed=True) == "-1.5 KB" and byte_size(10, signed=True) == "+10 B"
    # the unit is chosen after rounding; a negative size keeps its sign unasked
    assert [byte_size(n) for n in (1023, 2**20 - 1, 2**30 - 1, -2**21)] == [
        "1023 B", "1.00 MB", "1.00 GB", "-2.00 MB"]
    text = assert_ok(invoke("summary", SPECS / "xor-perceptron.yaml")).stdout
    assert re.search(r"training memory at batch size 16: \d+ B \(parameters \d+ B,", text)


def test_summary_of_a_spec_over_its_budget_shows_the_table_then_fails(tiny):
    """The per-layer numbers are what a developer needs then; the budget still fails."""
    result = invoke("summary", tiny, "--set", "limits.max_params=10")
    assert result.exit_code == 1
    assert "dense_1" in result.stdout and "parameters: 51" in result.stdout
    assert "over the budget of 10" in result.stderr


def test_summary_json(tiny):
    result = assert_ok(invoke("summary", "--format", "json", tiny))
    summary = json.loads(result.stdout)
    assert set(summary) == SUMMARY_KEYS
    assert summary["name"] == "tiny"
    assert summary["input_shape"] == [2]
    assert summary["output_shape"] == [3]
    assert [set(layer) for layer in summary["layers"]] == [LAYER_KEYS, LAYER_KEYS]
    detailed = json.loads(assert_ok(invoke("summary", "--format", "json", "--details",
                                           tiny)).stdout)
    assert [set(layer) for layer in detailed["layers"]] == [DETAILED_LAYER_KEYS] * 2
    assert {key: detailed[key] for key in SUMMARY_KEYS - {"layers"}} == \
        {key: summary[key] for key in SUMMARY_KEYS - {"layers"}}
    assert [layer["params"] for layer in summary["layers"]] == [2 * 8 + 8, 8 * 3 + 3]
    assert [layer["flops"] for layer in summary["layers"]] == [2 * 2 * 8, 2 * 8 * 3]
    assert summary["trainable_params"] == summary["total_params"] == 51
    assert summary["non_trainable_params"] == 0
    assert summary["flops_per_sample"] == 80
    assert summary["train_memory_bytes"] > 0


def test_summary_json_lenet5_matches_its_comment():
    lenet = Path(__file__).parents[2] / "specs" / "lenet5.yaml"
    summary = json.loads(assert_ok(invoke("summary", "--format", "json", lenet)).stdout)
    assert summary["trainable_params"] == 61_706
    assert summary["flops_per_sample"] == 833_040
    assert summary["layers"][0]["output_shape"] == [6, 28, 28]


SPECS = Path(__file__).parents[2] / "specs"

BATCHNORM = """\
name: bn
model:
  input_shape: [1, 8, 8]
  layers:
    - {type: conv2d, filters: 8, kernel_size: 3, padding: same}
    - {type: batchnorm, name: a_batchnorm_layer_with_a_rather_long_name}
    - {type: relu}
    - {type: flatten}
    - {type: dense, units: 10}
"""


def summary_rows(text: str) -> dict[str, list[str]]:
    """The table's rows by layer name, split into cells (cells hold no double space)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if set(line) == {"-"}) + 1
    rows = [line.split("  ") for line in lines[start:] if line and not line.startswith("param")]
    rows = [[cell.strip() for cell in row if cell.strip()] for row in rows]
    return {row[0]: row for row in rows if len(row) > 1}


def test_summary_shows_inputs_kernel_shape_mult_adds_and_flops():
    # Issue 10, item 9: skip connections, kernel shapes and mult-adds are visible per layer;
    # issue 2: FLOPs per layer, which add up to the total.
    residual = assert_ok(invoke("summary", SPECS / "residual-block.yaml")).stdout
    assert summary_rows(residual)["residual"][:3] == ["residual", "add", "stem, conv_b"]
    lenet = summary_rows(assert_ok(invoke("summary", SPECS / "lenet5.yaml")).stdout)
    assert lenet["conv2d_1"] == ["conv2d_1", "conv2d", "input", "[6, 28, 28]", "[6, 1, 5, 5]",
                                 "156", "117,600", "235,200"]
    assert lenet["maxpool2d_1"][4] == "[2, 2]" and lenet["dense_1"][4] == "[400, 120]"
    assert lenet["total"][-1] == "833,040"
    summary = json.loads(assert_ok(invoke("summary", "--format", "json", "--details",
                                          SPECS / "residual-block.yaml")).stdout)
    residual_row = next(layer for layer in summary["layers"] if layer["name"] == "residual")
    assert residual_row["inputs"] == ["stem", "conv_b"]
    assert summary["layers"][0]["kernel"] == [16, 1, 3, 3]
    assert all(layer["mult_adds"] * 2 == layer["flops"] for layer in summary["layers"])


def test_summary_totals_are_the_sums_of_the_rows(tmp_path):
    # Issue 10, item 5: batchnorm's running statistics are counted in their row, not only in
    # the total; the table stays aligned with a long layer name.
    spec = write(tmp_path / "bn.yaml", BATCHNORM)
    summary = json.loads(assert_ok(invoke("summary", "--format", "json", "--details",
                                          spec)).stdout)
    assert sum(layer["params"] for layer in summary["layers"]) == summary["total_params"]
    assert sum(layer["trainable_params"] for layer in summary["layers"]) == \
        summary["trainable_params"]
    assert summary["non_trainable_params"] == 16
    text = assert_ok(invoke("summary", spec)).stdout
    rows = summary_rows(text)
    assert rows["a_batchnorm_layer_with_a_rather_long_name"][-3] == "32"
    assert sum(int(row[-3].replace(",", "")) for name, row in rows.items()
               if name != "total") == int(rows["total"][-3].replace(",", ""))
    table = [line for line in text.splitlines() if line.split() and line.split()[0] in rows]
    assert len({len(line) for line in table}) == 1  # the numbers end in one column
    assert "5,242 = 5,226 trainable + 16 non-trainable" in text


def test_summary_resolved_fills_every_default_and_loads_back(tmp_path):
    spec = write(tmp_path / "tiny.yaml", TINY)
    text = assert_ok(invoke("summary", "--resolved", spec, "--set", "optimizer.lr=0.5")).stdout
    resolved = yaml.safe_load(text)
    assert resolved["optimizer"] == {"type": "adam", "lr": 0.5, "beta1": 0.9, "beta2": 0.999,
                                     "eps": 1e-08, "weight_decay": 0.0,
                                     "schedule": {"type": "constant", "warmup_epochs": 0}}
    assert resolved["model"]["layers"][0]["name"] == "dense_1"
    assert resolved["loss"]["type"] == "cross_entropy" and resolved["train"]["batch_size"] == 16
    again = write(tmp_path / "again.yaml", text.replace("name: tiny", "name: again"))
    assert yaml.safe_load(assert_ok(invoke("summary", "--resolved", again)).stdout) == \
        dict(resolved, name="again")
    json_form = json.loads(assert_ok(invoke("summary", "--resolved", "--format", "json",
                                            spec)).stdout)
    assert json_form["optimizer"]["lr"] == 0.01 and json_form["train"]["metrics"]


def test_summary_of_invalid_spec(tmp_path):
    bad = write(tmp_path / "bad.yaml", ONE_ERROR)
    assert_one_line_error(invoke("summary", bad), bad)


# --- graph ----------------------------------------------------------------------------------


def test_graph_text(tiny):
    text = assert_ok(invoke("graph", tiny)).stdout
    assert text.splitlines()[0] == "input %x : f32[B,2]"
    assert "matmul(%x, %dense_1.weight) : f32[B,8]" in text
    assert "output prediction = " in text
    assert "adam_update" not in text


def test_graph_backward(tiny):
    text = assert_ok(invoke("graph", "--backward", tiny)).stdout
    assert "softmax_cross_entropy(" in text
    assert "softmax_cross_entropy_grad(" in text
    assert text.count("adam_update(") == 4
    assert "output loss = " in text
    assert "update dense_1.weight = " in text


def test_graph_dot(tiny):
    text = assert_ok(invoke("graph", "--format", "dot", tiny)).stdout
    assert text.startswith("digraph nnrun {")
    assert text.rstrip().endswith("}")
    assert "matmul" in text and "->" in text
    # the outputs are named, as in the text form (`output prediction = %5`)
    assert '"output prediction" [shape=ellipse, style=bold, label="prediction"];' in text


def test_graph_batch_size_without_the_plan_it_sizes_is_a_usage_error(tiny):
    """--batch-size sizes --optimized's memory plan: alone, or with dot, it did nothing."""
    for words, fix in (([], "add --optimized"),
                       (["--format", "dot", "--optimized"], "text; drop --format dot, or"),
                       (["--format", "dot"], "add --optimized and drop --format dot")):
        result = invoke("graph", tiny, "--batch-size", 4, *words)
        assert result.exit_code == 2 and fix in result.stderr, result.output
    assert "memory plan" in assert_ok(invoke("graph", tiny, "--optimized", "--batch-size", 4)).stdout


def test_graph_of_invalid_spec(tmp_path):
    bad = write(tmp_path / "bad.yaml", ONE_ERROR)
    assert_one_line_error(invoke("graph", bad), bad)


# --- schema ---------------------------------------------------------------------------------


def test_schema_is_json_schema():
    document = json.loads(assert_ok(invoke("schema")).stdout)
    assert "model" in document["properties"]
    assert {"data", "loss", "optimizer", "train", "limits"} <= set(document["properties"])
    assert document["$schema"].startswith("https://json-schema.org/")


# --- train ----------------------------------------------------------------------------------


def test_train_writes_a_run_directory(tiny, tmp_path):
    out = tmp_path / "run"
    result = assert_ok(invoke("train", tiny, "--out", out, "--max-steps", 3))
    assert result.stdout == ""  # progress and the final table go to stderr
    assert "best epoch" in result.stderr
    assert "final model: best.npz, epoch" in result.stderr
    assert RUN_FILES <= {p.name for p in out.iterdir()}

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        assert METRIC_KEYS <= set(row)
        assert np.isfinite(row["train_loss"]) and 0 <= row["val_accuracy"] <= 1
        assert row["lr"] == pytest.approx(0.01)

    for name in ("last.npz", "best.npz"):
        with np.load(out / name, allow_pickle=False) as archive:
            keys = set(archive.files)
            assert "meta" in keys
            assert {"params/dense_1.weight", "params/dense_1.bias",
                    "params/dense_2.weight", "params/dense_2.bias"} <= keys
            assert archive["params/dense_1.weight"].shape == (2, 8)  # dense weight is [in, out]
            assert any(key.startswith("opt/") for key in keys)  # adam's state
            meta = json.loads(str(archive["meta"]))
        assert meta["epoch"] == 2
        assert {"spec_hash", "version"} <= set(meta)

    summary = json.loads((out / "summary.json").read_text())
    assert {"backend", "epochs_run", "stopped_early", "best_epoch", "final", "samples_per_s",
            "wall_s"} <= set(summary)
    assert set(summary["final"]) == FINAL_KEYS
    assert summary["backend"] == "numpy"
    assert summary["epochs_run"] == 2
    assert summary["stopped_early"] is False
    assert summary["best_epoch"] in (1, 2)
    final = dict(summary["final"])
    assert final.pop("checkpoint") == "best.npz" and final.pop("epoch") == summary["best_epoch"]
    assert all(isinstance(v, float) for v in final.values())

    resolved = yaml.safe_load((out / "spec.yaml").read_text())
    assert resolved["name"] == "tiny"
    # Every default is filled in (issue 10, item 9): names, biases, optimizer settings...
    assert [layer["name"] for layer in resolved["model"]["layers"]] == ["dense_1", "dense_2"]
    assert resolved["model"]["layers"][1] == {"type": "dense", "name": "dense_2", "units": 3,
                                              "use_bias": True, "bias_init": {"type": "zeros"}}
    assert resolved["optimizer"]["beta1"] == 0.9 and resolved["train"]["shuffle"] is True


def test_train_says_the_specs_warnings_as_validate_does(tmp_path):
    spec = write(tmp_path / "squashed.yaml", """\
        model:
          input_shape: [2]
          layers:
            - {type: dense, units: 3, activation: sigmoid}
        data: {dataset: blobs, n_samples: 60}
        train: {epochs: 1}
        """)
    result = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    assert f"{spec}:4:43: warning: model.layers[0] (dense_1): sigmoid before cross_entropy" in \
        result.stderr
    quiet = assert_ok(invoke("train", spec, "--out", tmp_path / "quiet", "--quiet"))
    assert quiet.stderr == ""


@pytest.mark.parametrize("loss", ["binary_cross_entropy", "mse"])
def test_a_softmax_over_one_value_is_warned_to_learn_nothing(tmp_path, loss):
    """The claims audit: units: 1 with a softmax (always 1) was told "learning slows" under
    binary_cross_entropy, and nothing under mse; its loss stayed the same every epoch."""
    spec = write(tmp_path / "one.yaml", f"""\
        data: {{dataset: xor}}
        model: {{layers: [{{type: dense, units: 4, activation: tanh}},
                          {{type: dense, units: 1, activation: softmax}}]}}
        loss: {loss}
        """)
    result = assert_ok(invoke("validate", spec))
    (line,) = [line for line in result.stderr.splitlines() if "warning" in line]
    assert "softmax over one value is always 1" in line and "learning slows" not in line
    assert "model.layers[1] (dense_2)" in line


def test_a_loss_that_rises_tenfold_without_diverging_is_a_warning(tmp_path):
    """lr 10 on raw digits: the loss grows from 13 to about 1700 and stays finite, so the
    run does not stop; it says why its numbers are huge, once."""
    spec = write(tmp_path / "lr10.yaml", """\
        data: {dataset: digits, normalize: none}
        model:
          layers:
            - {type: flatten}
            - {type: dense, units: 10}
        optimizer: {type: sgd, lr: 10}
        train: {epochs: 2}
        """)
    result = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    assert result.stderr.count("the updates overshoot; lower optimizer.lr (10 now)") == 1
    calm = assert_ok(invoke("train", spec, "--out", tmp_path / "calm", "--set",
                            "optimizer.lr=0.01"))
    assert "overshoot" not in calm.stderr


def test_a_rise_from_a_huge_first_loss_names_the_initial_weights_first(tmp_path):
    """The course audit: a deep ReLU net of std-1.5 weights starts at a loss of 3e4 and rises
    to 7e16; told only to lower the rate, it trained with every hidden layer dead. As the
    divergence's message does, the warning names the initial weights' scale first, and
    clipping."""
    rng = np.random.RandomState(1)
    x = rng.randn(64, 4)
    np.savez(tmp_path / "deep.npz", x=x, y=(x[:, 0] * x[:, 1] > 0).astype(np.int64))
    hidden = "\n".join(["    - {type: dense, units: 8, activation: relu}"] * 10)
    spec = tmp_path / "explode.yaml"
    spec.write_text(f"""\
seed: 0
data: {{dataset: npz, path: deep.npz, normalize: none}}
model:
  init: {{type: normal, std: 1.5}}
  layers:
{hidden}
    - {{type: dense, units: 2}}
optimizer: {{type: sgd, lr: 0.1}}
train: {{epochs: 1, batch_size: 8, shuffle: false}}
""")
    result = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    warning = next(line for line in result.stderr.splitlines() if "overshoot" in line)
    assert "the loss of the initial weights was already 3.4" in warning
    assert warning.index("initial weights") < warning.index("lower optimizer.lr (0.1 now)")
    assert warning.endswith("or set optimizer.clip_grad_norm (e.g. 1.0)")


def _unnormalised_npz_spec(path: Path, hidden: int, lr: float, train: str) -> Path:
    """A spec of data.npz beside it, fed as it is, to 3 classes through one hidden layer."""
    return write(path, f"""\
        seed: 0
        data: {{dataset: npz, path: data.npz, normalize: none}}
        model:
          layers:
            - {{type: dense, units: {hidden}, activation: relu}}
            - {{type: dense, units: 3}}
        optimizer: {{type: sgd, lr: {lr}}}
        train: {train}
        """)


def test_a_held_out_loss_that_is_not_finite_is_a_warning_naming_what_follows_it(tmp_path):
    """The numerics audit: a validation sample of 3e38 (finite in float32) made val_loss NaN
    at every epoch; train said nothing while early stopping and best.npz followed the NaN
    (eval of the same run warned). Said once, with the sample and what follows the monitor."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 1] * 10)
    x_val = x[:5].copy()
    x_val[2] = [3e38, -3e38, 3e38]
    np.savez(tmp_path / "data.npz", x=x, y=y, x_val=x_val, y_val=y[:5])
    spec = _unnormalised_npz_spec(tmp_path / "nanval.yaml", 8, 0.1, "{epochs: 3, batch_size: 8, "
                                  "early_stopping: {monitor: val_loss, patience: 5}}")
    result = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    warnings = [line for line in result.stderr.splitlines() if "val_loss is nan" in line]
    assert len(warnings) == 1, result.stderr
    assert ("on some of the val split's samples, beyond float32 (the split's largest input "
            "value is 3e+38, at its sample 2;") in warnings[0]
    assert warnings[0].endswith("early stopping and best.npz follow val_loss, where a NaN is "
                                "never an improvement (the best epoch stays one of a finite "
                                "val_loss, or the first)")
    plain = assert_ok(invoke("train", spec, "--out", tmp_path / "plain", "--set",
                             "train.early_stopping=null", "--set", "train.epochs=1"))
    assert "best.npz follows val_loss" in plain.stderr


def test_a_divergence_on_an_input_outlier_names_the_inputs_first(tmp_path):
    """The numerics audit: one input of 1e30 with normalize: none made the loss NaN at any
    learning rate (1e-20 too), and the line blamed the rate first."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    x[3, 1] = 1e30
    np.savez(tmp_path / "data.npz", x=x, y=np.array([0, 1, 2, 1] * 5))
    spec = _unnormalised_npz_spec(tmp_path / "outlier.yaml", 4, 0.001,
                                  "{epochs: 2, batch_size: 4}")
    result = invoke("train", spec, "--out", tmp_path / "run")
    assert result.exit_code == 1
    assert ("loss became nan at epoch 1, step 4; the training inputs reach 1e+30 (at sample 3) "
            "once preprocessed: set data.normalize: standard, or scale them down or remove the "
            "outliers; the learning rate (0.001) may be too high") in result.stderr
    assert_ok(invoke("train", spec, "--out", tmp_path / "fixed", "--set",
                     "data.normalize=standard"))
    # not finite at the first step, before any update (inputs near float32's largest: the
    # consistency audit was told to train in float64, where the loss then reached 5.8e249)
    x[:, :] = 3e38 * np.sign(x)
    np.savez(tmp_path / "data.npz", x=x, y=np.array([0, 1, 2, 1] * 5))
    result = invoke("train", spec, "--out", tmp_path / "first", "--set", "train.batch_size=20")
    assert result.exit_code == 1 and ("before any update: the training inputs reach 3e+38 (at "
                                      "sample 0) once preprocessed: set data.normalize: standard"
                                      ) in result.stderr, result.stderr


def test_the_perceptron_criterion_growing_with_its_weights_is_no_overshoot(tmp_path):
    """The warnings audit: a perceptron from zeros (first loss 0) on unnormalised features was
    told to lower its rate, and again at 1/1000 of it: its boundary is the same at any rate,
    and ten times a first loss of 0 is no measure."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 2)) * 100
    np.savez(tmp_path / "lin.npz", x=x, y=(x[:, 0] + 0.3 * x[:, 1] > 10).astype(np.int64))
    spec = write(tmp_path / "p.yaml", """\
        data: {dataset: npz, path: lin.npz, normalize: none}
        model:
          input_shape: [2]
          layers:
            - {type: dense, units: 1, activation: step, init: zeros}
        loss: perceptron
        optimizer: {type: sgd, lr: 1.0}
        train: {epochs: 5, batch_size: 1}
        """)
    result = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    assert "overshoot" not in result.stderr


def test_a_batch_larger_than_the_training_split_is_a_warning(tmp_path):
    spec = write(tmp_path / "s.yaml", """\
        data: {dataset: digits, validation_split: 0.999}
        model:
          layers: [{type: flatten}, {type: dense, units: 10}]
        train: {epochs: 1}
        """)
    result = assert_ok(invoke("train", spec, "--out", tmp_path / "run"))
    assert result.stderr.count("one step on all of them") == 1
    assert ("warning: train.batch_size: batch_size 32 is more than the 1 training sample "
            "planned: each epoch is one step on all of them") in result.stderr
    # validate says so too, where the spec fixes the samples; train alone where the data does
    assert "batch_size 32 is more than the 1 training sample planned" in \
        invoke("validate", spec).stderr
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(5, 3)), y=np.arange(5) % 2)
    few = write(tmp_path / "few.yaml", "data: {dataset: npz, path: d.npz}\nmodel:\n  layers: "
                "[{type: dense, units: 2}]\ntrain: {epochs: 1}\n")
    assert "one step" not in invoke("validate", few).stderr
    result = assert_ok(invoke("train", few, "--out", tmp_path / "few"))
    assert ("train.batch_size 32 is more than the 5 training samples: each epoch is one step on "
            "all of them") in result.stderr
    # the option as typed (the MPI audit: said as the spec's train.batch_size alone)
    result = assert_ok(invoke("train", few, "--out", tmp_path / "few2", "--batch-size", "9"))
    assert ("train.batch_size 9 (after --batch-size 9) is more than the 5 training samples"
            in result.stderr)


def test_train_options_and_overrides_reach_the_run(tiny, tmp_path):
    out = tmp_path / "run"
    result = invoke(*train_args(tiny, out, "--epochs", 1, "--batch-size", 8, "--seed", 3,
                                "--set", "optimizer.lr=0.05"))
    assert_ok(result)
    assert result.stdout == "" and result.stderr == ""  # --quiet prints nothing at all
    resolved = yaml.safe_load((out / "spec.yaml").read_text())
    assert resolved["train"]["epochs"] == 1
    assert resolved["train"]["batch_size"] == 8
    assert resolved["seed"] == 3
    assert resolved["optimizer"]["lr"] == 0.05
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1
    assert json.loads(rows[0])["lr"] == pytest.approx(0.05)
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 1


def test_train_is_reproducible_with_a_seed(tiny, tmp_path):
    losses = []
    for name in ("a", "b"):
        assert_ok(invoke(*train_args(tiny, tmp_path / name, "--epochs", 1, "--seed", 5)))
        row = json.loads((tmp_path / name / "metrics.jsonl").read_text())
        losses.append((row["train_loss"], row["val_loss"]))
    assert losses[0] == losses[1]


def test_train_resume_continues_the_run(tiny, tmp_path):
    out = tmp_path / "run"
    assert_ok(invoke(*train_args(tiny, out, "--epochs", 1)))
    first = (out / "metrics.jsonl").read_text().splitlines()
    assert len(first) == 1

    result = invoke("train", tiny, "--resume", out, "--epochs", 3, "--max-steps", 3, "--quiet")
    assert_ok(result)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert json.dumps(rows[0]) == first[0] or rows[0] == json.loads(first[0])
    with np.load(out / "last.npz", allow_pickle=False) as archive:
        assert json.loads(str(archive["meta"]))["epoch"] == 3
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 3


def test_train_resume_with_out_is_usage_error(tiny, tmp_path):
    out = tmp_path / "run"
    assert_ok(invoke(*train_args(tiny, out, "--epochs", 1)))
    result = invoke("train", tiny, "--resume", out, "--out", tmp_path / "other")
    assert result.exit_code == 2, result.output
    assert "--resume" in result.stderr
    assert not (tmp_path / "other").exists()


def test_train_resume_from_another_spec(tiny, tmp_path):
    out = tmp_path / "run"
    assert_ok(invoke(*train_args(tiny, out, "--epochs", 1)))
    before = snapshot(out)
    other = write(tmp_path / "other.yaml", OTHER)
    result = invoke("train", other, "--resume", out, "--epochs", 2, "--quiet")
    line = assert_one_line_error(result, out / "spec.yaml")
    assert "model.layers[0].units: 8 -> 5" in line and "not even with --allow-changes" in line
    assert snapshot(out) == before
    # --allow-changes cannot make the checkpoint's arrays fit another model.
    result = invoke("train", other, "--resume", out, "--epochs", 2, "--quiet", "--allow-changes")
    assert "model.layers[0].units: 8 -> 5" in assert_one_line_error(result, out / "spec.yaml")
    assert snapshot(out) == before


def test_resume_with_a_spec_of_another_model_names_the_runs_own_spec(tiny, tmp_path):
    """Another spec of the same task given by mistake listed every field that differs, 1,869
    characters, without the plain fix: resume with the run's own spec.yaml (the learners'
    audit)."""
    out = tmp_path / "run"
    assert_ok(invoke(*train_args(tiny, out, "--epochs", 1)))
    other = write(tmp_path / "other.yaml", tiny.read_text().replace(
        "{type: dense, units: 8, activation: relu}", "{type: dense, units: 5, activation: tanh, "
        "init: he_normal}").replace("{type: dense, units: 3}",
                                   "{type: dense, units: 3, activation: sigmoid}"))
    line = assert_one_line_error(invoke("train", other, "--resume", out, "--quiet"),
                                 out / "spec.yaml")
    assert "the spec given is another model than the run's (" in line and " more field" in line
    assert f"give its own spec: nnrun train {out / 'spec.yaml'} --resume {out}" in line


def test_a_change_of_what_the_weights_mean_starts_a_new_run_from_them(tiny, tmp_path):
    """An activation or loss of another kind keeps every array's shape, but the checkpoint's
    weights were not trained as that model: --allow-changes refuses it, naming init_from."""
    out = tmp_path / "run"
    assert_ok(invoke(*train_args(tiny, out, "--epochs", 1)))
    before = snapshot(out)
    changed = ("--set", "model.layers[0].activation=tanh")
    result = invoke("train", tiny, "--resume", out, "--epochs", 2, "--quiet", "--allow-changes",
                    *changed)
    line = assert_one_line_error(result, out / "spec.yaml")
    assert "model.layers[0].activation.type: 'relu' -> 'tanh'" in line
    fix = f"model.init_from={out.resolve() / 'last.npz'}"
    assert fix in line and snapshot(out) == before
    # init_from says where values came from, not what they mean: not listed among the changes
    result = invoke("train", tiny, "--resume", out, "--epochs", 2, "--quiet", "--allow-changes",
                    *changed, "--set", fix)
    line = assert_one_line_error(result, out / "spec.yaml")
    assert "activation.type" in line and "init_from:" not in line
    assert_ok(invoke("train", tiny, "--out", tmp_path / "new", "--epochs", 1, "--quiet",
                     *changed, "--set", fix))
    # A change that keeps the meaning goes on, and is recorded.
    assert_ok(invoke("train", tiny, "--resume", out, "--epochs", 2, "--quiet", "--allow-changes",
                     "--set", "optimizer.lr=0.02"))
    assert "optimizer.lr" in (out / "spec-changes.jsonl").read_text()


def test_a_run_refused_at_its_default_place_leaves_no_folder(tiny, tmp_path):
    """runs/<name>/<time> goes with the folders above it that the run created."""
    (tmp_path / "runs").mkdir()
    result = invoke("train", tiny, "--set", "model.layers[0].units=0")
    assert result.exit_code == 1
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.array([0, 1, 9, 1]))
    result = invoke("train", tiny, "--set", "data={dataset: npz, path: d.npz}",
                    "--set", "name=own")  # refused once the data has loaded
    assert result.exit_code == 1 and "labels go up to 9" in result.stderr, result.stderr
    assert list((tmp_path / "runs").iterdir()) == []  # runs/ was there before: it stays


def test_a_directory_of_runs_points_to_its_latest_run(tiny, tmp_path):
    """`nnrun train SPEC` writes runs/NAME/TIMESTAMP; runs/NAME is what a user types next."""
    for _ in range(2):
        assert_ok(invoke("train", tiny, "--max-steps", 3, "--quiet"))
    runs = sorted((tmp_path / "runs" / "tiny").iterdir())
    assert len(runs) == 2
    for command in (["eval"], ["export"], ["plot"], ["summary"], ["diff", tiny]):
        extra = {"export": ["--out", tmp_path / "m.onnx"], "plot": ["--out", tmp_path / "p.png"]}
        result = invoke(*command, Path("runs/tiny"), *extra.get(command[0], []))
        line = assert_one_line_error(result, "runs/tiny")
        assert f"give {Path('runs/tiny') / runs[-1].name} (the latest), or the other one" in line


def test_train_into_a_directory_that_holds_a_run(tiny, tmp_path):
    out = tmp_path / "run"
    assert_ok(invoke(*train_args(tiny, out, "--epochs", 1)))
    (out / "nnrun.lock").write_text("12345\n")  # the last holder's pid, not this process's
    before = snapshot(out)
    result = invoke(*train_args(tiny, out, "--epochs", 2, "--seed", 9))
    line = assert_one_line_error(result, out)
    assert "already holds a run" in line and "--resume" in line
    assert snapshot(out) == before  # the lock file too


def test_train_labels_out_of_range(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "labels.npz", x=rng.normal(size=(40, 2)).astype(np.float32),
             y=np.arange(40) % 13)  # labels 0..12
    spec = write(tmp_path / "labels.yaml", """\
        data: {dataset: npz, path: labels.npz}
        model:
          input_shape: [2]
          layers:
            - {type: dense, units: 10}
        """)
    out = tmp_path / "run"
    line = assert_one_line_error(invoke("train", spec, "--out", out, "--quiet"), "labels.npz")
    assert "12" in line and "10 outputs" in line
    assert not (out / "last.npz").exists()


def test_train_missing_data_file(tmp_path):
    spec = write(tmp_path / "nofile.yaml", """\
        data: {dataset: npz, path: missing.npz}
        model:
          input_shape: [2]
          layers: [{type: dense, units: 3}]
        """)
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "missing.npz")
    assert "not found" in line


def test_train_invalid_spec(tmp_path):
    bad = write(tmp_path / "bad.yaml", ONE_ERROR)
    out = tmp_path / "run"
    assert_one_line_error(invoke("train", bad, "--out", out), bad)
    assert not out.exists()


def test_train_bad_set_names_the_argument(tiny, tmp_path):
    result = invoke("train", tiny, "--out", tmp_path / "run", "--set", "optimizer.lr=-1")
    assert_one_line_error(result, "--set optimizer.lr=-1")


def test_train_without_data_section(tmp_path):
    spec = write(tmp_path / "nodata.yaml", WARNS)
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), spec)
    assert "data" in line


def test_train_divergence_is_a_one_line_error(tiny, tmp_path):
    out = tmp_path / "run"
    result = invoke(*train_args(tiny, out, "--set", "optimizer.type=sgd",
                                "--set", "optimizer.lr=1e30"))
    line = assert_one_line_error(result, "loss became")
    assert "optimizer.lr" in line and "clip_grad_norm" in line


def test_train_divergence_prints_no_numpy_warnings(tiny, tmp_path):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        invoke(*train_args(tiny, tmp_path / "run", "--set", "optimizer.type=sgd",
                           "--set", "optimizer.lr=1e30"))
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_weights_that_diverge_in_the_last_step_of_an_epoch_warn_nothing_in_validation(tmp_path):
    """One step an epoch: the validation after it is the first to run on the diverged
    weights, and its overflows printed NumPy's warnings beside the one error line."""
    import warnings

    spec = write(tmp_path / "blow.yaml", "data: {dataset: digits, validation_split: 0.2}\n"
                 "model:\n  layers: [{type: flatten}, {type: dense, units: 32, activation: relu},"
                 " {type: dense, units: 10}]\noptimizer: {type: sgd, lr: 1.0e30}\n"
                 "train: {epochs: 2, batch_size: 4096}\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke("train", spec, "--out", tmp_path / "run", "--quiet")
    assert_one_line_error(result, "loss became nan")
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_a_divergence_from_weight_decay_names_it(tiny, tmp_path):
    """weight_decay x lr of 1 or more flips or grows the weights each step: the advice named only
    the learning rate (0.05) and clipping."""
    result = invoke(*train_args(tiny, tmp_path / "run", "--set", "optimizer={type: sgd, lr: 0.5, "
                                "weight_decay: 1e9}"))
    line = assert_one_line_error(result, "weight_decay (1e+09) times the learning rate is 5e+08, "
                                         "1 or more: each step flips or grows the weights; lower "
                                         "optimizer.weight_decay; the learning rate (0.5)")
    assert "became" in line or "overflowed" in line


def test_train_unknown_early_stopping_monitor(tiny, tmp_path):
    result = invoke(*train_args(tiny, tmp_path / "run", "--set",
                                "train.early_stopping={monitor: val_acc}"))
    # positioned as validate positions it: at the --set argument that gave the monitor
    line = assert_one_line_error(result, "--set train.early_stopping={monitor: val_acc}")
    assert "'val_acc' is not a metric of this run" in line and "val_accuracy" in line


def test_train_positions_a_monitor_the_run_will_not_have(tmp_path):
    """train said only the file and the field, without validate's reason and position."""
    text = ("data: {dataset: xor}\nmodel: {layers: [{type: dense, units: 2}]}\n"
            "train: {epochs: 2, early_stopping: {monitor: val_loss}}\n")
    spec = write(tmp_path / "s.yaml", text)
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"),
                                 f"s.yaml:3:{text.splitlines()[2].index('val_loss') + 1}")
    assert line.endswith("'val_loss' is not a metric of this run (val_* metrics need "
                         "data.validation_split > 0); choose one of: train_loss, train_accuracy")


def test_train_early_stopping_stops(tiny, tmp_path):
    out = tmp_path / "run"
    # min_delta 10: no epoch after the first counts as an improvement.
    assert_ok(invoke(*train_args(tiny, out, "--epochs", 10, "--set",
                                 "train.early_stopping={patience: 2, min_delta: 10}")))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_early"] is True
    assert summary["epochs_run"] == 3
    assert summary["best_epoch"] == 1


@pytest.mark.parametrize("option", ["--epochs", "--batch-size"])
def test_train_rejects_non_positive_counts(tiny, tmp_path, option):
    result = invoke("train", tiny, "--out", tmp_path / "run", option, 0)
    assert_usage_error(result, option)


@pytest.mark.parametrize("command", [["train", "--out", "run", "--quiet"], ["bench"],
                                     ["gradcheck"]], ids=lambda command: command[0])
def test_cupy_backend_unavailable(tiny, tmp_path, monkeypatch, command):
    try:
        import cupy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("CuPy is installed; this checks the message without it")
    monkeypatch.chdir(tmp_path)
    result = invoke(command[0], tiny, "--backend", "cupy", *command[1:])
    line = assert_one_line_error(result, "cupy")
    assert "numpy" in line and "nnrun[cuda13]" in line and "nnrun[cuda12]" in line
    # the option (the extras audit: bench and gradcheck said the API's backend='numpy')
    assert line.endswith("or use --backend numpy"), line


def test_check_backends_without_cupy_offers_no_check_of_numpy_against_itself(tiny):
    """The extras audit: its line ended "or use --backend numpy", which compares NumPy with
    itself and says ok."""
    try:
        import cupy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("CuPy is installed; this checks the message without it")
    line = assert_one_line_error(invoke("check-backends", tiny), "cupy")
    assert line.endswith("pip install 'nnrun[cuda13]' (CUDA 13 drivers) or 'nnrun[cuda12]' "
                         "(CUDA 12)"), line


# An installed CuPy whose CUDA libraries do not load: as CuPy 13 fails its import, as CuPy 14
# fails at first use (its import succeeds), and as a library loaded through ctypes fails
CUPY_REPORT = ("'\\n================================================\\nFailed to import "
               "CuPy.\\n\\nOriginal error:\\n  ImportError: libnvrtc.so.13: cannot open shared "
               "object file: No such file or directory\\n"
               "================================================\\n'")
FAILING_CUPYS = {
    "import": f"raise ImportError({CUPY_REPORT})\n",
    "first-use": f"def __getattr__(name):\n    raise RuntimeError({CUPY_REPORT})\n",
    "ctypes": "raise OSError('libnvrtc.so.13: cannot open shared object file')\n"}


@pytest.mark.parametrize("failure", FAILING_CUPYS)
def test_a_cupy_that_fails_to_load_is_one_line_that_says_so(tiny, tmp_path, failure):
    """The GPU path's review: an installed CuPy whose CUDA libraries do not load raised its
    own report of 16 lines, and the message said CuPy was not installed. The issue 8 audit:
    CuPy 14's form was an internal error (exit 70), the ctypes form 'a file or the output:
    OSError'."""
    package = tmp_path / "site" / "cupy"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAILING_CUPYS[failure])
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    result = subprocess.run([sys.executable, "-m", "nnrun", "bench", str(tiny), "--backend",
                             "cupy"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "installed but fails to load" in line and "libnvrtc.so.13" in line
    assert "not installed" not in line and "nnrun[cuda13]" in line


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_cupy_backend_unavailable_on_a_run(trained, tmp_path, command):
    try:
        import cupy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("CuPy is installed; this checks the message without it")
    x = tmp_path / "x.npz"
    np.savez(x, x=np.zeros((3, 2), dtype=np.float32))
    arguments = [x, "--out", tmp_path / "y.npy"] if command == "predict" else []
    result = invoke(command, trained, *arguments, "--backend", "cupy")
    assert "nnrun[cuda13]" in assert_one_line_error(result, "cupy")
    assert not (tmp_path / "y.npy").exists()


# --- eval -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["eval"], ["predict", "x.npz"], ["plot"]])
def test_a_spec_where_a_run_directory_goes_says_what_to_give(tiny, command):
    result = invoke(command[0], tiny, *command[1:])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"'{tiny}' is a spec; give a run directory, as `nnrun train` writes" in result.output
    assert f"or train it first: nnrun train {tiny}" in result.output


def test_a_missing_run_to_resume_says_how_to_start_one(tiny, tmp_path):
    result = invoke("train", tiny, "--resume", tmp_path / "nope")
    assert result.exit_code == 2
    assert "does not exist; give a run directory" in result.output
    assert "to start a new run, leave out --resume" in result.output


def test_eval_test_split(trained):
    result = assert_ok(invoke("eval", trained))
    assert "best.npz" in result.stdout and "test split" in result.stdout
    assert "test_loss" in result.stdout and "test_accuracy" in result.stdout


@pytest.mark.parametrize("split", ["val", "test", "train"])
def test_eval_json_splits(trained, split):
    result = assert_ok(invoke("eval", trained, "--split", split, "--format", "json"))
    metrics = json.loads(result.stdout)
    assert metrics["split"] == split
    assert metrics["samples"] > 0
    assert {f"{split}_loss", f"{split}_accuracy"} <= set(metrics)
    assert 0 <= metrics[f"{split}_accuracy"] <= 1


def test_eval_best_matches_the_run_summary(trained):
    summary = json.loads((trained / "summary.json").read_text())
    metrics = json.loads(assert_ok(invoke("eval", trained, "--format", "json")).stdout)
    assert metrics["test_loss"] == pytest.approx(summary["final"]["test_loss"], rel=1e-5)


def test_eval_last_checkpoint(trained):
    result = assert_ok(invoke("eval", trained, "--checkpoint", "last", "--split", "val",
                              "--format", "json"))
    metrics = json.loads(result.stdout)
    assert metrics["epoch"] == 2
    assert "val_loss" in metrics


def test_eval_checkpoint_from_another_spec(tiny, tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    assert_ok(invoke(*train_args(tiny, ours, "--epochs", 1)))
    other = write(tmp_path / "other.yaml", OTHER)
    assert_ok(invoke(*train_args(other, theirs, "--epochs", 1)))
    for name in ("best.npz", "last.npz"):
        (ours / name).write_bytes((theirs / name).read_bytes())
    line = assert_one_line_error(invoke("eval", ours), ours / "best.npz")
    assert "another spec" in line
    assert_one_line_error(invoke("eval", ours, "--checkpoint", "last"), ours / "last.npz")


def test_eval_split_that_does_not_exist(tmp_path):
    spec = write(tmp_path / "noval.yaml", TINY.replace("validation_split: 0.2",
                                                       "validation_split: 0.0"))
    out = tmp_path / "run"
    assert_ok(invoke(*train_args(spec, out, "--epochs", 1)))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["val_loss"] is None and summary["final"]["test_loss"] is not None
    line = assert_one_line_error(invoke("eval", out, "--split", "val"), "blobs")
    assert "validation_split" in line
    # the toolbox audit: it named --split train, the run having a test split
    assert line.endswith("evaluate with --split test"), line


def test_eval_not_a_run_directory(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = assert_one_line_error(invoke("eval", empty), empty)
    assert "spec.yaml" in line
    (empty / "spec.yaml").mkdir()
    line = assert_one_line_error(invoke("summary", empty), empty)
    assert "not a run directory (its spec.yaml is not a file)" in line


def test_eval_missing_run_directory_is_usage_error(tmp_path):
    assert_usage_error(invoke("eval", tmp_path / "nowhere"), "nowhere")


# --- predict --------------------------------------------------------------------------------


def test_predict_writes_outputs(trained, tmp_path):
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.random.default_rng(1).normal(size=(7, 2)).astype(np.float32))
    out = tmp_path / "pred.npy"
    result = assert_ok(invoke("predict", trained, inputs, "--out", out))
    assert str(out) in result.stdout
    outputs = np.load(out, allow_pickle=False)
    assert outputs.shape == (7, 3)
    assert np.isfinite(outputs).all()


def test_the_line_of_what_was_written_escapes_control_characters_in_its_path(trained,
                                                                             tmp_path):
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.zeros((2, 2), np.float32))
    out = tmp_path / "a\x07b.npy"
    result = assert_ok(invoke("predict", trained, inputs, "--out", out))
    assert "a\\x07b.npy" in result.stdout and "\x07" not in result.stdout and out.exists()


def test_predict_last_checkpoint_and_float64_input(trained, tmp_path):
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.zeros((3, 2)))  # float64: converted to the spec's dtype
    out = tmp_path / "pred.npy"
    assert_ok(invoke("predict", trained, inputs, "--out", out, "--checkpoint", "last"))
    assert np.load(out).shape == (3, 3)


def test_predict_input_without_x(trained, tmp_path):
    inputs = tmp_path / "nox.npz"
    np.savez(inputs, y=np.zeros(3))
    out = tmp_path / "pred.npy"
    line = assert_one_line_error(invoke("predict", trained, inputs, "--out", out), inputs)
    assert "'x'" in line
    assert not out.exists()


def test_predict_wrong_shape(trained, tmp_path):
    inputs = tmp_path / "wide.npz"
    np.savez(inputs, x=np.zeros((4, 5), np.float32))
    out = tmp_path / "pred.npy"
    line = assert_one_line_error(invoke("predict", trained, inputs, "--out", out), inputs)
    assert "[5]" in line and "[2]" in line
    assert not out.exists()


def test_predict_not_an_npz(trained, tmp_path):
    inputs = tmp_path / "text.npz"
    inputs.write_text("not a zip file")
    out = tmp_path / "pred.npy"
    line = assert_one_line_error(invoke("predict", trained, inputs, "--out", out), inputs)
    assert line.endswith("save the inputs with numpy.savez(path, x=inputs)")
    assert not out.exists()
    # a csv, as a run trained on one may be tried (the data audit): told what predict reads
    inputs = tmp_path / "new.csv"
    inputs.write_text("a,b,label\n1,2,0\n")
    line = assert_one_line_error(invoke("predict", trained, inputs, "--out", out), inputs)
    assert line.endswith("it is a csv file, and predict reads an .npz or .npy: save its feature "
                         "columns (without the label) with numpy.savez(path, x=inputs)")
    assert not out.exists()


@pytest.mark.parametrize("kind", ["device", "fifo", "kernel"])
def test_predict_refuses_what_is_not_a_regular_file(trained, tmp_path, kind):
    inputs = Path("/dev/zero")  # it never ends: read, it would fill the memory
    if kind == "fifo":
        inputs = tmp_path / "inputs.npz"
        os.mkfifo(inputs)  # opened, it would block
    if kind == "kernel":  # "regular", but some block when read (/proc/kmsg)
        inputs = tmp_path / "inputs.npz"
        inputs.symlink_to("/proc/self/status")
    out = tmp_path / "pred.npy"
    result = invoke("predict", trained, inputs, "--out", out)
    assert_one_line_error(result, str(inputs))
    expected = "a file of the kernel's (/proc, /sys)" if kind == "kernel" else "not a regular file"
    assert expected in result.output and not out.exists()


def test_predict_into_a_missing_directory(trained, tmp_path):
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.zeros((2, 2), np.float32))
    out = tmp_path / "nowhere" / "pred.npy"
    line = assert_one_line_error(invoke("predict", trained, inputs, "--out", out), out)
    assert "does not exist" in line
    assert not out.parent.exists()


def test_predict_with_no_samples(trained, tmp_path):
    inputs = tmp_path / "empty.npz"
    np.savez(inputs, x=np.zeros((0, 2), np.float32))
    out = tmp_path / "pred.npy"
    result = invoke("predict", trained, inputs, "--out", out)
    assert "internal error" not in result.output
    if result.exit_code == 0:
        assert np.load(out).shape == (0, 3)
    else:
        assert_one_line_error(result, inputs)


def test_predict_needs_out(trained, tmp_path):
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.zeros((1, 2), np.float32))
    assert_usage_error(invoke("predict", trained, inputs), "--out")


# --- bench, gradcheck, data -----------------------------------------------------------------


def test_bench_json(tiny):
    result = assert_ok(invoke("bench", tiny, "--format", "json", "--steps", 2, "--batch-size", 4))
    report = json.loads(result.stdout)
    assert report["backend"] == "numpy"
    assert report["batch_size"] == 4 and report["steps"] == 2
    for key in ("train_step_ms", "train_samples_per_s", "inference_ms", "inference_samples_per_s"):
        assert report[key] > 0


def test_bench_text(tiny):
    result = assert_ok(invoke("bench", tiny, "--steps", 2))
    assert "train step" in result.stdout and "inference" in result.stdout


def test_gradcheck_passes(tiny):
    result = assert_ok(invoke("gradcheck", tiny))
    assert "passed" in result.stdout
    assert "dense_1.weight" in result.stdout and "FAIL" not in result.stdout


def test_gradcheck_checks_each_entry_once_when_samples_exceed_them(tiny):
    """--samples 1000000 drew a million random entries of a 33-parameter model (over 60 s)."""
    result = assert_ok(invoke("gradcheck", tiny, "--samples", 1_000_000))
    assert "every entry is checked once" in result.stdout and "passed" in result.stdout


def test_gradcheck_refuses_a_batch_its_own_float64_graph_cannot_hold(tiny, monkeypatch):
    """The memory check must count what gradcheck runs (loss and gradients in float64, its
    random batch and labels), not the spec's training step."""
    import nnrun
    from nnrun.runtime.gradcheck import working_set_bytes
    from nnrun.runtime.memory import estimate_bytes

    batch = 1_000_000
    needed = working_set_bytes(nnrun.compile(tiny, overrides=["dtype=float64"]), batch)
    assert needed > 1.5 * estimate_bytes(nnrun.compile(tiny), batch)  # float32's
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", str(needed - 1))
    line = assert_one_line_error(invoke("gradcheck", tiny, "--batch-size", batch), "gradcheck")
    assert "batch size 1000000" in line and "NNRUN_MEMORY_LIMIT" in line


def test_gradcheck_memory_estimate_counts_what_it_holds(tmp_path):
    """It counted a third of what gradcheck used (the probe's copies of every gradient):
    a model the memory check let through then ran out of memory."""
    import tracemalloc

    import nnrun
    from nnrun.runtime.gradcheck import gradcheck, working_set_bytes

    spec = write(tmp_path / "wide.yaml", """\
        model:
          input_shape: [2]
          layers:
            - {type: dense, units: 600, activation: tanh}
            - {type: dense, units: 600, activation: tanh}
            - {type: dense, units: 1}
        loss: binary_cross_entropy
        """)
    model = nnrun.compile(spec, overrides=["dtype=float64"])
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    gradcheck(model, batch=4, samples=2)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert abs(peak - start - working_set_bytes(model, 4)) < 0.2 * (peak - start)


def test_gradcheck_names_training_mode_layers_only_where_there_are_some(tiny, tmp_path):
    assert "inference mode" not in assert_ok(invoke("gradcheck", tiny)).stdout
    spec = write(tmp_path / "dropout.yaml", """\
        model:
          input_shape: [4]
          layers:
            - {type: dense, units: 6, activation: tanh}
            - {type: batchnorm}
            - {type: dropout, rate: 0.5}
            - {type: dropout, rate: 0.0}
            - {type: dense, units: 3}
        """)
    result = assert_ok(invoke("gradcheck", spec))
    assert ("batchnorm_1, dropout_1 behave differently in training: checked in inference mode"
            in result.stdout)


def test_gradcheck_passes_the_vanishing_gradients_spec():
    """Its first layers' gradients are about 1e-5: at step 1e-6 the loss's rounding outweighs
    them, and gradcheck failed a correct gradient."""
    result = assert_ok(invoke("gradcheck", SPECS / "vanishing-gradients.yaml"))
    assert "passed" in result.stdout and "FAIL" not in result.stdout
    assert "agree only at a larger step" in result.stdout


def test_gradcheck_small_cnn(tmp_path):
    spec = write(tmp_path / "cnn.yaml", """\
        model:
          input_shape: [2, 6, 6]
          layers:
            - {type: conv2d, filters: 3, kernel_size: 3, padding: same, activation: tanh}
            - {type: avgpool2d, pool_size: 2}
            - {type: flatten}
            - {type: dense, units: 4}
        """)
    result = assert_ok(invoke("gradcheck", spec, "--batch-size", 2, "--samples", 4))
    assert "conv2d_1.weight" in result.stdout and "passed" in result.stdout


def test_data_list():
    result = assert_ok(invoke("data", "list"))
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["name", "sample"]
    names = {line.split()[0] for line in lines[1:]}
    assert {"digits", "mnist", "fashion_mnist", "mnist1d", "xor", "spirals", "blobs", "npz",
            "csv"} <= names


def test_version_and_help():
    assert "nnrun" in assert_ok(invoke("--version")).stdout
    text = assert_ok(invoke("--help")).stdout
    for command in ("validate", "summary", "graph", "train", "eval", "predict", "bench",
                    "gradcheck", "schema", "data"):
        assert command in text


def test_unknown_command_is_usage_error():
    assert_usage_error(invoke("trian"), "trian")


def test_validate_model_without_parameters_and_clip_grad_norm(tmp_path):
    spec = write(tmp_path / "noparams.yaml", """\
        model:
          input_shape: [3]
          layers: [{type: tanh}]
        optimizer: {type: sgd, clip_grad_norm: 1.0}
        """)
    result = invoke("validate", spec)
    assert "internal error" not in result.output
    assert result.exit_code in (0, 1), result.output


def test_validate_survives_several_problems_in_one_section(tmp_path):
    # Found by the fuzz test: two problems in `data` must not make the repair crash.
    text = ("model:\n  input_shape: [1]\n  layers:\n    - {type: dense, units: 1}\n"
            "data: {path: false, noise: 0.0, n_samples: 5}\n")
    lines = validate_errors(tmp_path, text)
    # and the input_shape that digits, the default dataset, does not have
    assert [line.split(": error: ")[1].split(":")[0] for line in lines] == [
        "model.input_shape", "data", "data", "data"], lines


def test_validate_says_a_csv_has_no_label_column_instead_of_asking_for_input_shape(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,target\n1,2,0\n")
    spec = write(tmp_path / "s.yaml", "data: {dataset: csv, path: d.csv}\nmodel:\n"
                                      "  layers: [{type: dense, units: 2}]\n")
    line = assert_one_line_error(invoke("validate", spec), spec)
    assert line == (f"{spec}:1:28: error: data.path: {tmp_path / 'd.csv'}: no `label` column in "
                    "the header row (a, b, target); name the targets' column `label`")


def test_negative_class_labels_in_a_csv_are_called_so(tmp_path):
    (tmp_path / "d.csv").write_text("a,label\n1,-1\n2,0\n3,1\n4,0\n")
    spec = write(tmp_path / "s.yaml", "data: {dataset: csv, path: d.csv, validation_split: 0}\n"
                                      "model:\n  layers: [{type: dense, units: 2}]\n")
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run"), "d.csv")
    assert "the labels hold -1, below 0; number the classes from 0" in line


def test_import_nnrun_loads_no_third_party_module_so_the_command_starts_at_once():
    import subprocess
    import sys

    code = ("import sys, nnrun; print([m for m in ('numpy', 'pydantic', 'yaml', 'click') "
            "if m in sys.modules])")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"


class _CommandLineLoading(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Stands for nnrun.cli while it loads: `during` runs in the middle of the import."""

    def __init__(self, during):
        self.during = during

    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_loader(name, self) if name == "nnrun.cli" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        self.during()
        module.main = lambda: pytest.fail("the command ran after a signal")


@pytest.fixture
def loading_command_line(monkeypatch):
    """entry.main() with nnrun.cli imported afresh through `_CommandLineLoading(during)`; the
    signal handlers as they were afterwards."""
    import signal
    import sys

    import nnrun
    from nnrun import entry

    def run(during):
        monkeypatch.delitem(sys.modules, "nnrun.cli")
        monkeypatch.delattr(nnrun, "cli", raising=False)
        monkeypatch.setattr(sys, "meta_path", [_CommandLineLoading(during), *sys.meta_path])
        with pytest.raises(SystemExit) as stopped:
            entry.main()
        return stopped.value.code

    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    yield run
    for number, handler in before.items():
        signal.signal(number, handler)


@pytest.mark.parametrize("name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_while_the_command_line_loads_is_one_line(loading_command_line, capsys, name,
                                                            code):
    """Ctrl-C, or a scheduler's SIGTERM, in the imports (seconds on a loaded machine): noted
    until they end (raised inside one, pydantic would wrap it in its own error), then one line
    and 128 + the signal, not a traceback or a silent death by the signal."""
    import os
    import signal

    assert loading_command_line(lambda: os.kill(os.getpid(), signal.Signals[name])) == code
    assert capsys.readouterr().err == (f"interrupted: stopped by {name} before the command "
                                       "began; nothing was written\n")


def test_a_second_signal_while_the_command_line_loads_stops_at_once(loading_command_line,
                                                                    capsys):
    import os
    import signal

    def twice():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        pytest.fail("the second signal did not stop the import")

    assert loading_command_line(twice) == 143
    assert "stopped by SIGTERM before the command began" in capsys.readouterr().err


def _sigterm_in(monkeypatch, owner, name: str, *argv) -> int:
    """The exit code of `nnrun *argv` through entry.main(), with owner.name sending SIGTERM to
    the process when called; the SIGTERM handler as it was afterwards."""
    import os
    import signal

    monkeypatch.setattr(owner, name, lambda *args, **kwargs: os.kill(os.getpid(),
                                                                     signal.SIGTERM))
    return _exit_code_of(monkeypatch, *argv)


def _exit_code_of(monkeypatch, *argv) -> int:
    """The exit code of `nnrun *argv` through entry.main(); the signal handlers as they were
    afterwards."""
    import signal
    import sys

    from nnrun import entry

    monkeypatch.setattr(sys, "argv", ["nnrun", *map(str, argv)])
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as stopped:
            entry.main()
        assert all(signal.getsignal(number) == signal.SIG_IGN for number in before)
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
    return stopped.value.code


def test_a_signal_inside_numpys_import_is_still_one_line():
    """The chaos audit: a SIGTERM that landed while a command imported NumPy (lazily) left it
    half loaded; the command said its line, then the exit's last step imported NumPy again
    (for the MPI launcher's size) and died with a traceback and exit 1."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import nnrun.cli\n"
        "from nnrun import entry\n"
        "def command():\n"
        "    for name in [m for m in sys.modules if m.split('.')[0] == 'numpy']:\n"
        "        del sys.modules[name]\n"
        "    sys.modules['numpy'] = None  # importing it again fails, as after a half import\n"
        "    print('interrupted: stopped by SIGTERM', file=sys.stderr)\n"
        "    sys.exit(143)\n"
        "nnrun.cli.main = command\n"
        "entry.main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stderr) == (143, "interrupted: stopped by SIGTERM\n")


def test_signals_stay_answered_after_the_command_under_an_mpi_launcher(tiny, monkeypatch):
    """Ignored after the command (a signal in the exit would kill a finished run by it), they
    must not be under mpiexec: a rank in MPI_Finalize, waiting for another, stops on them."""
    import signal
    import sys

    from nnrun import entry
    from nnrun.runtime.interrupts import raise_on_signal

    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setattr(sys, "argv", ["nnrun", "validate", str(tiny)])
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit):
            entry.main()
        assert signal.getsignal(signal.SIGTERM) is raise_on_signal
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


def test_sigterm_in_a_command_before_training_is_one_line(tmp_path, monkeypatch, capsys):
    """After the imports and outside training's own handling (here: while validate reads its
    spec) SIGTERM stops the command with one line and 143."""
    from nnrun.compiler import frontend

    spec = write(tmp_path / "s.yaml", "data: xor\nmodel: {layers: [{type: dense, units: 1}]}\n")
    assert _sigterm_in(monkeypatch, frontend, "load_spec", "validate", spec) == 143
    assert capsys.readouterr().err == "interrupted: stopped by SIGTERM\n"


def _signal_that(behaviour: str, real, number):
    """A stand-in for `real` that sends the signal inside a library that swallows the exception,
    or wraps it in its own (pydantic-core building a validator: SchemaError), then goes on.
    It catches whatever the signal raises, as pydantic does: Ctrl-C's KeyboardInterrupt too."""
    import os

    def called(*args, **kwargs):
        try:
            os.kill(os.getpid(), number)
        except BaseException as interrupt:  # noqa: BLE001 - what the library does
            if behaviour == "wrapped":
                raise RuntimeError(f"Error building validator: {interrupt!r}") from None
        return real(*args, **kwargs)

    return called


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("behaviour", ["swallowed", "wrapped"])
@pytest.mark.parametrize("command", ["train", "validate"])
def test_a_signal_that_a_library_swallows_or_wraps_still_stops_the_command(tmp_path, monkeypatch,
                                                                          capsys, behaviour,
                                                                          command, name):
    """Sent while train started, it was lost (the run trained to the end, exit 0) or came out
    wrapped in pydantic's SchemaError (an internal error, exit 70): one line and 128 + the
    signal's number now, and no training. Ctrl-C too: it raised a KeyboardInterrupt that was
    not noted, and a chaos audit saw it wrapped (exit 70) and swallowed (exit 0)."""
    import signal

    from nnrun.compiler.schema import Spec

    number = signal.Signals[name]
    spec = write(tmp_path / "s.yaml", "data: {dataset: xor}\nmodel: {layers: [{type: dense, "
                 "units: 2}]}\ntrain: {epochs: 1}\n")
    monkeypatch.setattr(Spec, "model_validate",
                        _signal_that(behaviour, Spec.model_validate, number))
    options = ["--out", tmp_path / "run"] if command == "train" else []
    assert _exit_code_of(monkeypatch, command, spec, *options) == 128 + number
    monkeypatch.undo()
    assert capsys.readouterr().err.endswith(f"interrupted: stopped by {name}\n")
    assert not (tmp_path / "run" / "last.npz").exists()
    assert invoke("validate", spec).exit_code == 0  # the signal is not left for the next command


def test_sigterm_in_data_fetch_is_one_line(tmp_path, monkeypatch, capsys):
    """data fetch had no handling of its own: a SIGTERM in a download was a traceback."""
    from nnrun import data_cli

    code = _sigterm_in(monkeypatch, data_cli, "fetch_dataset", "data", "fetch", "mnist",
                       "--dest", tmp_path / "mnist")
    assert code == 143
    assert capsys.readouterr().err == "interrupted: stopped by SIGTERM\n"


def test_a_second_signal_while_the_first_is_answered_is_no_traceback(tiny, monkeypatch):
    """The error handling imported its expected errors before it reached the signal's clause:
    a second Ctrl-C there was a traceback (or click's 'Aborted!'), exit 1."""
    import signal

    import nnrun.cli as cli
    from nnrun.compiler import frontend
    from nnrun.runtime.interrupts import Interrupted

    def terminated(*args, **kwargs):
        raise Interrupted(signal.SIGTERM)

    def second_signal():
        raise KeyboardInterrupt

    monkeypatch.setattr(frontend, "load_spec", terminated)
    monkeypatch.setattr(cli, "_expected_errors", second_signal)
    result = invoke("validate", tiny)
    assert result.exit_code == 143 and result.stderr == "interrupted: stopped by SIGTERM\n"


def test_validate_refuses_top_k_accuracy_on_a_named_dataset_of_label_maps(tmp_path):
    spec = write(tmp_path / "s.yaml", "data: {dataset: shapes, n_samples: 8}\nmodel:\n  layers:\n"
                 "    - {type: conv2d, filters: 4, kernel_size: 3, padding: same}\n"
                 "train: {batch_size: 4, metrics: [mean_iou, {type: top_k_accuracy, k: 2}]}\n")
    line = assert_one_line_error(invoke("validate", spec), spec)
    assert line == (f"{spec}:5:44: error: train.metrics[1]: top_k_accuracy is for one label per "
                    "sample; for label maps use pixel_accuracy or mean_iou")


def test_validate_warns_of_a_data_file_that_is_not_there(tmp_path):
    """With input_shape given, validate said ok, and train then named the dataset's type as
    the file at fault."""
    spec = write(tmp_path / "m.yaml", "data: {dataset: npz, path: nowhere/missing.npz}\n"
                 "model: {input_shape: [4], layers: [{type: dense, units: 3}]}\n")
    result = invoke("validate", spec)
    assert result.exit_code == 0
    assert "warning: data.path: " in result.output and "missing.npz: no such file" in result.output
    assert invoke("validate", "--strict", spec).exit_code == 1


def test_control_characters_in_a_path_are_escaped_not_printed(tmp_path):
    """The hostile-input audit: a data.path holding a line break and ESC ] 0 ; (which sets a
    terminal's title) came out raw: two lines, and the escape sequence ran."""
    spec = tmp_path / "ctl.yaml"
    spec.write_text('data: {dataset: npz, path: "x\\ny.npz\\x1b]0;TITLE\\x07"}\n'
                    "model: {input_shape: [2], layers: [{type: dense, units: 1}]}\nloss: mse\n")
    for arguments in (["train", str(spec), "--out", str(tmp_path / "run")],
                      ["validate", str(spec)]):
        result = subprocess.run([sys.executable, "-m", "nnrun", *arguments],
                                capture_output=True, text=True, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "\x1b" not in result.stderr and "\x07" not in result.stderr
        assert "x\\ny.npz\\x1b]0;TITLE\\x07" in lines[0]


def test_characters_that_print_are_not_escaped():
    """The session's review: the escaping of control characters also wrote a no-break space
    and an ideographic space in a file name as escapes, so the name no longer named the file."""
    from nnrun.notices import one_line

    assert one_line("my\u3000spec x\xa0y caf\u00e9.yaml") == "my\u3000spec x\xa0y caf\u00e9.yaml"
    assert one_line("a\nb\x1b]0;T\x07\u202e") == "a\\nb\\x1b]0;T\\x07\\u202e"


def test_a_line_that_echoes_a_huge_value_keeps_its_ends_and_leaves_out_the_middle(tmp_path):
    """A 15 MB name came back as one 15 MB error line (the hostile-input audit)."""
    (line,) = validate_errors(tmp_path, "name: " + "a" * 1_000_000 + "\nmodel: {input_shape: "
                              "[4], layers: [{type: dense, units: 2}]}\n")
    assert len(line) < 2100 and "characters left out] ..." in line
    assert line.startswith("1:7: error: spec: the spec's name names its run directory")


@pytest.mark.parametrize("module", ["data_cli", "diff_cli", "export_cli", "plot_cli", "preview",
                                    "trace_cli", "check_backends_cli"])
def test_a_command_s_module_imports_first(module):
    """`from nnrun.data_cli import data` before nnrun.cli was imported was a cycle: cli
    attached the commands' modules at its import, and they import cli."""
    code = (f"import nnrun.{module}\nimport click\nfrom nnrun.cli import main\n"
            "context = click.Context(main)\n"
            "print(sorted(n for n in main.list_commands(context) if main.get_command(context, n)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in ("'check-backends'", "'data'", "'diff'",
                                                  "'export'", "'plot'", "'trace'", "'train'"))


@pytest.mark.parametrize("args, expected", [
    (["train", "spec.yaml", "--epoch", "3"],
     "Error: No such option '--epoch'. Did you mean '--epochs'? (see 'nnrun train --help')"),
    (["trian"], "Error: No such command 'trian'. * (see 'nnrun --help')"),
    (["train"], "Error: Missing argument 'SPEC'. (see 'nnrun train --help')"),
    (["data", "fetch", "--bogus"], "Error: No such option '--bogus'. (see 'nnrun data fetch "
                                   "--help')"),
    # the review: these pointed at `nnrun --help`, which does not describe them
    (["train", "spec.yaml", "--set=lr"], "Error: --set takes PATH=VALUE, got 'lr'; e.g. --set "
                                         "optimizer.lr=0.01 (see 'nnrun train --help')"),
    # an empty path exited 1 as a spec error (`--set:1:1: cannot read the path ''`)
    (["validate", "spec.yaml", "--set", "=3"], "Error: --set takes PATH=VALUE, got '=3' (no path "
                                               "before '='); e.g. --set optimizer.lr=0.01 (see "
                                               "'nnrun validate --help')"),
    (["train", "spec.yaml", "--epochs"], "Error: Option '--epochs' requires an argument. (see "
                                         "'nnrun train --help')"),
    (["data", "preview", "--samples"], "Error: Option '--samples' requires an argument. (see "
                                       "'nnrun data preview --help')"),
])
def test_a_usage_error_is_one_line_naming_the_help_to_turn_to(tmp_path, monkeypatch, args,
                                                              expected):
    """Bad input is one line, as the guide asks of every error: click printed its usage block
    and a hint above the error (four lines)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text("model:\n  input_shape: [2]\n  layers: [{type: dense, "
                                        "units: 2}]\n")
    from click.testing import CliRunner

    from nnrun.cli import main

    result = CliRunner().invoke(main, args, prog_name="nnrun")
    assert result.exit_code == 2
    assert fnmatch.fnmatchcase(result.stderr, expected + "\n") and result.stdout == ""
    assert result.stderr.count("\n") == 1


def test_a_group_without_its_subcommand_still_shows_its_help():
    from click.testing import CliRunner

    from nnrun.cli import main

    result = CliRunner().invoke(main, ["data"], prog_name="nnrun")
    assert "Commands:" in result.output and "fetch" in result.output


# --- the fuzzer of the message paths (2026-12-05) -------------------------------------------


def test_odd_paths_and_override_values_are_one_line_errors(tmp_path):
    """`~nouser/x.npz` was Python's RuntimeError (exit 70); a data.path part over 255 bytes
    ended validate for every spec at once; a 300-byte value after `--set PATH` was a raw
    traceback (ENAMETOOLONG); a --set index of 4,301 digits an internal error."""
    base = "model: {input_shape: [4], layers: [{type: dense, units: 2}]}\n"
    tilde = write(tmp_path / "t.yaml", "data: {dataset: npz, path: ~nouser/x.npz}\n" + base)
    result = invoke("validate", tilde)
    assert result.exit_code == 0 and "~nouser/x.npz: no such file" in result.stderr
    long = write(tmp_path / "l.yaml", f"data: {{dataset: npz, path: {'a' * 300}.npz}}\n" + base)
    result = invoke("validate", long, tiny_spec(tmp_path))
    assert result.exit_code == 1 and "no file system takes a path this long" in result.stderr
    assert "1 of 2 specs valid" in result.output
    # a path too long in all, of short names, is told its length (the hostile-input audit: it
    # was "a name of 5 bytes")
    deep = write(tmp_path / "d.yaml", f"data: {{dataset: npz, path: {'a/' * 2100}x.npz}}\n" + base)
    assert ("no file system takes a path this long (4,205 bytes in all; at most 255 a name, "
            "4,096 the whole path)") in invoke("validate", deep).stderr
    result = invoke("validate", tilde, "--set", "optimizer.lr", "x" * 300)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--set takes PATH=VALUE as one argument" in result.stderr
    index = "9" * 4301
    line = assert_one_line_error(invoke("validate", tilde, "--set",
                                        f"model.layers[{index}].units=1"), "--set")
    assert "a list index of thousands of digits is past any list's length" in line


def tiny_spec(tmp_path):
    return write(tmp_path / "tiny.yaml", TINY)


def test_a_line_of_control_characters_stays_within_the_longest_line(tmp_path):
    """The line was cut to 2,000 characters before its control characters were escaped
    (to 4 characters each): 6,817 characters."""
    from nnrun.notices import LONGEST_LINE, one_line

    assert len(one_line("\x01" * 3000)) <= LONGEST_LINE + 60


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_an_internal_errors_traceback_before_or_after_the_command(
        tmp_path, monkeypatch, where):
    """The DESIGN.md audit: `nnrun summary SPEC --debug`, where a command's options go, was a
    usage error (exit 2); only `nnrun --debug summary SPEC` showed the traceback."""
    import nnrun.compiler.frontend as frontend

    def broken(*args, **kwargs):
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(frontend, "compile_checked", broken)
    spec = Path(__file__).resolve().parents[2] / "specs" / "xor-mlp.yaml"
    args = ["--debug", "summary", spec] if where == "before" else ["summary", spec, "--debug"]
    result = invoke(*args)
    assert result.exit_code == 70, result.output
    assert "Traceback (most recent call last)" in result.output
    assert "ZeroDivisionError: injected" in result.output
    assert invoke("summary", spec, "--", "--debug").exit_code == 2  # `--` ends the options
    from nnrun.cli import _debug_first, main

    as_value = ["train", "s.yaml", "--out", "--debug", "--epochs", "1"]  # a directory's name
    assert _debug_first(main, as_value) == as_value
    assert _debug_first(main, ["data", "preview", "s.yaml", "--debug"])[0] == "--debug"
