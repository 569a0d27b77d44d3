"""Elementwise activations and their gradient ops.

Gradients of activations whose derivative is cheapest from the output (sigmoid, tanh, softmax)
take the forward output `y`; the others take the input `x`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ir import TensorType
from . import NoAttrs, OpDef, always, register
from .common import onnx_op, same_as_first


@dataclass(frozen=True)
class AlphaAttrs:
    alpha: float = 0.01


@dataclass(frozen=True)
class AxisAttrs:
    axis: int = 1


def _from_input(grad_op):
    def vjp(gb, node, g):
        (x,) = node.inputs
        return (gb.emit(grad_op, g, x, attrs=node.attrs),)

    return vjp


def _from_output(grad_op):
    def vjp(gb, node, g):
        return (gb.emit(grad_op, g, node.output, attrs=node.attrs),)

    return vjp


def _activation(name, attrs, forward, grad_forward, doc, uses_output=False, into=None,
                grad_into=None, onnx=None, overwrites=((), ()), kink=None):
    """Declare an activation and its gradient op (`<name>_grad(g, x_or_y)`) together.
    `into`/`grad_into`: (forward_into, scratch rule) pairs for the memory-planned executor;
    `overwrites`: the inputs each of the two may write its output over (OpDef.overwrites);
    `onnx`: its ONNX lowering; `kink`: OpDef.kink."""
    vjp = (_from_output if uses_output else _from_input)(f"{name}_grad")
    forward_into, scratch = into or (None, None)
    register(OpDef(name, attrs, same_as_first, forward, vjp, doc=doc,
                   forward_into=forward_into, scratch=scratch, batch_parallel=True, onnx=onnx,
                   overwrites=overwrites[0], kink=kink))
    forward_into, scratch = grad_into or (None, None)
    register(OpDef(f"{name}_grad", attrs, same_as_first, grad_forward, None,
                   doc=f"gradient of {name}: g * d{name}/dx",
                   forward_into=forward_into, scratch=scratch, batch_parallel=True,
                   overwrites=overwrites[1]))


# --- the same computations into preallocated buffers, operation for operation, so that they
# round exactly as the forwards above do. `out` is (output, *scratch).


def _mask_scratch(attrs, *types):
    """A comparison's bool mask, and the mask in the values' type (_as_values)."""
    return (TensorType(types[-1].shape, "bool"), types[-1])


def _value_scratch(attrs, *types):
    return (types[-1],)


def _blend_scratch(attrs, g, x):
    """A term of a blend of two choices, the mask, and the mask in the values' type."""
    return (x, TensorType(x.shape, "bool"), x)


def _as_values(xp, mask, values):
    """values = mask as 0.0/1.0. NumPy casts bool to float by assignment without allocating;
    inside a ufunc (g * mask) the cast goes through a buffer allocated at each call, which a
    step that allocates nothing (issue 7) cannot have. g * 1.0 and g * 0.0 are g * True and
    g * False exactly."""
    xp.copyto(values, mask)
    return values


def _relu_grad_into(be, attrs, out, g, x):
    y, positive, mask = out
    be.xp.greater(x, 0, out=positive)
    be.xp.multiply(g, _as_values(be.xp, positive, mask), out=y)


def _leaky_relu_grad_into(be, attrs, out, g, x):
    # where(x > 0, g, alpha g) as g * [x > 0] + (g * [x <= 0]) alpha: each term is the value
    # or zero, so the sum is exactly the chosen one (for a finite g; alpha multiplies after
    # the mask, so that g * alpha overflowing where x > 0 makes no inf * 0)
    y, kept, mask, values = out
    xp = be.xp
    xp.greater(x, 0, out=mask)
    xp.multiply(g, _as_values(xp, mask, values), out=kept)
    xp.less_equal(x, 0, out=mask)
    xp.multiply(g, _as_values(xp, mask, values), out=y)
    xp.multiply(y, attrs.alpha, out=y)
    xp.add(y, kept, out=y)


def _elu_into(be, attrs, out, x):
    # where(x > 0, x, alpha * expm1(min(x, 0))) as max(x, 0) + alpha * expm1(min(x, 0)): where
    # x > 0 the second term is exactly 0, elsewhere the first is (+-0 added to the term leaves
    # it, -0 included, and x = -inf gives -alpha as the where does)
    y, below = out
    xp = be.xp
    xp.minimum(x, 0, out=below)
    _expm1_of_negative_into(xp, below, spare=y)
    xp.multiply(below, attrs.alpha, out=below)
    be.relu_into(x, y)
    xp.add(y, below, out=y)


