"""`nnrun trace`: the first training steps of a spec with every value the course writes on the
board, read from the training-step graph itself (compiler/step.py, `traced=True`): each
layer's z, a and delta = dC/dz, the cost, each parameter's gradient and its updated value.

The steps are the training run's own: the same batches, augmentation, dropout draws and
learning rate as the first steps of `nnrun train` (see Trainer.train_epoch), without pruning.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from nnrun.backends import get_backend
from nnrun.compiler.diagnostics import SpecError
from nnrun.compiler.frontend import with_overrides
from nnrun.compiler.initial_values import given_twice
from nnrun.compiler.loader import load_yaml_text, read_spec_text
from nnrun.compiler.ops import REGISTRY, NoAttrs
from nnrun.compiler.ops.activation import AxisAttrs
from nnrun.compiler.passes.dead_code import eliminate_dead_code
from nnrun.compiler.schema import ACTIVATION_TYPES
from nnrun.compiler.step import build_train_step
from nnrun.notices import silenced

from .archives import DamagedFile, first_not_finite, npz_headers, read_npz
from .checkpoint import checkpoint_meta, text_digest
from .data import augment_batch
from .executor import Executor
from .schedules import depends_on_length
from .train import History, Trainer, epoch_batches, no_data_section
from .trace_format import LINKS, scale_factor, superscript

# Layers whose weight is stored [in, out, ...] (PyTorch's layouts): the course reads it [j, k].
INPUT_FIRST_LAYERS = ("dense", "conv1d_transpose", "conv2d_transpose")


class TraceError(Exception):
    """The trace cannot run as asked (a weights file that does not fit); one line."""


@dataclass
class TracedLayer:
    index: int  # the course's layer number l: the input is layer 1
    name: str
    type: str
    activation: str | None
    a: np.ndarray
    z: np.ndarray | None = None  # before the activation; None when the layer has none
    delta: np.ndarray | None = None  # dC/dz (dC/da without activation); None off the loss path


@dataclass
class TracedParam:
    name: str  # e.g. dense_1.weight
    layer: int  # the course's number of the layer it belongs to
    value: np.ndarray
    gradient: np.ndarray | None
    updated: np.ndarray
    input_first: bool = False  # stored [in, out, ...] (dense, transposed convolutions)


@dataclass
class TracedStep:
    step: int
    epoch: int
    batch: int
    lr: float
    x: np.ndarray
    y: np.ndarray
    cost: float
    layers: list[TracedLayer] = field(default_factory=list)
    params: list[TracedParam] = field(default_factory=list)
    p: np.ndarray | None = None  # the probabilities the loss compares with y (LINKS' losses)
    counted: int | None = None  # the labels (targets) the loss's mean divides by


@dataclass
class Trace:
    spec: object
    steps: list[TracedStep]
    notes: list[str]
    logits: str | None = None  # z⁽ˡ⁾ or a⁽ˡ⁾, the value p is made of (LINKS' losses)
    samples: int | None = None  # the training samples the batches are drawn from


def trace(source, steps: int = 1, weights: Path | None = None) -> Trace:
    """`steps` training steps of `source` (a SourceSpec) on NumPy, from the spec's initial
    weights or those of `weights` (an .npz of parameters by name; a run's checkpoint: its
    parameters and optimizer state, and the trace goes on from its epoch and step)."""
    if source.spec.data is None:
        raise no_data_section(source, "a trace needs")
    headers = weights_headers(weights) if weights is not None else None
    if headers is not None and "meta" in headers:  # a checkpoint: init_from is not read
        source = replace(source, from_checkpoint=True)
    trainer = Trainer(source, "numpy", quiet=True, command="trace")
    loaded, done = read_weights(weights, headers, trainer) if weights is not None else ({}, {})
    done_epochs, extension = done.get("epoch", 0), []
    epochs = _epochs_to_cover(trainer.spec, len(trainer.data.train.x), done_epochs, steps)
    if epochs > trainer.spec.train.epochs:  # past the run's end: as a resume with --epochs
        extension.append(_extended(trainer.spec, done_epochs, steps, epochs, weights))
        with silenced():  # the first one said the spec's and the data's warnings
            trainer = Trainer(with_overrides(source, [f"train.epochs={epochs}"]), "numpy",
                              quiet=True, command="trace")
    # The schedule counts from epoch 1, or from where the checkpoint's run restarted it; a
    # cosine schedule of another length than the run's (extended here, or by --set) restarts
    # where the weights were saved, as `train --resume` with that length restarts it.
    ran_for = _run_epochs(weights, done) if weights is not None else None
    restarted = done.get("schedule_start", 0)
    if done_epochs and depends_on_length(trainer.spec.optimizer.schedule) and \
            (extension or (ran_for is not None and ran_for != trainer.spec.train.epochs)):
        restarted = done_epochs
        if not extension:
            extension.append(f"train.epochs is {trainer.spec.train.epochs}, the run's "
                             f"{ran_for}: the cosine schedule restarts at epoch "
                             f"{done_epochs + 1}, as `nnrun train RUN_DIR/spec.yaml --resume "
                             f"RUN_DIR --epochs "
                             f"{trainer.spec.train.epochs}` restarts it")
    trainer.history = History(schedule_start=restarted)
    model, spec = trainer.model, trainer.spec
    executor = Executor(eliminate_dead_code(build_train_step(spec, traced=True).graph),
                        model.backend)
    state, done = {**model.train_state(), **loaded}, {"epoch": done_epochs, "step": 0, **done}
    traced = []
    for epoch, index, count, batch, rng in _batches_from(trainer, done["epoch"] + 1, steps):
        lr = trainer.learning_rate(epoch, index, count)
        x, labels = trainer.data.train.x[batch], trainer.data.train.y[batch]
        if spec.data.augment:
            x = augment_batch(x, spec.data.augment, rng, trainer.augment_background)
        number = done["step"] + len(traced) + 1  # counts Adam's bias correction
        feeds = model.step_feeds(state, x, labels, lr, number, rng.integers(2**63))
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            outputs, updates = executor.run(feeds)
        step = TracedStep(number, epoch, index + 1, lr, _host(model, feeds["x"]),
                          _host(model, feeds["y"]), float(outputs["loss"]))
        step.layers = _traced_layers(model, outputs)
        step.params = _traced_params(model, step.layers, state, outputs, updates)
        if spec.loss.type in LINKS:
            step.p = _probabilities(model, _logits(model, step.layers))
            step.counted = _counted(spec.loss, step.y)
        traced.append(step)
        state = {**state, **updates}
    continued = any(name.startswith("opt/") for name in loaded)  # optimizer state given
    notes = extension + _notes(spec, model.lowered.logits.type.shape[1], continued)
    logits = _logits_symbol(model) if spec.loss.type in LINKS else None
    if logits:
        notes.append(_probability_rule(spec.loss, logits))
    return Trace(spec, traced, notes, logits, len(trainer.data.train.x))


def _logits(model, layers: list[TracedLayer]) -> np.ndarray:
    """The value the loss reads: z of a final softmax (sigmoid) fused into it (shaped as the
    output, where a flatten follows it), else the last layer's a."""
    fused = _fused_layer(model, layers)
    return layers[-1].a if fused is None else fused.z.reshape(layers[-1].a.shape)


