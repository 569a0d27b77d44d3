"""`nnrun summary`: per layer its inputs, output shape, kernel shape, parameters and
mult-adds (as torchinfo shows them); totals that are the sums of the rows; training memory.

FLOPs count 2 per multiply-accumulate of dense and convolution layers, other layers 0
(DESIGN.md section 6), so FLOPs = 2 x mult-adds. The training-memory estimate comes from
the static memory plan of the optimized training step at train.batch_size (or the training
samples, where the spec says they are fewer): what the executor allocates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .datasets import largest_step_batch
from .shapes import per_sample, size_of
from .tables import byte_size, table_text

FLOP_CONVENTION = ("FLOPs: 2 per multiply-accumulate (mult-add) of dense and convolution "
                   "layers; others 0")


@dataclass
class LayerRow:
    name: str
    type: str
    inputs: list[str]
    output_shape: list
    kernel: list | None
    params: int  # every stored value of the layer, so that the rows add up to the total
    trainable_params: int
    flops: int

    @property
    def mult_adds(self) -> int:
        return self.flops // 2


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
    # Of a run directory's checkpoint: its name and epoch, each weight's fraction of zeros
    # (pruning), and the fraction of zeros over all weights together.
    checkpoint: str | None = None
    checkpoint_epoch: int | None = None
    sparsity: dict[str, float] | None = None
    weights_sparsity: float | None = None

    def layer_sparsity(self, row: LayerRow) -> float | None:
        return (self.sparsity or {}).get(f"{row.name}.weight")

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    def as_json(self, details: bool = False) -> dict:
        """The keys issue 2 fixed (`summary --format json`); `details`: each layer's inputs,
        kernel, trainable parameters and mult-adds too, as the table shows them."""
        return {
            "name": self.name,
            "input_shape": self.input_shape,
            "output_shape": self.output_shape,
            "layers": [self._layer_json(row, details) for row in self.layers],
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "total_params": self.total_params,
            "flops_per_sample": self.flops_per_sample,
            "train_memory_bytes": self.train_memory_bytes,
            **({"checkpoint": self.checkpoint, "checkpoint_epoch": self.checkpoint_epoch,
                "weights_sparsity": self.weights_sparsity} if self.checkpoint else {}),
        }

    def _layer_json(self, row: LayerRow, details: bool) -> dict:
        data = layer_json(row) if details else {key: layer_json(row)[key] for key in LAYER_KEYS}
        if self.sparsity is not None:
            data["sparsity"] = self.layer_sparsity(row)
        return data


LAYER_KEYS = ("name", "type", "output_shape", "params", "flops")


def layer_json(row: LayerRow) -> dict:
    return {"name": row.name, "type": row.type, "inputs": row.inputs,
            "output_shape": row.output_shape, "kernel": row.kernel, "params": row.params,
            "trainable_params": row.trainable_params, "mult_adds": row.mult_adds,
            "flops": row.flops}


def summarize(spec, lowered, step) -> Summary:
    graph = lowered.graph
    rows = [LayerRow(info.name, info.type, info.inputs, per_sample(info.output.type),
                     list(info.kernel) if info.kernel else None, info.params,
                     info.trainable_params, info.flops)
            for info in lowered.layers]
    summary = Summary(
        name=spec.name or "",
        input_shape=per_sample(graph.inputs[0].type),
        output_shape=per_sample(lowered.prediction.type),
        layers=rows,
        trainable_params=sum(size_of(p.shape) for p in lowered.params.values()),
        non_trainable_params=sum(size_of(p.shape) for p in lowered.state.values()),
        flops_per_sample=sum(r.flops for r in rows),
        batch_size=largest_step_batch(spec),
    )
    summary.memory_parts = training_memory(step, summary.batch_size)
    summary.train_memory_bytes = sum(summary.memory_parts.values())
    return summary


def training_memory(step, batch: int) -> dict[str, int]:
    """Bytes a training step holds at batch size `batch`, from the static memory plan of the
    optimized step (what the executor allocates): parameters and buffers, optimizer state, the
    batch, the workspace (activations kept for the backward pass, gradients, convolution
    columns, scratch), each place reused by liveness, and the constants ops keep (OpDef.
    constants: max pooling's and the labels' position tables, dropout's index hashes)."""
    from .passes import optimize
    from .passes.memory_plan import plan_memory, state_layout, value_bytes

    graph = optimize(step.graph)
    layout = state_layout(graph)
    optimizer = sum(place.nbytes for name, place in layout.places.items()
                    if name in step.optimizer_state)
    held = sum(value_bytes(v.type, batch) for v in (*graph.params, *graph.state)
               if v.name not in layout.places)
    parts = {"parameters": layout.nbytes - optimizer + held, "optimizer_state": optimizer,
             "batch": sum(value_bytes(v.type, batch) for v in graph.inputs),
             "workspace": plan_memory(graph, batch).arena_bytes}
    constants = _constant_bytes(graph, batch)
    return {**parts, "constants": constants} if constants else parts


def _constant_bytes(graph, batch: int) -> int:
    """The arrays ops make once and keep, each key once (as common.cached_constant does)."""
    from .ops import REGISTRY
    from .passes.memory_plan import value_bytes

    kept = {}
    for node in graph.nodes:
        op = REGISTRY[node.op]
        if op.constants is not None:
            for key, type_ in op.constants(node.attrs, *(v.type for v in node.inputs)):
                kept[key] = value_bytes(type_, batch)
    return sum(kept.values())


SUMMARY_COLUMNS = ["layer", "type", "inputs", "output shape", "kernel", "params", "mult-adds",
                   "FLOPs"]


def summary_text(summary: Summary, width: int | None = None) -> str:
    """The summary as text; `width` wraps the table to a terminal's columns."""
    rows = [[row.name, row.type, ", ".join(row.inputs), shape_text(row.output_shape),
             shape_text(row.kernel) if row.kernel else "-", f"{row.params:,}", f"{row.mult_adds:,}",
             f"{row.flops:,}"] for row in summary.layers]
    total_mult_adds = sum(row.mult_adds for row in summary.layers)
    rows.append(["total", "", "", "", "", f"{summary.total_params:,}", f"{total_mult_adds:,}",
                 f"{summary.flops_per_sample:,}"])
    columns = SUMMARY_COLUMNS
    if summary.sparsity is not None:
        columns = [*columns, "sparsity"]
        for row, layer in zip(rows, summary.layers):
            row.append(_percent(summary.layer_sparsity(layer)))
        rows[-1].append("")
    lines = [f"model {summary.name}: input {summary.input_shape}",
             table_text(columns, rows, right=(5, 6, 7, 8), width=width, whole=(3, 4)).rstrip("\n"),
             _parameters_line(summary),
             f"forward FLOPs per sample: {summary.flops_per_sample:,} (2 x mult-adds)",
             FLOP_CONVENTION]
    parts = ", ".join(f"{_MEMORY_LABELS.get(k, k.replace('_', ' '))} {byte_size(v)}"
                      for k, v in summary.memory_parts.items())
    lines.append(f"training memory at batch size {summary.batch_size}: "
                 f"{byte_size(summary.train_memory_bytes)} ({parts})")
    if summary.checkpoint:
        lines.append(_sparsity_line(summary))
    return "\n".join(lines) + "\n"


# The workspace is the step's memory plan: the forward values the backward pass reads, and the
# gradients, which share its buffers.
_MEMORY_LABELS = {"workspace": "workspace (activations, gradients)"}


def _parameters_line(summary: Summary) -> str:
    if not summary.non_trainable_params:
        return f"parameters: {summary.total_params:,}, all trainable"
    return (f"parameters: {summary.total_params:,} = {summary.trainable_params:,} trainable + "
            f"{summary.non_trainable_params:,} non-trainable (batchnorm running statistics)")


def _sparsity_line(summary: Summary) -> str:
    checkpoint = f"checkpoint {summary.checkpoint} (epoch {summary.checkpoint_epoch})"
    if not summary.sparsity:  # no dense or convolution weight to count the zeros of
        return f"{checkpoint}: no weight tensor, so no sparsity"
    return (f"{checkpoint}: {summary.weights_sparsity:.2%} of the weights are "
            "zero (sparsity: the fraction of zeros in each layer's weight; biases are not pruned)")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def shape_text(shape: list) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