# NumPy's float32 expm1 and log1p are not vectorised (5 to 8 times exp's and log's time: ELU
# and softplus layers took twice PyTorch's step, docs/benchmarks.md); in float32 they are
# computed from tanh and log, which are, keeping the digits that exp(a) - 1 and log(1 + e)
# lose near 0 (within 5.5 units in the last place of float64's; float64 keeps NumPy's own).


def _expm1_of_negative_into(xp, a, spare) -> None:
    """a = expm1(a) in place, for a <= 0: in float32 2t / (1 - t), t = tanh(a / 2)."""
    if a.dtype != np.float32:
        xp.expm1(a, out=a)
        return
    a *= 0.5
    xp.tanh(a, out=a)
    xp.subtract(1, a, out=spare)
    a *= 2
    a /= spare


def _log1p_of_fraction_into(xp, e, spare) -> None:
    """e = log1p(e) in place, for 0 <= e <= 1: in float32 log(u) - ((u - 1) - e) / u with
    u = 1 + e, the second term the rounding of 1 + e (u - 1 and that difference are exact)."""
    if e.dtype != np.float32:
        xp.log1p(e, out=e)
        return
    xp.add(e, 1, out=spare)
    spare -= 1
    xp.subtract(spare, e, out=e)
    spare += 1
    e /= spare
    xp.log(spare, out=spare)
    xp.subtract(spare, e, out=e)


def _expm1_of_negative(xp, a):
    a = a.copy()
    _expm1_of_negative_into(xp, a, xp.empty_like(a))
    return a


def _elu_grad_into(be, attrs, out, g, x):
    # where(x > 0, g, g * alpha * exp(min(x, 0))), in the forward's (and PyTorch's) order, as
    # (g * [x <= 0]) * alpha * exp(min(x, 0)) + g * [x > 0]: as leaky_relu's, each term is the
    # value or zero. A copy through a mask of mixed signs is 2.4 times this whole blend's time
    # in NumPy (docs/benchmarks.md).
    y, below, mask, values = out
    xp = be.xp
    xp.less_equal(x, 0, out=mask)
    xp.multiply(g, _as_values(xp, mask, values), out=y)
    xp.multiply(y, attrs.alpha, out=y)
    xp.minimum(x, 0, out=below)
    xp.exp(below, out=below)
    xp.multiply(y, below, out=y)
    xp.greater(x, 0, out=mask)
    xp.multiply(g, _as_values(xp, mask, values), out=below)
    xp.add(y, below, out=y)


def _softplus_into(be, attrs, out, x):
    # max(x, 0) + log1p(exp(-|x|)), in the forward's order
    y, tail = out
    xp = be.xp
    xp.abs(x, out=tail)
    xp.negative(tail, out=tail)
    xp.exp(tail, out=tail)
    _log1p_of_fraction_into(xp, tail, spare=y)
    be.relu_into(x, y)
    xp.add(y, tail, out=y)


def _softplus_grad_into(be, attrs, out, g, x):
    # g * sigmoid(x): sigmoid as the fused kernel computes it (the forward's numbers)
    (y,) = out
    be.activation_into("sigmoid", 0.0, x, (y,))
    be.xp.multiply(g, y, out=y)


def _gelu_into(be, attrs, out, x):
    # 0.5 * x * (1 + erf(x / sqrt(2))), in the forward's order; out[1] keeps the CDF term
    # (gelu_cdf's second output, gelu's scratch)
    y, cdf = out
    be.gelu_cdf_into(x, cdf)
    be.xp.multiply(x, 0.5, out=y)
    be.xp.multiply(y, cdf, out=y)


def _gelu_grad_into(be, attrs, out, g, x):
    y, cdf, pdf = out
    be.gelu_cdf_into(x, cdf)
    _gelu_grad_from_cdf_into(be, g, x, cdf, y, cdf, pdf)


