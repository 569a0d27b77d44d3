"""`nnrun summary`: per layer output shape, parameters and FLOPs; totals; training memory.

FLOPs count 2 per multiply-accumulate of dense and convolution layers, other layers 0
(DESIGN.md section 6). The training-memory estimate is parameters + gradients + optimizer state
+ the forward values the backward pass keeps, at train.batch_size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ir import BATCH, Value
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


def _bytes(value: Value, batch: int) -> int:
    if value.type.dtype == "rng":
        return 0
    return size_of(value.type.concrete(batch)) * np.dtype(value.type.dtype).itemsize


def training_memory(step, batch: int) -> dict[str, int]:
    """Bytes of parameters, gradients, optimizer state and saved activations."""
    graph = step.graph
    params = sum(_bytes(v, batch) for v in graph.params)
    optimizer = sum(_bytes(v, batch) for v in graph.state if v.name in step.optimizer_state)
    buffers = sum(_bytes(v, batch) for v in graph.state if v.name not in step.optimizer_state)
    return {"parameters": params + buffers, "gradients": params, "optimizer_state": optimizer,
            "activations": _saved_activations(graph, batch)}


def _saved_activations(graph, batch: int) -> int:
    """Forward values (batch-sized) that some backward node reads: what backprop must keep."""
    loss = graph.outputs.get("loss")
    nodes = graph.nodes
    split = next((i for i, n in enumerate(nodes) if loss in n.outputs), len(nodes)) + 1
    forward = {id(v): v for n in nodes[:split] for v in n.outputs}
    forward.update({id(v): v for v in graph.inputs})
    saved = {id(v): v for n in nodes[split:] for v in n.inputs if id(v) in forward}
    return sum(_bytes(v, batch) for v in saved.values() if BATCH in v.type.shape)


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
