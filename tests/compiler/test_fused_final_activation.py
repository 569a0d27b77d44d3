"""A final softmax (sigmoid) before cross_entropy (binary_cross_entropy) is left out of the loss
path, also where only layers that reshape its values follow it (an all-convolutional net's
flatten): the loss takes the scores once, the metrics read them as the loss does, and a
softmax whose groups a reshape mixes is warned of instead."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import nnrun
from nnrun.cli import main
from nnrun.compiler.frontend import check, load_spec_text
from nnrun.compiler.lower import lower

ALL_CONVOLUTIONAL = """\
data: {dataset: digits, limit: 200}
model:
  layers:
    - {type: conv2d, filters: 4, kernel_size: 3, activation: relu}
    - {type: conv2d, filters: 10, kernel_size: 6, activation: softmax}
    - {type: flatten}
train: {epochs: 2, batch_size: 32}
"""
SOFTMAX_AFTER_FLATTEN = ALL_CONVOLUTIONAL.replace(
    "kernel_size: 6, activation: softmax}\n    - {type: flatten}",
    "kernel_size: 6}\n    - {type: flatten}\n    - {type: softmax}")


def _loss_input(spec_text: str) -> str:
    """The op whose output the loss reads, as the graph's text names it."""
    lowered = lower(load_spec_text(spec_text))
    producer = next(node for node in lowered.graph.nodes if lowered.logits in node.outputs)
    return producer.op + "(" + ",".join(
        next((n.op for n in lowered.graph.nodes if v in n.outputs), "input")
        for v in producer.inputs) + ")"


@pytest.mark.parametrize("tail", ["{type: flatten}", "{type: reshape, shape: [10]}",
                                  "{type: flatten}\n    - {type: identity}",
                                  "{type: reshape, shape: [2, 5]}\n    - {type: flatten}"])
def test_a_softmax_followed_only_by_reshapes_is_fused_into_the_loss(tail):
    text = ALL_CONVOLUTIONAL.replace("{type: flatten}", tail)
    assert _loss_input(text) == "reshape(bias_add)"  # the scores, not their softmax
    assert not check(load_spec_text(text)).diagnostics


def test_it_trains_as_the_softmax_after_the_flatten_does(tmp_path):
    """The DESIGN audit: the loss took the softmax's probabilities as scores (test accuracy
    0.375 against 0.90 after 5 epochs), unwarned."""
    runs = []
    for name, text in (("before", ALL_CONVOLUTIONAL), ("after", SOFTMAX_AFTER_FLATTEN)):
        (tmp_path / f"{name}.yaml").write_text(text)
        summary = nnrun.train(tmp_path / f"{name}.yaml", out_dir=tmp_path / name, quiet=True)
        runs.append((summary["final"]["train_loss"], nnrun.load_run(tmp_path / name).params))
    (loss, params), (same_loss, same_params) = runs
    assert loss == pytest.approx(same_loss, rel=1e-6)
    for name, value in params.items():
        np.testing.assert_allclose(value, same_params[name], rtol=1e-5, atol=1e-7)


def test_a_sigmoid_before_a_flatten_is_scored_as_probabilities(tmp_path):
    """The DESIGN audit: accuracy read the sigmoid's probabilities as logits (above 0 is class
    1), counting every sample as class 1."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 1, 4, 4)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x[:160], y=y[:160], x_test=x[160:], y_test=y[160:])
    (tmp_path / "s.yaml").write_text(
        "data: {dataset: npz, path: d.npz}\nmodel:\n  layers:\n"
        "    - {type: conv2d, filters: 1, kernel_size: 4, activation: sigmoid}\n"
        "    - {type: flatten}\nloss: binary_cross_entropy\noptimizer: {type: adam, lr: 0.01}\n"
        "train: {epochs: 3, batch_size: 16}\n")
    summary = nnrun.train(tmp_path / "s.yaml", out_dir=tmp_path / "run", quiet=True)
    probabilities = nnrun.load_run(tmp_path / "run").predict(x[160:]).ravel()
    assert 0 < probabilities.min() and probabilities.max() < 1
    expected = float(((probabilities > 0.5) == y[160:]).mean())
    assert summary["final"]["test_accuracy"] == pytest.approx(expected)
    assert expected > y[160:].mean() + 0.1  # not every sample as class 1


def test_a_softmax_whose_groups_a_reshape_mixes_is_warned_not_fused(tmp_path):
    """A softmax over 5 channels at 2 positions, flattened to 10 classes: the loss's softmax
    is over other groups, so the scores are squashed twice: said, as for any softmax left
    between the scores and the loss."""
    np.savez(tmp_path / "c.npz", x=np.zeros((20, 1, 3), np.float32), y=np.arange(20) % 10)
    text = ("data: {dataset: npz, path: c.npz}\nmodel:\n  layers:\n"
            "    - {type: conv1d, filters: 5, kernel_size: 2, activation: softmax}\n"
            "    - {type: flatten}\n")
    (tmp_path / "s.yaml").write_text(text)
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "s.yaml")])
    assert "s.yaml:4:62: warning: model.layers[0] (conv1d_1): softmax before cross_entropy" \
        in result.output, result.output
    assert "squashed twice" in result.output


def test_the_trace_names_the_fused_layer_s_z(tmp_path):
    (tmp_path / "s.yaml").write_text(ALL_CONVOLUTIONAL)
    text = CliRunner().invoke(main, ["trace", str(tmp_path / "s.yaml")]).output
    assert "note: loss cross_entropy: p = softmax(z⁽³⁾) = a⁽³⁾" in text, text[-2000:]
    assert "  δ⁽³⁾ = ∂C/∂z⁽³⁾ = (p − onehot(y))/32 conv2d_2 [sample 1]" in text


def test_a_final_step_before_a_flatten_is_the_perceptron_s_own(tmp_path):
    """perceptron reads the scores before a final step, also through a flatten: no warning
    that the step stops learning, and the loss's input is those scores."""
    text = ("model:\n  input_shape: [1, 3]\n  layers:\n"
            "    - {type: conv1d, filters: 1, kernel_size: 3, activation: step}\n"
            "    - {type: flatten}\nloss: perceptron\n")
    assert _loss_input(text) == "reshape(bias_add)"
    assert not check(load_spec_text(text)).diagnostics