def _gelu_grad_from_cdf_into(be, g, x, cdf, y, half, pdf) -> None:
    """y = g * (cdf / 2 + x * pdf), pdf = exp(-x^2 / 2) / sqrt(2 pi): `half` takes cdf / 2
    (it may be cdf itself), `pdf` the rest."""
    xp = be.xp
    xp.multiply(cdf, 0.5, out=half)
    xp.multiply(x, -0.5, out=pdf)
    xp.multiply(pdf, x, out=pdf)
    xp.exp(pdf, out=pdf)
    xp.divide(pdf, math.sqrt(2 * math.pi), out=pdf)
    xp.multiply(x, pdf, out=pdf)
    xp.add(half, pdf, out=pdf)
    xp.multiply(g, pdf, out=y)


def _step_into(be, attrs, out, x):
    y, at_least_zero = out
    be.xp.greater_equal(x, 0, out=at_least_zero)
    be.xp.copyto(y, at_least_zero)


def _step_grad_into(be, attrs, out, g, x):
    out[0].fill(0)


def _fused_into(name):
    """forward_into through the backend's activation kernel (generic: backends/fused.py)."""
    def into(be, attrs, out, x):
        be.activation_into(name, getattr(attrs, "alpha", 0.0), x, out)

    return into


def _sigmoid_grad_into(be, attrs, out, g, y):
    result, one_minus = out
    xp = be.xp
    xp.multiply(g, y, out=result)
    xp.subtract(1, y, out=one_minus)
    xp.multiply(result, one_minus, out=result)


def _tanh_grad_into(be, attrs, out, g, y):
    (result,) = out
    xp = be.xp
    xp.multiply(y, y, out=result)
    xp.subtract(1, result, out=result)
    xp.multiply(g, result, out=result)


def _sigmoid(xp, x):
    # PyTorch's formula, in four passes (a split by sign took eleven). exp(-x) overflows to
    # inf below about -88 in float32, and 1 / inf is the 0 that sigmoid rounds to there.
    with np.errstate(over="ignore"):
        return 1 / (1 + xp.exp(-x))


def _cdf_term(be, x):
    out = be.xp.empty_like(x)
    be.gelu_cdf_into(x, out)
    return out


def _gelu(be, x):
    return 0.5 * x * _cdf_term(be, x)


def _gelu_grad(be, attrs, g, x):
    return _gelu_grad_cdf(be, attrs, g, x, _cdf_term(be, x))


def _softplus(xp, x):
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|), stable for large |x|
    tail = xp.exp(-xp.abs(x))
    _log1p_of_fraction_into(xp, tail, xp.empty_like(tail))
    return xp.maximum(x, 0) + tail


def _softmax(be, attrs, x):
    xp = be.xp
    shifted = x - x.max(axis=attrs.axis, keepdims=True)
    e = xp.exp(shifted)
    return e / e.sum(axis=attrs.axis, keepdims=True)


def _softmax_grad(be, attrs, g, y):
    return y * (g - (g * y).sum(axis=attrs.axis, keepdims=True))


# The softmax into the plan's buffers, in the forward's order. A reduction's row is copied
# across the axis before it is subtracted or divided: a broadcast operand makes NumPy allocate
# a buffer at each call, a copy does not.
#
# Along an axis whose elements lie in short runs (the channels of a small map: those of
# [B, 64, 4, 4] are 16 apart), NumPy's reductions take a run at a time: the maximum over the
# channels of [256, 64, 4, 4] took 0.5 ms, against 0.05 ms over the leading axis of the same
# values copied channel by channel, [64, 256, 16], whose rows are long. Both add the channels
# one after the other, in order: the same sums. A run of one (the last axis) is summed
# pairwise instead, so it keeps its reduction. How short a run must be is the backend's
# (short_runs_by_copy_below, backends/fused.py).


def _softmax_scratch(attrs, x):
    row = list(x.shape)
    row[attrs.axis] = 1
    return (TensorType(tuple(row), x.dtype), x)  # a reduction's row, and the row across


def _by_channel_copy(be, x, axis, room):
    """x copied into `room` (a buffer of its size) as [channels, before, after], the channels
    along `axis`; None where the axis's runs are single, or not shorter than the backend
    reduces by a copy."""
    axis %= x.ndim
    before, after = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1:])
    if not 1 < after < be.short_runs_by_copy_below:
        return None
    by_channel = room.reshape(x.shape[axis], before, after)
    be.xp.copyto(by_channel, x.reshape(before, -1, after).transpose(1, 0, 2))
    return by_channel


