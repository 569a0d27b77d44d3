"""Invariance experiments: `nnrun eval RUN_DIR --shift PIXELS --permute` (runtime/invariance.py)
evaluate a run on raw inputs moved or shuffled before the run's own preprocessing."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import nnrun
from nnrun.cli import main
from nnrun.runtime.data import DataError, load_dataset
from nnrun.runtime.data.preprocessing import IDENTITY
from nnrun.runtime.data.splits import feature_permutation
from nnrun.runtime.evaluate import evaluate_run, load_run
from nnrun.runtime.invariance import InputTransform, shift_samples
from nnrun.runtime.metrics import predicted_labels

pytest.importorskip("sklearn")  # the digits dataset

SPEC = """
name: digits-cnn
seed: 3
data: {dataset: digits, validation_split: 0.1, normalize: standard}
model:
  layers:
    - {type: conv2d, filters: 4, kernel_size: 3, padding: 1, activation: relu}
    - {type: flatten}
    - {type: dense, units: 10}
optimizer: {type: adam, lr: 0.01}
train: {epochs: 2, batch_size: 64}
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("invariance") / "run"
    nnrun.train(nnrun.load_spec_text(SPEC), out_dir=out, quiet=True)
    return out


def test_shift_moves_pixels_and_fills_with_zeros():
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    np.testing.assert_array_equal(shift_samples(x, (1,))[0, 0], [[0, 1, 2], [0, 4, 5], [0, 7, 8]])
    np.testing.assert_array_equal(shift_samples(x, (-1, 1))[0, 0],
                                  [[0, 4, 5], [0, 7, 8], [0, 0, 0]])
    signal = np.arange(1, 6).reshape(1, 1, 5)
    np.testing.assert_array_equal(shift_samples(signal, (-2,))[0, 0], [3, 4, 5, 0, 0])


def test_shift_is_refused_where_it_cannot_apply():
    with pytest.raises(DataError, match="spatial axes"):
        shift_samples(np.zeros((2, 10)), (1,))
    with pytest.raises(DataError, match="every pixel out"):
        shift_samples(np.zeros((2, 1, 8, 8)), (8,))
    # the whole argument is quoted, and the axis it is too large for named
    with pytest.raises(DataError, match="--shift 0,6 moves every pixel out of a sample 6 "
                                        "pixels wide"):
        shift_samples(np.zeros((2, 1, 8, 6)), (0, 6))
    with pytest.raises(DataError, match="--shift -8,1 .* 8 pixels high"):
        shift_samples(np.zeros((2, 1, 8, 6)), (-8, 1))
    with pytest.raises(DataError, match="--shift 9 moves every position out of a sample 9 "
                                        "positions long"):
        shift_samples(np.zeros((2, 1, 9)), (9,))
    # the predict audit: a sequence [C, L] was told samples are [C, L] or [C, H, W]
    with pytest.raises(DataError, match=r"--shift 0,1: samples of shape \[2, 16\] have 1 spatial "
                                        r"axis to shift along; give one number, positions along "
                                        r"it \(--shift 1\)$"):
        shift_samples(np.zeros((3, 2, 16)), (0, 1))


def test_a_sequence_is_shifted_by_positions_not_pixels():
    """The course audit: `eval --shift 6` of a sequence said "shifted 6 pixels right"."""
    both = InputTransform(shift=(6,), permute_seed=2)
    assert both.describe(1) == "shifted 6 positions right, positions permuted (seed 2)"
    assert both.describe(2) == "shifted 6 pixels right, pixels permuted (seed 2)"
    assert InputTransform(permute_seed=True).describe(0) == "features permuted (the run's seed)"


def _raw_test_split(run_dir):
    run = load_run(run_dir)
    data = load_dataset(run.model.spec.data, spec_dir=run_dir, seed=3, preprocessing=IDENTITY)
    return run, data.test


def _accuracy(run, x, y) -> float:
    probabilities = run.predict(x)
    return float((predicted_labels(probabilities, probabilities, None) == y).mean())


def test_eval_shift_is_the_accuracy_on_shifted_raw_inputs(run_dir):
    run, test = _raw_test_split(run_dir)
    plain = evaluate_run(run_dir)
    shifted = evaluate_run(run_dir, transform=InputTransform(shift=(2,)))
    assert shifted["test_accuracy"] == pytest.approx(
        _accuracy(run, shift_samples(test.x, (2,)), test.y))
    assert shifted["test_accuracy"] < plain["test_accuracy"]
    assert shifted["transform"] == "shifted 2 pixels right"
    unmoved = evaluate_run(run_dir, transform=InputTransform(shift=(0,)))
    assert unmoved["test_accuracy"] == plain["test_accuracy"]
    assert unmoved["transform"] == "as they are (shift 0)"


def test_eval_permute_uses_the_runs_seed_or_a_new_one(run_dir):
    run, test = _raw_test_split(run_dir)
    flat = test.x.reshape(len(test.x), -1)
    # The run's seed: the permutation data.permute_features: true would draw for this run.
    cases = {True: feature_permutation(True, 3, 64), 7: np.random.default_rng(7).permutation(64)}
    for seed, permutation in cases.items():
        result = evaluate_run(run_dir, transform=InputTransform(permute_seed=seed))
        shuffled = flat[:, permutation].reshape(test.x.shape)
        assert result["test_accuracy"] == pytest.approx(_accuracy(run, shuffled, test.y))


