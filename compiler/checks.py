"""What training would refuse, found without data: `nnrun validate` reports it as errors at
the spec's positions, and training uses the same rules (issue 10, item 8)."""

from __future__ import annotations

import re
import typing

from pydantic import BaseModel

from .datasets import (DATASETS, SIZED_DATASETS, USER_FILE_DATASETS, held_out,
                       no_training_samples, planned_training_samples, samples_before_validation,
                       samples_the_data_holds)
from .diagnostics import and_joined, suggest
from .initial_values import unheld
from .ir import Origin
from .schema import (ACTIVATION_TYPES, METRICS, POSITION_CLASS_METRICS, REGRESSION_LOSSES,
                     Accuracy, MaeMetric, default_layer_names, layer_inputs,
                     layers_read_by)
from .shapes import as_tuple

SPATIAL_AUGMENTATIONS = ("random_shift", "random_flip", "random_crop", "random_rotation")


def metric_name(metric) -> str:
    return f"top_{metric.k}_accuracy" if metric.type == "top_k_accuracy" else metric.type


_TOP_K = re.compile(r"top_([1-9][0-9]*)_accuracy")


def is_metric_name(name: str) -> bool:
    """Whether `name` (of metrics.jsonl's train_NAME and val_NAME) is the loss or one of
    nnrun's metrics (top_5_accuracy for top_k_accuracy with k: 5)."""
    return name == "loss" or bool(_TOP_K.fullmatch(name)) or (
        name in METRICS and name != "top_k_accuracy")


def has_validation(spec) -> bool:
    return spec.data is not None and spec.data.validation_split > 0


def tracked_metrics(spec, task: str | None) -> list:
    """train.metrics, or the default for the data's task: mae for real-valued targets
    (regression), accuracy otherwise. With the task unknown (npz or csv data not yet loaded),
    the default is either."""
    if spec.train.metrics is not None:
        return spec.train.metrics
    if task is None:  # every default the data could give
        return [metric for choice in default_metric_choices(spec) for metric in choice]
    return [MaeMetric(type="mae")] if task == "regression" else [Accuracy(type="accuracy")]


def default_metric_choices(spec) -> list[list]:
    """The lists a left-out train.metrics may stand for: each default the data could give."""
    if targets_decide_metrics(spec):
        return [[Accuracy(type="accuracy")], [MaeMetric(type="mae")]]
    return [[Accuracy(type="accuracy")]]


def metrics_alike(a, b) -> bool:
    """Whether two specs track the same metrics, a left-out default counting as each list it
    may stand for: a run whose spec.yaml spells the default out (or was written before the
    default followed the targets) resumes with the spec that leaves it out, and the reverse."""
    ours, theirs = a.train.metrics, b.train.metrics
    if ours is None and theirs is not None:
        return theirs in default_metric_choices(a)
    if theirs is None and ours is not None:
        return ours in default_metric_choices(b)
    return ours == theirs


def targets_decide_metrics(spec) -> bool:
    """Default metrics on npz or csv data: class labels or regression targets, known once
    the file is read (under a loss of real-valued targets: the other losses refuse them)."""
    return spec.train.metrics is None and spec.data is not None \
        and spec.data.dataset in USER_FILE_DATASETS and spec.loss.type in REGRESSION_LOSSES


def metrics_of_the_targets(spec) -> str:
    """What a monitor's message adds where the default metrics follow a file's targets, which
    validate alone does not read: the names it lists are of one kind or the other."""
    if not targets_decide_metrics(spec):
        return ""
    return (" (*_accuracy where the file's targets are class labels, *_mae where they are real "
            "values: validate --data checks the one chosen against them)")


def monitor_names(spec, validation: bool, task: str | None = None) -> list[str]:
    """The keys of metrics.jsonl an early-stopping monitor may name (task None: before the
    data is loaded)."""
    # on training batches too; a metric listed twice is one key (a warning says so)
    tracked = list(dict.fromkeys(["loss", *map(metric_name, tracked_metrics(spec, task))]))
    splits = ["train", "val"] if validation else ["train"]
    return [f"{split}_{name}" for split in splits for name in tracked]


# Class labels under mse, mae and huber: what validate says of a named dataset (lower.py) and
# training of npz or csv labels (runtime/data_fit.py), in the same words.

def one_hot_needs_a_vector(loss: str, labels: str, classes, shape) -> str:
    return (f"{loss} on {labels} compares one-hot targets [{classes}] with the outputs, the "
            f"model ends with shape {shape}; end the model with {{type: flatten}} and a dense "
            "layer, one unit per class")


def one_output_on_classes(loss: str, classes: int, of: str = "", fix: str = "") -> str:
    """`fix`: what gives the model `classes` outputs (said at the output layer: set units)."""
    return (f"{loss} with one output regresses the class labels 0..{classes - 1}{of} as numbers "
            f"(class {classes - 1} 'more' than class 1); {fix or f'set units: {classes}'} (the "
            "labels become one-hot targets), or use loss: cross_entropy")


