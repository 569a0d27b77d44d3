"""gradcheck on gradients so small that rounding decides the central difference at step 1e-6
(the first layers of a deep sigmoid net): such an entry is taken again at larger steps and
passes there; one within the rounding of every step is counted apart, not failed, nor taken
for a kink; a wrong gradient fails at every step; and gradcheck draws with the spec's seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnrun
from nnrun.runtime import gradcheck as checking

DEEP_SIGMOID = """
seed: {seed}
dtype: float64
model:
  input_shape: [64]
  init: xavier_uniform
  layers:
{layers}    - {{type: dense, units: 10}}
"""
TOLERANCE = 1e-5


def deep_sigmoid(seed: int = 0, depth: int = 5):
    layers = "    - {type: dense, units: 32, activation: sigmoid}\n" * depth
    return nnrun.compile(nnrun.load_spec_text(DEEP_SIGMOID.format(seed=seed, layers=layers)))


def test_rounding_at_the_first_step_alone_does_not_fail():
    results = {r.name: r for r in checking.gradcheck(deep_sigmoid(), samples=16)}
    first = results["dense_1.weight"]
    assert first.larger_step > 0  # these failed at 1e-6: rounding / 1e-6 against a tiny gradient
    assert all(r.worst_relative_error <= TOLERANCE for r in results.values())


def test_gradients_within_rounding_at_every_step_are_counted_apart():
    """Twelve sigmoid layers: the first layers' gradients are about 1e-9, within the loss's
    rounding (8 * eps * |loss| / step) even at step 1e-4. They failed, some as 'kinks'."""
    results = checking.gradcheck(deep_sigmoid(depth=12), samples=16)
    assert sum(r.rounding for r in results) > 0
    assert all(r.kinks == 0 for r in results)  # no ReLU, no max-pool: no kink
    assert all(r.worst_relative_error <= TOLERANCE for r in results)


def test_at_the_first_step_the_same_entries_fail(monkeypatch):
    # What the larger steps and the rounding allowance mend: without them, the first layer fails.
    monkeypatch.setattr(checking, "LARGER_STEPS", ())
    monkeypatch.setattr(checking, "ROUNDING", 0.0)
    results = {r.name: r for r in checking.gradcheck(deep_sigmoid(), samples=16)}
    assert results["dense_1.weight"].worst_relative_error > TOLERANCE


@pytest.mark.parametrize("factor", [1.0001, 1.01])
def test_a_wrong_small_gradient_fails_at_every_step(monkeypatch, factor):
    model = deep_sigmoid()
    right = model.loss_and_grads

    def wrong(params, x, y):
        loss, grads = right(params, x, y)
        grads["dense_1.weight"] = grads["dense_1.weight"] * factor
        return loss, grads

    monkeypatch.setattr(model, "loss_and_grads", wrong)
    results = {r.name: r for r in checking.gradcheck(model, samples=16)}
    assert results["dense_1.weight"].worst_relative_error > TOLERANCE
    assert results["dense_1.weight"].larger_step == 0


def test_the_spec_seed_draws_the_weights_and_the_batch(monkeypatch):
    drawn = []
    original = checking.random_batch

    def recording(model, batch, rng):
        x, y = original(model, batch, rng)
        drawn.append(x)
        return x, y

    monkeypatch.setattr(checking, "random_batch", recording)
    seeded = deep_sigmoid(seed=7)
    checking.gradcheck(seeded, samples=1)
    checking.gradcheck(seeded, samples=1, seed=7)
    checking.gradcheck(seeded, samples=1, seed=0)
    assert np.array_equal(drawn[0], drawn[1]) and not np.array_equal(drawn[0], drawn[2])


def test_a_tolerance_below_the_rounding_is_not_met_by_leaving_entries_out():
    """--tolerance 0 passed with every entry 'within rounding': an entry is left out only where
    the rounding exceeds what the tolerance allows its gradient, and a check of nothing does not
    pass (exit 1, 'unchecked': no gradient was found wrong either)."""
    from click.testing import CliRunner

    from nnrun.cli import main

    strict = checking.gradcheck(deep_sigmoid(depth=1), samples=4, tolerance=0.0)
    assert sum(r.checked for r in strict) == 0  # no difference is exact
    spec = Path(__file__).resolve().parents[2] / "specs" / "xor-mlp.yaml"
    result = CliRunner().invoke(main, ["gradcheck", str(spec), "--tolerance", "0"])
    assert result.exit_code == 1 and "failed" not in result.output
    assert "unchecked: no entry could be checked" in result.output
    assert "give --tolerance above 0" in result.output
    # the default tolerance checks every gradient above the rounding's reach
    usual = checking.gradcheck(deep_sigmoid(depth=1), samples=4)
    assert all(r.rounding == 0 and r.checked > 0 for r in usual)


def test_weights_too_large_for_any_difference_leave_the_check_unchecked_not_failed(tmp_path):
    """Weights of scale 1e20 put every entry within its differences' rounding: gradcheck said
    'failed', which means a wrong gradient (docs/cli.md), where none was found."""
    from click.testing import CliRunner

    from nnrun.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: xor}\nmodel:\n  input_shape: [2]\n  init: {type: uniform, "
                    "limit: 1.0e+20}\n  layers:\n    - {type: dense, units: 4}\n"
                    "    - {type: dense, units: 1}\nloss: mse\n")
    result = CliRunner().invoke(main, ["gradcheck", str(spec)])
    assert result.exit_code == 1 and "failed" not in result.output, result.output
    assert "unchecked: no entry could be checked: each lies within what its differences " \
        "resolve" in result.output
    assert "raise --tolerance, or use smaller initial weights" in result.output


def test_samples_are_distinct_entries(monkeypatch):
    """--samples 11 of dense_1.weight's 12 entries drew 11 with replacement: fewer were checked
    than reported. Now 11 distinct ones, drawn alike from the same seed."""
    model = nnrun.compile(nnrun.load_spec_text(
        "dtype: float64\nmodel:\n  input_shape: [3]\n  layers:\n"
        "    - {type: dense, units: 4, activation: tanh}\n    - {type: dense, units: 2}\n"))
    original = checking._check_entry

    def drawn(seed: int) -> list[tuple]:
        indices = []

        def recording(probe, name, index, *args):
            if name == "dense_1.weight":
                indices.append(index)
            return original(probe, name, index, *args)

        monkeypatch.setattr(checking, "_check_entry", recording)
        (weight, *_) = checking.gradcheck(model, samples=11, seed=seed)
        assert weight.name == "dense_1.weight" and weight.checked == 11
        return indices

    first = drawn(0)
    assert len(first) == len(set(first)) == 11
    assert drawn(0) == first and drawn(1) != first


@pytest.mark.parametrize("loss, ignored", [("cross_entropy", 255), ("binary_cross_entropy", -1),
                                           ("cross_entropy", 1)])
def test_a_gradient_that_forgets_ignore_index_fails(monkeypatch, loss, ignored):
    """The verification-tools audit: the random batch never held ignore_index (255, -1; a
    class only by chance), so a gradient that counts those targets passed."""
    model = nnrun.compile(nnrun.load_spec_text(
        f"dtype: float64\nmodel:\n  input_shape: [6]\n  layers: [{{type: dense, units: 3}}]\n"
        f"loss: {{type: {loss}, ignore_index: {ignored}}}\n"))
    x, y = checking.random_batch(model, 8, np.random.default_rng(0))
    assert list(y.reshape(-1)[1::4]) == [ignored] * (y.size // 4)
    assert (np.delete(y.reshape(-1), np.s_[1::4]) != ignored).any()
    assert all(r.worst_relative_error <= TOLERANCE for r in checking.gradcheck(model))
    right = model.loss_and_grads

    def forgetting(params, x, y):  # the loss's own value, gradients of the ignored as 0
        return right(params, x, np.where(y == ignored, 0, y))

    monkeypatch.setattr(model, "loss_and_grads", forgetting)
    assert max(r.worst_relative_error for r in checking.gradcheck(model)) > TOLERANCE
