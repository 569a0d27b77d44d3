"""`nnrun check-backends`: op by op against NumPy, and finding a deliberately broken kernel.

Without a GPU the candidate is NumPy itself, or NumPy with one kernel broken on purpose; the
same checks run against CuPy with `pytest -m gpu` (tests/backends/test_cupy_backend.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import nnrun
from nnrun.backends.numpy_backend import NumpyBackend
from nnrun.cli import main
from nnrun.runtime import check_backends as module
from nnrun.runtime.check_backends import check_backends, relative_difference
from stepping import RoundsOtherwise

SPEC = """
model:
  input_shape: [1, 12, 12]
  layers:
    - {type: conv2d, filters: 4, kernel_size: 3, padding: 1, activation: relu}
    - {type: batchnorm}
    - {type: maxpool2d, pool_size: 2}
    - {type: conv2d, filters: 6, kernel_size: 3, stride: 2, padding: 1, padding_mode: reflect}
    - {type: dropout, rate: 0.25}
    - {type: flatten}
    - {type: dense, units: 16, activation: tanh}
    - {type: dense, units: 5}
loss: cross_entropy
optimizer: {type: adam, lr: 0.01, clip_grad_norm: 1.0}
train: {batch_size: 8}
"""

ROOT = Path(__file__).resolve().parents[2]
DETERMINISTIC = SPEC.replace("    - {type: dropout, rate: 0.25}\n", "")


class BrokenCol2im(NumpyBackend):
    """col2im (the convolution's input gradient) off by a little: a bug a GPU kernel could have."""

    name = "broken"

    def col2im_into(self, cols, kernel, stride, dilation, x, spare=None):  # col2im calls it too
        super().col2im_into(cols, kernel, stride, dilation, x, spare)
        x *= 1.01
        return x


def source(text=SPEC):
    return nnrun.load_spec_text(text)


def test_numpy_agrees_with_itself_op_by_op_and_whole():
    report = check_backends(source(DETERMINISTIC), NumpyBackend(), batch_size=4)
    assert report.agree
    assert report.executor == "planned"
    assert {g.name for g in report.graphs} == {"step graph", "optimized step"}
    for graph in report.graphs:
        assert graph.ops
        assert graph.largest().difference <= 1e-6
    # the whole step compares the loss and every updated parameter and Adam slot
    assert "loss" in report.whole_step and "conv2d_1.weight" in report.whole_step
    assert any(name.endswith("exp_avg") for name in report.whole_step)


def test_dropout_masks_are_compared_like_any_output():
    """The masks are a hash of (index, key, stream) that every backend computes alike."""
    report = check_backends(source(), NumpyBackend(), batch_size=4)
    assert report.agree
    masks = [d for d in report.graphs[0].ops if d.op == "dropout_mask"]
    assert len(masks) == 1 and masks[0].difference == 0.0


def test_a_broken_kernel_is_named_with_its_layer():
    report = check_backends(source(DETERMINISTIC), BrokenCol2im(), batch_size=4)
    assert not report.agree
    graph, first = report.first_failure
    assert graph.name == "step graph"
    # Only the second convolution needs its input gradient; the first one reads x.
    assert first.layer == "conv2d_2" and first.where == "model.layers[3]"
    assert "grad" in first.op
    assert first.difference == pytest.approx(0.01, rel=1e-3)
    # every earlier op agreed: the walk feeds each op the reference's inputs
    assert all(d.difference <= 1e-6 for d in graph.ops if d.position < first.position)
    # The whole step runs on the broken backend's own executor, the planned one as on any
    # backend, whose convolution gradient does not call col2im: only the op-by-op walk of
    # the plain step graph finds this kernel.
    assert report.executor == "planned"


def test_relative_difference_edge_cases():
    a = np.array([1.0, -2.0, 0.0], np.float32)
    assert relative_difference(a, a.copy()) == 0.0
    assert relative_difference(a, a + np.float32(0.02)) == pytest.approx(0.01, rel=1e-5)
    assert relative_difference(a, a[:2]) == float("inf")
    assert relative_difference(np.array([1, 2]), np.array([1, 3])) == float("inf")
    assert relative_difference(a, np.array([1.0, np.nan, 0.0])) == float("inf")
    assert relative_difference(np.zeros(3), np.zeros(3)) == 0.0


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(DETERMINISTIC)
    return path


def test_cli_reports_agreement(spec_file):
    result = CliRunner().invoke(main, ["check-backends", str(spec_file), "--backend", "numpy",
                                       "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "op by op" in result.stdout and "ok: numpy agrees with numpy" in result.stdout


def test_cli_names_the_broken_op_and_exits_1(spec_file, monkeypatch):
    monkeypatch.setattr(module, "get_backend", lambda name: BrokenCol2im())
    result = CliRunner().invoke(main, ["check-backends", str(spec_file), "--backend", "numpy",
                                       "--batch-size", "4"])
    assert result.exit_code == 1, result.output
    line = [l for l in result.stdout.splitlines() if l.startswith("first difference")][0]
    assert "conv2d_2" in line and "model.layers[3]" in line

    as_json = CliRunner().invoke(main, ["check-backends", str(spec_file), "--backend", "numpy",
                                        "--batch-size", "4", "--format", "json"])
    data = json.loads(as_json.stdout)
    assert data["agree"] is False and data["first_difference"]["layer"] == "conv2d_2"


def test_cli_without_cupy_is_one_line_naming_the_extras(spec_file):
    try:
        import cupy  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("CuPy is installed; this checks the message without it")
    result = CliRunner().invoke(main, ["check-backends", str(spec_file)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "nnrun[cuda13]" in lines[0] and "nnrun[cuda12]" in lines[0]


class NanCol2im(NumpyBackend):
    """A kernel that writes nan: the failure a GPU kernel reading uninitialised memory shows."""

    name = "nan"

    def col2im_into(self, cols, kernel, stride, dilation, x, spare=None):
        super().col2im_into(cols, kernel, stride, dilation, x, spare)
        x[...] = np.nan
        return x


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_cli_json_stays_json_when_a_kernel_writes_nan(spec_file, monkeypatch):
    monkeypatch.setattr(module, "get_backend", lambda name: NanCol2im())
    result = CliRunner().invoke(main, ["check-backends", str(spec_file), "--backend", "numpy",
                                       "--batch-size", "4", "--format", "json"])
    assert result.exit_code == 1, result.output
    data = _strict_json(result.stdout)
    assert data["agree"] is False and data["first_difference"]["difference"] is None
    assert data["first_difference"]["op"] == "conv2d_grad_input"


def test_non_finite_entries_must_be_the_same_non_finite_value():
    inf = float("inf")
    assert relative_difference(np.array([1.0, inf]), np.array([1.0, inf])) == 0.0
    assert relative_difference(np.array([1.0, np.nan]), np.array([1.0, np.nan])) == 0.0
    assert relative_difference(np.array([1.0, inf]), np.array([1.0, -inf])) == inf
    assert relative_difference(np.array([1.0, inf]), np.array([1.0, np.nan])) == inf


@pytest.mark.parametrize("command", [["check-backends", "--backend", "numpy"], ["gradcheck"]])
@pytest.mark.parametrize("tolerance", ["-1", "nan", "inf"])
def test_cli_refuses_a_tolerance_that_accepts_everything_or_nothing(spec_file, tolerance,
                                                                   command):
    result = CliRunner().invoke(main, [command[0], str(spec_file), *command[1:],
                                       "--tolerance", tolerance])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--tolerance" in result.stderr and "finite number >= 0" in result.stderr


class OtherRounding(RoundsOtherwise, NumpyBackend):
    name = "other-rounding"


def test_values_of_rounding_noise_are_not_compared():
    """spirals-mlp's biases feed batchnorms: their gradient is rounding noise, which Adam turns
    into a full step of either sign. A backend that only rounds otherwise still agrees, with
    those entries listed apart; a 1% error in a kernel is still found."""
    spirals = nnrun.load_spec(str(ROOT / "specs/spirals-mlp.yaml"))
    report = check_backends(spirals, OtherRounding(), batch_size=32)
    assert report.agree, report.whole_step_failures or report.first_failure
    assert {"dense_1.bias", "dense_2.bias"} <= set(report.rounding_sensitive)
    assert "dense_1.weight" not in report.rounding_sensitive
    assert report.whole_step["dense_3.weight"] < 1e-5  # ordinary weights are compared, and agree closely
    broken = check_backends(source(DETERMINISTIC), BrokenCol2im(), batch_size=4)
    assert not broken.agree


def test_a_difference_against_zeros_is_a_python_float_that_json_writes():
    """The command fuzz: `check-backends --format json` was an internal error ("float32 is
    not JSON serializable") where an output's reference was all zeros: its scale, float32's
    tiny, made the difference a NumPy float32."""
    zeros = np.zeros(3, np.float32)
    for have in (zeros, np.float32([0, 1e-30, 0])):
        difference = relative_difference(zeros, have)
        assert type(difference) is float
        json.dumps(difference)