def _softmax_into(be, attrs, out, x):
    y, row, across = out
    xp = be.xp
    by_channel = _by_channel_copy(be, x, attrs.axis, across)
    if by_channel is None:
        _softmax_along_into(xp, attrs.axis, x, y, row, across)
        return
    rows, rows_across = row.reshape(by_channel.shape[1:]), y.reshape(by_channel.shape)
    xp.max(by_channel, axis=0, out=rows)
    xp.copyto(rows_across, rows)  # in y until the result is copied there
    xp.subtract(by_channel, rows_across, out=by_channel)
    xp.exp(by_channel, out=by_channel)
    xp.sum(by_channel, axis=0, out=rows)
    xp.copyto(rows_across, rows)
    xp.divide(by_channel, rows_across, out=by_channel)
    xp.copyto(y.reshape(by_channel.shape[1], -1, by_channel.shape[2]),
              by_channel.transpose(1, 0, 2))


def _softmax_along_into(xp, axis, x, y, row, across):
    xp.max(x, axis=axis, keepdims=True, out=row)
    xp.copyto(across, row)
    xp.subtract(x, across, out=y)
    xp.exp(y, out=y)
    xp.sum(y, axis=axis, keepdims=True, out=row)
    xp.copyto(across, row)
    xp.divide(y, across, out=y)


def _softmax_grad_into(be, attrs, out, g, y):
    # y * (g - sum(g * y)); `result` holds the products' by-channel copy until it is written
    result, row, across = out
    xp = be.xp
    xp.multiply(g, y, out=across)
    by_channel = _by_channel_copy(be, across, attrs.axis, result)
    if by_channel is None:
        xp.sum(across, axis=attrs.axis, keepdims=True, out=row)
    else:
        xp.sum(by_channel, axis=0, out=row.reshape(by_channel.shape[1:]))
    xp.copyto(across, row)
    xp.subtract(g, across, out=result)
    xp.multiply(y, result, out=result)


# --- ONNX lowerings (compiler/export_onnx.py): `ox` emits ONNX nodes, returns their outputs


def _elu_onnx(ox, node):
    # ONNX's Elu computes exp(x) - 1, which loses the digits of small negative x (measured:
    # 1.3% off at x = -1e-6 in float32 on onnxruntime); nnrun uses expm1, as this: expm1(m) =
    # 2t / (1 - t), t = tanh(m / 2), keeps them for m <= 0.
    (x,) = ox.inputs(node)
    negative = ox.emit("Min", x, ox.constant(0))
    t = ox.emit("Tanh", ox.emit("Mul", negative, ox.constant(0.5)))
    expm1 = ox.emit("Div", ox.emit("Mul", t, ox.constant(2)), ox.emit("Sub", ox.constant(1), t))
    below = ox.emit("Mul", expm1, ox.constant(node.attrs.alpha))
    return ox.emit("Where", ox.emit("Greater", x, ox.constant(0)), x, below)


def _sigmoid_onnx(ox, node):
    # ONNX's Sigmoid on onnxruntime loses the digits of small outputs (measured: 47% off at
    # x = -16 in float32, 0 for 1e-9 at x = -20): nnrun's own form, 1 / (1 + exp(-x)).
    (x,) = ox.inputs(node)
    e = ox.emit("Exp", ox.emit("Neg", x))
    return ox.emit("Div", ox.constant(1), ox.emit("Add", e, ox.constant(1)))


def _softplus_onnx(ox, node):
    (x,) = ox.inputs(node)
    if ox.dtype == np.float32:
        return ox.emit("Softplus", x)
    # onnxruntime has no float64 Softplus: max(x, 0) + log1p(exp(-|x|)), as nnrun computes it,
    # log1p(e) as e * log(u) / (u - 1) with u = 1 + e (e itself where u rounds to 1), which
    # keeps the digits that log(1 + e) loses
    e = ox.emit("Exp", ox.emit("Neg", ox.emit("Abs", x)))
    u = ox.emit("Add", ox.constant(1), e)
    ratio = ox.emit("Div", ox.emit("Mul", e, ox.emit("Log", u)), ox.emit("Sub", u, ox.constant(1)))
    log1p = ox.emit("Where", ox.emit("Equal", u, ox.constant(1)), e, ratio)
    return ox.emit("Add", ox.emit("Max", x, ox.constant(0)), log1p)


def _leaky_relu_onnx(ox, node):
    (x,) = ox.inputs(node)
    if ox.dtype == np.float32:
        return ox.emit("LeakyRelu", x, alpha=node.attrs.alpha)
    # LeakyRelu's alpha is a float32 attribute: a float64 model multiplies by its own constant
    below = ox.emit("Mul", x, ox.constant(node.attrs.alpha))
    return ox.emit("Where", ox.emit("Greater", x, ox.constant(0)), x, below)


