"""The op registry: each primitive op is declared once, with its attributes, shape rule, forward
computation (written against the backend's array module) and gradient rule.

An op family module (activation.py, linear.py, ...) calls `register(OpDef(...))` at import time;
importing this package imports every family, so REGISTRY is complete.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Callable

from .common import array_type


@dataclass(frozen=True)
class NoAttrs:
    pass


@dataclass(frozen=True)
class OpDef:
    name: str
    attrs: type = NoAttrs
    # shape(attrs, *input_types) -> TensorType, or a tuple of them for an op of several outputs
    shape: Callable[..., Any] | None = None
    # forward(be, attrs, *arrays) -> array, or a tuple of arrays for several outputs
    forward: Callable[..., Any] | None = None
    # vjp(gb, node, g) -> one gradient Value (or None) per input; None: not differentiable
    vjp: Callable[..., Any] | None = None
    # flops(attrs, input_types, output_type) -> forward FLOPs per sample (DESIGN.md section 6)
    flops: Callable[..., int] | None = None
    doc: str = ""
    # forward_into(be, attrs, out, *arrays): the forward written into preallocated buffers, `out`
    # being the tuple (*outputs, *scratch). The plain forward stays the reference it must match.
    forward_into: Callable[..., None] | None = None
    # scratch(attrs, *input_types) -> TensorTypes of temporary buffers forward_into needs
    scratch: Callable[..., tuple] | None = None
    # constants(attrs, *input_types) -> [(key, TensorType)]: the batch-sized arrays forward_into
    # makes once and keeps (common.cached_constant, under that key): position tables and the
    # like, outside the memory plan, counted in the training-memory estimate.
    constants: Callable[..., list] | None = None
    # The output is a view of the first input (reshape): the memory plan gives it no buffer.
    view: bool = False
    # Positions of inputs whose buffer the first output may take when no later node reads
    # them (compiler/passes/memory_plan.py): forward_into reads each element of such an input
    # before it writes the same element of the output, and writes no other buffer over it.
    overwrites: tuple[int, ...] = ()
    # forward_into treats each sample on its own: an executor may run it on slices of the batch
    # axis (axis 0 of every batch-sized input, output and scratch buffer) in parallel.
    batch_parallel: bool = False
    # batch_role(attrs, input_types, output_types) -> "sliced", "summed" or None: how the node
    # may run on slices of the batch within a batch segment (compiler/passes/batch_segments.py),
    # for ops whose batch axis is not axis 0 of every value, or whose output sums over samples.
    # Without it, a batch_parallel op whose values are all batch-first is "sliced".
    batch_role: Callable[..., str | None] | None = None
    # (each_slice, whole) for a "summed" op whose forward_into first works sample by sample:
    # each_slice(be, attrs, out, *inputs) on every slice of the batch (writing only batched
    # scratch), then whole(be, attrs, out, *inputs) on the whole batch, do what forward_into
    # does, in the same order of operations. A batch segment runs the first part with its
    # slices; without it a summed node runs whole, after them.
    batch_parts: tuple[Callable[..., None], Callable[..., None]] | None = None
    # bind(be, attrs, out, *inputs) -> a function of the inputs, or None: forward_into with the
    # work that depends only on the (fixed) buffers done once, when a plan is made. Inputs the
    # executor feeds anew each run are None here.
    bind: Callable[..., Any] | None = None
    # onnx(ox, node) -> the ONNX name of each output: the op as ONNX nodes, emitted through
    # the exporter `ox` (compiler/export_onnx.py), or ox.refuse(reason) for attributes ONNX
    # cannot express. Ops an inference graph never holds give `onnx_refusal` instead: why
    # not, said by `nnrun export` when such an op is met.
    onnx: Callable[..., Any] | None = None
    onnx_refusal: str = ""
    # kink(attrs) -> whether the op is not differentiable everywhere (relu at 0, a max pool's
    # ties, mae's |d| at 0): where gradcheck's central differences may straddle two slopes.
    kink: Callable[..., bool] | None = None


def always(attrs) -> bool:
    """OpDef.kink of an op whose kink does not depend on its attributes."""
    return True


REGISTRY: dict[str, OpDef] = {}

# Ops whose outputs lie within their first input's range (a copy, a zero padding, a window's
# maximum or mean, a relu): probabilities stay probabilities through them.
RANGE_KEEPING = frozenset({"reshape", "slice", "pad", "relu", "max_pool1d", "max_pool2d",
                           "avg_pool1d", "avg_pool2d", "upsample1d", "upsample2d"})

# What an op's batch_role returns (compiler/passes/batch_segments.py).
SLICED = "sliced"  # every batched value cut along its batch axis gives the slice's outputs
SUMMED = "summed"  # the outputs (no batch axis) are sums over the samples


def forward_through_into(name: str):
    """A plain forward that is the op's forward_into (an op only the optimizing passes emit, or
    one whose plain form would only repeat that arithmetic): outputs and scratch allocated from
    the op's own shape and scratch rules. (Its reference is the independent one in
    tests/ops/cases.py.)"""

    def forward(be, attrs, *arrays):
        op = REGISTRY[name]
        types = [array_type(a) for a in arrays]
        outputs = op.shape(attrs, *types)
        several = isinstance(outputs, tuple)
        buffers = [be.xp.empty(t.shape, dtype=t.dtype) for t in
                   (*(outputs if several else (outputs,)),
                    *(op.scratch(attrs, *types) if op.scratch else ()))]
        op.forward_into(be, attrs, tuple(buffers), *arrays)
        count = len(outputs) if several else 1
        return tuple(buffers[:count]) if several else buffers[0]

    return forward


def register(op: OpDef) -> OpDef:
    if op.name in REGISTRY:
        raise ValueError(f"op '{op.name}' is declared twice")
    REGISTRY[op.name] = op
    return op


def attrs_text(attrs: Any) -> str:
    """`stride=(1,1) pad=(2,2)`: attributes in declaration order, tuples without spaces; an
    attribute that is itself attributes (update_group's update rule) is shown inline."""
    if attrs is None:
        return ""
    parts = []
    for f in fields(attrs):
        value = getattr(attrs, f.name)
        if is_dataclass(value):
            parts.append(attrs_text(value))
        elif not _is_quiet(f.name, value):
            parts.append(f"{f.name}={_value_text(value)}")
    return " ".join(p for p in parts if p)


def _is_quiet(name: str, value: Any) -> bool:
    """False flags, unset options and a dilation of 1 say nothing; leaving them out keeps
    lines short."""
    return value is False or value is None or (name == "dilation" and set(value) == {1})


def _value_text(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ",".join(_value_text(v) for v in value) + ")"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _import_families() -> None:
    from . import (activation, collective, conv, linear, loss, norm, optim, pool,  # noqa: F401
                   resize, shape)


_import_families()