def more_than_binary(labels: str, classes: int, fix: str) -> str:
    """binary_cross_entropy on class labels beyond 0/1: what validate says of a named dataset
    (lower.py) and training of npz or csv labels (runtime/data_fit.py), in the same words.
    `fix`: what gives the model one score per class (output_checks.class_scores_fix), or ""."""
    return (f"binary_cross_entropy needs 0/1 labels, but {labels} has {classes} classes "
            f"(labels 0..{classes - 1}); use loss: cross_entropy" + (f", and {fix}" if fix
                                                                    else ""))


def training_warnings(spec, output_shape: tuple) -> list[tuple[Origin, str]]:
    """(origin, message) of settings that train but do not do what they say."""
    frozen = frozen_at_zero(spec)
    return (_init_from_warnings(spec) + _frozen_at_zero_warnings(spec, frozen)
            + _symmetry_warnings(spec, set(frozen))
            + _top_k_warnings(spec, output_shape) + _repeated_metric_warnings(spec)
            + _schedule_warnings(spec) + _pruning_warnings(spec)
            + _early_stopping_warnings(spec) + _limit_warnings(spec) + _batch_warnings(spec))


def default_mode(monitor: str) -> str:
    """Loss-like metrics improve downwards, the rest (accuracies, fractions) upwards."""
    return "min" if any(word in monitor for word in ("loss", "mae", "mse")) else "max"


def _early_stopping_warnings(spec) -> list[tuple[Origin, str]]:
    """A mode against the monitor's direction (the worst epoch kept as the best), and a
    min_delta no fraction can improve by (5 meant as 5%)."""
    stopping = spec.train.early_stopping
    if stopping is None:
        return []
    found, monitor = [], stopping.monitor
    natural = default_mode(monitor)
    if stopping.mode not in ("auto", natural):
        direction = "downwards" if natural == "min" else "upwards"
        found.append((Origin("train.early_stopping.mode",
                             keys=("train", "early_stopping", "mode")),
                      f"mode: {stopping.mode} takes the epoch of the "
                      f"{'lowest' if stopping.mode == 'min' else 'highest'} {monitor}, which "
                      f"improves {direction}: the worst epoch would be kept as the best; use "
                      f"mode: {natural}, or leave mode out (auto)"))
    if natural == "max" and stopping.min_delta >= 1:
        found.append((Origin("train.early_stopping.min_delta",
                             keys=("train", "early_stopping", "min_delta")),
                      f"min_delta {stopping.min_delta:g} on {monitor}, a fraction from 0 to 1: "
                      f"no epoch can improve by it; for {stopping.min_delta:g}% write "
                      f"{stopping.min_delta / 100:g}"))
    return found


CONSTANT_INITS = ("zeros", "ones", "constant")


def _symmetry_warnings(spec, frozen: set[str]) -> list[tuple[Origin, str]]:
    """A layer whose weights and bias all start equal, read by one whose weights start equal
    too: its units compute one value and get one gradient, step after step, and train as a
    single unit (the symmetry a random initialisation breaks). Only through layers that treat
    every unit (channel) alike: a dropout's masks, an add's other operand, a reshape that
    makes units positions, a reader's random padding, pruning break it. `frozen`: layers that
    do not train at all (frozen_at_zero), said so by a warning of their own."""
    if spec.model.init_from or spec.train.pruning:  # other values; pruning picks among equals
        return []
    graph = _LayerGraph(spec.model.layers)
    layers, names, reads, at = graph.layers, graph.names, graph.reads, graph.at

    def weights_equal(layer) -> bool:  # a random padding differs from channel to channel
        return (_initial_weights(spec, layer) in CONSTANT_INITS
                and getattr(layer, "padding_mode", None) != "random")

    def starts_equal(layer) -> bool:  # of one unit or filter, there are no others to equal
        return (weights_equal(layer) and getattr(layer, "units", getattr(layer, "filters", 1)) > 1
                and (not layer.use_bias or getattr(layer, "bias", None) is None
                     and layer.bias_init.type in CONSTANT_INITS))

    def weighted_inputs(name: str) -> list[str]:
        """The nearest layers with weights whose outputs reach `name`'s input through layers
        that treat each unit alike; none where another layer lies between."""
        found, pending, seen = [], list(reads[name]), set()
        while pending:
            source = pending.pop()
            if source in seen or source not in at:
                continue
            seen.add(source)
            layer = layers[at[source]]
            if hasattr(layer, "init"):  # dense, convolutions: their own weights
                found.append(source)
            elif layer.type in _EACH_UNIT_ALIKE or layer.type in ACTIVATION_TYPES:
                pending += reads[source]
            else:
                return []
        return found

    stuck = {source: name for name, layer in zip(names, layers) if weights_equal(layer)
             for source in weighted_inputs(name)
             if starts_equal(layers[at[source]]) and source not in frozen}
    by_origin: dict[tuple, list[str]] = {}  # one warning for the layers one setting starts
    for source in sorted(stuck, key=at.get):
        by_origin.setdefault(_init_keys(layers, at[source]), []).append(source)
    warnings = []
    for keys, sources in by_origin.items():
        involved = sorted({*sources, *(stuck[source] for source in sources)}, key=at.get)
        parts = " or ".join(sorted({"filter" if hasattr(layers[at[name]], "filters") else "unit"
                                    for name in sources}))
        warnings.append((_init_origin(keys, sources[0]), (
            f"{and_joined(involved)} start with equal weights "
            f"({_initial_weights(spec, layers[at[sources[0]]])}): each {parts} of "
            f"{and_joined(sources)} computes the value the others of its layer compute and "
            "gets the same gradient, so they stay equal (but for rounding) and train as one "
            "(the symmetry is never broken); give the weights a random init, e.g. he_uniform "
            "or xavier_uniform")))
    return warnings


