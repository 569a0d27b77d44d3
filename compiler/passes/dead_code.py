"""Removes nodes whose outputs nothing uses (e.g. the gradient of a dropout mask)."""

from __future__ import annotations

from ..ir import Graph


def eliminate_dead_code(graph: Graph) -> Graph:
    live = {id(v) for v in (*graph.outputs.values(), *graph.updates.values())}
    kept = []
    for node in reversed(graph.nodes):
        if any(id(v) in live for v in node.outputs):
            kept.append(node)
            live.update(id(v) for v in node.inputs)
    return Graph(inputs=list(graph.inputs), params=list(graph.params), state=list(graph.state),
                 nodes=kept[::-1], outputs=dict(graph.outputs), updates=dict(graph.updates))