def _fused_layer(model, layers: list) -> TracedLayer | None:
    return next((layer for layer in layers if layer.name == model.lowered.fused_layer), None)


def _logits_symbol(model) -> str:
    fused = model.lowered.fused_layer
    names = [info.name for info in model.lowered.layers]
    number = names.index(fused) if fused else len(names) - 1
    return f"{'z' if fused else 'a'}{superscript(number + 2)}"


def _probabilities(model, logits: np.ndarray) -> np.ndarray:
    """The softmax over the classes (axis 1: per sample, or per position of a label map), or
    the sigmoid of each output: the activation ops' own forwards, in the logits' dtype."""
    link = LINKS[model.spec.loss.type]
    attrs = AxisAttrs(1) if link == "softmax" else NoAttrs()
    return REGISTRY[link].forward(get_backend("numpy"), attrs, logits)


def _counted(loss, y: np.ndarray) -> int:
    """The labels (cross_entropy) or targets (binary) the loss's mean counts: all of them but
    those equal to ignore_index (one at least, as the loss divides)."""
    if loss.ignore_index is None:
        return y.size
    return max(int(np.count_nonzero(y != loss.ignore_index)), 1)


def _probability_rule(loss, logits: str) -> str:
    """How p and the output's δ follow from the logits, as the loss computes them."""
    scale = scale_factor(loss)
    # of z: the final softmax (sigmoid) is fused into the loss, and its a is p
    p = f"{LINKS[loss.type]}({logits})" + (f" = a{logits[1:]}" if logits[0] == "z" else "")
    label = "target" if loss.type == "binary_cross_entropy" else "label"
    ignored = (f"; a {label} equal to ignore_index {loss.ignore_index} counts in neither N nor "
               "C, and its δ is 0" if loss.ignore_index is not None else "")
    if loss.type == "binary_cross_entropy":
        return (f"loss binary_cross_entropy: p = {p}, the probability of each output's target "
                f"1; C = −{scale}Σ (y·log p + (1 − y)·log(1 − p)) / N and ∂C/∂{logits} = "
                f"{scale}(p − y)/N, N the targets the mean counts{ignored}")
    smoothing = loss.label_smoothing
    target = (f"t = (1 − {smoothing:g})·onehot(y) + {smoothing:g}/K (label_smoothing, K the "
              "classes)" if smoothing else "t = onehot(y)")
    return (f"loss cross_entropy: p = {p}, the class probabilities (the softmax over the "
            f"classes, of each sample or position of a label map); C = −{scale}Σ t·log p / N "
            f"and ∂C/∂{logits} = {scale}(p − t)/N, {target}, N the labels the mean counts"
            f"{ignored}")


