"""Batch normalisation (batch statistics in training, running statistics in evaluation),
the running-statistics updates, and the dropout mask."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from ..ir import TensorType
from ..shapes import ShapeError, per_sample, size_of
from . import SLICED, OpDef, forward_through_into, register
from .common import cached_constant, channel_sums_into, channel_sums_scratch, same_as_first


@dataclass(frozen=True)
class EpsAttrs:
    eps: float = 1e-5


@dataclass(frozen=True)
class BatchNormAttrs:
    eps: float = 1e-5
    # Batch statistics over every rank of a data-parallel run (train.sync_batchnorm): each
    # per-channel mean taken here is averaged over the ranks (the identity in one process).
    sync: bool = False


@dataclass(frozen=True)
class StatisticsAttrs:
    # Running statistics of a synchronised batchnorm: over every rank's batch, as batch_norm_train's.
    sync: bool = False


@dataclass(frozen=True)
class MomentumAttrs:
    momentum: float = 0.9


@dataclass(frozen=True)
class RateAttrs:
    rate: float = 0.5
    stream: int = 0  # the dropout layer's number in its graph: each draws its own mask


def _reduce_axes(x):
    return (0, *range(2, x.ndim))


def _channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _rank_mean(be, attrs, stat):
    """A per-channel mean over this rank's samples, made the mean over every rank's when the
    statistics are synchronised (the ranks' batches are of equal size)."""
    if attrs.sync:
        be.allreduce_mean(stat)
    return stat


def _normalized(be, attrs, x):
    # The sums in numpy's own order for mean and var (sum / n), so that forward_into below can
    # repeat them exactly; the ranks' means are taken between the two passes.
    xp, axes = be.xp, _reduce_axes(x)
    count = x.size // x.shape[1]
    mean = _rank_mean(be, attrs, x.sum(axis=axes, keepdims=True) / count)
    deviations = x - mean
    var = _rank_mean(be, attrs, (deviations * deviations).sum(axis=axes, keepdims=True) / count)
    rstd = 1 / xp.sqrt(var + attrs.eps)
    return deviations * rstd, rstd


def _bn_shape(attrs, x: TensorType, *per_channel: TensorType) -> TensorType:
    if x.rank < 2:
        raise ShapeError(f"batchnorm needs a sample with a channel axis, got {per_sample(x)}")
    for p in per_channel:
        if p.shape != (x.shape[1],):
            raise ShapeError(f"per-channel value {list(p.shape)} does not match {x.shape[1]} channels")
    return x


# --- the same into preallocated buffers ------------------------------------------------------
# NumPy's x.var allocates a centred copy of x; these compute the same sums in the same order
# (mean = sum / n, var = sum((x - mean)^2) / n, as numpy's _var) in scratch buffers.


def _stat_type(x: TensorType) -> TensorType:
    return TensorType((1, x.shape[1], *([1] * (x.rank - 2))), x.dtype)


def _squared_deviations_into(xp, x, mean, deviations, rank_mean=lambda stat: stat) -> int:
    """The channel means (keepdims) and each value's squared deviation from its channel's
    mean, as numpy's var computes them; returns the count per channel."""
    count = x.size // x.shape[1]
    xp.sum(x, axis=_reduce_axes(x), keepdims=True, out=mean)
    xp.divide(mean, count, out=mean)
    rank_mean(mean)
    xp.subtract(x, mean, out=deviations)
    xp.multiply(deviations, deviations, out=deviations)
    return count


def _rstd_into(xp, attrs, var, rstd):
    """rstd = 1 / sqrt(var + eps), in place of what rstd held (var may be rstd itself)."""
    xp.add(var, attrs.eps, out=rstd)
    xp.sqrt(rstd, out=rstd)
    xp.divide(1, rstd, out=rstd)


def _normalized_into(be, attrs, x, mean, rstd, xhat):
    """xhat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps); `xhat` is first used for the
    squared deviations."""
    xp = be.xp
    rank_mean = partial(_rank_mean, be, attrs)
    count = _squared_deviations_into(xp, x, mean, xhat, rank_mean)
    xp.sum(xhat, axis=_reduce_axes(x), keepdims=True, out=rstd)
    xp.divide(rstd, count, out=rstd)
    rank_mean(rstd)
    _rstd_into(xp, attrs, rstd, rstd)
    xp.subtract(x, mean, out=xhat)
    xp.multiply(xhat, rstd, out=xhat)


def _bn_stats_scratch(attrs, x, *rest):
    return (_stat_type(x), _stat_type(x), x)


def _bn_train_into(be, attrs, out, x, gamma, beta):
    y, mean, rstd, xhat = out
    xp = be.xp
    _normalized_into(be, attrs, x, mean, rstd, xhat)
    xp.multiply(xhat, _channel(gamma, x.ndim), out=y)
    xp.add(y, _channel(beta, x.ndim), out=y)


def _bn_grad_input_scratch(attrs, g, x, gamma):
    stat = _stat_type(x)
    return (stat, stat, x, x, stat, stat, stat)


def _bn_grad_input_into(be, attrs, out, g, x, gamma):
    gx, mean, rstd, xhat, work, g_sum, g_xhat, factor = out
    xp = be.xp
    axes = _reduce_axes(x)
    count = x.size // x.shape[1]
    _normalized_into(be, attrs, x, mean, rstd, xhat)
    xp.sum(g, axis=axes, keepdims=True, out=g_sum)
    xp.multiply(g, xhat, out=work)
    xp.sum(work, axis=axes, keepdims=True, out=g_xhat)
    _rank_mean(be, attrs, g_sum)
    _rank_mean(be, attrs, g_xhat)
    xp.multiply(_channel(gamma, x.ndim), rstd, out=factor)
    xp.divide(factor, count, out=factor)
    xp.multiply(count, g, out=work)
    xp.subtract(work, g_sum, out=work)
    xp.multiply(xhat, g_xhat, out=xhat)
    xp.subtract(work, xhat, out=work)
    xp.multiply(factor, work, out=gx)


def _bn_grad_gamma_into(be, attrs, out, g, x):
    dgamma, mean, rstd, xhat = out
    xp = be.xp
    _normalized_into(be, attrs, x, mean, rstd, xhat)
    xp.multiply(g, xhat, out=xhat)
    xp.sum(xhat, axis=_reduce_axes(x), out=dgamma)


def _channel_mean_forward(be, attrs, x):
    return _rank_mean(be, attrs, x.mean(axis=_reduce_axes(x)))


def _channel_mean_into(be, attrs, out, x):
    be.xp.mean(x, axis=_reduce_axes(x), out=out[0])
    _rank_mean(be, attrs, out[0])


def _channel_var_forward(be, attrs, x):
    if attrs.sync:
        return forward_through_into("channel_var")(be, attrs, x)
    if x.size // x.shape[1] < 2:
        return be.xp.full((x.shape[1],), np.nan, dtype=x.dtype)
    return x.var(axis=_reduce_axes(x), ddof=1)


def _channel_var_into(be, attrs, out, x):
    var, mean, deviations = out
    xp = be.xp
    count = _squared_deviations_into(xp, x, mean, deviations, partial(_rank_mean, be, attrs))
    total = count * be.rank_count() if attrs.sync else count  # the same on every rank
    if total < 2:
        var.fill(np.nan)  # one value per channel has no unbiased variance (0/0)
        return
    xp.sum(deviations, axis=_reduce_axes(x), out=var)
    if attrs.sync:  # the ranks' batches are of equal size: the mean of their biased variances
        xp.divide(var, count, out=var)
        _rank_mean(be, attrs, var)
        xp.multiply(var, total / (total - 1), out=var)
    else:
        xp.divide(var, count - 1, out=var)


def _ema_forward(be, attrs, running, stat):
    # A batch with one value per channel (a last batch of one vector sample) has no unbiased
    # variance: channel_var gives nan, and the running statistic keeps its value rather than
    # turning nan for good (PyTorch refuses such a batch in training).
    blended = running * attrs.momentum + stat * (1 - attrs.momentum)
    return be.xp.where(be.xp.isnan(stat), running, blended)


# Dropout's random numbers come from a counter-based hash, not from a generator object: each
# element's bits are a hash of (its index, the step's key, the layer's stream), computed with
# 32-bit integer operations that NumPy and CuPy evaluate identically. So the same step draws
# the same mask on every backend, and the key is a small array the step reads from device
# memory (a CUDA graph can replay it). The key, fed as `rng` ([3] uint32), is drawn anew for
# each step by the training loop; a numpy Generator fed instead (older callers) gives the key.
# Its third word is the batch's first sample in the whole batch: a rank of a data-parallel step
# that holds samples 64..127 of a batch of 128 hashes their elements' indices in that batch, so
# N ranks draw one process's mask. The hash is two rounds of Wellons' lowbias32 integer mixer.

GOLDEN = 0x9E3779B9  # 2^32 / phi: spreads consecutive indices over the 32 bits
STREAM = 0x85EBCA6B


def _mix_into(xp, h, tmp) -> None:
    """h = lowbias32(h), in place (tmp: a scratch of h's shape)."""
    for shift, multiplier in ((16, 0x21F0AAAD), (15, 0x735A2D97), (15, None)):
        xp.right_shift(h, shift, out=tmp)
        xp.bitwise_xor(h, tmp, out=h)
        if multiplier is not None:
            xp.multiply(h, multiplier, out=h)


def dropout_key(seed: int, first_sample: int = 0) -> np.ndarray:
    """The [3] uint32 key of a step from a 64-bit seed, and the index of the batch's first
    sample in the whole batch (a rank's share starts there)."""
    seed = int(seed) % 2**64
    return np.array([seed & 0xFFFFFFFF, seed >> 32, first_sample % 2**32], dtype=np.uint32)


def _key(be, rng):
    if isinstance(rng, np.random.Generator):
        return be.xp.asarray(dropout_key(int(rng.integers(2**63))))
    return rng


def _random_bits_into(be, attrs, key, h, tmp) -> None:
    """h[i] = hash(i, key, stream): uniform 32-bit integers, one per element, i counted in the
    whole batch (from the element of sample key[2])."""
    xp = be.xp
    scaled = cached_constant(be, ("dropout_index", h.size), lambda: xp.multiply(
        xp.arange(h.size, dtype=xp.uint32), GOLDEN, dtype=xp.uint32))
    flat, flat_tmp = h.reshape(-1), tmp.reshape(-1)
    # (first element + i) * GOLDEN, in uint32 arithmetic as the plain index's
    xp.multiply(key[2:3], xp.uint32((h.size // h.shape[0] * GOLDEN) % 2**32), out=flat)
    xp.add(flat, scaled, out=flat)
    first = key[0] ^ xp.uint32((attrs.stream * STREAM) % 2**32)
    xp.bitwise_xor(flat, first, out=flat)
    _mix_into(xp, flat, flat_tmp)
    xp.add(flat, key[1], out=flat)
    _mix_into(xp, flat, flat_tmp)


def _keep_threshold(rate: float) -> int:
    """h >= threshold with probability 1 - rate (h uniform over 32 bits)."""
    return min(int(round(rate * 2**32)), 2**32 - 1)


def _dropout_mask_into(be, attrs, out, x, rng):
    mask, bits, tmp = out
    xp = be.xp
    _random_bits_into(be, attrs, _key(be, rng), bits, tmp)
    # kept as bools in tmp's first bytes (free by now), then copied as values: a comparison
    # written straight into the float mask casts through a buffer NumPy allocates per call
    kept = tmp.reshape(-1).view(xp.bool_)[:mask.size].reshape(mask.shape)
    xp.greater_equal(bits, _keep_threshold(attrs.rate), out=kept)
    xp.copyto(mask, kept)
    xp.multiply(mask, 1 / (1 - attrs.rate), out=mask)


def _bn_train_forward(be, attrs, x, gamma, beta):
    xhat, _ = _normalized(be, attrs, x)
    return xhat * _channel(gamma, x.ndim) + _channel(beta, x.ndim)


def _bn_train_grad_input(be, attrs, g, x, gamma):
    # Synchronised, the sums over the batch are the ranks' mean sums: with the ranks' equal
    # local counts that is the whole batch's formula, count and sums scaled alike.
    xhat, rstd = _normalized(be, attrs, x)
    axes = _reduce_axes(x)
    count = x.size // x.shape[1]
    g_sum = _rank_mean(be, attrs, g.sum(axis=axes, keepdims=True))
    g_xhat = _rank_mean(be, attrs, (g * xhat).sum(axis=axes, keepdims=True))
    return _channel(gamma, x.ndim) * rstd / count * (count * g - g_sum - xhat * g_xhat)


def _bn_train_grad_gamma(be, attrs, g, x):
    xhat, _ = _normalized(be, attrs, x)
    return (g * xhat).sum(axis=_reduce_axes(x))


def _bn_train_vjp(gb, node, g):
    x, gamma, _ = node.inputs
    return (gb.emit("batch_norm_train_grad_input", g, x, gamma, attrs=node.attrs),
            gb.emit("batch_norm_train_grad_gamma", g, x, attrs=node.attrs),
            gb.emit("bias_add_grad", g))


def _gamma_shape(attrs, g, x, *rest):
    return TensorType((x.shape[1],), x.dtype)


register(OpDef("batch_norm_train", BatchNormAttrs, _bn_shape, _bn_train_forward, _bn_train_vjp,
               doc="gamma * (x - mean_batch) / sqrt(var_batch + eps) + beta, per channel",
               forward_into=_bn_train_into, scratch=_bn_stats_scratch,
               onnx_refusal="batch statistics are for training; an inference graph normalises "
                            "with the running statistics (batch_norm_infer)"))
register(OpDef("batch_norm_train_grad_input", BatchNormAttrs, lambda a, g, x, gamma: x,
               _bn_train_grad_input, None,
               doc="d batch_norm_train / dx, through the batch statistics too",
               forward_into=_bn_grad_input_into, scratch=_bn_grad_input_scratch))
register(OpDef("batch_norm_train_grad_gamma", BatchNormAttrs, _gamma_shape, _bn_train_grad_gamma,
               None, doc="sum of g * x_hat per channel",
               forward_into=_bn_grad_gamma_into, scratch=_bn_stats_scratch))


# --- the batch statistics taken once (compiler/passes/batch_statistics.py) -------------------
# Each op above takes the batch's statistics anew: the forward, both gradients and the two
# running statistics read the activations about 36 times in a training step. The pass puts
# these in their place: the statistics once; the forward as PyTorch's CPU kernel writes it,
# y = x * scale + shift (scale = gamma / sqrt(var + eps), shift = beta - mean * scale); and
# one backward for x, gamma and beta from the kept statistics. About 14 passes in all.


def _batch_statistics_shape(attrs, x):
    stat = _channel_stat_shape(attrs, _bn_shape(attrs, x))
    return (stat, stat, stat)


def _batch_statistics_into(be, attrs, out, x):
    """mean and biased variance per channel (the ranks' means when synchronised), and the
    unbiased variance the running statistic takes (nan for one value per channel)."""
    mean, var, unbiased, deviations, *sums = out
    xp = be.xp
    count = x.size // x.shape[1]
    channel_sums_into(be, x, mean, sums)
    xp.divide(mean, count, out=mean)
    _rank_mean(be, attrs, mean)
    xp.subtract(x, _channel(mean, x.ndim), out=deviations)
    xp.multiply(deviations, deviations, out=deviations)
    channel_sums_into(be, deviations, var, sums)
    xp.divide(var, count, out=var)
    _rank_mean(be, attrs, var)
    total = count * be.rank_count() if attrs.sync else count  # the same on every rank
    if total < 2:
        unbiased.fill(np.nan)
    else:
        xp.multiply(var, total / (total - 1), out=unbiased)


def _scale_into(xp, attrs, var, gamma, scale):
    """scale = gamma / sqrt(var + eps), as 1 / sqrt(...) * gamma (PyTorch's rounding)."""
    _rstd_into(xp, attrs, var, scale)
    xp.multiply(scale, gamma, out=scale)


def _batch_norm_apply_into(be, attrs, out, x, mean, var, gamma, beta):
    """x * scale + (beta - mean * scale), PyTorch's CPU form, a pass fewer; where the step is
    checked against the reference executor (a device's, runtime/step_path.py), the
    reference's (x - mean) * scale + beta: where a channel's values are nearly equal (one
    sample of a vector), scale is up to 1 / sqrt(eps) and the shorter form's two large terms
    cancel to rounding noise that large, which failed the check."""
    y, scale, shift = out
    xp, n = be.xp, x.ndim
    _scale_into(xp, attrs, var, gamma, scale)
    if be.check_first_step:
        xp.subtract(x, _channel(mean, n), out=y)
        xp.multiply(y, _channel(scale, n), out=y)
        xp.add(y, _channel(beta, n), out=y)
        return
    xp.multiply(mean, scale, out=shift)
    xp.subtract(beta, shift, out=shift)
    xp.multiply(x, _channel(scale, n), out=y)
    xp.add(y, _channel(shift, n), out=y)


def _batch_norm_grad_shape(attrs, g, x, mean, var, gamma):
    stat = _channel_stat_shape(attrs, _bn_shape(attrs, same_as_first(attrs, x, g), mean, var,
                                                  gamma))
    return (x, stat, stat)


def _batch_norm_grad_scratch(attrs, g, x, mean, var, gamma):
    stat = _channel_stat_shape(attrs, x)
    return (x, stat, stat, stat, *channel_sums_scratch(x))


def _batch_norm_grad_into(be, attrs, out, g, x, mean, var, gamma):
    """dx = (g - mean(g) - (x - mean) * k) * rstd * gamma, k = mean(g * (x - mean)) * rstd^2
    (means per channel, over every rank's batch when synchronised), as PyTorch's CPU kernel;
    dgamma = sum(g * (x - mean)) * rstd and dbeta = sum(g), this rank's own sums."""
    gx, dgamma, dbeta, centred, rstd, mean_g, k, *sums = out
    xp, n = be.xp, x.ndim
    count = x.size // x.shape[1]
    _rstd_into(xp, attrs, var, rstd)
    channel_sums_into(be, g, dbeta, sums)
    xp.subtract(x, _channel(mean, n), out=centred)
    xp.multiply(centred, g, out=gx)  # gx is scratch until its last three lines
    channel_sums_into(be, gx, dgamma, sums)
    xp.copyto(mean_g, dbeta)
    xp.divide(_rank_mean(be, attrs, mean_g), count, out=mean_g)
    xp.copyto(k, dgamma)
    _rank_mean(be, attrs, k)
    xp.multiply(dgamma, rstd, out=dgamma)
    xp.multiply(k, rstd, out=k)  # k * rstd^2 as two products, PyTorch's rounding
    xp.multiply(k, rstd, out=k)
    xp.divide(k, count, out=k)
    xp.multiply(centred, _channel(k, n), out=centred)
    xp.subtract(g, centred, out=gx)
    xp.subtract(gx, _channel(mean_g, n), out=gx)
    xp.multiply(rstd, gamma, out=rstd)
    xp.multiply(gx, _channel(rstd, n), out=gx)


register(OpDef("batch_statistics", StatisticsAttrs, _batch_statistics_shape,
               forward_through_into("batch_statistics"), None,
               doc="per channel: mean, variance (biased) and unbiased variance of the batch",
               forward_into=_batch_statistics_into,
               scratch=lambda attrs, x: (x, *channel_sums_scratch(x))))
register(OpDef("batch_norm_apply", BatchNormAttrs, _bn_shape,
               forward_through_into("batch_norm_apply"), None,
               doc="x * scale + shift per channel: batch_norm_train from given statistics",
               forward_into=_batch_norm_apply_into,
               scratch=lambda attrs, x, mean, *rest: (mean, mean),
               batch_role=lambda attrs, inputs, outputs: SLICED, overwrites=(0,)))
register(OpDef("batch_norm_grad", BatchNormAttrs, _batch_norm_grad_shape,
               forward_through_into("batch_norm_grad"), None,
               doc="d batch_norm_train / d (x, gamma, beta) from the batch statistics",
               forward_into=_batch_norm_grad_into, scratch=_batch_norm_grad_scratch))


def _bn_infer_into(be, attrs, out, x, mean, var, gamma, beta):
    """x * scale + shift, scale = gamma / sqrt(var + eps) and shift = beta - mean * scale per
    channel: two passes over x where (x - mean) * scale + beta took three (PyTorch's CPU
    kernel computes it so too)."""
    y, scale, shift = out
    xp, n = be.xp, x.ndim
    xp.add(var, attrs.eps, out=scale)
    xp.sqrt(scale, out=scale)
    xp.divide(gamma, scale, out=scale)
    xp.multiply(mean, scale, out=shift)
    xp.subtract(beta, shift, out=shift)
    xp.multiply(x, _channel(scale, n), out=y)
    xp.add(y, _channel(shift, n), out=y)


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


def _bn_infer_onnx(ox, node):
    x, mean, var, gamma, beta = ox.inputs(node)
    if ox.dtype == np.float32:
        return ox.emit("BatchNormalization", x, gamma, beta, mean, var, epsilon=node.attrs.eps)
    # BatchNormalization's epsilon is a float32 attribute: 1e-5 rounded moves a float64
    # model's outputs where a channel's variance is small. The forward's arithmetic instead.
    shape = ox.ints([1, -1] + [1] * (len(node.inputs[0].type.shape) - 2))
    mean, var, gamma, beta = (ox.emit("Reshape", v, shape) for v in (mean, var, gamma, beta))
    scale = ox.emit("Div", gamma, ox.emit("Sqrt", ox.emit("Add", var, ox.constant(node.attrs.eps))))
    shift = ox.emit("Sub", beta, ox.emit("Mul", mean, scale))
    return ox.emit("Add", ox.emit("Mul", x, scale), shift)


register(OpDef("batch_norm_infer", EpsAttrs, _bn_shape, forward_through_into("batch_norm_infer"),
               _bn_infer_vjp,
               doc="gamma * (x - running_mean) / sqrt(running_var + eps) + beta",
               forward_into=_bn_infer_into, scratch=lambda attrs, x, mean, *rest: (mean, mean),
               batch_role=lambda attrs, inputs, outputs: SLICED, overwrites=(0,),
               onnx=_bn_infer_onnx))
register(OpDef("batch_norm_infer_grad_input", EpsAttrs, lambda a, g, var, gamma: g,
               _bn_infer_grad_input, None, doc="g * gamma / sqrt(var + eps)"))
register(OpDef("batch_norm_infer_grad_gamma", EpsAttrs, _gamma_shape, _bn_infer_grad_gamma, None,
               doc="sum of g * x_hat per channel, running statistics"))


_RUNNING_STATISTICS_REFUSAL = ("the running statistics are updated in training; an exported "
                               "model normalises with them as they are (batch_norm_infer)")


def _channel_stat_shape(attrs, x):
    return TensorType((x.shape[1],), x.dtype)


register(OpDef("channel_mean", StatisticsAttrs, _channel_stat_shape,
               _channel_mean_forward, None,
               doc="mean per channel over batch and space (for running statistics)",
               forward_into=_channel_mean_into, onnx_refusal=_RUNNING_STATISTICS_REFUSAL))
# Unbiased, as PyTorch's running_var is.
register(OpDef("channel_var", StatisticsAttrs, _channel_stat_shape,
               _channel_var_forward, None,
               doc="unbiased variance per channel (for running statistics); nan for one value",
               forward_into=_channel_var_into, scratch=lambda attrs, x: (_stat_type(x), x),
               onnx_refusal=_RUNNING_STATISTICS_REFUSAL))
register(OpDef("ema", MomentumAttrs, lambda a, running, stat: running,
               _ema_forward, None,
               doc="momentum * running + (1 - momentum) * stat; running where stat is nan",
               onnx_refusal=_RUNNING_STATISTICS_REFUSAL))


def _dropout_mask_forward(be, attrs, x, rng):
    xp = be.xp
    bits, tmp = xp.empty(x.shape, dtype=xp.uint32), xp.empty(x.shape, dtype=xp.uint32)
    _random_bits_into(be, attrs, _key(be, rng), bits, tmp)
    keep = bits >= _keep_threshold(attrs.rate)
    return keep.astype(x.dtype) * (1 / (1 - attrs.rate))


register(OpDef("dropout_mask", RateAttrs, lambda a, x, rng: x, _dropout_mask_forward,
               lambda gb, node, g: (None, None),
               doc="inverted dropout: 1/(1-rate) where hash(index, key, stream) >= rate * 2^32, "
                   "else 0",
               forward_into=_dropout_mask_into,
               scratch=lambda attrs, x, rng: (TensorType(x.shape, "uint32"),) * 2,
               # cached by size: the batch is one, so by the size of a sample
               constants=lambda attrs, x, rng: [(("dropout_index", size_of(x.shape[1:])),
                                                 TensorType(x.shape, "uint32"))],
               onnx_refusal="dropout is for training; in inference it is the identity and the "
                            "graph holds no mask"))
