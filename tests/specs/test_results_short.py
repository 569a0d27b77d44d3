"""Short versions of docs/results.md rows 1 (MNIST MLP), 4 (MNIST-1D) and 6 (FCN-8): a fraction
of an epoch already beats chance by a wide margin. The full runs are in docs/results.md."""

from pathlib import Path

import pytest

import nnrun
from nnrun.runtime.data import DataError

SPECS = Path(__file__).resolve().parents[2] / "specs"


def _short_run(tmp_path, spec, max_steps, overrides=()):
    try:
        return nnrun.train(SPECS / spec, out_dir=tmp_path / "run", quiet=True, max_steps=max_steps,
                           overrides=["train.epochs=1", *overrides])
    except DataError as error:
        pytest.skip(f"dataset not available here: {error}")


def test_mnist_mlp_beats_chance_within_a_fraction_of_an_epoch(tmp_path):
    summary = _short_run(tmp_path, "mnist-mlp.yaml", max_steps=120)  # 15,360 of 54,000 samples
    assert summary["final"]["test_accuracy"] > 0.85


@pytest.mark.parametrize("spec, floor", [("mnist1d-mlp.yaml", 0.3), ("mnist1d-cnn.yaml", 0.3)])
def test_mnist1d_beats_chance_after_a_few_epochs_worth_of_steps(tmp_path, spec, floor):
    summary = _short_run(tmp_path, spec, max_steps=40, overrides=["train.epochs=4"])
    assert summary["final"]["test_accuracy"] > floor


def test_fcn_segmentation_beats_labelling_everything_background_within_50_steps(tmp_path):
    """docs/results.md row 6 in short. Calling every pixel background scores a mean IoU of
    about 0.2 (0.82 for the background, 0 for the three shapes)."""
    summary = _short_run(tmp_path, "fcn-segmentation.yaml", max_steps=25,
                         overrides=["train.epochs=2", "data.n_samples=1000"])
    assert summary["final"]["test_mean_iou"] > 0.3
    assert summary["final"]["test_pixel_accuracy"] > 0.85
