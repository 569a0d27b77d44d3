"""`nnrun summary`: per layer output shape, parameters and FLOPs; totals; training memory.

FLOPs count 2 per multiply-accumulate of dense and convolution layers, other layers 0
(DESIGN.md section 6). The training-memory estimate comes from the static memory plan of the
optimized training step at train.batch_size: what the executor allocates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ir import Value
from .shapes import per_sample, size_of

FLOP_CONVENTION = "FLOPs: 2 per multiply-accumulate of dense and convolution layers; others 0"


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: list
    params: int
    flops: int


@dataclass
class Summary:
    name: str
    input_shape: list
    output_shape: list
    layers: list[LayerRow] = field(default_factory=list)
    trainable_params: int = 0
    non_trainable_params: int = 0
    flops_per_sample: int = 0
    train_memory_bytes: int = 0
    memory_parts: dict = field(default_factory=dict)
    batch_size: int = 0

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "input_shape": self.input_shape,
            "output_shape": self.output_shape,
            "layers": [{"name": r.name, "type": r.type, "output_shape": r.output_shape,
                        "params": r.params, "flops": r.flops} for r in self.layers],
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "total_params": self.total_params,
            "flops_per_sample": self.flops_per_sample,
            "train_memory_bytes": self.train_memory_bytes,
        }


def summarize(spec, lowered, step) -> Summary:
    graph = lowered.graph
    rows = [LayerRow(info.name, info.type, per_sample(info.output.type), info.params, info.flops)
            for info in lowered.layers]
    summary = Summary(
        name=spec.name or "",
        input_shape=per_sample(graph.inputs[0].type),
        output_shape=per_sample(lowered.prediction.type),
        layers=rows,
        trainable_params=sum(size_of(p.shape) for p in lowered.params.values()),
        non_trainable_params=sum(size_of(p.shape) for p in lowered.state.values()),
        flops_per_sample=sum(r.flops for r in rows),
        batch_size=spec.train.batch_size,
    )
    summary.memory_parts = training_memory(step, spec.train.batch_size)
    summary.train_memory_bytes = sum(summary.memory_parts.values())
    return summary


def training_memory(step, batch: int) -> dict[str, int]:
    """Bytes a training step holds at batch size `batch`, from the static memory plan of the
    optimized step (what the executor allocates): parameters and buffers, optimizer state, the
    batch, and the workspace (activations kept for the backward pass, gradients, convolution
    columns, scratch), each place reused by liveness."""
    from .passes import optimize
    from .passes.memory_plan import plan_memory, state_layout

    graph = optimize(step.graph)
    layout = state_layout(graph)
    optimizer = sum(place.nbytes for name, place in layout.places.items()
                    if name in step.optimizer_state)
    held = sum(_bytes(v, batch) for v in graph.params if v.name not in layout.places)
    held += sum(_bytes(v, batch) for v in graph.state if v.name not in layout.places)
    return {"parameters": layout.nbytes - optimizer + held, "optimizer_state": optimizer,
            "batch": sum(_bytes(v, batch) for v in graph.inputs),
            "workspace": plan_memory(graph, batch).arena_bytes}


def _bytes(value: Value, batch: int) -> int:
    if value.type.dtype == "rng":
        return 0
    return size_of(value.type.concrete(batch)) * np.dtype(value.type.dtype).itemsize


def summary_text(summary: Summary) -> str:
    header = f"{'layer':<18} {'type':<15} {'output shape':<16} {'params':>10} {'FLOPs':>13}"
    lines = [f"model {summary.name}: input {summary.input_shape}", header, "-" * len(header)]
    for row in summary.layers:
        lines.append(f"{row.name:<18} {row.type:<15} {str(row.output_shape):<16} "
                     f"{row.params:>10,} {row.flops:>13,}")
    lines.append("-" * len(header))
    lines.append(f"{'total':<51} {summary.total_params:>10,} {summary.flops_per_sample:>13,}")
    lines.append(f"trainable parameters: {summary.trainable_params:,}; "
                 f"non-trainable: {summary.non_trainable_params:,}")
    lines.append(FLOP_CONVENTION)
    parts = ", ".join(f"{k.replace('_', ' ')} {_mb(v)}" for k, v in summary.memory_parts.items())
    lines.append(f"training memory at batch size {summary.batch_size}: "
                 f"{_mb(summary.train_memory_bytes)} ({parts})")
    return "\n".join(lines) + "\n"


def _mb(value: int) -> str:
    return f"{value / 2**20:.2f} MB"
