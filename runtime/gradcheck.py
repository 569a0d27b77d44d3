"""`nnrun gradcheck`: the compiled gradients against central finite differences, in float64.

ReLU, max-pool and mae are not differentiable everywhere (OpDef.kink). When such a kink lies
within the step of an entry, the central difference averages two different slopes and no
gradient can match it. An entry that fails is put down to a kink when its two one-sided
differences disagree and the compiled gradient lies between them (it is the slope on the point's
own side). Kinks are reported and left out of the verdict, so that a failure means a wrong
gradient. Only a parameter that feeds such an op can be at a kink: for the others the loss is
smooth, and an entry that fails is parted from its gradient by the curvature (the central
difference's error, step squared * the third derivative) or by the rounding. It is taken again
at steps 10, 100 and 1000 times smaller, where that error is 100, 10^4 and 10^6 times less
(until the rounding, which grows as the step shrinks, is more than the tolerance allows), then
at the larger steps below; it is left out only where its differences cannot resolve it
("unresolved", _at_smaller_steps), so a wrong gradient still fails.

A central difference also carries the loss's rounding error divided by the step: about
1e-16 * |loss| / 1e-6. Next to a gradient of 1e-5 or less (the first layers of a deep sigmoid
net) that alone exceeds a tolerance of 1e-5. An entry that fails at the first step, not at a
kink, is therefore taken again at steps 10 and 100 times larger, where rounding weighs 10 and
100 times less and the truncation error (step squared) is still far below the tolerance. Where
even the largest step's rounding is more than the tolerance allows the gradient (tolerance *
|gradient|: a gradient below about 4e-6 at 1e-5), and the differences agree with it within
their rounding, the entry is not checkable at that tolerance: such entries are counted apart,
as kinks are. A wrong gradient disagrees at every step by more than the rounding. A tolerance
so tight that no entry is checkable fails, saying so; an entry whose gradient is exactly 0 where
the loss does not move at all (a dead unit) agrees exactly, at any tolerance.

Several units can sit on their kinks at once (a ReLU that zeroed every input of the next layer,
whose bias is 0, leaves that layer's outputs exactly 0 at the next ReLU): moving one entry then
takes some of them over and others not, and the compiled gradient (each kink's slope 0) lies
outside both one-sided differences. Such an entry is looked at again at a point nearby, every
parameter moved by about NUDGE, where the coincidence is gone: its gradient is checked there,
and the report says so (a gradient wrong only exactly at a kink would pass there).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from nnrun.compiler import schema
from nnrun.compiler.ops import REGISTRY
from nnrun.compiler.step import build_loss_and_grads

from .memory import loss_and_grads_bytes
from .model import Model

# Relative disagreement of the one-sided differences that marks a kink, and how far outside
# their range the gradient may lie, relative to their size.
KINK_DISAGREEMENT = 1e-2
# The steps an entry that fails at the first one is taken again with, as its multiples.
LARGER_STEPS = (10.0, 100.0)
# The same, smaller, first, for an entry of a parameter that feeds no op with a kink.
SMALLER_STEPS = (0.1, 0.01, 0.001)
# How many times its estimated error a difference may lie from the gradient for the entry to be
# unresolved by differences (left out), rather than wrong.
RESOLUTION = 3.0
# How far every parameter moves (a standard normal times this) for the second look at an entry
# whose one-sided differences disagree around a gradient outside them.
NUDGE = 1e-4
# The loss's rounding error in units of float64's epsilon times |loss|: measured at most 1 on
# deep sigmoid nets (|analytic - numeric| * step / (eps * |loss|)); 8 leaves room for longer sums.
ROUNDING = 8.0


@dataclass
class ParamCheck:
    name: str
    worst_relative_error: float  # over the entries checked (not at a kink, not in rounding)
    checked: int
    kinks: int = 0  # entries at a kink, left out of worst_relative_error
    worst_kink_error: float = 0.0  # what their central differences gave, for the report
    larger_step: int = 0  # entries within tolerance only at a larger step (rounding at the first)
    rounding: int = 0  # entries whose gradient is within the rounding of every difference
    unresolved: int = 0  # smooth entries whose differences cannot resolve their error
    nearby: int = 0  # entries judged at the point nearby (several kinks at once, maybe)
    smaller_step: int = 0  # entries judged at smaller steps (curvature, no kink on their path)
    kinked_ops: tuple[str, ...] = ()  # the ops with a kink that the parameter feeds


@dataclass
class EntryCheck:
    relative_error: float
    verdict: str  # "checked", "kink", "rounding" or "unresolved"
    larger_step: bool = False
    nearby: bool = False
    smaller_step: bool = False


@dataclass
class Difference:
    """A central difference at one step, its one-sided halves, and the rounding it carries."""
    numeric: float
    forward: float
    backward: float
    rounding: float


@dataclass
class Probe:
    """The loss around the initial parameters, one entry moved at a time."""
    model: Model
    params: dict
    x: np.ndarray
    y: np.ndarray
    center: float

    def difference(self, name: str, index: tuple, step: float) -> Difference:
        entry = self.params[name]
        original = entry[index]
        entry[index] = original + step
        plus = self.model.loss(self.params, self.x, self.y)
        entry[index] = original - step
        minus = self.model.loss(self.params, self.x, self.y)
        entry[index] = original
        size = max(abs(plus), abs(minus), abs(self.center))
        return Difference((plus - minus) / (2 * step), (plus - self.center) / step,
                          (self.center - minus) / step,
                          ROUNDING * np.finfo(np.float64).eps * size / step)


def random_batch(model: Model, batch: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets of the spec's shapes; under a loss's ignore_index, every fourth
    target from the second on is that value, so that the path that leaves them out is
    checked too (never all: the first is a label)."""
    shape = model.lowered.graph.inputs[0].type.shape[1:]
    x = rng.standard_normal((batch, *shape))
    logits = model.lowered.logits.type.shape[1:]
    if model.spec.loss.type in schema.CLASS_LABEL_LOSSES:  # a label per position
        # one output under perceptron reads classes 0 and 1; under cross_entropy, one class
        classes = max(logits[0], 2) if model.spec.loss.type == "perceptron" else logits[0]
        return x, _some_ignored(model, rng.integers(0, classes, (batch, *logits[1:])))
    if model.spec.loss.type == "binary_cross_entropy":
        return x, _some_ignored(model, rng.integers(0, 2, (batch, *logits)).astype(np.float64))
    return x, rng.standard_normal((batch, *logits))


