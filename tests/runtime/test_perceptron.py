"""The course's perceptron: `activation: step` (a threshold unit) and `loss: perceptron`, whose
gradient step is Rosenblatt's rule. Checked against PyTorch (the criterion written with torch
operations, autograd for the gradients) and against the rule written out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nnrun
from nnrun.compiler.diagnostics import SpecError
from nnrun.compiler.frontend import check, load_spec_text
from nnrun.runtime.checkpoint import load_checkpoint
from invoking import invoke

torch = pytest.importorskip("torch")
SPECS = Path(__file__).resolve().parents[2] / "specs"


def spec_text(layers: str, loss: str = "perceptron", features: int = 3, dtype: str = "float64",
              data: str = "") -> str:
    return (f"{data}model:\n  input_shape: [{features}]\n  layers:\n{layers}"
            f"loss: {loss}\ndtype: {dtype}\n")


def torch_criterion(scores, labels):
    """The perceptron criterion with torch operations: no gradient flows through the
    comparison or the argmax, as none flows through a threshold."""
    if scores.shape[1] == 1:
        predicted = (scores[:, 0] >= 0).to(scores.dtype)
        return ((predicted - labels.to(scores.dtype)) * scores[:, 0]).mean()
    chosen = scores.argmax(dim=1, keepdim=True)
    return (scores.gather(1, chosen) - scores.gather(1, labels[:, None])).mean()


@pytest.mark.parametrize("seed", range(12))
def test_loss_and_gradients_are_pytorchs(seed):
    rng = np.random.default_rng(seed)
    classes = int(rng.choice([1, 2, 4]))
    hidden = int(rng.integers(2, 6))
    final = "step" if rng.random() < 0.5 else "none"
    layers = (f"    - {{type: dense, units: {hidden}, activation: tanh, init: he_normal}}\n"
              f"    - {{type: dense, units: {classes}, activation: {final}, init: he_normal}}\n")
    model = nnrun.compile(load_spec_text(spec_text(layers)))
    params = model.init_params(seed)
    x = rng.standard_normal((7, 3))
    labels = rng.integers(0, max(classes, 2), 7)
    loss, grads = model.loss_and_grads(params, x, labels)

    weights = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    h = torch.tanh(torch.tensor(x) @ weights["dense_1.weight"] + weights["dense_1.bias"])
    scores = h @ weights["dense_2.weight"] + weights["dense_2.bias"]
    expected = torch_criterion(scores, torch.tensor(labels))
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)
    for name, tensor in weights.items():
        np.testing.assert_allclose(grads[name], tensor.grad.numpy(), rtol=1e-12, atol=1e-12,
                                   err_msg=name)


def test_predictions_are_the_threshold_units_zeros_and_ones():
    layers = "    - {type: dense, units: 1, activation: step, init: he_normal}\n"
    model = nnrun.compile(load_spec_text(spec_text(layers)))
    params = model.init_params(0)
    x = np.random.default_rng(0).standard_normal((50, 3))
    y = model.forward(params, x)
    z = x @ params["dense_1.weight"] + params["dense_1.bias"]
    np.testing.assert_array_equal(y, (z >= 0).astype(np.float64))


def _and_gate(tmp_path, classes: int = 2):
    """Noisy corners of the unit square; labels AND (two classes) or corner groups (three)."""
    rng = np.random.default_rng(3)
    corners = rng.integers(0, 4, 40)
    x = np.stack([corners // 2, corners % 2], 1) + 0.1 * rng.standard_normal((40, 2))
    y = (corners == 3).astype(int) if classes == 2 else np.minimum(corners, 2)
    np.savez(tmp_path / "gate.npz", x=x, y=y)
    return x, y


def _trained_weights(tmp_path, units: int, epochs: int, lr: float) -> dict:
    text = (f"seed: 0\ndata: {{dataset: npz, path: gate.npz, normalize: none}}\n"
            f"model:\n  input_shape: [2]\n  layers:\n"
            f"    - {{type: dense, units: {units}, activation: {'step' if units == 1 else 'none'}, "
            f"init: zeros}}\n"
            f"loss: perceptron\noptimizer: {{type: sgd, lr: {lr}}}\ndtype: float64\n"
            f"train: {{epochs: {epochs}, batch_size: 1, shuffle: false}}\n")
    (tmp_path / "s.yaml").write_text(text)
    result = invoke("train", tmp_path / "s.yaml", "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    arrays, _ = load_checkpoint(tmp_path / "run" / "last.npz")
    return {name.removeprefix("params/"): value for name, value in arrays.items()}


def test_batch_size_one_and_sgd_are_rosenblatts_rule(tmp_path):
    x, y = _and_gate(tmp_path)
    w, b, lr = np.zeros(2), 0.0, 0.5
    for _ in range(3):
        for xi, t in zip(x, y):
            predicted = 1.0 if xi @ w + b >= 0 else 0.0
            w, b = w + lr * (t - predicted) * xi, b + lr * (t - predicted)
    params = _trained_weights(tmp_path, units=1, epochs=3, lr=lr)
    np.testing.assert_allclose(params["dense_1.weight"][:, 0], w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(params["dense_1.bias"], [b], rtol=1e-12, atol=1e-12)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["final"]["train_loss"] is not None


def test_several_outputs_follow_the_multiclass_perceptron_rule(tmp_path):
    """The rule for k classes: on a mistake, the label's weights gain x and the predicted
    class's lose it (ties go to the first class, as argmax takes it)."""
    x, y = _and_gate(tmp_path, classes=3)
    w, b, lr = np.zeros((2, 3)), np.zeros(3), 0.25
    for _ in range(2):
        for xi, t in zip(x, y):
            predicted = int(np.argmax(xi @ w + b))
            if predicted != t:
                w[:, t] += lr * xi
                b[t] += lr
                w[:, predicted] -= lr * xi
                b[predicted] -= lr
    params = _trained_weights(tmp_path, units=3, epochs=2, lr=lr)
    np.testing.assert_allclose(params["dense_1.weight"], w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(params["dense_1.bias"], b, rtol=1e-12, atol=1e-12)


def test_the_shipped_spec_stops_making_mistakes_on_and(tmp_path):
    """AND is linearly separable: the convergence theorem's finite number of mistakes."""
    summary = nnrun.train(str(SPECS / "perceptron-and.yaml"), out_dir=tmp_path / "run",
                          quiet=True)
    assert summary["final"]["val_accuracy"] == 1.0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert rows[-1]["train_accuracy"] == 1.0 and rows[-1]["train_loss"] == 0.0


def warnings_of(text: str) -> list[str]:
    return [d.message for d in check(load_spec_text(text)).diagnostics if d.severity == "warning"]


def test_a_step_anywhere_but_before_the_perceptron_loss_is_warned():
    hidden = ("    - {type: dense, units: 4, activation: step}\n"
              "    - {type: dense, units: 1, activation: step}\n")
    (message,) = warnings_of(spec_text(hidden))
    assert message.startswith("step passes no gradient back")
    last_under_mse = "    - {type: dense, units: 1, activation: step}\n"
    assert len(warnings_of(spec_text(last_under_mse, loss="mse"))) == 1
    assert warnings_of(spec_text(last_under_mse)) == []
    as_a_layer = "    - {type: dense, units: 1}\n    - {type: step}\n"
    assert warnings_of(spec_text(as_a_layer)) == []  # the last layer, before the criterion


def test_labels_must_be_classes_of_the_outputs(tmp_path):
    with pytest.raises(SpecError, match="dataset 'digits' has 10 classes; set units: 10"):
        check(load_spec_text("data: {dataset: digits}\nmodel: {layers: [{type: flatten}, "
                             "{type: dense, units: 1, activation: step}]}\nloss: perceptron\n"))
    check(load_spec_text("data: {dataset: xor}\nmodel: {input_shape: [2], layers: "
                         "[{type: dense, units: 1, activation: step}]}\nloss: perceptron\n"))
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 2)), y=np.array([0, 1, 2, 0, 1, 2]))
    (tmp_path / "s.yaml").write_text("data: {dataset: npz, path: d.npz}\nmodel: {layers: "
                                     "[{type: dense, units: 1, activation: step}]}\n"
                                     "loss: perceptron\n")
    result = invoke("train", tmp_path / "s.yaml", "--out", tmp_path / "run")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "labels go up to 2, but one output under perceptron reads labels 0 and 1" in result.stderr
    assert "set units: 3 in model.layers[0] (dense_1), without the step" in result.stderr
    model = nnrun.compile(load_spec_text(spec_text("    - {type: dense, units: 1}\n")))
    with pytest.raises(ValueError, match="perceptron needs class labels 0..1"):
        model.loss_and_grads(model.init_params(0), np.zeros((2, 3)), np.array([0, 2]))


