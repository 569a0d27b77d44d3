"""The regularisation in force, as `nnrun train` prints it before its first epoch: the course's
data augmentation, dropout, weight decay, early stopping and pruning, and label smoothing. A
run's output then says how it was regularised, not only its spec; a run without any prints
nothing."""

from __future__ import annotations

import numpy as np

from nnrun.compiler.checks import default_mode
from nnrun.compiler.schema import BaseModel, default_layer_names

from .pruning import MagnitudePruner


def regularisation_lines(spec, pruned: float = 0.0) -> list[str]:
    """`pruned`: the sparsity a resumed run's masks already have (0 for a new run)."""
    ramp = _Ramp(spec.train.pruning, spec.train.epochs, pruned)
    items = [(name, text) for name, text in (
        ("augmentation", _augmentation(spec)), ("dropout", _dropout(spec.model.layers)),
        ("weight decay", _weight_decay(spec.optimizer)),
        ("label smoothing", _label_smoothing(spec.loss)),
        ("early stopping", _early_stopping(spec.train.early_stopping, ramp)),
        ("pruning", ramp.text())) if text]
    if not items:
        return []
    width = max(len(name) for name, _ in items)
    return ["regularisation:", *(f"  {name:<{width}}  {text}" for name, text in items)]


def _augmentation(spec) -> str | None:
    augment = spec.data.augment if spec.data is not None else []
    if not augment:
        return None
    return "training batches only: " + ", ".join(_fields(step) for step in augment)


def _dropout(layers) -> str | None:
    rates = [f"{name} {layer.rate:g}" for name, layer in zip(default_layer_names(layers), layers)
             if layer.type == "dropout" and layer.rate > 0]
    if not rates:
        return None
    return f"{', '.join(rates)} (in training steps; kept units scaled by 1/(1 - rate))"


def _weight_decay(optimizer) -> str | None:
    decay = getattr(optimizer, "weight_decay", 0.0)
    if not decay:
        return None
    if optimizer.type == "adamw":
        return f"{decay:g} on every parameter, decoupled: p = p * (1 - lr * {decay:g}) each step"
    return f"{decay:g} on every parameter, as an L2 penalty: g = g + {decay:g} * p each step"


def _label_smoothing(loss) -> str | None:
    smoothing = getattr(loss, "label_smoothing", 0.0)
    return f"{smoothing:g} of each target spread over the classes" if smoothing else None


def _early_stopping(early_stopping, ramp: _Ramp) -> str | None:
    if early_stopping is None:
        return None
    if ramp.pruning is not None and not ramp.reaches_target():
        return ("off in this run: it waits for pruning to reach its target sparsity, which this "
                f"run does not reach by its last epoch ({ramp.epochs})")
    monitor = early_stopping.monitor
    mode = early_stopping.mode if early_stopping.mode != "auto" else default_mode(monitor)
    better = "lower" if mode == "min" else "higher"
    restore = ("restores the best epoch's weights" if early_stopping.restore_best
               else "keeps the last epoch's weights")
    patience = early_stopping.patience
    waits = ("; not while pruning ramps up: the best epoch is counted from the first at the "
             "target sparsity" if ramp.pruning is not None and not ramp.at_target() else "")
    return (f"stops after {patience} epoch{'s' * (patience != 1)} without a better {monitor} "
            f"({better} by more than {early_stopping.min_delta:g}){waits}; {restore}")


class _Ramp:
    """train.pruning over this run's epochs, as runtime/pruning.py ramps it: the level never
    goes down, so a resumed run's masks keep the sparsity they reached."""

    def __init__(self, pruning, epochs: int, pruned: float):
        self.pruning, self.epochs, self.pruned = pruning, epochs, pruned
        self.pruner = MagnitudePruner(pruning, [], epochs, np) if pruning is not None else None

    def at_target(self) -> bool:
        return self.pruner.reaches_target(self.pruned)

    def reaches_target(self) -> bool:
        return self.pruner.reaches_target(max(self.pruned, self.pruner.sparsity_at(self.epochs)))

    def text(self) -> str | None:
        pruning, epochs, pruned = self.pruning, self.epochs, self.pruned
        if pruning is None:
            return None
        target = _percent(pruning.target_sparsity)
        final = max(pruned, self.pruner.sparsity_at(epochs))
        if final <= 0:
            why = (f"from epoch {pruning.start_epoch}: after this run's last epoch ({epochs})"
                   if pruning.start_epoch > epochs else "a target of 0")
            return f"{pruning.type}, to {target}, {why}, so no weight is pruned"
        if final == pruned:  # a resumed run whose masks prune all this run will
            short = "" if self.at_target() else f" (short of the target, {target})"
            return (f"{pruning.type}: the smallest {_measured_percent(pruned)} of each weight "
                    f"tensor (not biases) zeroed already, and kept at zero{short}")
        end = max(self.pruner.end_epoch, pruning.start_epoch)
        since = f", from the {_measured_percent(pruned)} zeroed already" if pruned > 0 else ""
        short = (f", reaching {_measured_percent(final)} by this run's last epoch ({epochs})"
                 if not self.reaches_target() else "")
        return (f"{pruning.type}: the smallest {target} of each weight tensor (not biases) "
                f"zeroed, ramped from epoch {pruning.start_epoch} to {end}{since}{short}")


def _percent(fraction: float, decimals: int = 8) -> str:
    """99.995% is not 100%, nor 0.00001% 1e-05%."""
    return np.format_float_positional(round(fraction * 100, decimals), trim="-") + "%"


def _measured_percent(fraction: float) -> str:
    """A sparsity the pruning schedule gives (not a setting) to a tenth of a percent, as the
    run's closing line gives it; in full where that would read 0% or 100%."""
    short = _percent(fraction, decimals=1)
    return _percent(fraction) if short in ("0%", "100%") and 0 < fraction < 1 else short


def _fields(settings: BaseModel) -> str:
    """`type (field value, ...)` of a spec's mapping, its fields as set or defaulted (those left
    unset, None, mean the data's own value and are not shown)."""
    fields = [f"{name} {_value(value)}" for name, value in settings
              if name != "type" and value is not None]
    return f"{settings.type} ({', '.join(fields)})" if fields else settings.type


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return str(value)
