"""The static memory plan of a graph at one batch size.

Every value a node defines, and every scratch buffer a node's forward_into asks for, gets a
place (byte offset) in one arena, assigned once: two places overlap only when their live ranges
do not. Views (reshape) get no place; they read their source's. Values that update persistent
state (new parameters, optimizer state) are written in place into that state when no later node
reads the old value; the state has its own layout, independent of the batch size, in which each
update group's parameters and each of its optimizer slots are consecutive, so that the group's
update runs over flat buffers. The gradients an update group reads are placed consecutively in
the arena for the same reason.

Placement is greedy by size (largest first, lowest offset that fits), the classic heuristic of
TensorFlow Lite's arena planner.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field

import numpy as np

from ..ir import Graph, TensorType, Value
from ..ops import REGISTRY
from ..ops.optim import group_parts
from .liveness import live_ranges

ALIGNMENT = 64  # bytes: cache-line and SIMD alignment of every place


@dataclass(frozen=True)
class Place:
    offset: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


@dataclass
class MemoryPlan:
    batch: int
    arena_bytes: int = 0
    values: dict[int, Place] = field(default_factory=dict)  # value id -> place in the arena
    scratch: list[tuple[Place, ...]] = field(default_factory=list)  # per node
    in_place: dict[int, str] = field(default_factory=dict)  # value id -> state it is written to
    copied_updates: dict[str, Value] = field(default_factory=dict)  # written after the step

    def describe(self) -> str:
        return (f"batch {self.batch}: {len(self.values)} values and "
                f"{sum(len(s) for s in self.scratch)} scratch buffers in "
                f"{self.arena_bytes / 2**20:.2f} MB")


@dataclass
class StateLayout:
    """Where each updated state tensor (parameters, optimizer slots, buffers) lives."""

    places: dict[str, Place] = field(default_factory=dict)
    nbytes: int = 0


def state_layout(graph: Graph) -> StateLayout:
    """Each update group's parameters, and each of its optimizer slots, back to back (one flat
    run each); other updated state after them. Runs start aligned."""
    runs: list[list[Value]] = []
    for node in graph.nodes:
        if node.op == "update_group":
            params, _, _, _, slots = group_parts(node.attrs, node.inputs)
            runs += [list(params), *(list(slot) for slot in slots)]
    runs += [[graph.leaf(name)] for name in graph.updates]
    layout = StateLayout()
    for run in runs:
        run = [v for v in run if v.name in graph.updates and v.name not in layout.places]
        for value in run:
            place = Place(layout.nbytes, tuple(value.type.shape), value.type.dtype)
            layout.places[value.name] = place
            layout.nbytes += place.nbytes
        layout.nbytes = _aligned(layout.nbytes)
    return layout


def plan_memory(graph: Graph, batch: int) -> MemoryPlan:
    plan = MemoryPlan(batch)
    ranges = live_ranges(graph)
    _choose_in_place_updates(graph, plan, ranges)
    items = _items(graph, plan, ranges, batch)
    placed: list[tuple[int, int, int, int]] = []  # (offset, nbytes, start, end)
    for item in sorted(items, key=lambda i: -i.nbytes):
        offset = _lowest_fit(placed, item)
        placed.append((offset, item.nbytes, item.start, item.end))
        item.place_at(offset, plan)
        plan.arena_bytes = max(plan.arena_bytes, offset + item.nbytes)
    return plan


# --- what needs a place ---------------------------------------------------------------------


@dataclass
class _Item:
    """One block to place: a value, a scratch buffer, or a group of consecutive gradients."""

    nbytes: int
    start: int
    end: int
    members: list = field(default_factory=list)  # (target, relative offset, TensorType)

    def place_at(self, offset: int, plan: MemoryPlan) -> None:
        for target, relative, type_ in self.members:
            place = Place(offset + relative, tuple(type_.concrete(plan.batch)), type_.dtype)
            if isinstance(target, tuple):  # (node position, scratch index)
                position, index = target
                scratch = list(plan.scratch[position])
                scratch[index] = place
                plan.scratch[position] = tuple(scratch)
            else:
                plan.values[target] = place


def _items(graph: Graph, plan: MemoryPlan, ranges, batch: int) -> list[_Item]:
    grouped = _grouped_gradients(graph)
    items: list[_Item] = []
    plan.scratch = [()] * len(graph.nodes)
    for position, node in enumerate(graph.nodes):
        op = REGISTRY[node.op]
        if op.forward_into is not None and op.scratch is not None:
            types = op.scratch(node.attrs, *(v.type for v in node.inputs))
            plan.scratch[position] = (None,) * len(types)
            for index, type_ in enumerate(types):
                items.append(_single((position, index), type_, position, position, batch))
        if op.view:
            continue
        for value in node.outputs:
            if id(value) in plan.in_place or id(value) in grouped:
                continue
            live = ranges[id(value)]
            items.append(_single(id(value), value.type, live.start, live.end, batch))
    for group in {id(g): g for g in grouped.values()}.values():
        items.append(_group_item(group, ranges, batch))
    return items


def _single(target, type_: TensorType, start: int, end: int, batch: int) -> _Item:
    nbytes = value_bytes(type_, batch)
    return _Item(_aligned(nbytes), start, end, [(target, 0, type_)])


def _group_item(values: list[Value], ranges, batch: int) -> _Item:
    """Gradients placed back to back with no padding between them: one flat buffer."""
    members, offset = [], 0
    for value in values:
        members.append((id(value), offset, value.type))
        offset += value_bytes(value.type, batch)
    start = min(ranges[id(v)].start for v in values)
    end = max(ranges[id(v)].end for v in values)
    return _Item(_aligned(offset), start, end, members)


def _grouped_gradients(graph: Graph) -> dict[int, list[Value]]:
    """value id -> the gradient group it belongs to, for update groups whose gradients are all
    distinct values defined by non-view nodes of one dtype (otherwise the group updates tensor
    by tensor)."""
    defined_by = {id(v): node for node in graph.nodes for v in node.outputs}
    grouped: dict[int, list[Value]] = {}
    for node in graph.nodes:
        if node.op != "update_group":
            continue
        grads = list(group_parts(node.attrs, node.inputs)[1])
        ok = (len({id(g) for g in grads}) == len(grads)
              and len({g.type.dtype for g in grads}) == 1
              and all(id(g) in defined_by and not REGISTRY[defined_by[id(g)].op].view
                      and id(g) not in grouped for g in grads))
        if ok:
            for g in grads:
                grouped[id(g)] = grads
    return grouped


def _choose_in_place_updates(graph: Graph, plan: MemoryPlan, ranges) -> None:
    """An update is written straight into its state when the node defining it is the last to
    read the old state, and it is not a view; otherwise it is copied in after the step."""
    defined_at = {id(v): (position, node) for position, node in enumerate(graph.nodes)
                  for v in node.outputs}
    for name, value in graph.updates.items():
        old = graph.leaf(name)
        position, node = defined_at.get(id(value), (None, None))
        if (node is not None and not REGISTRY[node.op].view
                and ranges[id(old)].end <= position and old.type == value.type):
            plan.in_place[id(value)] = name
        else:
            plan.copied_updates[name] = value


# --- placement ------------------------------------------------------------------------------


def _lowest_fit(placed, item: _Item) -> int:
    """The lowest offset where `item` overlaps no placed block that is live at the same time."""
    busy = sorted((offset, offset + nbytes) for offset, nbytes, start, end in placed
                  if start <= item.end and item.start <= end)
    candidate = 0
    for low, high in busy:
        if candidate + item.nbytes <= low:
            break
        candidate = max(candidate, _aligned(high))
    return candidate


def value_bytes(type_: TensorType, batch: int) -> int:
    """Bytes of a value of this type at this batch size (a random key is uint32 words)."""
    # Python's integers: a spec's absurd sizes must give absurd numbers, not an overflow
    if type_.dtype == "rng":
        return math.prod(type_.concrete(batch)) * 4
    return math.prod(type_.concrete(batch)) * np.dtype(type_.dtype).itemsize


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGNMENT) * ALIGNMENT

