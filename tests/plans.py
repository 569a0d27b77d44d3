"""Checks on memory plans, shared by the tests."""

from __future__ import annotations

from nnrun.compiler.passes.liveness import LiveRange


def value_places(graph, plan, ranges) -> list:
    """(Place, LiveRange) of every value with a place in the arena. A value written over
    another (plan.overwrites) joins that value's entry: the same place, live over both."""
    entries: dict[int, tuple] = {}
    for node in graph.nodes:
        for value in node.outputs:
            if id(value) not in plan.values:
                continue
            key = plan.overwrites.get(id(value), id(value))
            place, live = plan.values[id(value)], ranges[id(value)]
            if key in entries:
                shared, before = entries[key]
                assert shared == place, (shared, place)
                live = LiveRange(min(before.start, live.start), max(before.end, live.end))
            entries[key] = (place, live)
    return list(entries.values())


def assert_places_apart(places) -> None:
    """places: (Place, LiveRange) pairs; no two overlap in memory while both are live."""
    for i, (a, live_a) in enumerate(places):
        for b, live_b in places[i + 1:]:
            in_time = live_a.start <= live_b.end and live_b.start <= live_a.end
            in_memory = (a.offset < b.offset + b.nbytes and b.offset < a.offset + a.nbytes
                         and a.nbytes and b.nbytes)
            assert not (in_time and in_memory), (a, live_a, b, live_b)