def _some_ignored(model: Model, targets: np.ndarray) -> np.ndarray:
    ignored = getattr(model.spec.loss, "ignore_index", None)
    if ignored is not None:
        targets.reshape(-1)[1::4] = ignored
    return targets


def gradcheck(model: Model, batch: int = 4, samples: int = 8, eps: float = 1e-6,
              seed: int | None = None, x: np.ndarray | None = None,
              tolerance: float = 1e-5) -> list[ParamCheck]:
    """For each parameter, `samples` distinct random entries (all where it has no more):
    |analytic - numeric| / max(|a|, |n|, 1e-8). `x` replaces the random inputs (a batch of real
    samples, with their flat regions). `seed` (the spec's by default) draws the initial weights,
    as training does, the batch and the entries."""
    seed = model.spec.seed if seed is None else seed
    rng = np.random.default_rng(seed)
    params = {k: v.astype(np.float64, copy=False) for k, v in model.init_params(seed).items()}
    random_x, y = random_batch(model, batch if x is None else len(x), rng)
    x = random_x if x is None else np.asarray(x, dtype=np.float64)
    center, grads = model.loss_and_grads(params, x, y)
    probe = Probe(model, params, x, y, center)
    nearby = _nearby(probe, grads, np.random.default_rng([seed, 1]))
    kinked = kinked_ops(model)
    results = []
    for name, grad in grads.items():
        smooth = not kinked[name]
        entries = [_check_entry(probe, name, index, grad[index], eps, tolerance,
                                None if smooth else nearby, smooth)
                   for index in _entries(grad.shape, samples, rng)]
        results.append(_param_check(name, entries, kinked[name]))
    return results