def _step_onnx(ox, node):
    (x,) = ox.inputs(node)
    at_least_zero = ox.emit("GreaterOrEqual", x, ox.constant(0))
    return ox.emit("Where", at_least_zero, ox.constant(1), ox.constant(0))


def _gelu_onnx(ox, node):
    # ONNX has Gelu from opset 20 only: 0.5 x (1 + erf(x / sqrt(2))) in the forward's order,
    # the CDF term as the backend computes it in each dtype.
    (x,) = ox.inputs(node)
    cdf = _gelu_cdf_float32_onnx(ox, x) if ox.dtype == np.float32 else _gelu_cdf_erf_onnx(ox, x)
    return ox.emit("Mul", ox.emit("Mul", x, ox.constant(0.5)), cdf)


def _gelu_cdf_erf_onnx(ox, x):
    return ox.emit("Add", ox.emit("Erf", ox.emit("Div", x, ox.constant(math.sqrt(2)))),
                   ox.constant(1))


# The NumPy backend's float32 erfc polynomial (backends/numpy_backend.py, _ERFC_POLYNOMIAL,
# highest degree first), which compiler/ cannot import; a test holds the two equal.
GELU_ERFC_POLYNOMIAL = (
    0.14493021369121967, -0.6808271776379925, 1.1567337568256995, -0.6962518985613164,
    -0.08028043242985036, 0.0012675864803081832, 0.03460279997287045, 0.3866404121540742,
    0.9986327833379387, -1.2654479969016665)


def _gelu_cdf_float32_onnx(ox, x):
    # 1 + Erf loses the digits of small outputs for negative x (onnxruntime: 100% off at x = -6
    # in float32): the backend's form, erfc(z) = t exp(P(t) - z^2), t = 1 / (1 + z / 2),
    # z = |x| / sqrt(2), then e for x < 0 and 2 - e for x > 0 as e + (1 + sign(x)) (1 - e).
    t = ox.emit("Mul", ox.emit("Abs", x), ox.constant(0.5 / math.sqrt(2)))
    t = ox.emit("Reciprocal", ox.emit("Add", t, ox.constant(1)))
    square = ox.emit("Mul", ox.emit("Mul", x, x), ox.constant(0.5))
    result = ox.emit("Mul", t, ox.constant(GELU_ERFC_POLYNOMIAL[0]))
    for coefficient in GELU_ERFC_POLYNOMIAL[1:-1]:
        result = ox.emit("Mul", ox.emit("Add", result, ox.constant(coefficient)), t)
    result = ox.emit("Add", result, ox.constant(GELU_ERFC_POLYNOMIAL[-1]))
    e = ox.emit("Mul", ox.emit("Exp", ox.emit("Sub", result, square)), t)
    above = ox.emit("Mul", ox.emit("Add", ox.emit("Sign", x), ox.constant(1)),
                    ox.emit("Sub", ox.constant(1), e))
    return ox.emit("Add", e, above)


_activation("relu", NoAttrs, lambda be, a, x: be.xp.maximum(x, 0),
            # The gradient at exactly 0 is taken as 0, as PyTorch does.
            lambda be, a, g, x: g * (x > 0), "max(x, 0)",
            into=(_fused_into("relu"), None),
            grad_into=(_relu_grad_into, _mask_scratch), onnx=onnx_op("Relu"),
            overwrites=((0,), (0, 1)), kink=always)
_activation("leaky_relu", AlphaAttrs, lambda be, a, x: be.xp.where(x > 0, x, a.alpha * x),
            lambda be, a, g, x: be.xp.where(x > 0, g, a.alpha * g), "x if x > 0 else alpha*x",
            into=(_fused_into("leaky_relu"), None),
            grad_into=(_leaky_relu_grad_into, _blend_scratch),
            onnx=_leaky_relu_onnx, overwrites=((), (0, 1)),
            kink=lambda a: a.alpha != 1.0)  # slope 1 above 0, alpha below