def _run_epochs(weights: Path, meta: dict) -> int | None:
    """train.epochs of the run a checkpoint was trained in: from the spec.yaml text its meta
    keeps, or the run directory's spec.yaml beside it when that is the text the meta's digest
    names (it may be a later resume's, of another length); None when neither says."""
    texts = [meta["spec_text"]] if meta.get("spec_text") else []
    try:
        beside = read_spec_text(Path(weights).parent / "spec.yaml")
        if meta.get("spec_sha256") == text_digest(beside):
            texts.append(beside)
    except SpecError:  # none there, or no spec
        pass
    for text in texts:
        try:
            epochs = load_yaml_text(text, str(weights)).data["train"]["epochs"]
        except (SpecError, TypeError, KeyError):
            continue
        if isinstance(epochs, int) and not isinstance(epochs, bool):
            return epochs
    return None


def _epochs_to_cover(spec, samples: int, done_epochs: int, steps: int) -> int:
    """The train.epochs the steps after `done_epochs` need (the spec's, or more)."""
    per_epoch = math.ceil(samples / spec.train.batch_size)
    return max(spec.train.epochs, done_epochs + math.ceil(steps / per_epoch))


def _extended(spec, done_epochs: int, steps: int, epochs: int, weights) -> str:
    """The note of a trace that goes past train.epochs, traced as training would go on."""
    ran = spec.train.epochs
    if weights is not None and done_epochs >= ran:  # a finished run's checkpoint
        start = f"the weights are of epoch {done_epochs}, the run's last (train.epochs {ran})"
    else:
        start = f"--steps {steps} goes past train.epochs {ran}"
    cosine = (f"; the cosine schedule restarts at epoch {done_epochs + 1}"
              if depends_on_length(spec.optimizer.schedule) and done_epochs else "")
    resumed = (f"nnrun train RUN_DIR/spec.yaml --resume RUN_DIR --epochs {epochs}"
               if done_epochs else f"nnrun train SPEC --epochs {epochs}")
    return f"{start}: traced with train.epochs {epochs}, as `{resumed}` trains{cosine}"


def _batches_from(trainer, first_epoch: int, steps: int):
    """(epoch, batch index, batches in the epoch, sample indices, rng), drawn as training
    draws them (Trainer.train_epoch), from the start of `first_epoch`."""
    taken, epoch, spec = 0, first_epoch, trainer.spec
    while True:
        rng, batches = epoch_batches(spec, len(trainer.data.train.x), epoch)
        for index, batch in enumerate(batches):
            yield epoch, index, len(batches), batch, rng
            taken += 1
            if taken == steps:
                return
        epoch += 1


def _host(model, value) -> np.ndarray:
    return np.array(model.backend.to_host(value), copy=True)


def _traced_layers(model, outputs: dict) -> list[TracedLayer]:
    layers = []
    for position, (info, layer) in enumerate(zip(model.lowered.layers, model.spec.model.layers)):
        activation = getattr(layer, "activation", None) or \
            (layer if layer.type in ACTIVATION_TYPES else None)  # an activation layer
        values = {kind: _host(model, outputs[f"trace/{kind}/{info.name}"])
                  for kind in ("a", "z", "delta") if f"trace/{kind}/{info.name}" in outputs}
        layers.append(TracedLayer(position + 2, info.name, info.type,
                                  activation.type if activation else None, **values))
    return layers


