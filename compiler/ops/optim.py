"""Optimizer updates and gradient clipping, with PyTorch's update rules.

Every update op takes (param, grad, lr, step, *state) and returns (new_param, *new_state), so
that a training step is one graph: no optimizer code runs outside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import TensorType
from . import NoAttrs, OpDef, register
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
    xp = be.xp
    if attrs.decoupled:
        p = p * (1 - lr * attrs.weight_decay)
    else:
        g = _coupled_decay(attrs, p, g)
    m = attrs.beta1 * m + (1 - attrs.beta1) * g
    v = attrs.beta2 * v + (1 - attrs.beta2) * g * g
    correction1 = 1 - attrs.beta1 ** step
    correction2 = 1 - attrs.beta2 ** step
    denominator = xp.sqrt(v) / xp.sqrt(correction2) + attrs.eps
    return p - (lr / correction1) * m / denominator, m, v


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


for _name, _attrs, _forward, _doc in (
    ("sgd_update", SgdAttrs, _sgd_forward,
     "v = momentum v + (g + wd p); p -= lr (nesterov ? g + momentum v : v)"),
    ("adam_update", AdamAttrs, _adam_forward,
     "m, v moving moments of g and g^2; p -= lr m_hat / (sqrt(v_hat) + eps)"),
    ("rmsprop_update", RmsPropAttrs, _rmsprop_forward,
     "s = alpha s + (1-alpha) g^2; p -= lr g / (sqrt(s) + eps)"),
    ("adagrad_update", AdagradAttrs, _adagrad_forward, "s += g^2; p -= lr g / (sqrt(s) + eps)"),
):
    register(OpDef(_name, _attrs, _update_shape, _forward, None, is_gradient=True, doc=_doc))


@dataclass(frozen=True)
class ClipAttrs:
    limit: float = 1.0


def _global_norm_forward(be, attrs, *grads):
    xp = be.xp
    return xp.sqrt(sum((g.astype(xp.float64) ** 2).sum() for g in grads)).astype(grads[0].dtype)


def _clip_by_norm_forward(be, attrs, g, norm):
    # PyTorch's clip_grad_norm_: scale by max_norm / (norm + 1e-6), never above 1.
    return g * be.xp.minimum(attrs.limit / (norm + 1e-6), 1.0).astype(g.dtype)


register(OpDef("global_norm", NoAttrs, lambda a, *gs: scalar_like(gs[0]), _global_norm_forward,
               None, is_gradient=True, doc="sqrt of the sum of squares of all inputs"))
register(OpDef("clip_by_norm", ClipAttrs, lambda a, g, norm: g, _clip_by_norm_forward, None,
               is_gradient=True, doc="g * min(1, limit / (norm + 1e-6))"))
register(OpDef("clip_by_value", ClipAttrs, lambda a, g: g,
               lambda be, a, g: be.xp.clip(g, -a.limit, a.limit), None, is_gradient=True,
               doc="each element clipped to [-limit, limit]"))
