"""Gradient norms per layer, for `train.log_grad_norms` (vanishing and exploding gradients).

The training step's graph outputs each parameter's gradient norm, grad_norm/<param> (before
clipping; compiler/step.py): whichever executor runs the step, these are plain outputs. A
layer's norm is the L2 norm of all its parameters' gradients together, sqrt(sum of their
squared norms). Each epoch's metrics row gains the mean of every layer's norm over the epoch's
steps, `layer_grad_norm/<layer>`, and the smallest and largest of them (`grad_norm_min`,
`grad_norm_max`, with the layers' names); with `{every_steps: K}`, every K-th step's norms go
to grad-norms.jsonl, one row per step, and so does the step where the loss diverged.
"""

from __future__ import annotations

import math

PREFIX = "grad_norm/"
LAYER_PREFIX = "layer_grad_norm/"


class GradNormLog:
    def __init__(self, setting, param_layers: dict[str, str]):
        """`setting`: the spec's train.log_grad_norms; `param_layers`: parameter -> layer."""
        self.every = getattr(setting, "every_steps", None)
        self.param_layers = param_layers
        self.step_rows: list[dict] = []  # those not yet written (take_step_rows)
        self.sums: dict[str, float] = {}
        self.steps = 0

    def add(self, outputs: dict, step: int, epoch: int, batch: int, loss: float,
            batches: int) -> None:
        """A step's norms; `batch` of the epoch's `batches` (where a plot places the row)."""
        params = {name[len(PREFIX):]: float(value) for name, value in outputs.items()
                  if name.startswith(PREFIX)}
        layers = self.layer_norms(params)
        if math.isfinite(loss):  # the epoch's means are those of the steps that trained
            self.steps += 1
            for layer, norm in layers.items():
                self.sums[layer] = self.sums.get(layer, 0.0) + norm
        if (self.every and step % self.every == 0) or not math.isfinite(loss):
            row = {"step": step, "epoch": epoch, "batch": batch, "batches": batches,
                   "loss": loss}
            row.update({LAYER_PREFIX + layer: norm for layer, norm in layers.items()})
            row.update({PREFIX + name: norm for name, norm in params.items()})
            self.step_rows.append(row)

    def layer_norms(self, params: dict[str, float]) -> dict[str, float]:
        squares: dict[str, float] = {}
        for name, norm in params.items():
            layer = self.param_layers[name]
            squares[layer] = squares.get(layer, 0.0) + norm * norm
        return {layer: math.sqrt(total) for layer, total in squares.items()}

    def epoch_columns(self) -> dict:
        """The epoch's per-layer means, their extremes; starts the next epoch's sums."""
        means = {layer: total / self.steps for layer, total in self.sums.items()} \
            if self.steps else {}
        self.sums, self.steps = {}, 0
        if not means:
            return {}
        smallest, largest = min(means, key=means.get), max(means, key=means.get)
        return {"grad_norm_min": means[smallest], "grad_norm_min_layer": smallest,
                "grad_norm_max": means[largest], "grad_norm_max_layer": largest,
                **{LAYER_PREFIX + layer: mean for layer, mean in means.items()}}

    def take_step_rows(self) -> list[dict]:
        """The per-step rows since the last call, to append to grad-norms.jsonl (a run of many
        steps does not hold every row it logged)."""
        rows, self.step_rows = self.step_rows, []
        return rows
