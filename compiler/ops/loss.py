"""Losses: each reduces to the mean over the batch (and elements), with a gradient op
`<loss>_grad(g, prediction, target)` that returns d loss / d prediction."""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import TensorType
from ..shapes import ShapeError, per_sample, size_of
from . import NoAttrs, OpDef, always, register
from .activation import _sigmoid
from .common import cached_constant, scalar_like


@dataclass(frozen=True)
class CrossEntropyAttrs:
    label_smoothing: float = 0.0
    ignore_index: int | None = None  # positions with this label count neither in sum nor mean


@dataclass(frozen=True)
class BinaryCrossEntropyAttrs:
    ignore_index: int | None = None


@dataclass(frozen=True)
class HuberAttrs:
    delta: float = 1.0


def _class_loss_shape(attrs, logits: TensorType, labels: TensorType,
                      loss: str = "cross_entropy") -> TensorType:
    """Class scores [B, classes] against labels [B], or per position: scores
    [B, classes, *spatial] (a label map) against labels [B, *spatial]."""
    expected = (logits.shape[0], *logits.shape[2:])
    if logits.rank < 2 or labels.shape != expected:
        spatial = per_sample(TensorType(expected))
        raise ShapeError(f"{loss} compares class scores {per_sample(logits)} with labels "
                         f"{spatial or '(one per sample)'}, got labels {per_sample(labels)}",
                         "end the model with one channel per class at the labels' size")
    return scalar_like(logits)


def _same_shape_loss_shape(attrs, prediction: TensorType, target: TensorType) -> TensorType:
    if prediction.shape != target.shape:
        raise ShapeError(f"prediction {per_sample(prediction)} and target {per_sample(target)} differ")
    return scalar_like(prediction)


def _log_softmax(xp, logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


# Scores are [B, K, *S] (S empty for one label per sample) and labels [B, *S]. The target
# distribution is built in place through flat positions: label l of position (b, s) sits at
# b*K*S + l*S + s of the flat scores. Ignored positions read class 0 and are zeroed by a mask.


def _position_starts(xp, labels_shape, classes):
    """b*K*S + s for every label position (b, s)."""
    batch, positions = labels_shape[0], size_of(labels_shape[1:])
    starts = (xp.arange(batch, dtype=xp.int64) * classes * positions)[:, None]
    return (starts + xp.arange(positions, dtype=xp.int64)).reshape(labels_shape)


def _valid_mask(xp, attrs, labels, dtype):
    """1 where a label counts, 0 where it is ignore_index: [B, 1, *S], to scale scores."""
    valid = (labels != attrs.ignore_index).astype(dtype)
    return valid.reshape(labels.shape[0], 1, *labels.shape[1:])


def _counted(xp, attrs, labels) -> int:
    if attrs.ignore_index is None:
        return labels.size
    return max(int(xp.count_nonzero(labels != attrs.ignore_index)), 1)


def _target_distribution(be, attrs, logits, labels):
    xp = be.xp
    classes = logits.shape[1]
    target = xp.full(logits.shape, attrs.label_smoothing / classes, dtype=logits.dtype)
    safe = labels if attrs.ignore_index is None else xp.where(labels == attrs.ignore_index, 0,
                                                              labels)
    positions = _position_starts(xp, labels.shape, classes) + safe * size_of(labels.shape[1:])
    target.reshape(-1)[positions] += 1 - attrs.label_smoothing
    if attrs.ignore_index is not None:
        target *= _valid_mask(xp, attrs, labels, logits.dtype)
    return target


def _cross_entropy_forward(be, attrs, logits, labels):
    xp = be.xp
    target = _target_distribution(be, attrs, logits, labels)
    # 0 - sum, not -sum: every label ignored gives 0, not -0
    return (0 - (target * _log_softmax(xp, logits)).sum()) / _counted(xp, attrs, labels)


def _cross_entropy_grad(be, attrs, g, logits, labels):
    xp = be.xp
    target = _target_distribution(be, attrs, logits, labels)
    difference = xp.exp(_log_softmax(xp, logits)) - target
    if attrs.ignore_index is not None:
        difference = difference * _valid_mask(xp, attrs, labels, logits.dtype)
    return difference * (g / _counted(xp, attrs, labels))


def _bce_forward(be, attrs, logits, target):
    xp = be.xp
    # max(x,0) - x*t + log(1 + e^-|x|): log(sigmoid) without overflow
    losses = xp.maximum(logits, 0) - logits * target + xp.log1p(xp.exp(-xp.abs(logits)))
    if attrs.ignore_index is None:
        return losses.mean()
    return (losses * (target != attrs.ignore_index)).sum() / _counted(xp, attrs, target)


def _bce_grad(be, attrs, g, logits, target):
    difference = _sigmoid(be.xp, logits) - target
    if attrs.ignore_index is not None:
        difference = difference * (target != attrs.ignore_index)
    return difference * (g / _counted(be.xp, attrs, target))


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
                   grad_into=(None, None), constants=None, kink=None):
    register(OpDef(name, attrs, shape, forward, _loss_vjp(f"{name}_grad"), doc=doc,
                   forward_into=into[0], scratch=into[1], constants=constants, kink=kink,
                   onnx_refusal="a training loss; an exported model ends at its prediction"))
    register(OpDef(f"{name}_grad", attrs, _prediction_shape, grad, None,
                   doc=f"d {name} / d prediction", forward_into=grad_into[0],
                   scratch=grad_into[1], constants=constants))