def _entries(shape: tuple, samples: int, rng) -> list[tuple]:
    """`samples` distinct indices into an array of `shape`, or all of them where it has no more."""
    size = int(np.prod(shape))
    if samples >= size:
        return list(np.ndindex(shape))
    flat = rng.choice(size, samples, replace=False)
    return list(zip(*(axis.tolist() for axis in np.unravel_index(flat, shape))))


def kinked_ops(model: Model) -> dict[str, tuple[str, ...]]:
    """For each parameter, the ops with a kink (OpDef.kink) on its path to the loss: those whose
    inputs depend on it. Only they can put its entries at a kink."""
    graph = build_loss_and_grads(model.spec).graph
    depends_on = {param: {param.name} for param in graph.params}
    found = {param.name: set() for param in graph.params}
    for node in graph.nodes:
        params = set().union(*(depends_on.get(value, ()) for value in node.inputs))
        depends_on.update((output, params) for output in node.outputs)
        if _has_kink(node):
            for name in params:
                found[name].add(node.op)
    return {name: tuple(sorted(ops)) for name, ops in found.items()}


def _has_kink(node) -> bool:
    """Whether the node's op is not differentiable everywhere (OpDef.kink: relu at 0, a max
    pool's ties, mae's |d| at 0; not huber, whose slope is continuous)."""
    kink = REGISTRY[node.op].kink
    return kink is not None and kink(node.attrs)


def _nearby(probe: Probe, grads: dict, rng):
    """A function giving (probe, gradients) at a point near the probe's, each trainable
    parameter moved by NUDGE times a standard normal; computed once, when first asked for."""
    @functools.cache
    def point():
        moved = {name: value + NUDGE * rng.standard_normal(value.shape) if name in grads
                 else value for name, value in probe.params.items()}
        center, moved_grads = probe.model.loss_and_grads(moved, probe.x, probe.y)
        return Probe(probe.model, moved, probe.x, probe.y, center), moved_grads

    return point


def _param_check(name: str, entries: list[EntryCheck], kinked: tuple[str, ...]) -> ParamCheck:
    def errors(verdict):
        return [entry.relative_error for entry in entries if entry.verdict == verdict]

    checked, kinks = errors("checked"), errors("kink")
    return ParamCheck(name, max(checked, default=0.0), len(checked), len(kinks),
                      max(kinks, default=0.0),
                      larger_step=sum(entry.larger_step for entry in entries),
                      rounding=len(errors("rounding")), unresolved=len(errors("unresolved")),
                      nearby=sum(entry.nearby for entry in entries),
                      smaller_step=sum(entry.smaller_step for entry in entries),
                      kinked_ops=kinked)


def training_mode_layers(spec) -> list[str]:
    """The layers that compute otherwise in training (dropout, batchnorm), which gradcheck
    checks in inference mode."""
    names = schema.default_layer_names(spec.model.layers)
    return [name for layer, name in zip(spec.model.layers, names)
            if layer.type == "batchnorm" or (layer.type == "dropout" and layer.rate > 0)]


def working_set_bytes(model: Model, batch: int) -> int:
    """What gradcheck holds at `batch`, in the model's dtype (float64 for gradcheck): the
    loss-and-gradients graph's planned memory, its parameters and inputs, the host copy of the
    gradients it checks against, and the integer labels drawn before their cast. The training
    step, which check_memory estimates, is another graph."""
    labels = batch * int(np.prod(model.lowered.logits.type.shape[1:])) * 8
    return loss_and_grads_bytes(model, batch) + labels