@pytest.mark.parametrize("units, scale, rule", [
    (1, 1.0, "the perceptron rule w ← w + lr·(y − a)·x"),
    (3, 2.0, "δ of the scores is 2·(onehot(predicted) − onehot(label))"),
])
def test_the_trace_says_which_rule_the_update_is(tmp_path, units, scale, rule):
    from nnrun.runtime.trace import trace
    from nnrun.runtime.trace_format import trace_text

    text = (f"data: {{dataset: blobs}}\nmodel:\n  input_shape: [2]\n  layers: [{{type: dense, "
            f"units: {units}}}]\nloss: {{type: perceptron, scale: {scale}}}\n"
            "optimizer: {type: sgd, lr: 0.1}\ntrain: {batch_size: 1}\n")
    if units == 1:
        text = text.replace("dataset: blobs", "dataset: xor")
    output = trace_text(trace(load_spec_text(text), steps=1))
    assert rule in output


def test_the_trace_note_of_a_batch_divides_by_its_samples():
    """The verification-tools audit: at batch 4 the note said δ = (y − t), and the trace
    printed 0.25 for a sample of y − t = 1: the loss is the batch's mean."""
    from nnrun.runtime.trace import trace

    text = ("seed: 0\ndata: {dataset: xor}\nmodel:\n  input_shape: [2]\n  layers: [{type: dense, "
            "units: 1, activation: step}]\nloss: perceptron\noptimizer: {type: sgd, lr: 0.1}\n"
            "train: {batch_size: 4}\n")
    from nnrun.runtime.trace_format import trace_text

    traced = trace(load_spec_text(text), steps=1)
    step = traced.steps[0]
    (layer,) = step.layers
    np.testing.assert_allclose(np.ravel(layer.delta), (np.ravel(layer.a) - step.y) / 4)
    # in the symbols the step prints, a⁽¹⁾ and "y (target)" (the toolbox audit: y was the
    # prediction in the note, the target in the step)
    assert "δ of the score is (a − y)/N, the prediction a's error against the target y" in \
        trace_text(traced)
    assert "y (target) [sample 1] = " in trace_text(traced)


def test_metrics_under_perceptron_read_the_predictions_and_the_threshold():
    """mse compared the thresholded class, not the predictions, for a model without a step."""
    from nnrun.runtime.metrics import compared_outputs, predicted_labels

    z = np.array([[-0.5], [0.0], [0.3]])
    np.testing.assert_array_equal(predicted_labels(z, z, "perceptron"), [0, 1, 1])
    np.testing.assert_array_equal(compared_outputs("perceptron", z, z), z)


def test_cross_entropy_with_one_output_still_takes_label_0_only():
    """The perceptron's labels 0/1 for one output leaked into cross_entropy's check: label 1
    then failed inside the loss (IndexError) instead of naming the range."""
    model = nnrun.compile(load_spec_text(spec_text("    - {type: dense, units: 1}\n",
                                                   loss="cross_entropy")))
    with pytest.raises(ValueError, match="cross_entropy needs class labels 0..0"):
        model.loss_and_grads(model.init_params(0), np.zeros((2, 3)), np.array([0, 1]))