# Layers whose output is 0 where their input is 0 everywhere (and which pass a gradient back):
# a zero that starts before them is a zero after them (a batchnorm's too, its beta starting at
# 0, while no gradient reaches it).
# A concat keeps them along the channel axis only (a convolution's weights, shared over the
# positions, and a batchnorm's statistics would mix a concat's positions); a reshape, which may
# make channels positions, or an add, whose other inputs add theirs, keeps them only where
# its whole output is 0.
_ZERO_KEEPING = ("identity", "tanh", "leaky_relu", "elu", "gelu", "dropout", "flatten",
                 "batchnorm", "maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d",
                 "global_avgpool", "global_maxpool", "upsample1d", "upsample2d", "concat")
# Layers whose output is 0 where all their inputs are 0.
_ZERO_TO_ZERO = (*_ZERO_KEEPING, "relu", "add", "reshape")


def frozen_at_zero(spec) -> dict[str, str]:
    """The layers whose weights and bias start at 0 and never move, by what stops their
    gradient: their outputs are 0 for every sample, and every way from them to the loss meets
    a relu at 0 (whose gradient there is 0, as PyTorch's) or a layer whose weights start at 0
    too and stay there (the gradient a layer passes back is its weights times its own; the
    gradient of its weights is its input times its own, here 0). The course's all-zeros
    initialisation: such a model predicts one output, its last bias, for every sample.

    Which outputs stay 0 and which gradients stay 0 depend on each other (an add of zeros is
    0, a layer of any weights reading only zeros gives its bias): both are found together,
    from "every output that starts at 0 stays 0", dropping what that would not keep, until
    nothing changes (each step of training then keeps what the last kept)."""
    if spec.model.init_from:
        return {}
    layers = _ZeroFlow(spec)
    zero = layers.zero_outputs(set(layers.names), stopper=None)  # at the start
    while True:
        stopper = layers.stoppers(zero)
        kept = layers.zero_outputs(zero, stopper)
        if kept == zero:
            break
        zero = kept
    frozen = {}
    for name, layer in zip(layers.names, spec.model.layers):
        if name in zero and hasattr(layer, "init") and layers.starts_at_zero(layer):
            why = "its own relu at 0" if layers.own(layer) == "relu" else stopper[name]
            if why and why != "no reader":
                frozen[name] = why
    return frozen


class _LayerGraph:
    """A model's layers by name: where each is, what it reads, what reads it, and which lie on
    the way to the model's output."""

    def __init__(self, layers):
        self.layers = layers
        self.names = default_layer_names(layers)
        self.at = {name: index for index, name in enumerate(self.names)}
        self.reads = dict(zip(self.names, layer_inputs(layers)))
        self.readers: dict[str, list[str]] = {name: [] for name in self.names}
        for name, sources in self.reads.items():
            for source in sources:
                self.readers.setdefault(source, []).append(name)
        self.on_the_way = layers_read_by(self.reads, self.names[-1])


