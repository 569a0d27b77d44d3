"""A helper for passes: copy a graph node by node, replacing some nodes by others and
redirecting every later use of a replaced value."""

from __future__ import annotations

from collections import defaultdict

from ..ir import Graph, Node, Value
from ..ops import REGISTRY


class Rewriter:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes: list[Node] = []
        self.replacement: dict[int, Value] = {}

    def use(self, value: Value) -> Value:
        return self.replacement.get(id(value), value)

    def replace(self, old: Value, new: Value) -> None:
        self.replacement[id(old)] = new

    def keep(self, node: Node) -> None:
        inputs = tuple(self.use(v) for v in node.inputs)
        self.nodes.append(node if inputs == node.inputs else
                          Node(node.op, inputs, node.attrs, node.outputs, node.origin))

    def emit(self, op_name: str, inputs, attrs, origin) -> tuple[Value, ...]:
        types = REGISTRY[op_name].shape(attrs, *(v.type for v in inputs))
        outputs = tuple(Value(t) for t in (types if isinstance(types, tuple) else (types,)))
        self.nodes.append(Node(op_name, tuple(self.use(v) for v in inputs), attrs, outputs, origin))
        return outputs

    def result(self) -> Graph:
        return Graph(inputs=list(self.graph.inputs), params=list(self.graph.params),
                     state=list(self.graph.state), nodes=self.nodes,
                     outputs={k: self.use(v) for k, v in self.graph.outputs.items()},
                     updates={k: self.use(v) for k, v in self.graph.updates.items()})


def consumers(graph: Graph) -> dict[int, list[Node]]:
    """For each value, the nodes that read it."""
    readers: dict[int, list[Node]] = defaultdict(list)
    for node in graph.nodes:
        for value in node.inputs:
            readers[id(value)].append(node)
    return readers


def producers(graph: Graph) -> dict[int, Node]:
    """For each value a node computes, that node."""
    return {id(value): node for node in graph.nodes for value in node.outputs}


def result_ids(graph: Graph) -> set[int]:
    """The ids of the graph's results (outputs and updates), which a pass must keep: computed
    once per pass (a test per value over every update was quadratic in a net's depth)."""
    return {id(v) for v in (*graph.outputs.values(), *graph.updates.values())}
