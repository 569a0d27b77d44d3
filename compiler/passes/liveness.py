"""Liveness, computed once for the executor, the memory plan and `summary`: for every value,
the position of the node that defines it and of the last node that reads it."""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import Graph, Value
from ..ops import REGISTRY

LEAF = -1  # the definition position of inputs, parameters and state


@dataclass(frozen=True)
class LiveRange:
    start: int  # defining node (LEAF for leaves)
    end: int  # last reading node; len(graph.nodes) for the graph's results


def live_ranges(graph: Graph) -> dict[int, LiveRange]:
    """By value id. A view (reshape) keeps the value it views alive as long as itself."""
    start = {id(v): LEAF for v in graph.leaves()}
    end = dict.fromkeys(start, LEAF)
    viewed: dict[int, int] = {}  # view output id -> the id of the value it views
    for position, node in enumerate(graph.nodes):
        for value in node.inputs:
            end[id(value)] = position
        for value in node.outputs:
            start[id(value)] = end[id(value)] = position
        if REGISTRY[node.op].view:
            viewed[id(node.output)] = id(node.inputs[0])
    for value in (*graph.outputs.values(), *graph.updates.values()):
        end[id(value)] = len(graph.nodes)
    for node in reversed(graph.nodes):
        for value in node.outputs:
            source = viewed.get(id(value))
            if source is not None:
                end[source] = max(end[source], end[id(value)])
    return {key: LiveRange(start[key], end[key]) for key in start}


def last_uses(graph: Graph) -> list[list[Value]]:
    """For each node, the values that no later node (nor the results) needs after it: what an
    executor may free once the node has run. Leaves are never freed."""
    ranges = live_ranges(graph)
    freed: list[list[Value]] = [[] for _ in graph.nodes]
    seen: set[int] = set()
    for node in graph.nodes:
        for value in (*node.inputs, *node.outputs):
            key = id(value)
            if key in seen or ranges[key].start == LEAF or ranges[key].end >= len(graph.nodes):
                continue
            seen.add(key)
            freed[ranges[key].end].append(value)
    return freed
