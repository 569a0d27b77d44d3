"""Checks on memory plans, shared by the tests."""

from __future__ import annotations


def assert_places_apart(places) -> None:
    """places: (Place, LiveRange) pairs; no two overlap in memory while both are live."""
    for i, (a, live_a) in enumerate(places):
        for b, live_b in places[i + 1:]:
            in_time = live_a.start <= live_b.end and live_b.start <= live_a.end
            in_memory = (a.offset < b.offset + b.nbytes and b.offset < a.offset + a.nbytes
                         and a.nbytes and b.nbytes)
            assert not (in_time and in_memory), (a, live_a, b, live_b)