@pytest.mark.parametrize("between", ["{type: global_avgpool}",
                                     "{type: maxpool2d, pool_size: 6}\n    - {type: flatten}"])
def test_a_softmax_pooled_before_the_loss_is_warned_of(between):
    """The DESIGN audit: a per-pixel softmax averaged by a global pool gives cross_entropy
    probabilities as scores, unwarned; a pooling keeps them probabilities."""
    text = ("data: {dataset: digits}\nmodel:\n  layers:\n"
            "    - {type: conv2d, filters: 10, kernel_size: 3, activation: softmax}\n"
            f"    - {between}\n")
    (warning,) = check(load_spec_text(text)).diagnostics
    assert (warning.line, warning.where) == (4, "model.layers[0] (conv2d_1)")
    assert "softmax before cross_entropy" in warning.message


@pytest.mark.parametrize("loss, head", [("binary_cross_entropy", "sigmoid"),
                                        ("cross_entropy", "softmax")])
def test_heads_joined_before_the_loss_are_each_warned_of(loss, head):
    """The warnings audit: sigmoid heads joined by a concat gave binary_cross_entropy their
    probabilities as scores, unwarned, and every metric read them as logits (accuracy: the
    share of 1 labels)."""
    text = ("model:\n  input_shape: [4]\n  layers:\n"
            "    - {type: dense, units: 8, activation: tanh, name: h}\n"
            f"    - {{type: dense, units: 2, activation: {head}, inputs: h, name: a}}\n"
            f"    - {{type: dense, units: 2, activation: {head}, inputs: h, name: b}}\n"
            f"    - {{type: concat, inputs: [a, b]}}\nloss: {loss}\n")
    warnings = check(load_spec_text(text)).diagnostics
    assert [(w.line, w.where) for w in warnings] == [(5, "model.layers[1] (a)"),
                                                     (6, "model.layers[2] (b)")]
    assert all(f"{head} before {loss}" in w.message for w in warnings)


@pytest.mark.parametrize("activation, said", [
    ("sigmoid", "its outputs are never below 0, so the threshold unit reads every sample as "
                "class 1; remove this sigmoid"),
    ("relu", "its outputs are never below 0"),
    ("tanh", "the scores are squashed into (-1, 1) first")])
def test_an_activation_before_the_perceptron_says_what_the_threshold_makes_of_it(activation,
                                                                                said):
    """The warnings audit: a sigmoid before perceptron was said to slow learning, where the
    threshold at 0 reads every sample as class 1 (accuracy the share of class 1, however low
    the loss)."""
    text = ("model:\n  input_shape: [2]\n  layers:\n"
            f"    - {{type: dense, units: 1, activation: {activation}}}\nloss: perceptron\n")
    (warning,) = check(load_spec_text(text)).diagnostics
    assert said in warning.message, warning.message


def test_the_advice_of_a_step_or_a_softmax_over_one_value_suits_the_loss():
    """The warnings audit: a last step under cross_entropy was told to become a sigmoid, and a
    softmax of one output under perceptron a sigmoid: each then warned as squashing."""
    step = ("model:\n  input_shape: [2]\n  layers:\n"
            "    - {type: dense, units: 3, activation: step}\nloss: cross_entropy\n")
    (warning,) = check(load_spec_text(step)).diagnostics
    assert warning.message.endswith("use it as the last activation with loss: perceptron, or "
                                    "no activation (cross_entropy applies its own softmax)")
    assert not check(load_spec_text(step.replace(", activation: step", ""))).diagnostics
    hidden = step.replace("units: 3, activation: step}", "units: 3, activation: step}\n"
                          "    - {type: dense, units: 3}")
    (warning,) = check(load_spec_text(hidden)).diagnostics
    assert "or a sigmoid, which the perceptron became" in warning.message
    one = ("model:\n  input_shape: [2]\n  layers:\n"
           "    - {type: dense, units: 1, activation: softmax}\nloss: perceptron\n")
    (warning,) = check(load_spec_text(one)).diagnostics
    assert "for one output use no activation or a step (perceptron applies its own step)" \
        in warning.message
    assert not check(load_spec_text(one.replace("softmax", "step"))).diagnostics
