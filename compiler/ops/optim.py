"""Optimizer updates and gradient clipping, with PyTorch's update rules.

Every update op takes (param, grad, lr, step, *state) and returns (new_param, *new_state), so
that a training step is one graph: no optimizer code runs outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..ir import TensorType
from ..shapes import ShapeError, size_of
from . import REGISTRY, NoAttrs, OpDef, always, register
from .common import scalar_like


@dataclass(frozen=True)
class SgdAttrs:
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0


@dataclass(frozen=True)
class AdamAttrs:
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False  # AdamW: decay the weights directly instead of adding to the gradient


@dataclass(frozen=True)
class RmsPropAttrs:
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class AdagradAttrs:
    eps: float = 1e-10
    weight_decay: float = 0.0


def _update_shape(attrs, p: TensorType, g: TensorType, lr, step, *state: TensorType):
    return (p, *state)


def _coupled_decay(attrs, p, g):
    return g + attrs.weight_decay * p if attrs.weight_decay else g


def _sgd_forward(be, attrs, p, g, lr, step, *velocity):
    g = _coupled_decay(attrs, p, g)
    if not attrs.momentum:
        return (p - lr * g,)
    # A zero-initialised buffer makes the first step v = g, as PyTorch's first step does.
    (v,) = velocity
    v = attrs.momentum * v + g
    direction = g + attrs.momentum * v if attrs.nesterov else v
    return p - lr * direction, v


def _adam_forward(be, attrs, p, g, lr, step, m, v):
    step_size, root_correction2, decay = be.adam_scalars(attrs, lr, step, p.dtype)
    if attrs.decoupled:
        p = p * decay
    else:
        g = _coupled_decay(attrs, p, g)
    m = attrs.beta1 * m + (1 - attrs.beta1) * g
    v = attrs.beta2 * v + (1 - attrs.beta2) * g * g
    denominator = be.xp.sqrt(v) / root_correction2 + attrs.eps
    return p - step_size * m / denominator, m, v


def _rmsprop_forward(be, attrs, p, g, lr, step, square_avg, *buffer):
    xp = be.xp
    g = _coupled_decay(attrs, p, g)
    square_avg = attrs.alpha * square_avg + (1 - attrs.alpha) * g * g
    scaled = g / (xp.sqrt(square_avg) + attrs.eps)
    if not attrs.momentum:
        return p - lr * scaled, square_avg
    (buf,) = buffer
    buf = attrs.momentum * buf + scaled
    return p - lr * buf, square_avg, buf


def _adagrad_forward(be, attrs, p, g, lr, step, total):
    g = _coupled_decay(attrs, p, g)
    total = total + g * g
    return p - lr * g / (be.xp.sqrt(total) + attrs.eps), total


# The same updates into preallocated buffers, in place (`out` may be the param and state
# inputs themselves), operation for operation as above so that they round identically.
# `out` is (new_param, *new_state, scratch_a, scratch_b).


def _two_scratch(attrs, p, *rest):
    return (p, p)


def _fused_update(rule):
    """forward_into through the backend's update kernel (generic: backends/fused.py)."""
    def into(be, attrs, out, p, g, lr, step, *state):
        be.optimizer_update_into(rule, attrs, out, p, g, lr, step, *state)

    return into


for _name, _attrs, _forward, _doc in (
    ("sgd_update", SgdAttrs, _sgd_forward,
     "v = momentum v + (g + wd p); p -= lr (nesterov ? g + momentum v : v)"),
    ("adam_update", AdamAttrs, _adam_forward,
     "m, v moving moments of g and g^2; p -= lr m_hat / (sqrt(v_hat) + eps)"),
    ("rmsprop_update", RmsPropAttrs, _rmsprop_forward,
     "s = alpha s + (1-alpha) g^2; p -= lr g / (sqrt(s) + eps)"),
    ("adagrad_update", AdagradAttrs, _adagrad_forward,
     "s += g^2; p -= lr g / (sqrt(s) + eps)"),
):
    register(OpDef(_name, _attrs, _update_shape, _forward, None, doc=_doc,
                   forward_into=_fused_update(_name), scratch=_two_scratch))