def _traced_params(model, layers, state, outputs, updates) -> list[TracedParam]:
    numbers = {layer.name: layer.index for layer in layers}
    types = {layer.name: layer.type for layer in layers}
    params = []
    for name, info in model.lowered.params.items():
        gradient = outputs.get(f"grad/{name}")
        input_first = name.endswith(".weight") and types[info.layer] in INPUT_FIRST_LAYERS
        params.append(TracedParam(name, numbers[info.layer], _host(model, state[name]),
                                  None if gradient is None else _host(model, gradient),
                                  _host(model, updates.get(name, state[name])), input_first))
    return params


def _notes(spec, outputs: int, continued: bool = False) -> list[str]:
    """`continued`: from a weights file's optimizer state (a velocity), which the first step
    uses."""
    optimizer = spec.optimizer
    rule = _update_rule(optimizer, continued)
    notes = [rule] if rule else []
    if optimizer.clip_grad_norm or optimizer.clip_grad_value:
        notes.append("the update uses the clipped gradients (optimizer.clip_grad_norm / "
                     "clip_grad_value); the gradients shown are before clipping")
    if getattr(optimizer, "weight_decay", 0):
        notes.append(_weight_decay_rule(optimizer))
    if spec.loss.type == "perceptron":
        notes.append(_perceptron_rule(outputs, spec.loss.scale))
    if spec.train.pruning is not None:
        notes.append("train.pruning is not applied by the trace")
    changed = [f"data.normalize: {spec.data.normalize}"] if spec.data.normalize != "none" else []
    changed += ["data.augment"] if spec.data.augment else []
    changed += ["data.permute_features"] if spec.data.permute_features is not False else []
    if changed:
        notes.append(f"x is the input as the model sees it, after {' and '.join(changed)}, "
                     "not the file's values")
    return notes


def _weight_decay_rule(optimizer) -> str:
    decay = f"{optimizer.weight_decay:g}"
    if optimizer.type == "adamw":  # decoupled: the weights shrink, the gradient stays as shown
        return (f"the update first shrinks each weight, w ← w·(1 − lr·{decay}) (adamw's "
                "decoupled weight decay), then takes the Adam step from the gradients shown")
    return f"the update adds weight decay to the gradients shown: ∂C/∂w + {decay}·w"


def _perceptron_rule(outputs: int, scale: float) -> str:
    times = f"{scale:g}·" if scale != 1 else ""
    if outputs == 1:
        return (f"loss perceptron: δ of the score is {times}(a − y)/N, the prediction a's error "
                "against the target y over the N samples the mean counts (at z = 0 the unit "
                "says 1, and C is 0 there although it errs); with sgd the update is the "
                f"perceptron rule w ← w + lr·{times}(y − a)·x, averaged over the batch (at N = 1 "
                "the rule itself)")
    return (f"loss perceptron: δ of the scores is {times}(onehot(predicted) − onehot(label))/N, "
            "0 when they agree, N the samples the mean counts; with sgd, on a mistake the "
            f"label's row of weights gains lr·{times}x/N and the predicted class's loses it "
            "(the multi-class perceptron rule, averaged over the batch)")


def _update_rule(optimizer, continued: bool = False) -> str | None:
    """How `updated` follows from the gradient shown, where it is not w - lr * gradient."""
    if optimizer.type == "sgd" and optimizer.momentum:
        m = f"{optimizer.momentum:g}"
        step = f"lr·(∂C/∂w + {m}·v)" if optimizer.nesterov else "lr·v"
        # nesterov's first step is already w - lr(1 + m) dC/dw (v starts as the gradient); a
        # weights file's velocity counts from the first step shown
        if optimizer.nesterov or continued:
            when = "updated is not"
        else:
            when = "from step 2 on, updated is not"
        start = " (v starts as the weights file's velocity)" if continued else ""
        return (f"the update keeps a velocity (PyTorch's SGD with momentum): v ← {m}·v + ∂C/∂w, "
                f"w ← w − {step}{start}; {when} w − lr·∂C/∂w")
    if optimizer.type != "sgd":
        return (f"the update is {optimizer.type}'s (PyTorch's rule), which scales each gradient "
                "by running statistics of the gradients: updated is not w − lr·∂C/∂w")
    return None


def _refuse_another_optimizers_state(path: Path, names: dict, expected: dict,
                                     optimizer: str) -> None:
    """Optimizer state the spec's optimizer type does not keep (Adam's exp_avg under sgd):
    the run trained with another type, whose state a trace cannot continue."""
    other = sorted(name for name in names if name.startswith("opt/") and name not in expected
                   and not name.endswith(".momentum"))
    if other:
        raise TraceError(f"{path}: keeps the state of another optimizer than the spec's "
                         f"{optimizer} ({', '.join(other[:2])}{', ...' * (len(other) > 2)}): "
                         f"{_ANOTHER_OPTIMIZER}")


