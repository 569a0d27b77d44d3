"""Runs a graph on a backend: one op forward per node, freeing each value after its last use."""

from __future__ import annotations

from typing import Any

from nnrun.compiler.ir import Graph
from nnrun.compiler.ops import REGISTRY


class Executor:
    def __init__(self, graph: Graph, backend):
        self.graph = graph
        self.backend = backend
        self.plan = [(REGISTRY[node.op].forward, node, frees)
                     for node, frees in zip(graph.nodes, _last_uses(graph))]

    def run(self, feeds: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """feeds: every input, param and state by name -> (outputs, updates) by name."""
        env = {id(leaf): feeds[leaf.name] for leaf in self.graph.leaves() if leaf.name in feeds}
        be, xp = self.backend, self.backend.xp
        for forward, node, frees in self.plan:
            result = forward(be, node.attrs, *(env[id(v)] for v in node.inputs))
            # Update ops return a tuple (new param, *new state) even when it has one entry.
            results = result if isinstance(result, tuple) else (result,)
            for value, array in zip(node.outputs, results):
                env[id(value)] = xp.asarray(array)
            for value_id in frees:
                env.pop(value_id, None)
        outputs = {name: env[id(v)] for name, v in self.graph.outputs.items()}
        updates = {name: env[id(v)] for name, v in self.graph.updates.items()}
        return outputs, updates


def _last_uses(graph: Graph) -> list[list[int]]:
    """For each node, the values no later node (nor the results) needs: a liveness plan."""
    keep = {id(v) for v in (*graph.outputs.values(), *graph.updates.values())}
    keep.update(id(v) for v in graph.leaves())
    seen: set[int] = set()
    frees: list[list[int]] = []
    for node in reversed(graph.nodes):
        dead = [id(v) for v in (*node.inputs, *node.outputs) if id(v) not in seen and id(v) not in keep]
        seen.update(id(v) for v in (*node.inputs, *node.outputs))
        frees.append(dead)
    return frees[::-1]