class _ZeroFlow(_LayerGraph):
    """A model's layers as frozen_at_zero follows zeros forward and gradients back."""

    def __init__(self, spec):
        super().__init__(spec.model.layers)
        self.spec = spec

    @staticmethod
    def own(layer) -> str:
        """A layer's own activation, identity for none."""
        activation = getattr(layer, "activation", None)
        return activation.type if activation is not None else "identity"

    def zero_weights(self, layer, reading: bool = True) -> bool:
        """Weights of zeros, drawn or given; a reader's random padding gives its weights a
        gradient."""
        if reading and getattr(layer, "padding_mode", None) == "random":
            return False
        given = getattr(layer, "weights", None)
        if given is not None:
            return _all_zero(given)
        init = layer.init or self.spec.model.init
        return (_initial_weights(self.spec, layer) in ("zeros", "constant")
                and getattr(init, "value", 0) == 0)

    def starts_at_zero(self, layer) -> bool:
        return self.zero_weights(layer, reading=False) and self.zero_bias(layer)

    @staticmethod
    def zero_bias(layer) -> bool:
        if not layer.use_bias:
            return True
        if getattr(layer, "bias", None) is not None:
            return _all_zero(layer.bias)
        bias = layer.bias_init
        return (getattr(layer, "init_from", None) is None
                and bias.type in ("zeros", "constant") and getattr(bias, "value", 0) == 0)

    def zero_outputs(self, zero: set[str], stopper: dict | None) -> set[str]:
        """The layers of `zero` whose outputs stay 0 where the others of `zero` do and
        `stopper` stops their gradients (None: every gradient, as at the start)."""
        kept: set[str] = set()
        for name, layer in zip(self.names, self.layers):
            reads_zeros = (all(source in kept for source in self.reads[name])
                           and getattr(layer, "padding_mode", None) != "random")
            stopped = stopper is None or self.own(layer) == "relu" or stopper[name] is not None
            if hasattr(layer, "init"):  # 0 = f(w x + b): b stays 0, and w x does
                stays = (self.own(layer) in _ZERO_TO_ZERO
                         and (reads_zeros or self.zero_weights(layer) and stopped)
                         and (self.zero_bias(layer) and stopped or not layer.use_bias))
            else:  # a batchnorm's beta stays 0 while no gradient reaches it
                stays = (layer.type in _ZERO_TO_ZERO and reads_zeros
                         and (layer.type != "batchnorm" or stopped))
            if name in zero and stays:
                kept.add(name)
        return kept

    def stoppers(self, zero: set[str]) -> dict[str, str | None]:
        """What stops every gradient to a layer's output where its output is 0 (None: one
        gets through; "no reader" where none on the way to the model's output reads it);
        readers come after the layers they read."""
        stopper: dict[str, str | None] = {}
        for name in reversed(self.names):
            found = {self._stops_at(self.layers[self.at[reader]], reader, zero, stopper)
                     for reader in self.readers[name]}
            stopper[name] = (None if name == self.names[-1] or None in found
                             else min(found - {"no reader"}, default="no reader"))
        return stopper

    def _stops_at(self, layer, name: str, zero: set[str], stopper: dict) -> str | None:
        """What the reader `name` does to a gradient for an input of zeros (of the part that
        input gives it): stops it (why), passes it on (the stopper of its own output) or lets
        it through (None)."""
        if name not in self.on_the_way:
            return "no reader"
        if hasattr(layer, "init"):
            if self.zero_weights(layer):  # 0 for good, as the part they read stays 0
                return f"{name}'s zero weights"
            if name not in zero:  # other weights pass the gradient back
                return None
            return f"{name}'s relu at 0" if self.own(layer) == "relu" else stopper.get(name)
        if layer.type == "relu":
            return f"{name} at 0"
        if name in zero:  # every part of its output 0
            return stopper.get(name)
        keeps_zero = layer.type in _ZERO_KEEPING and getattr(layer, "axis", 0) == 0
        return stopper.get(name) if keeps_zero else None


def _all_zero(values) -> bool:
    """Whether given weights or bias (nested lists of numbers) are all 0."""
    if isinstance(values, (list, tuple)):
        return all(_all_zero(value) for value in values)
    return values == 0


def _init_keys(layers, index: int) -> tuple:
    """Where the initializer of layer `index`'s weights is set: its own init, or model.init."""
    return (("model", "layers", index, "init") if layers[index].init is not None
            else ("model", "init"))


def _init_origin(keys: tuple, name: str) -> Origin:
    return (Origin(f"model.layers[{keys[2]}]", name, keys) if len(keys) > 2
            else Origin("model.init", keys=keys))


def _frozen_at_zero_warnings(spec, frozen: dict[str, str]) -> list[tuple[Origin, str]]:
    """`frozen`: frozen_at_zero's, each layer with what stops its gradient."""
    layers = spec.model.layers
    at = {name: index for index, name in enumerate(default_layer_names(layers))}
    warnings = []
    for name, why in frozen.items():
        index = at[name]
        parts = "weights and bias" if layers[index].use_bias else "weights; it has no bias"
        warnings.append((_init_origin(_init_keys(layers, index), name), (
            f"{name} starts at 0 ({parts}) and never changes: its outputs are 0 for "
            f"every sample, and no gradient gets past {why} to it; give the weights a random "
            "init, e.g. he_uniform or xavier_uniform")))
    return warnings


# Layers that do to every unit (a convolution's every channel) what they do to the others:
# units equal before them are equal after, and get equal gradients through them.
_EACH_UNIT_ALIKE = ("flatten", "batchnorm", "maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d",
                    "global_avgpool", "global_maxpool", "upsample1d", "upsample2d", "concat")


def _initial_weights(spec, layer) -> str | None:
    """The initializer of a layer's weights, None for a layer without any or whose values are
    given (weights:, init_from)."""
    if not hasattr(layer, "init") or getattr(layer, "weights", None) is not None \
            or getattr(layer, "init_from", None) is not None:
        return None
    return (layer.init or spec.model.init).type


def _init_from_warnings(spec) -> list[tuple[Origin, str]]:
    """model.init_from where the layers' own weights:/bias: give every parameter: they take
    precedence, so the file sets nothing (a run "continued" from it starts from the lists).
    Known from the spec alone, whatever the file holds."""
    layers = spec.model.layers
    if not spec.model.init_from or not all(map(_gives_its_parameters, layers)):
        return []
    givers = [name for layer, name in zip(layers, default_layer_names(layers))
              if getattr(layer, "weights", None) is not None]
    if not givers:  # no parameter at all: init_from's loader says so
        return []
    return [(Origin("model.init_from", keys=("model", "init_from")),
             f"init_from sets no parameter: the weights:/bias: of {', '.join(givers)} give "
             "every one, and a layer's own values take precedence; to start from init_from, "
             "remove their weights: and bias:")]


