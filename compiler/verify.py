"""verify(graph): every value defined once before use, and every shape rule still holds."""

from __future__ import annotations

from .ir import Graph
from .ops import REGISTRY


class VerifyError(Exception):
    pass


def verify(graph: Graph) -> None:
    defined = {id(v) for v in graph.leaves()}
    for position, node in enumerate(graph.nodes):
        for value in node.inputs:
            if id(value) not in defined:
                raise VerifyError(f"node {position} ({node.op}) uses {value!r} before it is defined")
        types = REGISTRY[node.op].shape(node.attrs, *(v.type for v in node.inputs))
        expected = types if isinstance(types, tuple) else (types,)
        if tuple(v.type for v in node.outputs) != expected:
            raise VerifyError(f"node {position} ({node.op}): recorded types differ from its shape rule")
        for value in node.outputs:
            if id(value) in defined:
                raise VerifyError(f"node {position} ({node.op}) redefines {value!r}")
            defined.add(id(value))
    for name, value in (*graph.outputs.items(), *graph.updates.items()):
        if id(value) not in defined:
            raise VerifyError(f"output {name} is not defined by the graph")
