"""gradcheck on gradients so small that rounding decides the central difference at step 1e-6
(the first layers of a deep sigmoid net): such an entry is taken again at larger steps and
passes there, a wrong gradient fails at every step; and gradcheck draws with the spec's seed."""

from __future__ import annotations

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
    - {{type: dense, units: 32, activation: sigmoid}}
    - {{type: dense, units: 32, activation: sigmoid}}
    - {{type: dense, units: 32, activation: sigmoid}}
    - {{type: dense, units: 32, activation: sigmoid}}
    - {{type: dense, units: 32, activation: sigmoid}}
    - {{type: dense, units: 10}}
"""
TOLERANCE = 1e-5


def deep_sigmoid(seed: int = 0):
    return nnrun.compile(nnrun.load_spec_text(DEEP_SIGMOID.format(seed=seed)))


def test_rounding_at_the_first_step_alone_does_not_fail():
    results = {r.name: r for r in checking.gradcheck(deep_sigmoid(), samples=16)}
    first = results["dense_1.weight"]
    assert first.larger_step > 0  # these failed at 1e-6: rounding / 1e-6 against a tiny gradient
    assert all(r.worst_relative_error <= TOLERANCE for r in results.values())


def test_at_the_first_step_the_same_entries_fail(monkeypatch):
    # What the larger steps mend: with them removed, the first layer fails.
    monkeypatch.setattr(checking, "LARGER_STEPS", ())
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
