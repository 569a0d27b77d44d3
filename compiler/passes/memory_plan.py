"""The static memory plan of a graph at one batch size.

Every value a node defines, and every scratch buffer a node's forward_into asks for, gets a
place (byte offset) in one arena, assigned once: two places overlap only when their live ranges
do not (a batch segment's values and scratch buffers live for the whole segment:
batch_segments.py), or when an elementwise op writes its output over an input that no later
node reads (OpDef.overwrites: the two values then share one place, and the data stays in the
cache). Views (reshape) get no place; they read their source's. Values that update
persistent state (new parameters, optimizer state) are written in place into that state when no
later node reads the old value; the state has its own layout, independent of the batch size, in
which each update group's parameters and each of its optimizer slots are consecutive, so that
the group's update runs over flat buffers. The gradients an update group reads are placed
consecutively in the arena for the same reason.

Placement is greedy by size (largest first, lowest offset that fits), the classic heuristic of
TensorFlow Lite's arena planner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..ir import Graph, TensorType, Value
from ..ops import REGISTRY, SLICED
from ..ops.optim import group_parts
from ..tables import byte_size
from . import batch_segments as segments_pass
from .liveness import live_ranges
from .rewrite import producers

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
    # value id -> the id of the value whose place it takes, written over it (OpDef.overwrites)
    overwrites: dict[int, int] = field(default_factory=dict)
    # the batch segments worth running by slices at this batch size (batch_segments.py)
    segments: list[range] = field(default_factory=list)

    def describe(self) -> str:
        over = f" ({len(self.overwrites)} written over an input)" if self.overwrites else ""
        return (f"batch {self.batch}: {len(self.values)} values{over} and "
                f"{sum(len(s) for s in self.scratch)} scratch buffers in "
                f"{byte_size(self.arena_bytes)}")


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
    leaves = {value.name: value for value in graph.leaves()}
    runs += [[leaves[name]] for name in graph.updates]
    layout = StateLayout()
    for run in runs:
        run = [v for v in run if v.name in graph.updates and v.name not in layout.places]
        for value in run:
            place = Place(layout.nbytes, tuple(value.type.shape), value.type.dtype)
            layout.places[value.name] = place
            layout.nbytes += place.nbytes
        layout.nbytes = _aligned(layout.nbytes)
    return layout


def plan_memory(graph: Graph, batch: int, segments: bool = True) -> MemoryPlan:
    """segments: plan for batch segments run by slices (a CPU's worker threads; a GPU
    backend never runs them, and its plan shares the places a segment would keep apart)."""
    plan = MemoryPlan(batch)
    if segments:
        plan.segments = [s for s in segments_pass.batch_segments(graph)
                         if sliced_bytes(graph, s, batch) >= segments_pass.SEGMENT_MIN_BYTES]
    spans = segments_pass.segment_spans(plan.segments)
    node_order = live_ranges(graph)
    ranges = segments_pass.widened(node_order, spans)
    _choose_in_place_updates(graph, plan, ranges)
    grouped = _grouped_gradients(graph)
    plan.overwrites = _overwrites(graph, plan, node_order, grouped)
    items = sorted(_items(graph, plan, ranges, spans, batch, grouped), key=lambda i: -i.nbytes)
    placed = _Placed(len(items), sum(item.nbytes for item in items))
    for item in items:
        offset = placed.lowest_fit(item)
        placed.add(offset, item)
        item.place_at(offset, plan)
        plan.arena_bytes = max(plan.arena_bytes, offset + item.nbytes)
    return plan


def sliced_bytes(graph: Graph, segment: range, batch: int) -> int:
    """Bytes a segment's slices write together (outputs and scratch) at this batch size."""
    return sum(value_bytes(type_, batch) for position in segment
               for type_ in segments_pass.sliced_types(graph.nodes[position], batch))


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


def _items(graph: Graph, plan: MemoryPlan, ranges, spans, batch: int, grouped) -> list[_Item]:
    sharing: dict[int, list[int]] = {}  # value id -> the values written over it, in order
    for value, taken in plan.overwrites.items():
        sharing.setdefault(taken, []).append(value)
    items: list[_Item] = []
    plan.scratch = [()] * len(graph.nodes)
    for position, node in enumerate(graph.nodes):
        op = REGISTRY[node.op]
        if op.forward_into is not None and op.scratch is not None:
            types = segments_pass.scratch_types(node, batch)
            plan.scratch[position] = (None,) * len(types)
            for index, type_ in enumerate(types):
                start, end = spans.get(position, (position, position))
                items.append(_single((position, index), type_, start, end, batch))
        if op.view:
            continue
        for value in node.outputs:
            if id(value) in plan.in_place or id(value) in grouped or id(value) in plan.overwrites:
                continue
            item = _single(id(value), value.type, ranges[id(value)].start,
                           ranges[id(value)].end, batch)
            for key in sharing.get(id(value), ()):
                item.members.append((key, 0, value.type))
                item.start = min(item.start, ranges[key].start)
                item.end = max(item.end, ranges[key].end)
            items.append(item)
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
    defined_by = producers(graph)
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


