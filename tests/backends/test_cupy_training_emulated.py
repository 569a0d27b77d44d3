"""Whole training runs (`nnrun.train(..., backend="cupy")`: data on the device, the planned
step, metrics accumulated on the device, checkpoints, evaluation) under the stand-in `cupy`
of tests/kernel_emulation.py, against the same runs on NumPy. The GPU run confirms the same on
CuPy; this catches, without a GPU, what the CuPy path calls that real CuPy refuses and the
stand-in models (CuPy's add.at on int64 stopped every run with pixel or label-map metrics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kernel_emulation import install_fake_cupy, needs_gcc

import nnrun

pytestmark = needs_gcc
SPECS = Path(__file__).resolve().parents[2] / "specs"

# One spec per way the metrics and data take: class labels with early stopping, label maps
# (pixel accuracy, mean IoU, ignore_index), real-valued targets from a csv, augmentation,
# pruning, 1-D convolutions with top-k accuracy.
RUNS = {
    "quickstart.yaml": ["data.limit=256"],
    "fcn-segmentation.yaml": ["data.limit=64"],
    "csv-regression.yaml": [],
    "digits-augmented.yaml": ["data.limit=256"],
    "mnist-mlp-pruned.yaml": ["data.limit=256", "train.pruning.start_epoch=1",
                              "train.pruning.end_epoch=1"],
    "mnist1d-cnn.yaml": ["data.limit=256", "train.metrics=[accuracy, {type: top_k_accuracy, k: 3}]"],
}


@pytest.fixture
def emulated_cupy(monkeypatch):
    _, kernels, backend_module = install_fake_cupy(monkeypatch)
    monkeypatch.setattr(kernels, "_VERDICTS", {})
    monkeypatch.setattr(kernels, "_BACKEND", {})
    # whole-step capture is not emulated: the planned, uncaptured step
    monkeypatch.setattr(backend_module.CupyBackend, "graph_capture", lambda self: None)


@pytest.mark.parametrize("spec", RUNS)
def test_a_training_run_on_the_cupy_path_gives_numpys_metrics(spec, emulated_cupy, tmp_path):
    overrides = ["train.epochs=1", *RUNS[spec]]
    on_numpy = nnrun.train(str(SPECS / spec), out_dir=tmp_path / "numpy", overrides=overrides,
                           quiet=True)
    on_cupy = nnrun.train(str(SPECS / spec), backend="cupy", out_dir=tmp_path / "cupy",
                          overrides=overrides, quiet=True)
    assert on_cupy["backend"] == "cupy" and on_cupy["step_path"] == "planned"
    numbers = {k: v for k, v in on_numpy["final"].items() if isinstance(v, float)}
    assert numbers and numbers.keys() == {k for k, v in on_cupy["final"].items()
                                          if isinstance(v, float)}
    for name, value in numbers.items():
        np.testing.assert_allclose(on_cupy["final"][name], value, rtol=1e-3, atol=1e-4,
                                   err_msg=name)
    assert (tmp_path / "cupy" / "best.npz").is_file()