# What a checkpoint of another optimizer's state is, and how a trace goes on from it.
_ANOTHER_OPTIMIZER = ("the run trained with another optimizer; trace with the run's (its "
                      "spec.yaml), or from a file of the parameters alone")


def _velocity_added(name: str, names: dict) -> bool:
    """A momentum the checkpoint's optimizer did not keep (traced with --set
    optimizer.momentum=0.9): it starts at 0, as a resume that adds it starts it."""
    return name.startswith("opt/") and name.endswith(".momentum") and \
        not any(given.endswith(".momentum") for given in names if given.startswith("opt/"))


def weights_headers(path: Path) -> dict:
    """The arrays of a weights file, from its header: a run's checkpoint holds `meta`."""
    try:
        return npz_headers(path)
    except DamagedFile as error:
        raise TraceError(f"{path}: not a readable .npz file ({error})") from None


def read_weights(path: Path, headers: dict, trainer: Trainer) -> tuple[dict, dict]:
    """Parameters (and buffers) by name from an .npz (`headers`: weights_headers): plain
    names (dense_1.weight) or a checkpoint's (params/dense_1.weight); every trainable
    parameter must be there. Of a checkpoint, its optimizer state (opt/...) too, and the epoch
    and step it was saved at. Values are cast to the spec's dtype (a float32 run may be traced
    in float64)."""
    model, expected = trainer.model, trainer.expected_shapes()
    checkpoint = "meta" in headers  # a run's: its state and meta, as a resume reads them
    meta = checkpoint_meta(path) if checkpoint else {"epoch": 0, "step": 0}
    names = {}
    for key in headers:
        if key != "meta" and not key.startswith("mask/"):
            name = key.removeprefix("params/")
            if name in names:
                raise TraceError(f"{path}: {given_twice(names[name], key, name)}")
            names[name] = key
    if checkpoint:
        _refuse_another_optimizers_state(path, names, expected, trainer.spec.optimizer.type)
        # a velocity the spec's settings no longer keep is not read, as a resume reads it
        names = {name: key for name, key in names.items()
                 if name in expected or not name.startswith("opt/")}
    unknown = sorted(set(names) - set(expected))
    missing = [name for name in (expected if checkpoint else model.lowered.params)
               if name not in names and not _velocity_added(name, names)]
    if missing and not unknown and all(name.startswith("opt/") for name in missing):
        raise TraceError(f"{path}: keeps no {trainer.spec.optimizer.type} state (missing "
                         f"{', '.join(missing)}): {_ANOTHER_OPTIMIZER}")
    if unknown or missing:
        problems = ([f"unknown arrays {', '.join(unknown)}"] if unknown else []) + \
                   ([f"missing {', '.join(missing)}"] if missing else [])
        raise TraceError(f"{path}: {'; '.join(problems)}; the model's parameters are "
                         f"{', '.join(model.param_infos)}")
    for name, key in names.items():
        if headers[key].shape != tuple(expected[name]):
            raise TraceError(f"{path}: '{key}' has shape {list(headers[key].shape)}, {name} "
                             f"needs {list(expected[name])}")
        if headers[key].dtype.kind not in "iuf":  # strings, complex numbers, booleans
            raise TraceError(f"{path}: '{key}' holds {headers[key].dtype} values; weights are "
                             "real numbers (save float arrays)")
    arrays = read_npz(path, {key: headers[key] for key in names.values()})
    not_finite = first_not_finite(arrays)
    if not_finite:
        raise TraceError(f"{path}: '{not_finite}' holds nan or inf; a trace starts from "
                         "finite weights")
    dtype, be = model.spec.dtype, model.backend
    with np.errstate(over="ignore"):  # too large for the dtype: inf, refused below
        cast = {key: arrays[key].astype(dtype) for key in names.values()}
    beyond = first_not_finite(cast)
    if beyond:
        raise TraceError(f"{path}: '{beyond}' holds values beyond the range of {dtype} (at "
                         f"most {np.finfo(dtype).max:.4g} in size); a trace starts from finite "
                         f"weights (or trace with --set dtype=float64)")
    return {name: be.from_host(cast[key]) for name, key in names.items()}, meta


__all__ = ["trace", "Trace", "TraceError", "read_weights"]