def _gives_its_parameters(layer) -> bool:
    """Whether the layer's weights:/bias: lists give all its parameters (a layer without
    parameters gives all of none). Batchnorm's and the transposed convolutions' come from
    initializers or init_from only."""
    if layer.type == "batchnorm":
        return False
    if not hasattr(layer, "use_bias"):  # no weight, no bias
        return True
    given_bias = getattr(layer, "bias", None) is not None or not layer.use_bias
    return getattr(layer, "weights", None) is not None and given_bias


def _repeated_metric_warnings(spec) -> list[tuple[Origin, str]]:
    """A metric listed again is tracked once (one key of metrics.jsonl)."""
    seen: dict[str, int] = {}
    warnings = []
    for index, metric in enumerate(spec.train.metrics or ()):
        name = metric_name(metric)
        if name in seen:
            warnings.append((Origin(f"train.metrics[{index}]", keys=("train", "metrics", index)),
                             f"{name} is listed already (train.metrics[{seen[name]}]); it is "
                             "tracked once: remove this one"))
        seen.setdefault(name, index)
    return warnings


def pruned_weights(names) -> list[str]:
    """The parameters pruning zeroes and sparsity counts: dense and convolution weights
    (`*.weight`; not biases, not batchnorm's gamma and beta)."""
    return [name for name in names if name.endswith(".weight")]


def pruning_errors(spec, params) -> list[tuple[Origin, str]]:
    """Pruning zeroes weight tensors (runtime/pruning.py): a model without one has nothing to
    prune, and would wait for a target sparsity it never reaches (early stopping, resume)."""
    if spec.train.pruning is None or pruned_weights(params):
        return []
    return [(Origin("train.pruning", keys=("train", "pruning")),
             "the model has no weight tensor to prune (pruning zeroes the weights of dense and "
             "convolution layers); remove train.pruning")]


def _pruning_warnings(spec) -> list[tuple[Origin, str]]:
    """A pruning ramp that starts after the run's last epoch prunes nothing; one that ends
    after it stops short of its target."""
    pruning, epochs = spec.train.pruning, spec.train.epochs
    at = ("train", "pruning")
    if pruning is None:
        return []
    if pruning.start_epoch > epochs:
        return [(Origin("train.pruning.start_epoch", keys=(*at, "start_epoch")),
                 f"start_epoch {pruning.start_epoch} is after the run's last epoch (train.epochs "
                 f"{epochs}): no weight is pruned; set start_epoch to {epochs} or less, or train "
                 "more epochs")]
    if pruning.end_epoch is not None and pruning.end_epoch > epochs:
        reached = pruning.target_sparsity * (epochs - pruning.start_epoch + 1) / (
            pruning.end_epoch - pruning.start_epoch + 1)
        return [(Origin("train.pruning.end_epoch", keys=(*at, "end_epoch")),
                 f"end_epoch {pruning.end_epoch} is after the run's last epoch (train.epochs "
                 f"{epochs}): the run ends at sparsity {reached:.1%}, short of target_sparsity "
                 f"{pruning.target_sparsity:.1%}; set end_epoch to {epochs} or less, or train "
                 "more epochs")]
    return []


def _top_k_warnings(spec, output_shape: tuple) -> list[tuple[Origin, str]]:
    if len(output_shape) != 1 or spec.train.metrics is None:  # label maps refuse top_k
        return []
    scores = output_shape[0]
    if scores == 1:  # one score is no ranking: its top is always class 0
        return [(Origin(f"train.metrics[{index}]", keys=("train", "metrics", index)),
                 "top_k_accuracy ranks class scores, and the model has one output (its top is "
                 "always class 0); use accuracy, which reads one output as two classes")
                for index, metric in enumerate(spec.train.metrics)
                if metric.type == "top_k_accuracy"]
    return [(Origin(f"train.metrics[{index}].k", keys=("train", "metrics", index, "k")),
             f"top_k_accuracy with k: {metric.k} counts every sample right, the model has "
             f"{scores} scores per sample; use k below {scores}")
            for index, metric in enumerate(spec.train.metrics)
            if metric.type == "top_k_accuracy" and metric.k >= scores > 1]


