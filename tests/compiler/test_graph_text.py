"""The graph text form is stable (golden files) and every graph nnrun builds passes verify().

To regenerate the golden files after an intended change of the text form, run
    NNRUN_UPDATE_GOLDEN=1 python -m pytest tests/compiler/test_graph_text.py
and read the diff before committing it.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnrun.cli import main
from nnrun.compiler.frontend import load_spec, load_spec_text
from nnrun.compiler.ir import TensorType
from nnrun.compiler.lower import lower
from nnrun.compiler.passes.dead_code import eliminate_dead_code
from nnrun.compiler.printer import graph_dot, graph_text
from nnrun.compiler.step import build_loss_and_grads, build_train_step
from nnrun.compiler.verify import VerifyError, verify

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
SPECS = sorted((ROOT / "specs").glob("*.yaml"))

TINY_MLP = """\
name: tiny-mlp
data: {dataset: blobs}
model:
  layers:
    - {type: dense, units: 4, activation: relu}
    - {type: dense, units: 3}
loss: cross_entropy
optimizer: {type: sgd, lr: 0.1, momentum: 0.9}
"""


def cli_graph(spec: Path, *options: str) -> str:
    result = CliRunner().invoke(main, ["graph", str(spec), *options])
    assert result.exit_code == 0, result.output
    return result.stdout


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("NNRUN_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} is missing; run with NNRUN_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"the graph text differs from {path}"


# --- golden text ----------------------------------------------------------------------------


def test_lenet5_forward_graph_golden():
    check_golden("lenet5_forward.txt", cli_graph(ROOT / "specs" / "lenet5.yaml"))


def test_tiny_mlp_training_step_golden(tmp_path):
    spec = tmp_path / "tiny_mlp.yaml"
    spec.write_text(TINY_MLP)
    check_golden("tiny_mlp_train_step.txt", cli_graph(spec, "--backward"))


def test_golden_text_is_what_the_printer_gives():
    # The CLI adds nothing of its own: the golden text is graph_text of the lowered graph.
    lowered = lower(load_spec(ROOT / "specs" / "lenet5.yaml").spec, mode="eval")
    assert graph_text(lowered.graph) == (GOLDEN / "lenet5_forward.txt").read_text()


def test_printing_is_repeatable():
    spec = load_spec_text(TINY_MLP).spec
    step = build_train_step(spec)
    first = graph_text(eliminate_dead_code(step.graph))
    assert graph_text(eliminate_dead_code(step.graph)) == first
    assert graph_text(eliminate_dead_code(build_train_step(spec).graph)) == first


def test_docs_example_matches_the_golden_lenet5_graph():
    doc = ROOT / "docs" / "graph-text.md"
    if not doc.exists():
        pytest.skip("docs/graph-text.md is not there")
    blocks = re.findall(r"```\n(input %x.*?)```", doc.read_text(), flags=re.S)
    lenet = [b for b in blocks if "%conv2d_1.weight : f32[6,1,5,5]" in b]
    assert lenet, "the LeNet-5 example is missing from docs/graph-text.md"
    assert lenet[0] == (GOLDEN / "lenet5_forward.txt").read_text()


# --- the grammar of docs/graph-text.md, line by line ----------------------------------------

_DIM = r"(?:B|\d+)"
_TYPE = rf"(?:f32|f64|i64|bool|rng)\[(?:{_DIM}(?:,{_DIM})*)?\]"
_REF = r"%(?:\d+|[A-Za-z_][\w./-]*)"
_LEAF = rf"{_REF} : {_TYPE}"
_VALUE = r"(?:[^\s(),]+|\((?:[^()]|\([^()]*\))*\))"
_LINE = re.compile("|".join([
    rf"(?:input|param|state) {_LEAF}(?:, {_LEAF})*",
    rf"{_REF}(?:, {_REF})* = [a-z_0-9]+\((?:{_REF}(?:, {_REF})*)?\)(?: [a-z_0-9]+={_VALUE})*"
    rf" : {_TYPE}(?:, {_TYPE})*",
    rf"(?:output|update) [\w./-]+ = {_REF}",
]))
_ORDER = ["input", "param", "state", "node", "output", "update"]


def _kind(line: str) -> str:
    word = line.split(" ", 1)[0]
    return word if word in _ORDER else "node"


def check_grammar(text: str) -> None:
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    for line in lines:
        assert _LINE.fullmatch(line), f"not in the graph-text grammar: {line!r}"
    kinds = [_ORDER.index(_kind(line)) for line in lines]
    assert kinds == sorted(kinds), "sections out of order"
    for leaf_kind in ("input", "param", "state"):
        assert sum(_kind(line) == leaf_kind for line in lines) <= 1


def test_golden_files_follow_the_grammar():
    for path in sorted(GOLDEN.glob("*.txt")):
        check_grammar(path.read_text())


# --- verify() on every graph of every spec --------------------------------------------------

EXTRA_SPECS = {
    # Ops the shipped specs do not reach: conv1d, reflect padding, batchnorm, dropout, add,
    # concat, global pooling, reshape, other losses and optimizers, clipping, grad norms.
    "conv1d_reflect": """\
        model:
          input_shape: [2, 16]
          layers:
            - {type: conv1d, filters: 4, kernel_size: 3, padding: same, padding_mode: reflect,
               activation: gelu}
            - {type: batchnorm}
            - {type: avgpool1d, pool_size: 2}
            - {type: flatten}
            - {type: dropout, rate: 0.5}
            - {type: dense, units: 3, activation: softmax}
        optimizer: {type: adamw, clip_grad_norm: 1.0}
        train: {log_grad_norms: true}
        """,
    "residual": """\
        model:
          input_shape: [3, 8, 8]
          layers:
            - {type: conv2d, filters: 3, kernel_size: 3, padding: 1, name: a,
               activation: {type: leaky_relu, alpha: 0.1}}
            - {type: add, inputs: [a, input]}
            - {type: conv2d, filters: 2, kernel_size: 4, stride: 2, padding: same,
               padding_mode: replicate, name: b}
            - {type: conv2d, filters: 2, kernel_size: 1, stride: 2, inputs: add_1, name: c}
            - {type: concat, inputs: [b, c]}
            - {type: global_maxpool}
            - {type: dense, units: 1}
        loss: {type: binary_cross_entropy}
        optimizer: {type: rmsprop, momentum: 0.9, clip_grad_value: 0.5}
        """,
    "regression": """\
        model:
          input_shape: [6]
          layers:
            - {type: reshape, shape: [2, -1]}
            - {type: conv1d, filters: 2, kernel_size: 2, dilation: 2, activation: tanh}
            - {type: flatten}
            - {type: dense, units: 2, activation: elu}
            - {type: dense, units: 2, activation: sigmoid}
        loss: {type: huber, delta: 0.5, scale: 2.0}
        optimizer: {type: adagrad}
        """,
    "mae_adam": """\
        dtype: float64
        model:
          input_shape: [1, 5, 5]
          layers:
            - {type: maxpool2d, pool_size: 3, stride: 1, padding: 1}
            - {type: conv2d, filters: 2, kernel_size: 2, activation: softplus}
            - {type: global_avgpool}
            - {type: dense, units: 2}
        loss: mae
        optimizer: {type: sgd, momentum: 0.5, nesterov: true, weight_decay: 0.01}
        """,
}


def _sources():
    for path in SPECS:
        yield pytest.param(lambda path=path: load_spec(path), id=path.name)
    for name, text in EXTRA_SPECS.items():
        yield pytest.param(lambda text=text: load_spec_text(textwrap.dedent(text)), id=name)


def test_there_are_specs_to_check():
    assert SPECS, "specs/ has no example specs"


@pytest.mark.parametrize("source", list(_sources()))
def test_verify_every_graph(source):
    spec = source().spec
    graphs = {
        "forward": lower(spec, mode="eval").graph,
        "forward (train mode)": lower(spec, mode="train").graph,
        "loss and grads": build_loss_and_grads(spec).graph,
        "train step": build_train_step(spec).graph,
    }
    for name, graph in list(graphs.items()):
        graphs[f"{name}, dead code removed"] = eliminate_dead_code(graph)
    for name, graph in graphs.items():
        try:
            verify(graph)
        except VerifyError as error:  # pragma: no cover - the message is the point
            pytest.fail(f"{name}: {error}")
        check_grammar(graph_text(graph))

    loss_and_grads = graphs["loss and grads"]
    params = {value.name for value in loss_and_grads.params}
    assert {name[len("grad/"):] for name in loss_and_grads.outputs if name.startswith("grad/")} \
        == params
    step = graphs["train step"]
    assert "loss" in step.outputs
    assert params <= set(step.updates)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_spec_prints_with_the_cli(path):
    forward = cli_graph(path)
    backward = cli_graph(path, "--backward")
    check_grammar(forward)
    check_grammar(backward)
    assert forward.count("\n") < backward.count("\n")
    assert cli_graph(path, "--format", "dot").startswith("digraph nnrun {")


# --- verify() itself catches broken graphs --------------------------------------------------


def _small_graph():
    return lower(load_spec_text(TINY_MLP).spec, mode="eval").graph


def test_verify_rejects_a_wrong_recorded_type():
    graph = _small_graph()
    node = graph.nodes[0]
    node.outputs[0].type = TensorType((7, 7), node.outputs[0].type.dtype)
    with pytest.raises(VerifyError, match="recorded types differ"):
        verify(graph)


def test_verify_rejects_use_before_definition():
    graph = _small_graph()
    graph.nodes[0], graph.nodes[1] = graph.nodes[1], graph.nodes[0]
    with pytest.raises(VerifyError, match="before it is defined"):
        verify(graph)


def test_verify_rejects_an_undefined_output():
    graph = _small_graph()
    graph.nodes.pop()
    with pytest.raises(VerifyError):
        verify(graph)


@pytest.mark.parametrize("loss, last, name", [
    ("{type: mse, scale: 0.5}", "activation: sigmoid", "loss_input"),  # a probability, no logit
    ("cross_entropy", "activation: softmax", "logits"),  # fused: the value before the softmax
    ("cross_entropy", "activation: relu", "logits"),
    ("binary_cross_entropy", "activation: sigmoid", "logits"),
    ("perceptron", "activation: step", "loss_input"),  # the scores before the step
])
def test_the_value_the_loss_reads_is_named_logits_only_under_cross_entropy(loss, last, name):
    """`nnrun graph --backward` said `output logits` of a sigmoid's output under mse."""
    units = 1 if "binary" in loss or "mse" in loss or "perceptron" in loss else 2
    spec = load_spec_text(f"data: {{dataset: xor}}\nmodel:\n  layers:\n"
                          f"    - {{type: dense, units: 2, activation: tanh}}\n"
                          f"    - {{type: dense, units: {units}, {last}}}\n"
                          f"loss: {loss}\ntrain: {{metrics: [accuracy]}}\n").spec
    step = build_train_step(spec)
    text = graph_text(eliminate_dead_code(step.graph))
    (line,) = [line for line in text.splitlines() if line.endswith(
        f" = {step.graph.outputs['logits'].ref()}") and line.startswith("output l")]
    assert line.split(" ")[1] == name, text
    assert f'"output {name}" [shape=ellipse, style=bold, label="{name}"]' in \
        graph_dot(step.graph)


def test_docs_training_step_example_is_what_nnrun_graph_prints():
    """docs/graph-text.md's 2-2-1 training step, with its output lines."""
    blocks = re.findall(r"```\n(input %x.*?)```", (ROOT / "docs" / "graph-text.md").read_text(),
                        flags=re.S)
    (example,) = [block for block in blocks if "mse_grad(%9, %5, %y)" in block]
    assert example == cli_graph(ROOT / "specs" / "course-2-2-1-xor.yaml", "--backward")
    assert "output loss_input = %5\n" in example
