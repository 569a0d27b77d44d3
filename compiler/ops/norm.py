"""Batch normalisation (batch statistics in training, running statistics in evaluation),
the running-statistics updates, and the dropout mask."""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import TensorType
from ..shapes import ShapeError, per_sample
from . import NoAttrs, OpDef, register


@dataclass(frozen=True)
class EpsAttrs:
    eps: float = 1e-5


@dataclass(frozen=True)
class MomentumAttrs:
    momentum: float = 0.9


@dataclass(frozen=True)
class RateAttrs:
    rate: float = 0.5


def _reduce_axes(x):
    return (0, *range(2, x.ndim))


def _channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _normalized(xp, x, eps):
    axes = _reduce_axes(x)
    mean = x.mean(axis=axes, keepdims=True)
    rstd = 1 / xp.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return (x - mean) * rstd, rstd


def _bn_shape(attrs, x: TensorType, *per_channel: TensorType) -> TensorType:
    if x.rank < 2:
        raise ShapeError(f"batchnorm needs a sample with a channel axis, got {per_sample(x)}")
    for p in per_channel:
        if p.shape != (x.shape[1],):
            raise ShapeError(f"per-channel value {list(p.shape)} does not match {x.shape[1]} channels")
    return x


def _bn_train_forward(be, attrs, x, gamma, beta):
    xhat, _ = _normalized(be.xp, x, attrs.eps)
    return xhat * _channel(gamma, x.ndim) + _channel(beta, x.ndim)


def _bn_train_grad_input(be, attrs, g, x, gamma):
    xhat, rstd = _normalized(be.xp, x, attrs.eps)
    axes = _reduce_axes(x)
    count = x.size // x.shape[1]
    g_sum = g.sum(axis=axes, keepdims=True)
    g_xhat = (g * xhat).sum(axis=axes, keepdims=True)
    return _channel(gamma, x.ndim) * rstd / count * (count * g - g_sum - xhat * g_xhat)


def _bn_train_grad_gamma(be, attrs, g, x):
    xhat, _ = _normalized(be.xp, x, attrs.eps)
    return (g * xhat).sum(axis=_reduce_axes(x))


def _bn_train_vjp(gb, node, g):
    x, gamma, _ = node.inputs
    return (gb.emit("batch_norm_train_grad_input", g, x, gamma, attrs=node.attrs),
            gb.emit("batch_norm_train_grad_gamma", g, x, attrs=node.attrs),
            gb.emit("bias_add_grad", g))


def _gamma_shape(attrs, g, x, *rest):
    return TensorType((x.shape[1],), x.dtype)


register(OpDef("batch_norm_train", EpsAttrs, _bn_shape, _bn_train_forward, _bn_train_vjp,
               doc="gamma * (x - mean_batch) / sqrt(var_batch + eps) + beta, per channel"))
register(OpDef("batch_norm_train_grad_input", EpsAttrs, lambda a, g, x, gamma: x,
               _bn_train_grad_input, None, is_gradient=True,
               doc="d batch_norm_train / dx, through the batch statistics too"))
register(OpDef("batch_norm_train_grad_gamma", EpsAttrs, _gamma_shape, _bn_train_grad_gamma, None,
               is_gradient=True, doc="sum of g * x_hat per channel"))


def _bn_infer_forward(be, attrs, x, mean, var, gamma, beta):
    n = x.ndim
    scale = _channel(gamma, n) / be.xp.sqrt(_channel(var, n) + attrs.eps)
    return (x - _channel(mean, n)) * scale + _channel(beta, n)


def _bn_infer_grad_input(be, attrs, g, var, gamma):
    return g * _channel(gamma / be.xp.sqrt(var + attrs.eps), g.ndim)


def _bn_infer_grad_gamma(be, attrs, g, x, mean, var):
    n = x.ndim
    xhat = (x - _channel(mean, n)) / be.xp.sqrt(_channel(var, n) + attrs.eps)
    return (g * xhat).sum(axis=_reduce_axes(x))


def _bn_infer_vjp(gb, node, g):
    x, mean, var, gamma, _ = node.inputs
    return (gb.emit("batch_norm_infer_grad_input", g, var, gamma, attrs=node.attrs), None, None,
            gb.emit("batch_norm_infer_grad_gamma", g, x, mean, var, attrs=node.attrs),
            gb.emit("bias_add_grad", g))


register(OpDef("batch_norm_infer", EpsAttrs, _bn_shape, _bn_infer_forward, _bn_infer_vjp,
               doc="gamma * (x - running_mean) / sqrt(running_var + eps) + beta"))
register(OpDef("batch_norm_infer_grad_input", EpsAttrs, lambda a, g, var, gamma: g,
               _bn_infer_grad_input, None, is_gradient=True, doc="g * gamma / sqrt(var + eps)"))
register(OpDef("batch_norm_infer_grad_gamma", EpsAttrs, _gamma_shape, _bn_infer_grad_gamma, None,
               is_gradient=True, doc="sum of g * x_hat per channel, running statistics"))


def _channel_stat_shape(attrs, x):
    return TensorType((x.shape[1],), x.dtype)


register(OpDef("channel_mean", NoAttrs, _channel_stat_shape,
               lambda be, a, x: x.mean(axis=_reduce_axes(x)), None, is_gradient=True,
               doc="mean per channel over batch and space (for running statistics)"))
# Unbiased, as PyTorch's running_var is.
register(OpDef("channel_var", NoAttrs, _channel_stat_shape,
               lambda be, a, x: x.var(axis=_reduce_axes(x), ddof=1), None, is_gradient=True,
               doc="unbiased variance per channel (for running statistics)"))
register(OpDef("ema", MomentumAttrs, lambda a, running, stat: running,
               lambda be, a, running, stat: running * a.momentum + stat * (1 - a.momentum),
               None, is_gradient=True, doc="momentum * running + (1 - momentum) * stat"))


def _dropout_mask_forward(be, attrs, x, rng):
    keep = rng.random(x.shape, dtype=x.dtype) >= attrs.rate
    return keep.astype(x.dtype) / (1 - attrs.rate)


register(OpDef("dropout_mask", RateAttrs, lambda a, x, rng: x, _dropout_mask_forward,
               lambda gb, node, g: (None, None),
               doc="inverted dropout: 1/(1-rate) with probability 1-rate, else 0"))