_activation("elu", AlphaAttrs,
            lambda be, a, x: be.xp.where(x > 0, x,
                                         a.alpha * _expm1_of_negative(be.xp, be.xp.minimum(x, 0))),
            lambda be, a, g, x: be.xp.where(x > 0, g, g * a.alpha * be.xp.exp(be.xp.minimum(x, 0))),
            "x if x > 0 else alpha*(exp(x) - 1)", onnx=_elu_onnx,
            into=(_elu_into, _value_scratch),
            grad_into=(_elu_grad_into, _blend_scratch),
            kink=lambda a: a.alpha != 1.0)  # slope 1 above 0, alpha at 0 from below
_activation("sigmoid", NoAttrs, lambda be, a, x: _sigmoid(be.xp, x),
            lambda be, a, g, y: g * y * (1 - y), "1 / (1 + exp(-x))", uses_output=True,
            into=(_fused_into("sigmoid"), None),
            grad_into=(_sigmoid_grad_into, _value_scratch), onnx=_sigmoid_onnx,
            overwrites=((0,), (0,)))
_activation("tanh", NoAttrs, lambda be, a, x: be.xp.tanh(x),
            lambda be, a, g, y: g * (1 - y * y), "tanh(x)", uses_output=True,
            into=(_fused_into("tanh"), None),
            grad_into=(_tanh_grad_into, None), onnx=onnx_op("Tanh"), overwrites=((0,), (1,)))
_activation("gelu", NoAttrs, lambda be, a, x: _gelu(be, x), _gelu_grad,
            "x * Phi(x), Phi the standard normal CDF (exact form)",
            into=(_gelu_into, _value_scratch),
            grad_into=(_gelu_grad_into, lambda attrs, g, x: (x, x)), onnx=_gelu_onnx,
            overwrites=((0,), (0, 1)))


# Kept for the backward pass (compiler/passes/gelu_cdf.py): the forward's 1 + erf(x / sqrt(2)),
# which gelu_grad would compute again (erf is most of either op's time).
def _gelu_cdf_shape(attrs, x: TensorType):
    return x, x


def _gelu_cdf(be, attrs, x):
    cdf = _cdf_term(be, x)
    return 0.5 * x * cdf, cdf


def _gelu_grad_cdf(be, attrs, g, x, cdf):
    pdf = be.xp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return g * (0.5 * cdf + x * pdf)


def _gelu_grad_cdf_into(be, attrs, out, g, x, cdf):
    # gelu_grad's operations on the same values, but for erf: the same numbers
    y, half, pdf = out
    _gelu_grad_from_cdf_into(be, g, x, cdf, y, half, pdf)


register(OpDef("gelu_cdf", NoAttrs, _gelu_cdf_shape, _gelu_cdf, None,
               forward_into=_gelu_into, batch_parallel=True,
               doc="(gelu(x), 1 + erf(x / sqrt(2))): gelu that keeps its CDF term for the "
                   "backward pass"))
register(OpDef("gelu_grad_cdf", NoAttrs, same_as_first, _gelu_grad_cdf, None,
               forward_into=_gelu_grad_cdf_into, scratch=lambda attrs, g, x, cdf: (x, x),
               batch_parallel=True, overwrites=(0,),
               doc="gradient of gelu from the CDF term gelu_cdf kept: "
                   "g * (cdf / 2 + x * exp(-x^2 / 2) / sqrt(2 pi))"))


_activation("softplus", NoAttrs, lambda be, a, x: _softplus(be.xp, x),
            lambda be, a, g, x: g * _sigmoid(be.xp, x), "log(1 + exp(x))",
            onnx=_softplus_onnx, into=(_softplus_into, _value_scratch),
            grad_into=(_softplus_grad_into, None))
_activation("softmax", AxisAttrs, _softmax, _softmax_grad,
            "exp(x_i) / sum_j exp(x_j) along axis", uses_output=True,
            onnx=onnx_op("Softmax", axis="axis"), into=(_softmax_into, _softmax_scratch),
            grad_into=(_softmax_grad_into, lambda attrs, g, y: _softmax_scratch(attrs, y)))
_activation("step", NoAttrs, lambda be, a, x: (x >= 0).astype(x.dtype),
            # 0 wherever the derivative exists; at x = 0 too, as PyTorch's autograd through
            # a comparison gives: nothing passes back through a threshold unit
            lambda be, a, g, x: be.xp.zeros_like(g), "1 if x >= 0 else 0 (a threshold unit)",
            onnx=_step_onnx, into=(_step_into, lambda attrs, x: (TensorType(x.shape, "bool"),)),
            grad_into=(_step_grad_into, None), kink=always)