# --- softmax cross-entropy into preallocated buffers, in the forward's order ---------------


def _cross_entropy_scratch(attrs, *types):
    logits, labels = types[-2], types[-1]
    row = TensorType((logits.shape[0], 1, *logits.shape[2:]), logits.dtype)
    scratch = (logits, logits, row, TensorType(labels.shape, "int64"),
               TensorType(labels.shape, logits.dtype))
    if attrs.ignore_index is None:
        return scratch
    return (*scratch, row, TensorType(labels.shape, "bool"))  # the mask, the ignored positions


def _label_constants(attrs, *types):
    logits, labels = types[-2], types[-1]
    return [(("label positions", labels.shape, logits.shape[1]),
             TensorType(labels.shape, "int64"))]


def _label_starts(be, labels, classes):
    return cached_constant(be, ("label positions", labels.shape, classes),
                           lambda: _position_starts(be.xp, labels.shape, classes))


def _cross_entropy_into(be, attrs, out, logits, labels):
    starts = _label_starts(be, labels, logits.shape[1])
    be.softmax_cross_entropy_into(attrs, logits, labels, starts, out)


def _cross_entropy_grad_into(be, attrs, out, g, logits, labels):
    starts = _label_starts(be, labels, logits.shape[1])
    be.softmax_cross_entropy_grad_into(attrs, g, logits, labels, starts, out)


_register_loss("softmax_cross_entropy", CrossEntropyAttrs, _class_loss_shape,
               _cross_entropy_forward, _cross_entropy_grad,
               "mean over the labels (per sample, or per position of a label map; ignore_index "
               "left out) of -sum_c t_c log softmax(x)_c, t the (smoothed) one-hot label",
               into=(_cross_entropy_into, _cross_entropy_scratch),
               grad_into=(_cross_entropy_grad_into, _cross_entropy_scratch),
               constants=_label_constants)


# The loss and its gradient for the seed of back-propagation (d loss / d loss = 1) as one op,
# emitted by compiler/passes/loss_with_gradient.py: one log softmax and one target for both.


def _one(be, dtype):
    return cached_constant(be, ("one", dtype), lambda: be.xp.ones((), dtype=dtype))


def _with_grad_shape(attrs, logits, labels):
    return _class_loss_shape(attrs, logits, labels), logits


def _with_grad_forward(be, attrs, logits, labels):
    return (_cross_entropy_forward(be, attrs, logits, labels),
            _cross_entropy_grad(be, attrs, _one(be, logits.dtype), logits, labels))


def _with_grad_into(be, attrs, out, logits, labels):
    starts = _label_starts(be, labels, logits.shape[1])
    be.softmax_cross_entropy_with_grad_into(attrs, _one(be, logits.dtype), logits, labels,
                                            starts, out)