def _schedule_warnings(spec) -> list[tuple[Origin, str]]:
    schedule, lr, epochs = spec.optimizer.schedule, spec.optimizer.lr, spec.train.epochs
    at = ("optimizer", "schedule")
    warnings = []
    if schedule.type == "cosine" and schedule.min_lr > lr:
        warnings.append((Origin("optimizer.schedule.min_lr", keys=(*at, "min_lr")),
                         f"min_lr {schedule.min_lr:g} is above lr {lr:g}: the cosine schedule "
                         "raises the rate instead of lowering it; set min_lr below lr"))
    after_warmup = epochs - schedule.warmup_epochs  # the epochs whose rate it sets
    gamma = getattr(schedule, "gamma", 1)
    never_steps = schedule.type == "step" and 0 < after_warmup <= schedule.step_epochs
    changes = (schedule.type == "exponential" and after_warmup > 1
               or schedule.type == "step" and after_warmup > schedule.step_epochs)
    if gamma > 1 and changes:
        warnings.append((Origin("optimizer.schedule.gamma", keys=(*at, "gamma")),
                         f"gamma {gamma:g} is above 1: the {schedule.type} schedule raises the "
                         "rate instead of lowering it; set gamma below 1"))
    if never_steps and gamma != 1:
        counted = f"train.epochs {epochs}" + (f" - warmup_epochs {schedule.warmup_epochs}"
                                              if schedule.warmup_epochs else "")
        warnings.append((Origin("optimizer.schedule.step_epochs", keys=(*at, "step_epochs")),
                         f"step_epochs {schedule.step_epochs} is not below the {after_warmup} "
                         f"epoch{'s' * (after_warmup != 1)} the schedule sets ({counted}): the "
                         "rate never steps down; "
                         + (f"set step_epochs below {after_warmup}, or train more epochs"
                            if after_warmup > 1 else
                            f"train more than {schedule.step_epochs} epoch"
                            + "s" * (schedule.step_epochs != 1)
                            + (" after the warm-up" if schedule.warmup_epochs else ""))
                         + (f", and gamma below 1 (it is {gamma:g})" if gamma > 1 else "")))
    if 0 < epochs <= schedule.warmup_epochs:
        warnings.append((Origin("optimizer.schedule.warmup_epochs", keys=(*at, "warmup_epochs")),
                         f"warmup_epochs {schedule.warmup_epochs} is not below train.epochs "
                         f"{epochs}: the rate rises for the whole training, and the "
                         f"{schedule.type} schedule never starts; use fewer warm-up epochs"))
    return warnings


def position_class_metric(spec) -> str | None:
    """The tracked metric of label maps that reads one score per position as class 0 or 1
    (accuracy, pixel_accuracy or mean_iou), if any."""
    return next((m.type for m in tracked_metrics(spec, "segmentation")
                 if m.type in POSITION_CLASS_METRICS), None)


def training_errors(spec, sample_shape: list[int]) -> list[tuple[Origin, str]]:
    """(origin, message) of each problem that would stop `nnrun train` once it has data."""
    if spec.data is None:  # training refuses that already; validate checks the architecture
        return _monitor_errors(spec)
    return (split_errors(spec.data) + augmentation_errors(spec, sample_shape)
            + _metric_errors(spec) + _monitor_errors(spec))  # in file order


def shapeless_errors(spec) -> list[tuple[Origin, str]]:
    """training_errors that need no model: said beside a shape error, which stops the
    lowering (and the checks that need its shapes) at the layer it is found in."""
    if spec.data is None:
        return _monitor_errors(spec)
    return split_errors(spec.data) + _metric_errors(spec) + _monitor_errors(spec)


def split_errors(data) -> list[tuple[Origin, str]]:
    """Too few training samples for the splits, where it is known without data: a generated
    dataset's n_samples for its test split, and the validation split carved from the rest or
    from what data.limit keeps (runtime/data: sources.hold_out_test, splits.carve_validation).
    A limit too small is too small for any dataset: fewer samples hold out no fewer."""
    if data.dataset in SIZED_DATASETS:
        count = data.n_samples if data.n_samples is not None else \
            DATASETS[data.dataset].default_samples
        if too_few := no_training_samples(count):
            return [(Origin("data.n_samples", keys=("data", "n_samples")), too_few)]
    train, left, more = samples_before_validation(data) or (None, "", None)
    if train is None or not data.validation_split \
            or held_out(train, data.validation_split) < train:
        return []
    fix = "lower data.validation_split" if train > 1 else "remove data.validation_split"
    return [(Origin("data.validation_split", keys=("data", "validation_split")),
             f"validation_split {data.validation_split} of the {train} training "
             f"sample{'s' if train != 1 else ''} {left} leaves none to train on; {fix}"
             + (f", or raise {more}" if more else ""))]


def _limit_warnings(spec) -> list[tuple[Origin, str]]:
    """A data.limit past the training samples a named or generated dataset holds (train says
    it of a file's, once loaded)."""
    limit = spec.data.limit if spec.data is not None else None
    holds = samples_the_data_holds(spec.data) if limit is not None else None
    if holds is None or limit <= holds[0]:
        return []
    return [(Origin("data.limit", keys=("data", "limit")),
             f"data.limit {limit:,} is more than the {holds[0]:,} training "
             f"sample{'s' if holds[0] != 1 else ''} {holds[1]}: every one is used; lower "
             "data.limit, or remove it")]


def _batch_warnings(spec) -> list[tuple[Origin, str]]:
    """A batch size past the training samples the spec plans: one step an epoch (train says
    the same with the data loaded, where the data decides)."""
    samples, batch = planned_training_samples(spec.data), spec.train.batch_size
    if samples is None or samples < 1 or batch <= samples:
        return []
    return [(Origin("train.batch_size", keys=("train", "batch_size")),
             f"batch_size {batch} is more than the {samples} training "
             f"sample{'s' if samples > 1 else ''} planned: each epoch is one step on all of them")]