def _check_entry(probe: Probe, name: str, index: tuple, analytic: float, eps: float,
                 tolerance: float, nearby=None, smooth: bool = False) -> EntryCheck:
    """`smooth`: the parameter feeds no op with a kink."""
    first = probe.difference(name, index, eps)
    error = _relative(analytic, first.numeric)
    if error <= tolerance:
        return EntryCheck(error, "checked")
    unresolved = None
    if smooth:  # no kink lies on the path: curvature, which smaller steps lessen; or a
        # gradient small beside its rounding, which the larger steps below judge
        smaller = _at_smaller_steps(probe, first, name, index, analytic, eps, tolerance)
        if smaller.verdict == "checked":
            return smaller
        unresolved = smaller if smaller.verdict == "unresolved" else None
        error = min(error, smaller.relative_error)  # the nearest the differences came
    elif _is_kink(analytic, first):
        return EntryCheck(error, "kink")
    if nearby is not None and _sides_disagree(first):  # several kinks at once, maybe
        moved, grads = nearby()
        entry = _check_entry(moved, name, index, grads[name][index], eps, tolerance)
        entry.nearby = True
        return entry
    differences = [first]
    for factor in LARGER_STEPS:
        differences.append(probe.difference(name, index, eps * factor))
        larger = _relative(analytic, differences[-1].numeric)
        if larger <= tolerance:
            return EntryCheck(larger, "checked", larger_step=True)
        error = min(error, larger)
    # Even the largest step's rounding is more than the tolerance allows this gradient (about
    # 4e-6 and below at 1e-5), and the differences agree within their rounding: not checkable.
    unmeasurable = differences[-1].rounding > tolerance * abs(analytic)
    if unmeasurable and any(abs(analytic - d.numeric) <= d.rounding for d in differences):
        return EntryCheck(error, "rounding")
    return unresolved or EntryCheck(error, "checked")


def _at_smaller_steps(probe: Probe, first: Difference, name: str, index: tuple,
                      analytic: float, eps: float, tolerance: float) -> EntryCheck:
    """The entry at steps 10, 100 and 1000 times smaller than `first`'s, where the central
    difference's error from curvature is 100, 10^4, 10^6 times less: "checked" at the first
    within tolerance; else "unresolved" where, at some step, the differences' error from
    curvature (estimated from the step before, as Richardson does) is more than their rounding
    and than the tolerance allows, and the gradient lies within it; else "failed"."""
    previous, verdict, least = first, "failed", math.inf
    for factor in SMALLER_STEPS:
        difference = probe.difference(name, index, eps * factor)
        error = _relative(analytic, difference.numeric)
        if error <= tolerance:
            return EntryCheck(error, "checked", smaller_step=True)
        least = min(least, error)
        # D(h) - D(h/10) = 0.99 c h^2: the error c (h/10)^2 left at this step is 1/99 of it.
        # Where rounding is the larger part, the larger steps judge the entry (rounding).
        curvature = abs(previous.numeric - difference.numeric) / 99
        resolution = curvature + difference.rounding
        if (difference.rounding <= curvature and resolution > tolerance * abs(analytic)
                and abs(analytic - difference.numeric) <= RESOLUTION * resolution):
            verdict = "unresolved"
        if difference.rounding > tolerance * abs(analytic):
            break
        previous = difference
    return EntryCheck(least, verdict)


def _sides_disagree(difference: Difference) -> bool:
    """The one-sided differences part by more than their rounding and KINK_DISAGREEMENT."""
    forward, backward = difference.forward, difference.backward
    apart = abs(forward - backward) > 2 * difference.rounding
    return apart and _relative(forward, backward) > KINK_DISAGREEMENT


def _is_kink(analytic: float, difference: Difference) -> bool:
    """The sides disagree and the gradient lies between them: the slope on its own side."""
    forward, backward = difference.forward, difference.backward
    size = max(abs(forward), abs(backward))
    low, high = min(forward, backward), max(forward, backward)
    outside = max(low - analytic, analytic - high, 0.0)
    return _sides_disagree(difference) and outside <= KINK_DISAGREEMENT * size


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-8)
