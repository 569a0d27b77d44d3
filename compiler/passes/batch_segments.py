"""Runs of consecutive nodes that treat each sample on its own: a step's batch segments.

With several worker threads the planned executor runs each segment once per slice of the batch,
the slices in parallel (runtime/executor.py), so that a worker is woken once per segment rather
than once per kernel. Waking a thread is what a split costs on a small machine (60-300 us on the
benchmarks' 2-vCPU virtual machine, docs/benchmarks.md), and LeNet-5's step holds a dozen
kernels worth splitting but two large segments: its convolutional layers forward, and
backward.

A node belongs to a segment in one of two roles:
- SLICED: every value with the batch axis (inputs, outputs, scratch) cut along that axis gives
  the slice's outputs (convolutions, pooling, activations);
- SUMMED: its outputs have no batch axis and are sums over the samples (a weight or bias
  gradient). It runs on the whole batch once the slices are done, as it would without them, so
  that the sum is taken in the same order at any thread count; an op whose sum follows a
  per-sample part (a convolution's weight gradient: one product per sample) runs that part
  with the slices (OpDef.batch_parts).
A node that reads a SUMMED output of its own segment starts a new one. A dense layer's product
is not cut by samples: BLAS may round a row otherwise when it gets fewer rows.

The memory plan keeps every value and scratch buffer a segment touches alive for the whole
segment (`widened`): its slices run at the same time, so a place that node order would free and
reuse within the segment may still be read by the other slice.
"""

from __future__ import annotations

from ..ir import BATCH, Graph, TensorType
from ..ops import REGISTRY, SLICED, SUMMED
from .liveness import LiveRange


def batch_axis(type_: TensorType) -> int | None:
    """The position of the batch axis in a value's shape (None: it has none)."""
    return type_.shape.index(BATCH) if BATCH in type_.shape else None


def batch_role(node) -> str | None:
    """SLICED, SUMMED or None (the node runs on the whole batch, outside any segment)."""
    op = REGISTRY[node.op]
    inputs = tuple(v.type for v in node.inputs)
    outputs = tuple(v.type for v in node.outputs)
    if op.view:
        every = (*inputs, *outputs)
        return SLICED if all(_batch_first(t) for t in every) and all(map(_batched, every)) else None
    if op.forward_into is None:
        return None
    scratch = scratch_types(node)
    if any(t.shape.count(BATCH) > 1 for t in (*inputs, *outputs, *scratch)):
        return None
    if op.batch_role is not None:
        role = op.batch_role(node.attrs, inputs, outputs)
    elif op.batch_parallel and all(_batch_first(t) for t in (*inputs, *outputs, *scratch)):
        role = SLICED
    else:
        return None
    if role == SLICED and all(map(_batched, outputs)) and any(map(_batched, inputs)):
        return SLICED
    if role == SUMMED and not any(map(_batched, outputs)) and any(map(_batched, inputs)):
        return SUMMED
    return None


# A segment whose slices write fewer bytes than this (outputs and scratch, at the plan's batch
# size) runs node by node: waking a worker would cost more than it saves (as
# backends/base.py's PARALLEL_MIN_BYTES for a single kernel).
SEGMENT_MIN_BYTES = 1 << 20


def batch_segments(graph: Graph) -> list[range]:
    """The graph's segments, as ranges of node positions, in order; each holds at least one
    node that runs by slices (not only views and sums)."""
    segments: list[range] = []
    start, summed, computes = None, set(), False

    def close(end: int) -> None:
        if start is not None and computes:
            segments.append(range(start, end))

    for position, node in enumerate(graph.nodes):
        role = batch_role(node)
        if role is None or any(id(v) in summed for v in node.inputs):
            close(position)
            start, summed, computes = None, set(), False
        if role is None:
            continue
        if start is None:
            start = position
        op = REGISTRY[node.op]
        computes = computes or (not op.view if role == SLICED else op.batch_parts is not None)
        if role == SUMMED:
            summed.update(id(v) for v in node.outputs)
    close(len(graph.nodes))
    return segments


def scratch_types(node, batch: int | None = None) -> tuple[TensorType, ...]:
    """The scratch buffers the node's forward_into asks for; with `batch`, for inputs of that
    batch size (a scratch buffer may depend on it: a convolution's chunk of samples)."""
    op = REGISTRY[node.op]
    if op.scratch is None:
        return ()
    inputs = (v.type if batch is None else TensorType(v.type.concrete(batch), v.type.dtype)
              for v in node.inputs)
    return tuple(op.scratch(node.attrs, *inputs))


def sliced_types(node, batch: int | None = None) -> list[TensorType]:
    """The buffers a node's slices write: its outputs and scratch if it is SLICED, the scratch
    of its per-sample part if it is SUMMED with one, else none (scratch at `batch`, if given)."""
    op, role = REGISTRY[node.op], batch_role(node)
    if op.view or role is None or (role == SUMMED and op.batch_parts is None):
        return []
    scratch = list(scratch_types(node, batch))
    return scratch if role == SUMMED else [v.type for v in node.outputs] + scratch


def segment_spans(segments: list[range]) -> dict[int, tuple[int, int]]:
    """node position -> the first and last positions of its segment (nodes in one)."""
    return {position: (segment.start, segment.stop - 1)
            for segment in segments for position in segment}


def widened(ranges: dict[int, LiveRange],
            spans: dict[int, tuple[int, int]]) -> dict[int, LiveRange]:
    """Live ranges that cover the whole of every segment they reach into (spans:
    segment_spans)."""
    return {key: LiveRange(spans.get(live.start, (live.start,))[0],
                           spans.get(live.end, (live.end, live.end))[1])
            for key, live in ranges.items()}


def _batched(type_: TensorType) -> bool:
    return BATCH in type_.shape


def _batch_first(type_: TensorType) -> bool:
    return BATCH not in type_.shape or type_.shape.index(BATCH) == 0