def _overwrites(graph: Graph, plan: MemoryPlan, ranges, grouped) -> dict[int, int]:
    """value id -> the id of the value whose place it takes: a node's first output written over
    one of the inputs its op allows (OpDef.overwrites) when that input is the same type, has a
    place of its own in the arena, is read by no later node (ranges: in node order) and by the
    node itself at no other input. A chain of such nodes shares one place. In a batch segment
    the input must be read by no node that runs on the whole batch after the slices (a sum):
    that node would read it overwritten."""
    defined_by = producers(graph)
    read_after_slices = _read_after_slices(graph, plan.segments)
    seen_as = {}  # value id -> its id and the ids of its views (reshapes), which read its place
    for node in graph.nodes:
        if REGISTRY[node.op].view:
            source = id(node.inputs[0])
            seen_as.setdefault(source, {source}).add(id(node.output))
            seen_as[id(node.output)] = seen_as[source]
    taken: dict[int, int] = {}
    for position, node in enumerate(graph.nodes):
        op = REGISTRY[node.op]
        if not op.overwrites:
            continue
        output = node.outputs[0]
        if id(output) in plan.in_place or id(output) in grouped:
            continue
        for index in op.overwrites:
            value = node.inputs[index]
            source = defined_by.get(id(value))
            keys = seen_as.get(id(value), {id(value)})  # the value, or a view of it
            if (source is None or REGISTRY[source.op].view or value.type != output.type
                    or ranges[id(value)].end != position or id(value) in grouped
                    or id(value) in plan.in_place
                    or any(id(v) in keys for i, v in enumerate(node.inputs)
                           if i not in op.overwrites)
                    or keys & read_after_slices.get(position, set())):
                continue
            taken[id(output)] = taken.get(id(value), id(value))
            break
    return taken


def _read_after_slices(graph: Graph, segments: list[range]) -> dict[int, set[int]]:
    """node position -> the ids of the values that the nodes of its segment which do not run
    with the slices read (once per segment: asked of every node, it made long chains
    quadratic)."""
    found = {}
    for segment in segments:
        read = {id(v) for p in segment if segments_pass.batch_role(graph.nodes[p]) != SLICED
                for v in graph.nodes[p].inputs}
        found.update(dict.fromkeys(segment, read))
    return found


def _choose_in_place_updates(graph: Graph, plan: MemoryPlan, ranges) -> None:
    """An update is written straight into its state when the node defining it is the last to
    read the old state, and it is not a view; otherwise it is copied in after the step."""
    defined_at = {id(v): (position, node) for position, node in enumerate(graph.nodes)
                  for v in node.outputs}
    leaves = {leaf.name: leaf for leaf in graph.leaves()}
    for name, value in graph.updates.items():
        old = leaves[name]
        position, node = defined_at.get(id(value), (None, None))
        if (node is not None and not REGISTRY[node.op].view
                and ranges[id(old)].end <= position and old.type == value.type):
            plan.in_place[id(value)] = name
        else:
            plan.copied_updates[name] = value


# --- placement ------------------------------------------------------------------------------


class _Placed:
    """The blocks placed so far, as arrays: finding where the next one fits is then a few
    NumPy passes instead of a Python loop over every block (a net of 1,000 layers places
    5,000 blocks). Sizes beyond int64 (a spec's absurd model) take the Python loop."""

    def __init__(self, count: int, total_bytes: int):
        self.count = 0
        self.exact = total_bytes >= 2**62
        kind = object if self.exact else np.int64
        self.lows, self.highs, self.starts, self.ends = (np.empty(count, kind) for _ in range(4))

    def add(self, offset: int, item: _Item) -> None:
        n = self.count
        self.lows[n], self.highs[n] = offset, offset + item.nbytes
        self.starts[n], self.ends[n] = item.start, item.end
        self.count += 1

    def lowest_fit(self, item: _Item) -> int:
        """The lowest offset where `item` overlaps no placed block that is live at the same
        time: the first gap, in order of offset, that it fits in."""
        n = self.count
        live = (self.starts[:n] <= item.end) & (item.start <= self.ends[:n])
        lows, highs = self.lows[:n][live], self.highs[:n][live]
        if self.exact:
            return _first_gap(sorted(zip(lows, highs)), item.nbytes)
        if not len(lows):
            return 0
        order = np.lexsort((highs, lows))  # by low, then high
        lows, highs = lows[order], highs[order]
        # the candidate after each busy block: the furthest aligned end so far
        reach = np.maximum.accumulate(-(-highs // ALIGNMENT) * ALIGNMENT)
        before = np.concatenate(([0], reach[:-1]))
        fits = np.flatnonzero(before + item.nbytes <= lows)
        return int(before[fits[0]]) if len(fits) else int(reach[-1])


def _first_gap(busy: list[tuple[int, int]], nbytes: int) -> int:
    candidate = 0
    for low, high in busy:
        if candidate + nbytes <= low:
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

