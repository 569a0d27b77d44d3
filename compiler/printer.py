"""The stable text form of a graph (grammar in docs/graph-text.md) and a Graphviz rendering."""

from __future__ import annotations

from .ir import Graph, Node
from .ops import attrs_text


def node_text(node: Node) -> str:
    outputs = ", ".join(v.ref() for v in node.outputs)
    args = ", ".join(v.ref() for v in node.inputs)
    attrs = attrs_text(node.attrs)
    types = ", ".join(v.type.text() for v in node.outputs)
    return f"{outputs} = {node.op}({args}){' ' + attrs if attrs else ''} : {types}"


def graph_text(graph: Graph) -> str:
    graph.renumber()
    lines = [_leaf_line(kind, values) for kind, values in
             (("input", graph.inputs), ("param", graph.params), ("state", graph.state)) if values]
    lines += [node_text(node) for node in graph.nodes]
    lines += [f"output {_output_name(graph, name, value)} = {value.ref()}"
              for name, value in graph.outputs.items()]
    lines += [f"update {name} = {value.ref()}" for name, value in graph.updates.items()]
    return "\n".join(lines) + "\n"


def segments_text(graph: Graph, segments: list[range]) -> str:
    """Batch segments as the spans of values their nodes define: "%0..%8, %28..%38"."""
    first = [graph.nodes[s.start].outputs[0].ref() for s in segments]
    last = [graph.nodes[s.stop - 1].outputs[-1].ref() for s in segments]
    return ", ".join(a if a == b else f"{a}..{b}" for a, b in zip(first, last))


# The losses that read the model's output as logits (of a softmax or a sigmoid).
LOGIT_LOSSES = ("softmax_cross_entropy", "sigmoid_binary_cross_entropy")


def _output_name(graph: Graph, name: str, value) -> str:
    """The output the runtime calls `logits` is what the loss reads: logits under
    cross-entropy, else (mse on a sigmoid's output, perceptron's scores) `loss_input`."""
    if name != "logits":
        return name
    logit_loss = any(node.op.startswith(LOGIT_LOSSES) and node.inputs[0] is value
                     for node in graph.nodes)
    return name if logit_loss else "loss_input"


def _leaf_line(kind: str, values) -> str:
    return f"{kind} " + ", ".join(f"{v.ref()} : {v.type.text()}" for v in values)


def graph_dot(graph: Graph) -> str:
    graph.renumber()
    lines = ["digraph nnrun {", "  rankdir=TB;", '  node [shape=box, fontname="monospace"];']
    for value in graph.leaves():
        lines.append(f'  "{value.ref()}" [shape=ellipse, label="{value.ref()}\\n{value.type.text()}"];')
    for node in graph.nodes:
        node_id = f"n{node.outputs[0].index}"
        label = f"{node.op}\\n{attrs_text(node.attrs)}\\n" + " ".join(v.type.text() for v in node.outputs)
        lines.append(f'  {node_id} [label="{label}"];')
        for value in node.inputs:
            lines.append(f'  "{value.ref()}" -> {node_id};')
        for value in node.outputs:
            lines.append(f'  {node_id} -> "{value.ref()}" [arrowhead=none];')
            lines.append(f'  "{value.ref()}" [shape=point];')
    for name, value in graph.outputs.items():  # as the text form's `output NAME = %v`
        name = _output_name(graph, name, value)
        lines.append(f'  "output {name}" [shape=ellipse, style=bold, label="{name}"];')
        lines.append(f'  "{value.ref()}" -> "output {name}";')
    lines.append("}")
    return "\n".join(lines) + "\n"