def setting_range_errors(spec) -> list[tuple[Origin, str]]:
    """Numbers the model's dtype cannot hold (`lr: 1e39` in float32: inf once cast, NaN from
    the first step) of the loss, the optimizer and its schedule, and of what is cast with the
    activations: a layer's numbers (an activation's alpha), a noise's std and a generated
    dataset's noise. Every command that compiles refuses them."""
    named = [(("loss",), spec.loss), (("optimizer",), spec.optimizer),
             (("optimizer", "schedule"), spec.optimizer.schedule)]
    errors = [(Origin(".".join((*keys, field)), keys=(*keys, field)), problem)
              for keys, settings in named for field, value in settings
              if isinstance(value, float) and (problem := unheld(
                  value, spec.dtype, may_be_zero=not _above_zero(type(settings), field)))]
    names = default_layer_names(spec.model.layers)
    for index, (layer, name) in enumerate(zip(spec.model.layers, names)):
        origin = Origin.of_layer(index, name)
        errors += _cast_errors(origin, layer, spec.dtype)
        if isinstance(getattr(layer, "activation", None), BaseModel):
            errors += _cast_errors(origin.at_field("activation"), layer.activation, spec.dtype)
    if spec.data is not None and spec.data.noise is not None:  # made in float64, then cast
        problem = unheld(spec.data.noise, spec.dtype, may_be_zero=True)
        if problem:
            errors.append((Origin("data.noise", keys=("data", "noise")), problem))
    for index, augmentation in enumerate(spec.data.augment if spec.data else ()):
        if augmentation.type == "gaussian_noise":  # the others' numbers stay on the host
            origin = Origin(f"data.augment[{index}]", keys=("data", "augment", index))
            errors += _cast_errors(origin, augmentation, spec.dtype)
    return errors


def _cast_errors(owner: Origin, settings, dtype: str) -> list[tuple[Origin, str]]:
    """The float fields of `settings` the dtype cannot hold: past its range, or, for a field
    that must be above 0 (an eps, elu's alpha), below it. Elsewhere 0 is a value the field
    allows (a momentum, a rate, leaky_relu's alpha)."""
    return [(owner.at_field(field), f"{field}: {problem}") for field, value in settings
            if isinstance(value, float)
            and (problem := unheld(value, dtype,
                                   may_be_zero=not _above_zero(type(settings), field)))]


def _above_zero(model: type[BaseModel], field: str) -> bool:
    """Whether the schema's field must be above 0 (a PositiveFloat, or one of `| None`)."""
    info = model.model_fields[field]
    rules = list(info.metadata)
    for member in typing.get_args(info.annotation):  # PositiveFloat | None: Annotated's rules
        for rule in typing.get_args(member)[1:]:
            rules += getattr(rule, "metadata", [rule])
    return any(getattr(rule, "gt", None) is not None and rule.gt >= 0 for rule in rules)


def _metric_errors(spec) -> list[tuple[Origin, str]]:
    """top_k_accuracy on a named dataset of label maps (an npz's are known on load)."""
    if not _has_label_maps(spec) or spec.train.metrics is None:
        return []
    return [(Origin(f"train.metrics[{index}]", keys=("train", "metrics", index)),
             "top_k_accuracy is for one label per sample; for label maps use pixel_accuracy "
             "or mean_iou")
            for index, metric in enumerate(spec.train.metrics)
            if metric.type == "top_k_accuracy"]


def _monitor_errors(spec) -> list[tuple[Origin, str]]:
    stopping = spec.train.early_stopping
    if stopping is None:
        return []
    # without a data section, or with an npz that may hold x_val and y_val, val_* may come:
    # training checks them with the data loaded
    npz_may_hold_val = spec.data is not None and spec.data.dataset == "npz"
    split_unknown = spec.data is None or (npz_may_hold_val and not has_validation(spec))
    validation = has_validation(spec) or split_unknown
    names = monitor_names(spec, validation)
    if stopping.monitor in names:
        return []
    origin = Origin("train.early_stopping.monitor", keys=("train", "early_stopping", "monitor"))
    hint = " (val_* where the npz holds x_val and y_val)" if split_unknown and spec.data else ""
    hint += metrics_of_the_targets(spec)
    dataset = DATASETS.get(spec.data.dataset) if spec.data is not None else None
    task = dataset.task if dataset is not None and not dataset.user_file else None
    return [(origin, unknown_monitor(stopping.monitor, names, validation, "will not be", hint,
                                     task=task))]


def unknown_monitor(monitor: str, names: list[str], validation: bool, verb: str = "is not",
                    hint: str = "", task: str | None = None) -> str:
    """What validate (`will not be`) and train (`is not`) say of an early-stopping monitor
    that is none of the run's metrics, `names` (`task`: the data's, where known)."""
    reason = (" (val_* metrics need data.validation_split > 0)"
              if monitor.startswith("val_") and not validation else "")
    entry = None if reason else _metric_to_add(monitor, task)  # val_mse: no typo, not tracked
    # val_loss for train_loss: no typo either
    meant = None if reason or entry else suggest(monitor, names)
    guess = f"did you mean '{meant}'? " if meant else ""
    add = f" (or add {entry} to train.metrics)" if entry else ""
    return (f"'{monitor}' {verb} a metric of this run{reason}; {guess}choose one of: "
            f"{', '.join(names)}{add}{hint}")