register(OpDef("softmax_cross_entropy_with_grad", CrossEntropyAttrs, _with_grad_shape,
               _with_grad_forward, None,
               doc="softmax_cross_entropy and its gradient d loss / d logits, at once",
               forward_into=_with_grad_into, scratch=_cross_entropy_scratch,
               constants=_label_constants,
               onnx_refusal="a training loss; an exported model ends at its prediction"))
# --- binary cross-entropy into preallocated buffers, in the forward's order ----------------


def _bce_scratch(attrs, *types):
    logits = types[-2]
    return (logits, logits, *((logits,) if attrs.ignore_index is not None else ()))


def _bce_grad_scratch(attrs, *types):
    logits = types[-2]
    mask = (logits,) if attrs.ignore_index is not None else ()
    return (logits, logits, TensorType(logits.shape, "bool"), logits, *mask)  # sigmoid's


def _device_count(xp, mask, dtype):
    """max(count_nonzero(mask), 1) as a scalar of `dtype` left where it was computed: a step
    captured as a device graph cannot read a count back to the host. (The same number as the
    int it replaces, so NumPy's results are unchanged.)"""
    return xp.maximum(xp.count_nonzero(mask), 1).astype(dtype)


def _counted_into(be, attrs, target, values, mask):
    """values *= (target != ignore_index); the count of counted targets."""
    if attrs.ignore_index is None:
        return target.size
    be.xp.not_equal(target, attrs.ignore_index, out=mask)
    be.xp.multiply(values, mask, out=values)
    return _device_count(be.xp, mask, values.dtype)


def _bce_into(be, attrs, out, logits, target):
    loss, losses, work, *mask = out
    xp = be.xp
    xp.maximum(logits, 0, out=losses)
    xp.multiply(logits, target, out=work)
    xp.subtract(losses, work, out=losses)
    xp.abs(logits, out=work)
    xp.negative(work, out=work)
    xp.exp(work, out=work)
    xp.log1p(work, out=work)
    xp.add(losses, work, out=losses)
    if attrs.ignore_index is None:
        xp.mean(losses, out=loss)
        return
    count = _counted_into(be, attrs, target, losses, mask[0])
    xp.sum(losses, out=loss)
    xp.divide(loss, count, out=loss)


def _bce_grad_into(be, attrs, out, g, logits, target):
    grad, e, d, sign, values, *mask = out
    be.activation_into("sigmoid", 0.0, logits, (grad, e, d, sign, values))
    be.xp.subtract(grad, target, out=grad)
    count = _counted_into(be, attrs, target, grad, mask[0] if mask else None)
    be.xp.multiply(grad, g / count, out=grad)


_register_loss("sigmoid_binary_cross_entropy", BinaryCrossEntropyAttrs, _same_shape_loss_shape,
               _bce_forward, _bce_grad,
               "mean of -t log sigmoid(x) - (1-t) log(1 - sigmoid(x)) over the targets that are "
               "not ignore_index", into=(_bce_into, _bce_scratch),
               grad_into=(_bce_grad_into, _bce_grad_scratch))
# --- regression losses into preallocated buffers, the plain forwards' numbers ----------------
# Without them a planned step ran the plain forwards, whose [B, outputs] temporaries the memory
# plan did not count (huber's step took 2.3x the estimate at 1,024 outputs).


def _difference_scratch(attrs, *types):
    return (types[-2],)  # p - t, as the prediction


def _huber_scratch(attrs, *types):
    prediction = types[-2]
    return (prediction, prediction, prediction)


def _mean_of_difference_into(ufunc: str):
    """mean(ufunc(p - t)) into the loss, the difference in its scratch (mse: square, mae: abs)."""
    def into(be, attrs, out, p, t):
        loss, d = out
        be.xp.subtract(p, t, out=d)
        getattr(be.xp, ufunc)(d, out=d)
        be.xp.mean(d, out=loss)

    return into


def _mse_grad_into(be, attrs, out, g, p, t):
    (grad,) = out
    be.xp.subtract(p, t, out=grad)
    be.xp.multiply(grad, 2 * g / p.size, out=grad)