UPDATE_OPS = ("sgd_update", "adam_update", "rmsprop_update", "adagrad_update")


# --- one update over every parameter -----------------------------------------------------
# The grouping pass replaces the per-parameter update nodes of a step by one `update_group`
# node. Its inputs are (params..., grads..., lr, step, slot 1 of each param..., slot 2 ...).
# The memory plan lays each of those runs out contiguously, so forward_into updates three or
# four flat buffers with a handful of array calls, whatever the number of parameters; when a
# run is not contiguous it falls back to one update per parameter. Elementwise updates give
# the same numbers either way.


@dataclass(frozen=True)
class UpdateGroupAttrs:
    update: str = "sgd_update"
    attrs: Any = None  # the update op's attrs
    count: int = 0  # parameters
    slots: int = 0  # optimizer state tensors per parameter


def group_parts(attrs, inputs):
    """(params, grads, lr, step, [each optimizer slot's tensors]) of an update_group's inputs."""
    n = attrs.count
    params, grads, (lr, step) = inputs[:n], inputs[n:2 * n], inputs[2 * n:2 * n + 2]
    slots = [inputs[2 * n + 2 + k * n:2 * n + 2 + (k + 1) * n] for k in range(attrs.slots)]
    return params, grads, lr, step, slots


def _update_group_shape(attrs, *types):
    params, grads, lr, step, slots = group_parts(attrs, types)
    for p, g in zip(params, grads):
        if p.shape != g.shape:
            raise ShapeError(f"update of a {list(p.shape)} parameter with a "
                             f"{list(g.shape)} gradient")
    return (*params, *(t for slot in slots for t in slot))


def _update_group_forward(be, attrs, *arrays):
    params, grads, lr, step, slots = group_parts(attrs, arrays)
    forward = REGISTRY[attrs.update].forward
    results = [forward(be, attrs.attrs, p, g, lr, step, *(slot[i] for slot in slots))
               for i, (p, g) in enumerate(zip(params, grads))]
    return (*(r[0] for r in results),
            *(r[1 + k] for k in range(attrs.slots) for r in results))


def _update_group_scratch(attrs, *types):
    params = types[:attrs.count]
    total = sum(size_of(p.shape) for p in params)
    return (TensorType((total,), params[0].dtype),) * 2


def _flat_runs(xp, attrs, out, arrays):
    """The group as flat arrays: (params, grads, *slots) and the new (params, *slots), each one
    1-D view over consecutive pieces of one buffer; None when a run is not laid out so."""
    params, grads, _, _, slots = group_parts(attrs, arrays)
    n = attrs.count
    new_slots = out[n:n + n * attrs.slots]
    runs = [params, grads, *slots, out[:n],
            *(new_slots[k * n:(k + 1) * n] for k in range(attrs.slots))]
    flat = [_flat_view(xp, run) for run in runs]
    if any(f is None for f in flat):
        return None
    return flat[:2 + attrs.slots], flat[2 + attrs.slots:]


def _update_group_into(be, attrs, out, *arrays):
    params, grads, lr, step, slots = group_parts(attrs, arrays)
    n = attrs.count
    new_params, new_slots = out[:n], out[n:n + n * attrs.slots]
    scratch = out[n + n * attrs.slots:]
    update = REGISTRY[attrs.update]  # one of UPDATE_OPS, each with a forward_into
    flat = _flat_runs(be.xp, attrs, out, arrays)
    if flat is not None:
        (p, g, *state), new = flat
        update.forward_into(be, attrs.attrs, (*new, *scratch), p, g, lr, step, *state)
        return
    offset = 0
    for i, (p, g) in enumerate(zip(params, grads)):
        state = [slot[i] for slot in slots]
        outputs = (new_params[i], *(new_slots[k * n + i] for k in range(attrs.slots)))
        views = tuple(s[offset:offset + p.size].reshape(p.shape) for s in scratch)
        update.forward_into(be, attrs.attrs, (*outputs, *views), p, g, lr, step, *state)
        offset += p.size


