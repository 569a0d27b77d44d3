"""Training on the user's own npz files: the input shape, predict inputs, missing splits."""

import numpy as np

from .test_cli import assert_one_line_error, invoke, write

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


def test_train_names_the_input_shape_that_fits_the_file(tmp_path):
    spec = _files(tmp_path)
    line = assert_one_line_error(invoke("train", spec, "--out", tmp_path / "run", "--quiet"), spec)
    assert "input_shape: [4]" in line
    assert not (tmp_path / "run").exists()


def test_predict_refuses_a_bare_npy_file_and_eval_names_the_missing_split(tmp_path):
    spec = _files(tmp_path, "input_shape: [4]")
    assert invoke("train", spec, "--out", tmp_path / "run", "--quiet").exit_code == 0
    np.save(tmp_path / "x.npy", np.zeros((2, 4)))
    result = invoke("predict", tmp_path / "run", tmp_path / "x.npy", "--out", tmp_path / "p.npy")
    assert "numpy.savez" in assert_one_line_error(result, "x.npy")
    assert not (tmp_path / "p.npy").exists()
    line = assert_one_line_error(invoke("eval", tmp_path / "run", "--split", "test"), "d.npz")
    assert "x_test" in line
