"""Every file in specs/ validates and trains (DESIGN.md section 2: "every file here must validate
and train"), plus the numbers that some specs promise in their comments.

Training is a smoke test: one epoch of at most MAX_STEPS batches on at most TRAIN_LIMIT samples,
with the validation and test splits cut to EVAL_LIMIT samples, so the whole file runs in well
under a minute on two cores. What the specs reach when trained in full is recorded in their
comments, not checked here.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import yaml

import nnrun
from nnrun.compiler.datasets import DATASETS
from nnrun.compiler.frontend import check, load_spec
from nnrun.runtime import train as train_module
from nnrun.runtime.data.locations import has_idx_files, search_dirs

ROOT = Path(__file__).resolve().parents[2]
SPEC_DIR = ROOT / "specs"
SPECS = sorted(SPEC_DIR.glob("*.yaml"))
# In this project's CI the MNIST files sit beside the checkout (DESIGN.md section 8).
SHARED_DATA = ROOT.parent / "shared" / "data"

MAX_STEPS = 3
TRAIN_LIMIT = 512
EVAL_LIMIT = 200


def spec_id(path: Path) -> str:
    return path.stem


@pytest.fixture(autouse=True)
def shared_data_dir(monkeypatch):
    if "NNRUN_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
        monkeypatch.setenv("NNRUN_DATA_DIR", str(SHARED_DATA))


def test_specs_directory_is_not_empty():
    assert SPECS, f"no specs found in {SPEC_DIR}"


@pytest.mark.parametrize("path", SPECS, ids=spec_id)
def test_spec_validates(path):
    checked = check(load_spec(path))
    errors = [d for d in checked.diagnostics if d.severity == "error"]
    assert not errors, "\n".join(str(d) for d in errors)


# --- training -------------------------------------------------------------------------------


def missing_files_reason(source) -> str | None:
    """Why the spec's dataset cannot be loaded on this machine, or None when it can."""
    data = source.spec.data
    if data is None or not DATASETS[data.dataset].needs_files:
        return None
    if data.dataset in ("npz", "csv"):
        file = source.directory / data.path
        return None if file.is_file() else f"{data.dataset} file {file} is missing"
    places = search_dirs(data.dataset, data.path, source.directory)
    if any(has_idx_files(place) for place in places):
        return None
    where = " or ".join(str(place) for place in places)
    return f"{data.dataset} IDX files are not in {where} (`nnrun data fetch {data.dataset}`)"


def cut_evaluation_splits(monkeypatch) -> None:
    """Validation and test splits of EVAL_LIMIT samples: evaluating all 10,000 MNIST test
    images would dominate a smoke test's time."""
    load_dataset = train_module.load_dataset

    def small(*args, **kwargs):
        dataset = load_dataset(*args, **kwargs)
        cut = {name: getattr(dataset, name).take(slice(0, EVAL_LIMIT))
               for name in ("val", "test") if getattr(dataset, name) is not None}
        return dataclasses.replace(dataset, **cut)

    monkeypatch.setattr(train_module, "load_dataset", small)


@pytest.mark.parametrize("path", SPECS, ids=spec_id)
def test_spec_trains_one_epoch(path, tmp_path, monkeypatch):
    source = load_spec(path)
    reason = missing_files_reason(source)
    if reason:
        pytest.skip(reason)
    overrides = ["train.epochs=1"]
    if source.spec.data is not None:
        overrides.append(f"data.limit={min(source.spec.data.limit or TRAIN_LIMIT, TRAIN_LIMIT)}")
    cut_evaluation_splits(monkeypatch)

    result = nnrun.train(path, out_dir=tmp_path, overrides=overrides, quiet=True,
                         max_steps=MAX_STEPS)

    assert result["epochs_run"] == 1
    final = result["final"]
    assert final["train_loss"] is not None and final["train_loss"] == final["train_loss"]
    assert (tmp_path / "summary.json").is_file()
    assert (tmp_path / "last.npz").is_file()


# --- numbers the specs promise --------------------------------------------------------------


def summary_of(name: str):
    return check(load_spec(SPEC_DIR / name)).summary


@pytest.mark.parametrize("name", ["lenet5.yaml", "lenet5-shuffled.yaml"])
def test_lenet5_parameters_and_flops(name):
    summary = summary_of(name)
    assert summary.trainable_params == 61_706
    assert summary.non_trainable_params == 0
    assert summary.flops_per_sample == 833_040
    assert summary.output_shape == [10]


@pytest.mark.parametrize("name, params", [
    # LinearBase, MLPBase (hidden 100) and ConvBase of the mnist1d repository
    ("mnist1d-logreg.yaml", 410),
    ("mnist1d-mlp.yaml", 15_210),
    ("mnist1d-cnn.yaml", 5_210),
    ("mnist-mlp.yaml", 235_146),
    ("course-2-2-1-sigmoid.yaml", 9),
    ("xor-perceptron.yaml", 3),
])
def test_parameter_counts(name, params):
    assert summary_of(name).trainable_params == params


@pytest.mark.parametrize("shuffled, ordered", [
    ("mnist-mlp-shuffled.yaml", "mnist-mlp.yaml"),
    ("lenet5-shuffled.yaml", "lenet5.yaml"),
])
def test_shuffled_variant_differs_only_in_the_permutation(shuffled, ordered):
    """The pair is an experiment: pixel order is the only thing that may differ."""
    variant, base = (yaml.safe_load((SPEC_DIR / name).read_text()) for name in (shuffled, ordered))
    assert variant["data"].pop("permute_features") is True
    assert base["data"].pop("permute_features", False) is False
    variant.pop("name")
    base.pop("name")
    assert variant == base