def _update_group_bind(be, attrs, out, *arrays):
    """With every buffer fixed by the plan: find the flat runs once, and return the update of
    the flat buffers as a function of the inputs (None: not flat, or lr/step not fed yet)."""
    update = REGISTRY[attrs.update]
    params, grads, _, _, slots = group_parts(attrs, arrays)
    if any(a is None for a in (*params, *grads, *slots)):
        return None
    flat = _flat_runs(be.xp, attrs, out, arrays)
    if flat is None:
        return None
    (p, g, *state), new = flat
    outputs = (*new, *out[attrs.count * (1 + attrs.slots):])
    lr_at = 2 * attrs.count

    def run(*inputs):
        update.forward_into(be, attrs.attrs, outputs, p, g, inputs[lr_at], inputs[lr_at + 1],
                            *state)

    return run


def _flat_view(xp, arrays):
    """The 1-D array that `arrays` are consecutive pieces of (views of one buffer), or None."""
    first = arrays[0]
    base = first.base
    if base is None or not base.flags.c_contiguous:
        return None
    start = position = _address(first)
    for array in arrays:
        if (array.base is not base or array.dtype != first.dtype
                or not array.flags.c_contiguous or _address(array) != position):
            return None
        position += array.nbytes
    offset = start - _address(base)
    if offset < 0 or offset + (position - start) > base.nbytes:
        return None
    return base.reshape(-1).view(xp.uint8)[offset:offset + position - start].view(first.dtype)


def _address(array) -> int:
    interface = getattr(array, "__array_interface__", None)
    return interface["data"][0] if interface is not None else array.data.ptr


register(OpDef("update_group", UpdateGroupAttrs, _update_group_shape, _update_group_forward,
               None, forward_into=_update_group_into,
               scratch=_update_group_scratch, bind=_update_group_bind,
               doc="one optimizer update over every parameter (flat buffers when contiguous)"))


@dataclass(frozen=True)
class ClipAttrs:
    limit: float = 1.0


def _global_norm_forward(be, attrs, *grads):
    xp = be.xp
    return xp.sqrt(sum((g.astype(xp.float64) ** 2).sum() for g in grads)).astype(grads[0].dtype)


def _clip_by_norm_forward(be, attrs, g, norm):
    # PyTorch's clip_grad_norm_: scale by max_norm / (norm + 1e-6), never above 1.
    return g * be.xp.minimum(attrs.limit / (norm + 1e-6), 1.0).astype(g.dtype)


def _global_norm_scratch(attrs, *grads):
    return (TensorType((max(size_of(g.shape) for g in grads),), "float64"),)


def _global_norm_into(be, attrs, out, *grads):
    xp = be.xp
    norm, squares = out
    total = 0
    for g in grads:
        part = squares[:g.size].reshape(g.shape)
        xp.copyto(part, g)
        xp.square(part, out=part)
        total = total + part.sum()
    norm[...] = xp.sqrt(total)


def _clip_by_norm_into(be, attrs, out, g, norm):
    xp = be.xp
    xp.multiply(g, xp.minimum(attrs.limit / (norm + 1e-6), 1.0).astype(g.dtype), out=out[0])


register(OpDef("global_norm", NoAttrs, lambda a, *gs: scalar_like(gs[0]), _global_norm_forward,
               None, doc="sqrt of the sum of squares of all inputs",
               forward_into=_global_norm_into, scratch=_global_norm_scratch))
register(OpDef("clip_by_norm", ClipAttrs, lambda a, g, norm: g, _clip_by_norm_forward, None,
               doc="g * min(1, limit / (norm + 1e-6))",
               forward_into=_clip_by_norm_into))
register(OpDef("clip_by_value", ClipAttrs, lambda a, g: g,
               lambda be, a, g: be.xp.clip(g, -a.limit, a.limit), None,
               doc="each element clipped to [-limit, limit]",
               forward_into=lambda be, a, out, g: be.xp.clip(g, -a.limit, a.limit, out=out[0]),
               kink=always))
