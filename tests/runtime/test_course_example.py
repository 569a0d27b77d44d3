"""The course's worked example: a 2-2-1 network of sigmoid units, squared error 1/2 (a - y)^2,
one sample, one step of gradient descent. The expected weights come from the hand-derived
deltas, computed here with plain Python floats, not with nnrun:

    delta3   = a3 (1 - a3) (a3 - y)
    delta2_j = a2_j (1 - a2_j) delta3 w3_1j
    w <- w - eta * delta * (activation feeding the weight),   b <- b - eta * delta

Weights are named as in the course: w2_jk connects input k to hidden unit j, w3_1j connects
hidden unit j to the output. nnrun stores a dense weight as [in, out], so
dense_1.weight[k, j] = w2_jk and dense_2.weight[j, 0] = w3_1j.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import nnrun
from nnrun.runtime.executor import Executor

ETA = 0.5

SPEC = f"""
name: course-2-2-1
seed: 0
dtype: float64
model:
  input_shape: [2]
  layers:
    - {{type: dense, units: 2, activation: sigmoid}}
    - {{type: dense, units: 1, activation: sigmoid}}
loss: {{type: mse, scale: 0.5}}
optimizer: {{type: sgd, lr: {ETA}}}
"""

X = [0.05, 0.10]
Y = 0.01
W2 = [[0.15, 0.20], [0.25, 0.30]]  # W2[j][k]: input k -> hidden j
B2 = [0.35, 0.35]
W3 = [0.40, 0.45]  # W3[j]: hidden j -> output
B3 = 0.60


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def by_hand(x, y, w2, b2, w3, b3, eta):
    """Forward pass, deltas and one gradient-descent step in plain Python."""
    a2 = [sigmoid(sum(w2[j][k] * x[k] for k in range(2)) + b2[j]) for j in range(2)]
    a3 = sigmoid(sum(w3[j] * a2[j] for j in range(2)) + b3)
    loss = 0.5 * (a3 - y) ** 2
    delta3 = a3 * (1 - a3) * (a3 - y)
    delta2 = [a2[j] * (1 - a2[j]) * delta3 * w3[j] for j in range(2)]
    new_w3 = [w3[j] - eta * delta3 * a2[j] for j in range(2)]
    new_b3 = b3 - eta * delta3
    new_w2 = [[w2[j][k] - eta * delta2[j] * x[k] for k in range(2)] for j in range(2)]
    new_b2 = [b2[j] - eta * delta2[j] for j in range(2)]
    return {"a2": a2, "a3": a3, "loss": loss, "delta3": delta3, "delta2": delta2,
            "w2": new_w2, "b2": new_b2, "w3": new_w3, "b3": new_b3}


def as_params(w2, b2, w3, b3) -> dict[str, np.ndarray]:
    return {
        "dense_1.weight": np.array(w2, dtype=np.float64).T,  # [in k, out j]
        "dense_1.bias": np.array(b2, dtype=np.float64),
        "dense_2.weight": np.array(w3, dtype=np.float64).reshape(2, 1),
        "dense_2.bias": np.array([b3], dtype=np.float64),
    }


@pytest.fixture(scope="module")
def model():
    return nnrun.compile(nnrun.load_spec_text(SPEC, "course.yaml"))


def sgd_step(model, params, x, y, step=1):
    graph = model.train_step.graph
    assert not model.train_step.optimizer_state  # plain SGD keeps no state
    assert "rng" not in [value.name for value in graph.inputs]
    feeds = dict(params)
    feeds.update(x=np.array([x], dtype=np.float64), y=np.array([[y]], dtype=np.float64),
                 lr=np.asarray(ETA, dtype=np.float64), step=np.asarray(step, dtype=np.float64))
    outputs, updates = Executor(graph, model.backend).run(feeds)
    return outputs, updates


def test_hand_computation_is_the_textbook_one():
    # Guards the expected values themselves (the well-known numbers of this example).
    hand = by_hand(X, Y, W2, B2, W3, B3, ETA)
    assert hand["a2"][0] == pytest.approx(0.593269992, abs=1e-9)
    assert hand["a2"][1] == pytest.approx(0.596884378, abs=1e-9)
    assert hand["a3"] == pytest.approx(0.75136507, abs=1e-9)


def test_forward_and_loss_match_the_hand_computation(model):
    params = as_params(W2, B2, W3, B3)
    hand = by_hand(X, Y, W2, B2, W3, B3, ETA)
    prediction = model.forward(params, np.array([X]))
    assert prediction.shape == (1, 1)
    np.testing.assert_allclose(prediction[0, 0], hand["a3"], rtol=1e-14, atol=0)
    loss, grads = model.loss_and_grads(params, np.array([X]), np.array([Y]))
    np.testing.assert_allclose(loss, hand["loss"], rtol=1e-14, atol=0)
    # the gradients are delta times the incoming activation
    np.testing.assert_allclose(grads["dense_2.weight"][:, 0],
                               [hand["delta3"] * a for a in hand["a2"]], rtol=1e-13, atol=0)
    np.testing.assert_allclose(grads["dense_2.bias"], [hand["delta3"]], rtol=1e-13, atol=0)
    np.testing.assert_allclose(grads["dense_1.weight"],
                               [[hand["delta2"][j] * X[k] for j in range(2)] for k in range(2)],
                               rtol=1e-13, atol=0)
    np.testing.assert_allclose(grads["dense_1.bias"], hand["delta2"], rtol=1e-13, atol=0)


def test_one_sgd_step_gives_the_hand_derived_weights(model):
    params = as_params(W2, B2, W3, B3)
    hand = by_hand(X, Y, W2, B2, W3, B3, ETA)
    outputs, updates = sgd_step(model, params, X, Y)
    np.testing.assert_allclose(float(outputs["loss"]), hand["loss"], rtol=1e-14, atol=0)
    expected = as_params(hand["w2"], hand["b2"], hand["w3"], hand["b3"])
    assert set(updates) == set(expected)
    for name, value in expected.items():
        assert updates[name].shape == value.shape, name
        assert updates[name].dtype == np.float64, name
        np.testing.assert_allclose(updates[name], value, rtol=1e-14, atol=1e-17, err_msg=name)
    # the textbook's updated output weights
    assert updates["dense_2.weight"][0, 0] == pytest.approx(0.35891648, abs=1e-8)
    assert updates["dense_2.weight"][1, 0] == pytest.approx(0.408666186, abs=1e-8)


def test_three_sgd_steps_follow_the_hand_derivation(model):
    """Each step starts from the previous step's weights: the update feeds back correctly."""
    params = as_params(W2, B2, W3, B3)
    w2, b2, w3, b3 = W2, B2, W3, B3
    for step in range(1, 4):
        _, updates = sgd_step(model, params, X, Y, step)
        hand = by_hand(X, Y, w2, b2, w3, b3, ETA)
        w2, b2, w3, b3 = hand["w2"], hand["b2"], hand["w3"], hand["b3"]
        expected = as_params(w2, b2, w3, b3)
        for name, value in expected.items():
            np.testing.assert_allclose(updates[name], value, rtol=1e-13, atol=1e-16,
                                       err_msg=f"{name}, step {step}")
        params = dict(updates)
    assert by_hand(X, Y, w2, b2, w3, b3, ETA)["loss"] < 0.5 * (0.75136507 - Y) ** 2