def _mae_grad_into(be, attrs, out, g, p, t):
    (grad,) = out
    be.xp.subtract(p, t, out=grad)
    be.xp.sign(grad, out=grad)
    be.xp.multiply(grad, g / p.size, out=grad)


def _huber_into(be, attrs, out, p, t):
    # m (d - m / 2), m = min(d, delta): d * (d / 2) below delta, delta * (d - delta / 2) from it,
    # the plain forward's numbers to the bit, without a masked copy (NumPy's took 4.4 ms a
    # million values, 25 times a pass: huber's step was 5x PyTorch's, the speed audit)
    loss, d, m, term = out
    xp = be.xp
    xp.subtract(p, t, out=d)
    xp.abs(d, out=d)
    xp.minimum(d, attrs.delta, out=m)
    xp.multiply(m, 0.5, out=term)
    xp.subtract(d, term, out=term)
    xp.multiply(m, term, out=term)
    xp.mean(term, out=loss)


def _huber_grad_into(be, attrs, out, g, p, t):
    (grad,) = out
    be.xp.subtract(p, t, out=grad)
    be.xp.clip(grad, -attrs.delta, attrs.delta, out=grad)
    be.xp.multiply(grad, g / p.size, out=grad)


_register_loss("mse", NoAttrs, _same_shape_loss_shape, lambda be, a, p, t: ((p - t) ** 2).mean(),
               lambda be, a, g, p, t: (p - t) * (2 * g / p.size), "mean of (p - t)^2",
               into=(_mean_of_difference_into("square"), _difference_scratch),
               grad_into=(_mse_grad_into, None))
_register_loss("mae", NoAttrs, _same_shape_loss_shape, lambda be, a, p, t: be.xp.abs(p - t).mean(),
               lambda be, a, g, p, t: be.xp.sign(p - t) * (g / p.size), "mean of |p - t|",
               into=(_mean_of_difference_into("abs"), _difference_scratch),
               grad_into=(_mae_grad_into, None), kink=always)
_register_loss("huber", HuberAttrs, _same_shape_loss_shape, _huber_forward, _huber_grad,
               "mean of 0.5 d^2 if |d| < delta else delta (|d| - delta/2), d = p - t",
               into=(_huber_into, _huber_scratch), grad_into=(_huber_grad_into, None))


# --- the perceptron criterion ---------------------------------------------------------------
# Scores [B, K, *S] against class labels [B, *S]. K > 1: max_c z_c - z_label, whose gradient
# is +1 at the predicted class and -1 at the label (0 when they agree); K = 1: labels 0/1 and
# the prediction y = [z >= 0], (y - t) * z, gradient y - t. With batch size 1 and SGD, a step
# is Rosenblatt's rule w += lr * (t - y) * x; larger batches take the mean of those.


def _perceptron_error(xp, logits, labels):
    """d loss / d scores of each position, before the mean: [B, K, *S]."""
    if logits.shape[1] == 1:
        predicted = (logits[:, 0] >= 0).astype(logits.dtype)
        return (predicted - labels)[:, None].astype(logits.dtype)
    classes = xp.arange(logits.shape[1]).reshape(1, -1, *([1] * (logits.ndim - 2)))
    predicted = logits.argmax(axis=1)[:, None]
    return ((classes == predicted).astype(logits.dtype)
            - (classes == labels[:, None]).astype(logits.dtype))


def _perceptron_forward(be, attrs, logits, labels):
    # (y - t) z summed over the classes, for K = 1 and K > 1 alike
    return (_perceptron_error(be.xp, logits, labels) * logits).sum() / labels.size


def _perceptron_grad(be, attrs, g, logits, labels):
    return _perceptron_error(be.xp, logits, labels) * (g / labels.size)


_register_loss("perceptron", NoAttrs,
               lambda attrs, logits, labels: _class_loss_shape(attrs, logits, labels, "perceptron"),
               _perceptron_forward, _perceptron_grad,
               "mean over the labels of max_c z_c - z_label (one output: (step(z) - t) * z, "
               "labels 0/1): the perceptron criterion, whose gradient is the perceptron rule",
               kink=always)
