"""Losses: each reduces to the mean over the batch (and elements), with a gradient op
`<loss>_grad(g, prediction, target)` that returns d loss / d prediction."""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import TensorType
from ..shapes import ShapeError, per_sample
from . import NoAttrs, OpDef, register
from .activation import _sigmoid
from .common import cached_constant, scalar_like


@dataclass(frozen=True)
class CrossEntropyAttrs:
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class HuberAttrs:
    delta: float = 1.0


def _class_loss_shape(attrs, logits: TensorType, labels: TensorType) -> TensorType:
    if logits.rank != 2:
        raise ShapeError(f"cross_entropy needs class scores [classes], the model ends with shape "
                         f"{per_sample(logits)}",
                         "end the model with {type: flatten} and a dense layer, one unit per class")
    return scalar_like(logits)


def _same_shape_loss_shape(attrs, prediction: TensorType, target: TensorType) -> TensorType:
    if prediction.shape != target.shape:
        raise ShapeError(f"prediction {per_sample(prediction)} and target {per_sample(target)} differ")
    return scalar_like(prediction)


def _log_softmax(xp, logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def _target_distribution(xp, labels, classes, smoothing, dtype):
    target = xp.full((labels.shape[0], classes), smoothing / classes, dtype=dtype)
    target[xp.arange(labels.shape[0]), labels] += 1 - smoothing
    return target


def _cross_entropy_forward(be, attrs, logits, labels):
    xp = be.xp
    target = _target_distribution(xp, labels, logits.shape[1], attrs.label_smoothing, logits.dtype)
    return -(target * _log_softmax(xp, logits)).sum() / logits.shape[0]


def _cross_entropy_grad(be, attrs, g, logits, labels):
    xp = be.xp
    target = _target_distribution(xp, labels, logits.shape[1], attrs.label_smoothing, logits.dtype)
    return (xp.exp(_log_softmax(xp, logits)) - target) * (g / logits.shape[0])


def _bce_forward(be, attrs, logits, target):
    xp = be.xp
    # max(x,0) - x*t + log(1 + e^-|x|): log(sigmoid) without overflow
    losses = xp.maximum(logits, 0) - logits * target + xp.log1p(xp.exp(-xp.abs(logits)))
    return losses.mean()


def _bce_grad(be, attrs, g, logits, target):
    return (_sigmoid(be.xp, logits) - target) * (g / logits.size)


def _huber_forward(be, attrs, p, t):
    xp = be.xp
    d = xp.abs(p - t)
    return xp.where(d < attrs.delta, 0.5 * d * d, attrs.delta * (d - 0.5 * attrs.delta)).mean()


def _huber_grad(be, attrs, g, p, t):
    xp = be.xp
    d = p - t
    return xp.clip(d, -attrs.delta, attrs.delta) * (g / p.size)


def _loss_vjp(grad_op):
    def vjp(gb, node, g):
        prediction, target = node.inputs
        return gb.emit(grad_op, g, prediction, target, attrs=node.attrs), None

    return vjp


def _prediction_shape(attrs, g, prediction, target):
    return prediction


def _register_loss(name, attrs, shape, forward, grad, doc, into=(None, None),
                   grad_into=(None, None)):
    register(OpDef(name, attrs, shape, forward, _loss_vjp(f"{name}_grad"), doc=doc,
                   forward_into=into[0], scratch=into[1],
                   onnx_refusal="a training loss; an exported model ends at its prediction"))
    register(OpDef(f"{name}_grad", attrs, _prediction_shape, grad, None, is_gradient=True,
                   doc=f"d {name} / d prediction", forward_into=grad_into[0],
                   scratch=grad_into[1]))


# --- softmax cross-entropy into preallocated buffers, in the forward's order ---------------


def _cross_entropy_scratch(attrs, *types):
    logits = types[-2]
    batch = logits.shape[0]
    return (logits, logits, TensorType((batch, 1), logits.dtype),
            TensorType((batch,), "int64"), TensorType((batch,), logits.dtype))


def _log_softmax_and_target_into(be, attrs, logits, labels, log_probs, target, row, positions,
                                 picked):
    xp = be.xp
    batch, classes = logits.shape
    xp.max(logits, axis=1, keepdims=True, out=row)
    xp.subtract(logits, row, out=log_probs)
    xp.exp(log_probs, out=target)
    xp.sum(target, axis=1, keepdims=True, out=row)
    xp.log(row, out=row)
    xp.subtract(log_probs, row, out=log_probs)
    target.fill(attrs.label_smoothing / classes)
    row_starts = cached_constant(be, ("row starts", batch, classes),
                                 lambda: xp.arange(batch, dtype=xp.int64) * classes)
    xp.add(row_starts, labels, out=positions)
    flat = target.reshape(-1)
    be.take_into(flat, positions, picked)
    xp.add(picked, 1 - attrs.label_smoothing, out=picked)
    flat[positions] = picked


def _cross_entropy_into(be, attrs, out, logits, labels):
    loss, log_probs, target, row, positions, picked = out
    xp = be.xp
    _log_softmax_and_target_into(be, attrs, logits, labels, log_probs, target, row, positions,
                                 picked)
    xp.multiply(target, log_probs, out=target)
    xp.sum(target, out=loss)
    xp.negative(loss, out=loss)
    xp.divide(loss, logits.shape[0], out=loss)


def _cross_entropy_grad_into(be, attrs, out, g, logits, labels):
    grad, log_probs, target, row, positions, picked = out
    xp = be.xp
    _log_softmax_and_target_into(be, attrs, logits, labels, log_probs, target, row, positions,
                                 picked)
    xp.exp(log_probs, out=log_probs)
    xp.subtract(log_probs, target, out=log_probs)
    xp.multiply(log_probs, g / logits.shape[0], out=grad)


_register_loss("softmax_cross_entropy", CrossEntropyAttrs, _class_loss_shape,
               _cross_entropy_forward, _cross_entropy_grad,
               "mean over the batch of -sum_c t_c log softmax(x)_c, t the (smoothed) one-hot label",
               into=(_cross_entropy_into, _cross_entropy_scratch),
               grad_into=(_cross_entropy_grad_into, _cross_entropy_scratch))
_register_loss("sigmoid_binary_cross_entropy", NoAttrs, _same_shape_loss_shape, _bce_forward,
               _bce_grad, "mean of -t log sigmoid(x) - (1-t) log(1 - sigmoid(x))")
_register_loss("mse", NoAttrs, _same_shape_loss_shape, lambda be, a, p, t: ((p - t) ** 2).mean(),
               lambda be, a, g, p, t: (p - t) * (2 * g / p.size), "mean of (p - t)^2")
_register_loss("mae", NoAttrs, _same_shape_loss_shape, lambda be, a, p, t: be.xp.abs(p - t).mean(),
               lambda be, a, g, p, t: be.xp.sign(p - t) * (g / p.size), "mean of |p - t|")
_register_loss("huber", HuberAttrs, _same_shape_loss_shape, _huber_forward, _huber_grad,
               "mean of 0.5 d^2 if |d| < delta else delta (|d| - delta/2), d = p - t")