def test_eval_cli_shift_and_permute(run_dir):
    runner = CliRunner()
    result = runner.invoke(main, ["eval", str(run_dir), "--shift", "1,-1", "--permute-seed", "5",
                                  "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["transform"] == "shifted 1 pixel down, 1 pixel left, pixels permuted (seed 5)"
    text = runner.invoke(main, ["eval", str(run_dir), "--shift", "2", "--permute"]).stdout
    assert "; inputs: shifted 2 pixels right, pixels permuted (the run's seed)" in text
    by_seed = runner.invoke(main, ["eval", str(run_dir), "--permute", "5", "--format", "json"])
    assert json.loads(by_seed.stdout)["transform"] == "pixels permuted (seed 5)"
    not_a_seed = runner.invoke(main, ["eval", "--permute", str(run_dir)])
    assert not_a_seed.exit_code == 2 and "give RUN_DIR before --permute" in not_a_seed.stderr
    # RUN_DIR given first: not told to give it (the CLI audit)
    for value in ("3.5", "seed"):
        mistyped = runner.invoke(main, ["eval", str(run_dir), "--permute", value])
        assert mistyped.exit_code == 2 and "RUN_DIR" not in mistyped.stderr
        assert "give --permute alone for the run's seed, or --permute N" in mistyped.stderr
    for words in (["--permute", "-1"], ["--permute=-1"], ["--permute", "-1.5"]):
        negative = runner.invoke(main, ["eval", str(run_dir), *words])  # was "No such option"
        assert negative.exit_code == 2, negative.output
        assert f"--permute: '{words[-1].removeprefix('--permute=')}' is not a seed (an " \
               "integer >= 0)" in negative.stderr
    bad = runner.invoke(main, ["eval", str(run_dir), "--shift", "two"])
    assert bad.exit_code == 2 and "--shift" in bad.stderr
    three = runner.invoke(main, ["eval", str(run_dir), "--shift", "1,2,3"])  # was exit 1
    assert three.exit_code == 2 and "'1,2,3' is not PIXELS or DY,DX" in three.stderr
    empty = runner.invoke(main, ["eval", str(run_dir), "--shift", ""])  # an unset variable
    assert empty.exit_code == 2 and "is empty" in empty.stderr
    too_far = runner.invoke(main, ["eval", str(run_dir), "--shift", "9"])
    assert too_far.exit_code == 1 and len(too_far.stderr.strip().splitlines()) == 1
    # two seeds for one permutation: the second one silently won
    both = runner.invoke(main, ["eval", str(run_dir), "--permute", "3", "--permute-seed", "4"])
    assert both.exit_code == 2 and "use one" in both.stderr


def test_the_invariance_script_ends_with_nnruns_own_error_line(tmp_path):
    """The toolbox audit: without its run directories, benchmarks/invariance.py ended in a
    CalledProcessError traceback, nnrun's own line captured and never shown."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "invariance.py"
    done = subprocess.run([sys.executable, str(script), "--runs", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "does not exist" in done.stderr


@pytest.mark.parametrize("targets", ["coarse label maps", "flat target maps", "label maps",
                                     "several labels"])
def test_eval_refuses_to_move_inputs_whose_targets_are_maps_as_train_does(tmp_path, targets):
    """The inference audit: label maps at a pooled output's resolution, and regression maps
    saved flat, were scored under --shift and --permute (which train's augmentation refuses
    of them): a drop that measures misalignment. Several labels a sample are no maps."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 1, 6, 6)).astype(np.float32)
    conv = "{type: conv2d, filters: 2, kernel_size: 3, padding: 1, activation: relu}"
    layers, loss = [conv, "{type: maxpool2d, pool_size: 2}",
                    "{type: conv2d, filters: 2, kernel_size: 1}"], "cross_entropy"
    if targets == "coarse label maps":
        y = (x[:, 0].reshape(60, 3, 2, 3, 2).mean((2, 4)) > 0).astype(np.int64)
    elif targets == "flat target maps":
        y, loss = (0.5 * x + 0.1).reshape(60, -1), "mse"
        layers = [conv, "{type: conv2d, filters: 1, kernel_size: 1}"]
    elif targets == "label maps":
        y = (x[:, 0] > 0).astype(np.int64)
        layers = [conv, "{type: conv2d, filters: 2, kernel_size: 1}"]
    else:
        y, loss = (x.reshape(60, 36)[:, :4] > 0).astype(np.int64), "binary_cross_entropy"
        layers = [conv, "{type: flatten}", "{type: dense, units: 4}"]
    np.savez(tmp_path / "d.npz", x=x[:40], y=y[:40], x_test=x[40:], y_test=y[40:])
    (tmp_path / "s.yaml").write_text(
        "data: {dataset: npz, path: d.npz, normalize: none}\nmodel:\n  layers: ["
        + ", ".join(layers) + f"]\nloss: {loss}\ntrain: {{epochs: 1}}\n")
    runner = CliRunner()
    trained = runner.invoke(main, ["train", str(tmp_path / "s.yaml"), "--out",
                                   str(tmp_path / "run"), "--quiet"])
    assert trained.exit_code == 0, trained.output
    for moved in (["--shift", "1"], ["--permute"]):
        result = runner.invoke(main, ["eval", str(tmp_path / "run"), *moved])
        if targets == "several labels":
            assert result.exit_code == 0, result.output
        else:
            kind = " ".join(targets.split()[-2:])
            assert result.exit_code == 1 and f"its targets are {kind}" in result.output
            assert "measures misalignment, not invariance" in result.output