def _metric_to_add(monitor: str, task: str | None) -> str | None:
    """The train.metrics entry that would make `monitor` a key of metrics.jsonl (val_mse: mse;
    val_top_3_accuracy: {type: top_k_accuracy, k: 3}), where one would and suits the data's
    task (a class metric does not suit regression targets, one label per sample not label
    maps); None otherwise."""
    split, _, name = monitor.partition("_")
    if split not in ("train", "val") or name == "loss" or not is_metric_name(name):
        return None
    top = _TOP_K.fullmatch(name)
    kind = "top_k_accuracy" if top else name
    metric = METRICS[kind]
    if (task == "regression" and metric.of_classes) or (
            task == "segmentation" and metric.of_classes and not metric.reads_positions):
        return None
    return f"{{type: top_k_accuracy, k: {top[1]}}}" if top else name


def augmentation_errors(spec, sample_shape: list[int]) -> list[tuple[Origin, str]]:
    errors = []
    for index, augmentation in enumerate(spec.data.augment):
        origin = Origin(f"data.augment[{index}]", keys=("data", "augment", index))
        if augmentation.type in SPATIAL_AUGMENTATIONS and _has_label_maps(spec):
            errors.append((origin, f"{augmentation.type} would move the pixels but not the "
                                   "label maps; remove it (gaussian_noise keeps them aligned)"))
        elif augmentation.type in SPATIAL_AUGMENTATIONS and len(sample_shape) < 2:
            needed = ("2-D samples [C, H, W]" if augmentation.type == "random_rotation" else
                      "samples with a spatial axis ([C, L] or [C, H, W])")
            errors.append((origin, f"{augmentation.type} needs {needed}, these are "
                                   f"{sample_shape}; remove it or use gaussian_noise"))
        elif getattr(augmentation, "axis", None) == "vertical" and len(sample_shape) < 3:
            errors.append((origin.at_field("axis"), f"random_flip axis vertical needs 2-D "
                                                    f"samples [C, H, W], these are "
                                                    f"{sample_shape}; use axis: horizontal"))
        elif augmentation.type == "random_rotation" and len(sample_shape) != 3:
            errors.append((origin, f"random_rotation turns 2-D samples [C, H, W], these are "
                                   f"{sample_shape}; remove it or use random_shift"))
        elif augmentation.type == "random_crop":
            errors += _crop_errors(augmentation, sample_shape, origin)
        elif augmentation.type == "random_shift":
            errors += _shift_errors(augmentation, sample_shape, origin)
    return errors


def _shift_errors(shift, sample_shape: list[int], origin: Origin) -> list[tuple[Origin, str]]:
    return _out_of_view_errors("random_shift", "max_shift", shift.max_shift, sample_shape,
                               origin)


def _out_of_view_errors(kind: str, field: str, move: int, sample_shape: list[int],
                        origin: Origin) -> list[tuple[Origin, str]]:
    """A shift (a crop's padding) of `move` pixels, which may leave nothing of a sample in
    view: as far as its smallest spatial axis, or any move along an axis of size 1."""
    smallest = min(sample_shape[1:])
    if move < smallest:
        return []
    if smallest == 1:  # any move along that axis empties the sample
        return [(origin, f"{kind} moves samples {sample_shape} along every spatial axis, "
                         "and after any move an axis of size 1 shows nothing; remove it, or "
                         "give the samples without that axis")]
    return [(origin.at_field(field),
             f"{kind} {field} {move} can move a sample {sample_shape} wholly out of view "
             f"(leaving only the background); use at most {smallest - 1}, usually a few "
             "pixels")]


def _crop_errors(crop, sample_shape: list[int], origin: Origin) -> list[tuple[Origin, str]]:
    """A size other than the samples' own, else a padding (how far crops move) that can leave
    nothing in view."""
    return (_crop_size_errors(crop, sample_shape, origin)
            or _out_of_view_errors("random_crop", "padding", crop.padding, sample_shape, origin))


def _crop_size_errors(crop, sample_shape: list[int],
                      origin: Origin) -> list[tuple[Origin, str]]:
    if crop.size is None:  # the samples' own
        return []
    spatial = list(sample_shape[1:])
    size = as_tuple(crop.size, len(spatial))
    if len(size) != len(spatial):
        return [(origin.at_field("size"), f"random_crop size {crop.size} needs "
                                          f"{len(spatial)} value(s) for samples {sample_shape}")]
    padded = [n + 2 * crop.padding for n in spatial]
    text = "x".join(map(str, size))
    if any(s > p for s, p in zip(size, padded)):
        return [(origin.at_field("size"),
                 f"random_crop {text} is bigger than the padded input "
                 f"{'x'.join(f'({n} + 2*{crop.padding})' for n in spatial)} = "
                 f"{'x'.join(map(str, padded))}; use size "
                 f"{spatial[0] if len(set(spatial)) == 1 else spatial}, the samples' own (or "
                 "leave it out), and let padding set how far crops move")]
    if list(size) != spatial:
        return [(origin.at_field("size"),
                 f"random_crop {text} would train on samples of another shape than the "
                 f"{'x'.join(map(str, spatial))} test samples; use size "
                 f"{spatial[0] if len(set(spatial)) == 1 else spatial} (or leave it out) and "
                 "let padding set how far crops move")]
    return []


def _has_label_maps(spec) -> bool:
    return bool(DATASETS[spec.data.dataset].label_shape)
