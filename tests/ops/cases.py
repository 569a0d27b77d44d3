"""Sample inputs and reference results for every op in the registry, one entry per op.

Each entry is a list of `Case`s (an op may need several attribute combinations to be covered).
The references are written independently of the ops: scalar `math` formulas, explicit loops,
Jacobians, or torch.nn.functional for convolution and pooling when torch is importable.
Inputs stay away from the points where an op is not differentiable (Chainer's
`dodge_nondifferentiable`): activations never see 0, losses never see |p - t| at a kink, and
max pooling sees distinct values.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from nnrun.compiler.ir import TensorType
from nnrun.compiler.ops import NoAttrs
from nnrun.compiler.ops.activation import AlphaAttrs, AxisAttrs
from nnrun.compiler.ops.conv import ConvAttrs, ConvTransposeAttrs
from nnrun.compiler.ops.linear import BiasGradAttrs, MatmulAttrs, ScaleAttrs
from nnrun.compiler.ops.loss import BinaryCrossEntropyAttrs, CrossEntropyAttrs, HuberAttrs
from nnrun.compiler.ops.norm import BatchNormAttrs, EpsAttrs, MomentumAttrs, RateAttrs, StatisticsAttrs
from nnrun.compiler.ops.optim import (AdagradAttrs, AdamAttrs, ClipAttrs, RmsPropAttrs,
                                      SgdAttrs)
from nnrun.compiler.ops.pool import PoolAttrs
from nnrun.compiler.ops.resize import UpsampleAttrs
from nnrun.compiler.ops.shape import ConcatAttrs, PadAttrs, ReshapeAttrs, SliceAttrs

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the references fall back to naive loops
    torch = None
    F = None


@dataclass(frozen=True)
class Case:
    attrs: Any
    # inputs(rng) -> tuple of arrays (or a numpy Generator for an `rng` input)
    inputs: Callable[[np.random.Generator], tuple]
    # reference(attrs, *inputs) -> array, or a tuple of arrays for an op of several outputs
    reference: Callable[..., Any]
    # positions of the inputs that the op's vjp must return a gradient for
    differentiable: tuple[int, ...] = ()
    # False only for variants whose vjp deliberately refuses (transposed matmul)
    check_grad: bool = True
    label: str = ""

    def make_inputs(self, seed: int = 0) -> tuple:
        return tuple(self.inputs(np.random.default_rng(seed)))


CASES: dict[str, list[Case]] = {}


def case(name: str, attrs, inputs, reference, differentiable=(), check_grad=True, label=""):
    CASES.setdefault(name, []).append(
        Case(attrs, inputs, reference, tuple(differentiable), check_grad, label))


def input_type(value) -> TensorType:
    """The TensorType of a sample input: concrete shapes, the batch axis as an int."""
    if isinstance(value, np.random.Generator):  # dropout's older form of its key
        return TensorType((3,), "rng")
    if value.dtype == np.uint32:  # dropout's key
        return TensorType(tuple(value.shape), "rng")
    return TensorType(tuple(value.shape), str(value.dtype))


# --- input generators --------------------------------------------------------------------------

def normal(rng, *shape):
    return rng.standard_normal(shape)


def away_from_zero(rng, *shape, gap=0.2):
    """Values in [-2, -gap] or [gap, 2]: no kink of relu, leaky_relu, elu or abs is near."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(gap, 2.0, size=shape)


def distinct(rng, *shape):
    """Distinct values 0.1 apart, so a max never ties, even after a finite-difference step."""
    size = math.prod(shape)
    return (rng.permutation(size) * 0.1 - size * 0.05).reshape(shape).astype(np.float64)


def positive(rng, *shape):
    return rng.uniform(0.5, 2.0, size=shape)


def scalar(value):
    return np.array(value, dtype=np.float64)


def draws(*specs):
    """inputs(rng) drawing one array per (generator, shape) pair, in order."""
    return lambda rng: tuple(generate(rng, *shape) for generate, shape in specs)


def _elementwise(function):
    """Applies a scalar `math` formula to every element: a reference free of NumPy tricks."""
    return np.vectorize(function, otypes=[np.float64])


# --- activations -------------------------------------------------------------------------------

def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def _phi(v):
    return 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))


def _gauss(v):
    return math.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi)


_ACTIVATIONS = {
    # name: (attrs, f(attrs, v), f'(attrs, v) in terms of x, input generator)
    "relu": (NoAttrs(), lambda a, v: v if v > 0 else 0.0,
             lambda a, v: 1.0 if v > 0 else 0.0, away_from_zero),
    "leaky_relu": (AlphaAttrs(0.1), lambda a, v: v if v > 0 else a.alpha * v,
                   lambda a, v: 1.0 if v > 0 else a.alpha, away_from_zero),
    "elu": (AlphaAttrs(1.3), lambda a, v: v if v > 0 else a.alpha * (math.exp(v) - 1.0),
            lambda a, v: 1.0 if v > 0 else a.alpha * math.exp(v), away_from_zero),
    "gelu": (NoAttrs(), lambda a, v: v * _phi(v), lambda a, v: _phi(v) + v * _gauss(v), normal),
    "softplus": (NoAttrs(), lambda a, v: math.log1p(math.exp(v)),
                 lambda a, v: _sigmoid(v), normal),
    "sigmoid": (NoAttrs(), lambda a, v: _sigmoid(v), None, normal),
    "tanh": (NoAttrs(), lambda a, v: math.tanh(v), None, normal),
    "step": (NoAttrs(), lambda a, v: 1.0 if v >= 0 else 0.0, lambda a, v: 0.0, away_from_zero),
}


def _activation_cases(name, attrs, f, df, generate):
    case(name, attrs, lambda rng: (generate(rng, 3, 4),),
         lambda a, x: _elementwise(lambda v: f(a, v))(x), differentiable=(0,))
    case(name, attrs, lambda rng: (generate(rng, 2, 3, 2, 2),),
         lambda a, x: _elementwise(lambda v: f(a, v))(x), differentiable=(0,), label="4-d")
    if df is not None:
        case(f"{name}_grad", attrs, lambda rng: (normal(rng, 3, 4), generate(rng, 3, 4)),
             lambda a, g, x: g * _elementwise(lambda v: df(a, v))(x))


for _name, (_attrs, _f, _df, _generate) in _ACTIVATIONS.items():
    _activation_cases(_name, _attrs, _f, _df, _generate)

# sigmoid and tanh gradients take the forward output y.
case("sigmoid_grad", NoAttrs(),
     lambda rng: (normal(rng, 3, 4), _elementwise(_sigmoid)(normal(rng, 3, 4))),
     lambda a, g, y: g * _elementwise(lambda s: s * (1.0 - s))(y))
case("tanh_grad", NoAttrs(),
     lambda rng: (normal(rng, 3, 4), np.tanh(normal(rng, 3, 4))),
     lambda a, g, y: g * _elementwise(lambda t: 1.0 - t * t)(y))

# gelu that keeps 1 + erf(x / sqrt(2)) for its gradient (compiler/passes/gelu_cdf.py)
case("gelu_cdf", NoAttrs(), lambda rng: (normal(rng, 3, 4),),
     lambda a, x: (_elementwise(lambda v: v * _phi(v))(x), _elementwise(lambda v: 2 * _phi(v))(x)))


def _gelu_grad_cdf_inputs(rng):
    x = normal(rng, 3, 4)
    return normal(rng, 3, 4), x, _elementwise(lambda v: 2 * _phi(v))(x)


case("gelu_grad_cdf", NoAttrs(), _gelu_grad_cdf_inputs,
     lambda a, g, x, cdf: g * _elementwise(lambda v: _phi(v) + v * _gauss(v))(x))


def _softmax_reference(attrs, x):
    def row(v):
        e = np.array([math.exp(u - max(v)) for u in v])
        return e / e.sum()

    return np.apply_along_axis(row, attrs.axis, x)


def _softmax_grad_reference(attrs, g, y):
    """g through the explicit Jacobian diag(y) - y y^T of each softmax vector."""
    g_moved, y_moved = np.moveaxis(g, attrs.axis, -1), np.moveaxis(y, attrs.axis, -1)
    out = np.empty_like(g_moved)
    for index in np.ndindex(g_moved.shape[:-1]):
        s = y_moved[index]
        out[index] = (np.diag(s) - np.outer(s, s)) @ g_moved[index]
    return np.moveaxis(out, -1, attrs.axis)


def _softmax_output(rng, *shape, axis):
    return _softmax_reference(AxisAttrs(axis), normal(rng, *shape))


case("softmax", AxisAttrs(1), lambda rng: (normal(rng, 3, 5),), _softmax_reference,
     differentiable=(0,))
case("softmax", AxisAttrs(2), lambda rng: (normal(rng, 2, 3, 4),), _softmax_reference,
     differentiable=(0,), label="axis 2")
case("softmax_grad", AxisAttrs(1),
     lambda rng: (normal(rng, 3, 5), _softmax_output(rng, 3, 5, axis=1)), _softmax_grad_reference)
case("softmax_grad", AxisAttrs(2),
     lambda rng: (normal(rng, 2, 3, 4), _softmax_output(rng, 2, 3, 4, axis=2)),
     _softmax_grad_reference, label="axis 2")
# over the channels of a map: the planned forms reduce a channel-major copy (short runs)
case("softmax", AxisAttrs(1), lambda rng: (normal(rng, 2, 4, 3, 2),), _softmax_reference,
     differentiable=(0,), label="channels of a 3x2 map")
case("softmax_grad", AxisAttrs(1),
     lambda rng: (normal(rng, 2, 4, 3, 2), _softmax_output(rng, 2, 4, 3, 2, axis=1)),
     _softmax_grad_reference, label="channels of a 3x2 map")


# --- convolution and pooling: naive loops, and torch when importable -------------------------

def pad_pairs(pad):
    return tuple(p if isinstance(p, tuple) else (p, p) for p in pad)


def _pad_constant(x, pairs, fill):
    shape = (*x.shape[:2], *(n + lo + hi for n, (lo, hi) in zip(x.shape[2:], pairs)))
    out = np.full(shape, fill, dtype=x.dtype)
    inner = tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape[2:], pairs))
    out[(slice(None), slice(None), *inner)] = x
    return out


def _unpad(x, pairs, spatial):
    inner = tuple(slice(lo, lo + n) for n, (lo, _) in zip(spatial, pairs))
    return x[(slice(None), slice(None), *inner)]


def windows(spatial, kernel, stride, dilation):
    """(output position, slices of the padded input it reads), one per output position."""
    out = [(n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(spatial, kernel, stride, dilation)]
    for position in itertools.product(*(range(m) for m in out)):
        yield position, tuple(slice(o * s, o * s + d * (k - 1) + 1, d)
                              for o, k, s, d in zip(position, kernel, stride, dilation))


def _out_sizes(spatial, kernel, stride, dilation):
    return tuple((n - d * (k - 1) - 1) // s + 1
                 for n, k, s, d in zip(spatial, kernel, stride, dilation))


def conv_naive(attrs, x, w):
    pairs = pad_pairs(attrs.pad)
    padded = _pad_constant(x, pairs, 0.0)
    out = _out_sizes(padded.shape[2:], w.shape[2:], attrs.stride, attrs.dilation)
    y = np.zeros((x.shape[0], w.shape[0], *out))
    for b, f in np.ndindex(x.shape[0], w.shape[0]):
        for position, window in windows(padded.shape[2:], w.shape[2:], attrs.stride,
                                        attrs.dilation):
            y[(b, f, *position)] = np.sum(padded[(b, slice(None), *window)] * w[f])
    return y


def conv_grad_input_naive(attrs, g, x, w):
    pairs = pad_pairs(attrs.pad)
    grad = np.zeros(_pad_constant(x, pairs, 0.0).shape)
    for b, f in np.ndindex(g.shape[:2]):
        for position, window in windows(grad.shape[2:], w.shape[2:], attrs.stride,
                                        attrs.dilation):
            grad[(b, slice(None), *window)] += g[(b, f, *position)] * w[f]
    return _unpad(grad, pairs, x.shape[2:])


def conv_grad_weight_naive(attrs, g, x, w):
    padded = _pad_constant(x, pad_pairs(attrs.pad), 0.0)
    grad = np.zeros_like(w)
    for b, f in np.ndindex(g.shape[:2]):
        for position, window in windows(padded.shape[2:], w.shape[2:], attrs.stride,
                                        attrs.dilation):
            grad[f] += g[(b, f, *position)] * padded[(b, slice(None), *window)]
    return grad


def pool_naive(kind, attrs, x):
    padded = _pad_constant(x, pad_pairs(attrs.pad), -np.inf if kind == "max" else 0.0)
    out = _out_sizes(padded.shape[2:], attrs.kernel, attrs.stride, attrs.dilation)
    y = np.zeros((*x.shape[:2], *out))
    reduce = np.max if kind == "max" else np.mean
    for b, c in np.ndindex(x.shape[:2]):
        for position, window in windows(padded.shape[2:], attrs.kernel, attrs.stride,
                                        attrs.dilation):
            y[(b, c, *position)] = reduce(padded[(b, c, *window)])
    return y


def pool_grad_naive(kind, attrs, g, x):
    pairs = pad_pairs(attrs.pad)
    padded = _pad_constant(x, pairs, -np.inf if kind == "max" else 0.0)
    grad = np.zeros(padded.shape)
    for b, c in np.ndindex(x.shape[:2]):
        for position, window in windows(padded.shape[2:], attrs.kernel, attrs.stride,
                                        attrs.dilation):
            values = padded[(b, c, *window)]
            share = (values == values.max()) if kind == "max" else np.full(values.shape,
                                                                            1 / values.size)
            grad[(b, c, *window)] += g[(b, c, *position)] * share
    return _unpad(grad, pairs, x.shape[2:])


def _torch_pad(t, pairs, fill):
    # F.pad lists the last axis first.
    return F.pad(t, [v for lo, hi in reversed(pairs) for v in (lo, hi)], value=fill)


def conv_torch(attrs, x, w, g=None):
    """(y) or, given g, (d<y, g>/dx, d<y, g>/dw), all through torch autograd."""
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    conv = F.conv1d if w.ndim == 3 else F.conv2d
    y = conv(_torch_pad(xt, pad_pairs(attrs.pad), 0.0), wt, stride=tuple(attrs.stride),
             dilation=tuple(attrs.dilation))
    if g is None:
        return y.detach().numpy()
    return tuple(t.numpy() for t in torch.autograd.grad(y, (xt, wt), torch.from_numpy(g)))


def _torch_pool_supported(kind, attrs):
    return kind == "max" or set(attrs.dilation) == {1}  # torch's avg_pool has no dilation


def pool_torch(kind, attrs, x, g=None):
    xt = torch.from_numpy(x).requires_grad_()
    padded = _torch_pad(xt, pad_pairs(attrs.pad), -math.inf if kind == "max" else 0.0)
    rank = len(attrs.kernel)
    if kind == "max":
        pool = F.max_pool1d if rank == 1 else F.max_pool2d
        y = pool(padded, tuple(attrs.kernel), tuple(attrs.stride), dilation=tuple(attrs.dilation))
    else:
        pool = F.avg_pool1d if rank == 1 else F.avg_pool2d
        y = pool(padded, tuple(attrs.kernel), tuple(attrs.stride))
    if g is None:
        return y.detach().numpy()
    (grad,) = torch.autograd.grad(y, (xt,), torch.from_numpy(g))
    return grad.numpy()


def _conv_reference(attrs, x, w):
    return conv_torch(attrs, x, w) if torch else conv_naive(attrs, x, w)


def _conv_grad_input_reference(attrs, g, x, w):
    return conv_torch(attrs, x, w, g)[0] if torch else conv_grad_input_naive(attrs, g, x, w)


def _conv_grad_weight_reference(attrs, g, x, w):
    return conv_torch(attrs, x, w, g)[1] if torch else conv_grad_weight_naive(attrs, g, x, w)


def _pool_reference(kind):
    def reference(attrs, x):
        if torch and _torch_pool_supported(kind, attrs):
            return pool_torch(kind, attrs, x)
        return pool_naive(kind, attrs, x)

    return reference


def _pool_grad_reference(kind):
    def reference(attrs, g, x):
        if torch and _torch_pool_supported(kind, attrs):
            return pool_torch(kind, attrs, x, g)
        return pool_grad_naive(kind, attrs, g, x)

    return reference


# (label, attrs, input shape, weight shape)
CONV_CONFIGS = {
    1: [
        ("plain", ConvAttrs((1,), (0,), (1,)), (2, 3, 7), (4, 3, 3)),
        ("stride 3, pad 1, unused tail", ConvAttrs((3,), (1,), (1,)), (2, 2, 9), (3, 2, 3)),
        ("dilation 2, pad (1,2), stride 2", ConvAttrs((2,), ((1, 2),), (2,)), (2, 2, 9), (3, 2, 3)),
        # Rows of at least AS_CONVOLUTION_MIN values: the input gradient as a convolution.
        ("long rows, pad (2,1), dilation 2", ConvAttrs((1,), ((2, 1),), (2,)), (2, 2, 300),
         (3, 2, 3)),
    ],
    2: [
        ("plain", ConvAttrs((1, 1), (0, 0), (1, 1)), (2, 2, 5, 5), (3, 2, 3, 3)),
        ("stride (2,1), pad (1,2)", ConvAttrs((2, 1), (1, 2), (1, 1)), (2, 2, 5, 4), (3, 2, 3, 2)),
        ("stride (1,2), pad ((1,1),(0,1)), dilation (2,1)",
         ConvAttrs((1, 2), ((1, 1), (0, 1)), (2, 1)), (1, 2, 6, 5), (2, 2, 2, 3)),
        ("long rows, pad 1", ConvAttrs((1, 1), (1, 1), (1, 1)), (2, 2, 17, 16), (3, 2, 3, 3)),
    ],
}

def padded_sizes(spatial, pad):
    return tuple(n + lo + hi for n, (lo, hi) in zip(spatial, pad_pairs(pad)))


def _conv_cases(rank, label, attrs, x_shape, w_shape):
    out = _out_sizes(padded_sizes(x_shape[2:], attrs.pad), w_shape[2:], attrs.stride,
                     attrs.dilation)
    g_shape = (x_shape[0], w_shape[0], *out)
    with_g = draws((normal, g_shape), (normal, x_shape), (normal, w_shape))
    case(f"conv{rank}d", attrs, draws((normal, x_shape), (normal, w_shape)), _conv_reference,
         differentiable=(0, 1), label=label)
    case(f"conv{rank}d_grad_input", attrs, with_g, _conv_grad_input_reference, label=label)
    case(f"conv{rank}d_grad_weight", attrs, with_g, _conv_grad_weight_reference, label=label)


for _rank, _configs in CONV_CONFIGS.items():
    for _config in _configs:
        _conv_cases(_rank, *_config)

POOL_CONFIGS = {
    1: [
        ("2/2, unused tail", PoolAttrs((2,), (2,), (0,), (1,)), (2, 3, 7)),
        ("3/2 pad 1", PoolAttrs((3,), (2,), (1,), (1,)), (2, 2, 8)),
        ("dilation 2", PoolAttrs((2,), (1,), (0,), (2,)), (2, 2, 7)),
    ],
    2: [
        ("2x2/2", PoolAttrs((2, 2), (2, 2), (0, 0), (1, 1)), (2, 2, 4, 6)),
        ("3x2/(2,1) pad (1,1)", PoolAttrs((3, 2), (2, 1), (1, 1), (1, 1)), (2, 2, 5, 4)),
        ("asymmetric pad, dilation (1,2)", PoolAttrs((2, 2), (1, 2), ((0, 1), (1, 0)), (1, 2)),
         (1, 2, 4, 6)),
    ],
}

def _pool_cases(rank, label, attrs, x_shape):
    out = _out_sizes(padded_sizes(x_shape[2:], attrs.pad), attrs.kernel, attrs.stride,
                     attrs.dilation)
    g_shape = (*x_shape[:2], *out)
    for kind in ("max", "avg"):
        name = f"{kind}_pool{rank}d"
        case(name, attrs, draws((distinct, x_shape)), _pool_reference(kind),
             differentiable=(0,), label=label)
        case(f"{name}_grad", attrs, draws((normal, g_shape), (distinct, x_shape)),
             _pool_grad_reference(kind), label=label)


for _rank, _configs in POOL_CONFIGS.items():
    for _config in _configs:
        _pool_cases(_rank, *_config)


# --- transposed convolution and upsampling (fully convolutional networks) -------------------

def conv_transpose_naive(attrs, x, w):
    """Each input value times the kernel, added at stride s; then `pad` cropped from each side
    and `output_padding` zeros added at the end."""
    full = [(n - 1) * s + d * (k - 1) + 1
            for n, k, s, d in zip(x.shape[2:], w.shape[2:], attrs.stride, attrs.dilation)]
    y = np.zeros((x.shape[0], w.shape[1], *(f + e for f, e in zip(full, attrs.output_padding))))
    for b, c in np.ndindex(x.shape[:2]):
        for position in np.ndindex(x.shape[2:]):
            window = tuple(slice(i * s, i * s + d * (k - 1) + 1, d) for i, s, k, d in
                           zip(position, attrs.stride, w.shape[2:], attrs.dilation))
            y[(b, slice(None), *window)] += x[(b, c, *position)] * w[c]
    return _unpad(y, pad_pairs(attrs.pad), [n - lo - hi for n, (lo, hi) in
                                              zip(y.shape[2:], pad_pairs(attrs.pad))])


def conv_transpose_torch(attrs, x, w, g=None):
    """torch's conv_transpose (padding 0, then the asymmetric crop), and its gradients."""
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    transpose = F.conv_transpose1d if w.ndim == 3 else F.conv_transpose2d
    pairs = pad_pairs(attrs.pad)
    if all(lo == hi for lo, hi in pairs):
        y = transpose(xt, wt, stride=tuple(attrs.stride), padding=tuple(lo for lo, _ in pairs),
                      output_padding=tuple(attrs.output_padding),
                      dilation=tuple(attrs.dilation))
    else:
        full = transpose(xt, wt, stride=tuple(attrs.stride),
                         output_padding=tuple(attrs.output_padding),
                         dilation=tuple(attrs.dilation))
        y = full[(slice(None), slice(None),
                  *(slice(lo, n - hi) for n, (lo, hi) in zip(full.shape[2:], pairs)))]
    if g is None:
        return y.detach().numpy()
    return tuple(t.numpy() for t in torch.autograd.grad(y, (xt, wt), torch.from_numpy(g)))


def _conv_transpose_reference(attrs, x, w):
    return conv_transpose_torch(attrs, x, w) if torch else conv_transpose_naive(attrs, x, w)


# (label, attrs, input shape, weight shape [in, out, *kernel])
CONV_TRANSPOSE_CONFIGS = {
    1: [
        ("plain", ConvTransposeAttrs((1,), (0,), (0,), (1,)), (2, 3, 5), (3, 2, 3)),
        ("stride 2, pad 1, output_padding 1", ConvTransposeAttrs((2,), (1,), (1,), (1,)), (2, 2, 4),
         (2, 3, 4)),
        ("stride 3, pad (0,2), output_padding 2", ConvTransposeAttrs((3,), ((0, 2),), (2,), (1,)),
         (1, 2, 3), (2, 2, 2)),
        ("dilation 2, stride 2, output_padding 1", ConvTransposeAttrs((2,), (1,), (1,), (2,)),
         (2, 2, 4), (2, 3, 3)),
    ],
    2: [
        ("plain", ConvTransposeAttrs((1, 1), (0, 0), (0, 0)), (2, 2, 3, 4), (2, 3, 2, 2)),
        ("stride 2, pad 1 (FCN 2x)", ConvTransposeAttrs((2, 2), (1, 1), (0, 0)), (2, 3, 3, 3),
         (3, 2, 4, 4)),
        ("stride (2,3), pad (1,0), output_padding (1,2)",
         ConvTransposeAttrs((2, 3), (1, 0), (1, 2)), (1, 2, 3, 2), (2, 3, 3, 2)),
        ("dilation (2,1), stride (1,2), output_padding (0,1)",
         ConvTransposeAttrs((1, 2), (2, 1), (0, 1), (2, 1)), (1, 2, 3, 3), (2, 2, 3, 2)),
    ],
}


for _rank, _configs in CONV_TRANSPOSE_CONFIGS.items():
    for _label, _attrs, _x_shape, _w_shape in _configs:
        case(f"conv{_rank}d_transpose", _attrs, draws((normal, _x_shape), (normal, _w_shape)),
             _conv_transpose_reference, differentiable=(0, 1), label=_label)


def upsample_naive(attrs, x):
    """Each output position from the source coordinate PyTorch uses: o // s (nearest), or
    (o + 0.5)/s - 0.5 clamped at 0, between its two neighbours (linear, align_corners=False)."""
    y = x
    for axis, s in enumerate(attrs.scale, start=2):
        n = y.shape[axis]
        slices = []
        for o in range(n * s):
            if attrs.mode == "nearest":
                slices.append(np.take(y, o // s, axis=axis))
                continue
            source = max((o + 0.5) / s - 0.5, 0.0)
            first = min(int(math.floor(source)), n - 1)
            second, t = min(first + 1, n - 1), source - first
            slices.append((1 - t) * np.take(y, first, axis=axis)
                          + t * np.take(y, second, axis=axis))
        y = np.stack(slices, axis=axis)
    return y


def upsample_torch(attrs, x, g=None):
    xt = torch.from_numpy(x).requires_grad_()
    options = {} if attrs.mode == "nearest" else {"align_corners": False}
    y = F.interpolate(xt, scale_factor=tuple(float(s) for s in attrs.scale), mode=attrs.mode,
                      **options)
    if g is None:
        return y.detach().numpy()
    (grad,) = torch.autograd.grad(y, (xt,), torch.from_numpy(g))
    return grad.numpy()


def _downsampled(attrs, shape):
    return (*shape[:2], *(n // s for n, s in zip(shape[2:], attrs.scale)))


def _upsample_grad_naive(attrs, g):
    """The transpose of upsample_naive, from its Jacobian (small inputs only)."""
    x_shape = _downsampled(attrs, g.shape)
    size = int(np.prod(x_shape))
    columns = [upsample_naive(attrs, np.eye(size)[k].reshape(x_shape)).ravel() for k in range(size)]
    return (np.array(columns) @ g.ravel()).reshape(x_shape)


UPSAMPLE_CONFIGS = [
    ("nearest x3", UpsampleAttrs((3,), "nearest"), (2, 2, 4)),
    ("linear x2", UpsampleAttrs((2,), "linear"), (2, 3, 5)),
    ("linear x3", UpsampleAttrs((3,), "linear"), (1, 2, 1)),
    ("nearest (2,3)", UpsampleAttrs((2, 3), "nearest"), (2, 2, 3, 2)),
    # a last scale past SHORT_LAST_SCALE (4): one broadcast copy, one sum
    ("nearest x5", UpsampleAttrs((5,), "nearest"), (1, 2, 3)),
    ("nearest (3,6)", UpsampleAttrs((3, 6), "nearest"), (1, 2, 2, 3)),
    ("bilinear (2,2)", UpsampleAttrs((2, 2), "bilinear"), (2, 2, 3, 4)),
    ("bilinear (3,4)", UpsampleAttrs((3, 4), "bilinear"), (1, 2, 2, 3)),
    # past MATRIX_LENGTH (64): two neighbours per output, phase by phase
    ("linear x2 long", UpsampleAttrs((2,), "linear"), (2, 2, 70)),
    ("linear x3 long", UpsampleAttrs((3,), "linear"), (1, 1, 65)),
    ("bilinear long width", UpsampleAttrs((2, 3), "bilinear"), (1, 2, 3, 66)),
    ("bilinear long height", UpsampleAttrs((3, 2), "bilinear"), (1, 1, 67, 2)),
]

for _label, _attrs, _x_shape in UPSAMPLE_CONFIGS:
    _name = f"upsample{len(_attrs.scale)}d"
    _g_shape = (*_x_shape[:2], *(n * s for n, s in zip(_x_shape[2:], _attrs.scale)))
    case(_name, _attrs, draws((normal, _x_shape)),
         (lambda a, x: upsample_torch(a, x)) if torch else upsample_naive,
         differentiable=(0,), label=_label)
    case(f"{_name}_grad", _attrs, draws((normal, _g_shape)),
         (lambda a, g: upsample_torch(a, np.zeros(_downsampled(a, g.shape)), g))
         if torch else _upsample_grad_naive, label=_label)


# --- linear algebra and elementwise arithmetic -------------------------------------------------

def _matmul_reference(attrs, a, b):
    a = a.T if attrs.transpose_a else a
    b = b.T if attrs.transpose_b else b
    out = np.zeros((a.shape[0], b.shape[1]))
    for i, j in np.ndindex(out.shape):
        out[i, j] = sum(a[i, k] * b[k, j] for k in range(a.shape[1]))
    return out


case("matmul", MatmulAttrs(), lambda rng: (normal(rng, 3, 4), normal(rng, 4, 5)),
     _matmul_reference, differentiable=(0, 1))
# The vjp of a transposed matmul deliberately raises: no layer differentiates one.
case("matmul", MatmulAttrs(transpose_a=True), lambda rng: (normal(rng, 4, 3), normal(rng, 4, 5)),
     _matmul_reference, check_grad=False, label="transpose_a")
case("matmul", MatmulAttrs(transpose_b=True), lambda rng: (normal(rng, 3, 4), normal(rng, 5, 4)),
     _matmul_reference, check_grad=False, label="transpose_b")


def _bias_add_reference(attrs, x, b):
    out = x.copy()
    for c in range(x.shape[1]):
        out[:, c] += b[c]
    return out


def _bias_add_grad_reference(attrs, g):
    return np.array([g[:, c].sum() for c in range(g.shape[1])])


case("bias_add", NoAttrs(), lambda rng: (normal(rng, 3, 4), normal(rng, 4)),
     _bias_add_reference, differentiable=(0, 1))
case("bias_add", NoAttrs(), lambda rng: (normal(rng, 2, 3, 4, 2), normal(rng, 3)),
     _bias_add_reference, differentiable=(0, 1), label="channels")
case("bias_add_grad", BiasGradAttrs(), lambda rng: (normal(rng, 3, 4),), _bias_add_grad_reference)
case("bias_add_grad", BiasGradAttrs(), lambda rng: (normal(rng, 2, 3, 4, 2),),
     _bias_add_grad_reference, label="channels")
case("bias_add_grad", BiasGradAttrs(batch_last=True), lambda rng: (normal(rng, 3, 4, 2),),
     lambda a, g: _bias_add_grad_reference(a, np.moveaxis(g, -1, 0)), label="batch-last")

case("add", NoAttrs(), lambda rng: (normal(rng, 3, 4), normal(rng, 3, 4)),
     lambda a, x, y: x + y, differentiable=(0, 1))
case("mul", NoAttrs(), lambda rng: (normal(rng, 3, 4), normal(rng, 3, 4)),
     lambda a, x, y: x * y, differentiable=(0, 1))
case("scale", ScaleAttrs(-2.5), lambda rng: (normal(rng, 3, 4),),
     lambda a, x: x * a.factor, differentiable=(0,))
case("ones_like", NoAttrs(), lambda rng: (normal(rng, 3, 4),),
     lambda a, x: np.ones(x.shape))
case("ones_like", NoAttrs(), lambda rng: (np.array(1.5),), lambda a, x: np.ones(()),
     label="scalar loss")


# --- losses ------------------------------------------------------------------------------------

def _labels(rng, batch, classes):
    return rng.integers(0, classes, size=batch).astype(np.int64)


def _smoothed_targets(labels, classes, smoothing):
    target = np.full((len(labels), classes), smoothing / classes)
    for row, label in enumerate(labels):
        target[row, label] += 1 - smoothing
    return target


def _label_rows(attrs, logits, labels):
    """Scores [B, K, *S] and labels [B, *S] as one row of K scores per counted position."""
    rows = np.moveaxis(logits, 1, -1).reshape(-1, logits.shape[1])
    flat = labels.reshape(-1)
    kept = (flat != attrs.ignore_index if attrs.ignore_index is not None
            else np.ones(len(flat), bool))
    return rows, flat, kept


def _cross_entropy_reference(attrs, logits, labels):
    rows, flat, kept = _label_rows(attrs, logits, labels)
    target = _smoothed_targets(np.where(kept, flat, 0), logits.shape[1], attrs.label_smoothing)
    total = 0.0
    for row, t, counted in zip(rows, target, kept):
        if counted:
            log_sum = math.log(sum(math.exp(v) for v in row))
            total -= sum(tc * (v - log_sum) for tc, v in zip(t, row))
    return np.array(total / max(kept.sum(), 1))


def _cross_entropy_grad_reference(attrs, g, logits, labels):
    rows, flat, kept = _label_rows(attrs, logits, labels)
    target = _smoothed_targets(np.where(kept, flat, 0), logits.shape[1], attrs.label_smoothing)
    probabilities = _softmax_reference(AxisAttrs(1), rows)
    grad_rows = g * (probabilities - target) * kept[:, None] / max(kept.sum(), 1)
    moved = grad_rows.reshape(*np.moveaxis(logits, 1, -1).shape)
    return np.moveaxis(moved, -1, 1)


def _bce_reference(attrs, logits, target):
    def loss(x, t):
        p = _sigmoid(x)
        return -t * math.log(p) - (1 - t) * math.log(1 - p)

    kept = (target != attrs.ignore_index if attrs.ignore_index is not None
            else np.ones(target.shape, bool))
    return np.array(np.sum(_elementwise(loss)(logits, target) * kept) / max(kept.sum(), 1))


def _bce_grad_reference(attrs, g, x, t):
    kept = t != attrs.ignore_index if attrs.ignore_index is not None else np.ones(t.shape, bool)
    return g * (_elementwise(_sigmoid)(x) - t) * kept / max(kept.sum(), 1)


def _ignored_bce_inputs(rng):
    """Per-pixel logits [B, 1, H, W] against 0/1 maps in which a third is ignore_index 255."""
    target = (rng.random((2, 1, 3, 4)) < 0.5).astype(np.float64)
    target[rng.random(target.shape) < 0.3] = 255
    return normal(rng, 2, 1, 3, 4), target


def _huber_reference(attrs, p, t):
    def loss(d):
        return 0.5 * d * d if abs(d) < attrs.delta else attrs.delta * (abs(d) - 0.5 * attrs.delta)

    return np.array(np.mean(_elementwise(loss)(p - t)))


def _huber_grad_reference(attrs, g, p, t):
    def slope(d):
        return d if abs(d) < attrs.delta else math.copysign(attrs.delta, d)

    return g * _elementwise(slope)(p - t) / p.size


def _prediction_and_target(distance):
    """(p, t) with p - t = distance(rng, shape): steers |p - t| clear of the loss's kinks."""
    def inputs(rng):
        t = normal(rng, 3, 4)
        return t + distance(rng, 3, 4), t

    return inputs


def _huber_distance(delta):
    # |d| in [0.1, delta - 0.2] or [delta + 0.2, delta + 1.5]: both branches, neither kink.
    def distance(rng, *shape):
        inside = rng.uniform(0.1, delta - 0.2, size=shape)
        outside = rng.uniform(delta + 0.2, delta + 1.5, size=shape)
        magnitude = np.where(rng.random(shape) < 0.5, inside, outside)
        return rng.choice([-1.0, 1.0], size=shape) * magnitude

    return distance


def _with_g(inputs):
    """Prepends a random incoming (scalar) gradient to a loss's inputs."""
    return lambda rng: (np.array(rng.standard_normal()), *inputs(rng))


for _smoothing in (0.0, 0.1):
    _ce_inputs = lambda rng: (normal(rng, 4, 5), _labels(rng, 4, 5))  # noqa: E731
    case("softmax_cross_entropy", CrossEntropyAttrs(_smoothing), _ce_inputs,
         _cross_entropy_reference, differentiable=(0,), label=f"smoothing {_smoothing}")
    case("softmax_cross_entropy_grad", CrossEntropyAttrs(_smoothing), _with_g(_ce_inputs),
         _cross_entropy_grad_reference, label=f"smoothing {_smoothing}")

_bce_inputs = lambda rng: (normal(rng, 3, 4) * 2, rng.uniform(0, 1, size=(3, 4)))  # noqa: E731
_BCE = BinaryCrossEntropyAttrs()
case("sigmoid_binary_cross_entropy", _BCE, _bce_inputs, _bce_reference, differentiable=(0,))
case("sigmoid_binary_cross_entropy", _BCE,
     lambda rng: (normal(rng, 3, 4) * 20, (rng.random((3, 4)) < 0.5).astype(np.float64)),
     _bce_reference, differentiable=(0,), label="large logits, hard targets")
case("sigmoid_binary_cross_entropy_grad", _BCE, _with_g(_bce_inputs), _bce_grad_reference)
case("sigmoid_binary_cross_entropy", BinaryCrossEntropyAttrs(255), _ignored_bce_inputs,
     _bce_reference, differentiable=(0,), label="per pixel, ignore_index 255")
case("sigmoid_binary_cross_entropy_grad", BinaryCrossEntropyAttrs(255),
     _with_g(_ignored_bce_inputs), _bce_grad_reference, label="per pixel, ignore_index 255")


def _label_map_inputs(ignore_index, shape, classes):
    """Scores [B, K, *S] and label maps [B, *S], a quarter of them ignore_index when set."""
    def inputs(rng):
        labels = rng.integers(0, classes, size=(shape[0], *shape[1:])).astype(np.int64)
        if ignore_index is not None:
            labels[rng.random(labels.shape) < 0.25] = ignore_index
        return normal(rng, shape[0], classes, *shape[1:]), labels

    return inputs


for _label, _attrs, _shape in (
    ("label map 3x4", CrossEntropyAttrs(0.0), (2, 3, 4)),
    ("label map, smoothing 0.1, ignore_index 255", CrossEntropyAttrs(0.1, 255), (2, 3, 4)),
    ("1-d label map, ignore_index 1 (a class)", CrossEntropyAttrs(0.0, 1), (3, 5)),
    ("one label per sample, ignore_index 2", CrossEntropyAttrs(0.0, 2), (6,)),
):
    _inputs = _label_map_inputs(_attrs.ignore_index, _shape, 4)
    case("softmax_cross_entropy", _attrs, _inputs, _cross_entropy_reference, differentiable=(0,),
         label=_label)
    case("softmax_cross_entropy_grad", _attrs, _with_g(_inputs), _cross_entropy_grad_reference,
         label=_label)

for _label, _attrs, _inputs in (
    ("one label per sample", CrossEntropyAttrs(0.0), _ce_inputs),
    ("label map, smoothing 0.1, ignore_index 255", CrossEntropyAttrs(0.1, 255),
     _label_map_inputs(255, (2, 3, 4), 4)),
):
    case("softmax_cross_entropy_with_grad", _attrs, _inputs,
         lambda a, x, t: (_cross_entropy_reference(a, x, t),
                          _cross_entropy_grad_reference(a, np.array(1.0), x, t)),
         label=_label)

def _perceptron_rows(logits, labels):
    """(scores of K, label) of every position, K first as in the scores [B, K, *S]."""
    return zip(np.moveaxis(logits, 1, -1).reshape(-1, logits.shape[1]), labels.reshape(-1))


def _perceptron_reference(attrs, logits, labels):
    """Per position: (step(z) - t) * z of one score (labels 0/1), else max_c z_c - z_label."""
    total = 0.0
    for row, label in _perceptron_rows(logits, labels):
        if len(row) == 1:
            total += ((1.0 if row[0] >= 0 else 0.0) - label) * row[0]
        else:
            total += max(row) - row[label]
    return np.array(total / labels.size)


def _perceptron_grad_reference(attrs, g, logits, labels):
    rows = []
    for row, label in _perceptron_rows(logits, labels):
        if len(row) == 1:
            rows.append([(1.0 if row[0] >= 0 else 0.0) - label])
        else:
            error = [0.0] * len(row)
            error[max(range(len(row)), key=lambda c: row[c])] += 1.0
            error[label] -= 1.0
            rows.append(error)
    moved = (g * np.array(rows) / labels.size).reshape(*np.moveaxis(logits, 1, -1).shape)
    return np.moveaxis(moved, -1, 1)


for _label, _inputs in (
    ("4 classes", lambda rng: (normal(rng, 6, 4), _labels(rng, 6, 4))),
    ("one output, labels 0/1", lambda rng: (away_from_zero(rng, 8, 1), _labels(rng, 8, 2))),
    ("label map 3x4, 3 classes", _label_map_inputs(None, (2, 3, 4), 3)),
):
    case("perceptron", NoAttrs(), _inputs, _perceptron_reference, differentiable=(0,),
         label=_label)
    case("perceptron_grad", NoAttrs(), _with_g(_inputs), _perceptron_grad_reference, label=_label)

_regression_inputs = _prediction_and_target(away_from_zero)
case("mse", NoAttrs(), _regression_inputs,
     lambda a, p, t: np.array(sum((pi - ti) ** 2 for pi, ti in zip(p.flat, t.flat)) / p.size),
     differentiable=(0,))
case("mse_grad", NoAttrs(), _with_g(_regression_inputs),
     lambda a, g, p, t: g * 2 * (p - t) / p.size)
case("mae", NoAttrs(), _regression_inputs,
     lambda a, p, t: np.array(sum(abs(pi - ti) for pi, ti in zip(p.flat, t.flat)) / p.size),
     differentiable=(0,))
case("mae_grad", NoAttrs(), _with_g(_regression_inputs),
     lambda a, g, p, t: g * _elementwise(lambda d: math.copysign(1.0, d))(p - t) / p.size)
for _delta in (1.0, 0.5):
    _huber_inputs = _prediction_and_target(_huber_distance(_delta))
    case("huber", HuberAttrs(_delta), _huber_inputs, _huber_reference, differentiable=(0,),
         label=f"delta {_delta}")
    case("huber_grad", HuberAttrs(_delta), _with_g(_huber_inputs), _huber_grad_reference,
         label=f"delta {_delta}")


# --- normalisation, running statistics, dropout ------------------------------------------------

def _per_channel(x, function):
    """function applied to each channel's values (over batch and space), as a [C] vector."""
    return np.array([function(np.moveaxis(x, 1, 0)[c].ravel()) for c in range(x.shape[1])])


def _channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _xhat(x, eps):
    mean = _per_channel(x, lambda v: sum(v) / len(v))
    var = _per_channel(x, lambda v: sum((u - sum(v) / len(v)) ** 2 for u in v) / len(v))
    return (x - _channel(mean, x.ndim)) / np.sqrt(_channel(var, x.ndim) + eps), var


def _bn_train_reference(attrs, x, gamma, beta):
    xhat, _ = _xhat(x, attrs.eps)
    return xhat * _channel(gamma, x.ndim) + _channel(beta, x.ndim)


def _bn_train_grad_input_reference(attrs, g, x, gamma):
    # dx = gamma / sigma * (g - mean(g) - xhat * mean(g * xhat)), means per channel
    xhat, var = _xhat(x, attrs.eps)
    mean_g = _per_channel(g, np.mean)
    mean_g_xhat = _per_channel(g * xhat, np.mean)
    sigma = np.sqrt(var + attrs.eps)
    return (_channel(gamma / sigma, x.ndim)
            * (g - _channel(mean_g, x.ndim) - xhat * _channel(mean_g_xhat, x.ndim)))


def _bn_infer_reference(attrs, x, mean, var, gamma, beta):
    n = x.ndim
    return ((x - _channel(mean, n)) / np.sqrt(_channel(var, n) + attrs.eps) * _channel(gamma, n)
            + _channel(beta, n))


_BN_SHAPES = {"[F]": (5, 3), "[C,H,W]": (3, 2, 3, 2)}

def _bn_input(shape):
    """x whose channels have different offsets and scales, so that the statistics matter."""
    def generate(rng, *dims):
        view = (1, -1) + (1,) * (len(dims) - 2)
        return (normal(rng, *dims) * np.linspace(0.5, 2, dims[1]).reshape(view)
                + np.arange(dims[1]).reshape(view))

    return generate, shape


def _bn_train_cases(label, shape, train):
    x, g, c = _bn_input(shape), (normal, shape), (shape[1],)
    case("batch_norm_train", train, draws(x, (positive, c), (normal, c)), _bn_train_reference,
         differentiable=(0, 1, 2), label=label)
    case("batch_norm_train_grad_input", train, draws(g, x, (positive, c)),
         _bn_train_grad_input_reference, label=label)
    case("batch_norm_train_grad_gamma", train, draws(g, x),
         lambda a, g, x: _per_channel(g * _xhat(x, a.eps)[0], sum), label=label)


def _batch_statistics_reference(attrs, x):
    mean = _per_channel(x, lambda v: sum(v) / len(v))
    var = _per_channel(x, lambda v: sum((u - sum(v) / len(v)) ** 2 for u in v) / len(v))
    count = x.size // x.shape[1]
    return mean, var, var * count / (count - 1)


def _batch_norm_grad_reference(attrs, g, x, mean, var, gamma):
    return (_bn_train_grad_input_reference(attrs, g, x, gamma),
            _per_channel(g * _xhat(x, attrs.eps)[0], sum), _per_channel(g, sum))


def _kept_statistics_cases(label, shape, attrs):
    """The ops of compiler/passes/batch_statistics.py: statistics given as the batch's own."""
    x, g, c = _bn_input(shape), (normal, shape), (shape[1],)
    case("batch_statistics", StatisticsAttrs(attrs.sync), draws(x), _batch_statistics_reference,
         label=label)
    case("batch_norm_apply", attrs, draws(x, (normal, c), (positive, c), (positive, c),
                                           (normal, c)),
         _bn_infer_reference, label=label)

    def with_statistics(rng):
        gradient, values = normal(rng, *shape), x[0](rng, *shape)
        mean, var, _ = _batch_statistics_reference(attrs, values)
        return gradient, values, mean, var, positive(rng, *c)

    case("batch_norm_grad", attrs, with_statistics, _batch_norm_grad_reference, label=label)


def _bn_cases(label, shape):
    x, g, c = _bn_input(shape), (normal, shape), (shape[1],)
    infer = EpsAttrs(1e-3)
    _bn_train_cases(label, shape, BatchNormAttrs(1e-5))
    # Synchronised statistics in one process: the batch's own (test_distributed.py has ranks).
    _bn_train_cases(f"{label} sync", shape, BatchNormAttrs(1e-5, sync=True))
    _kept_statistics_cases(label, shape, BatchNormAttrs(1e-5))
    _kept_statistics_cases(f"{label} sync", shape, BatchNormAttrs(1e-3, sync=True))
    case("batch_norm_infer", infer,
         draws(x, (normal, c), (positive, c), (positive, c), (normal, c)), _bn_infer_reference,
         differentiable=(0, 3, 4), label=label)
    case("batch_norm_infer_grad_input", infer, draws(g, (positive, c), (positive, c)),
         lambda a, g, var, gamma: g * _channel(gamma / np.sqrt(var + a.eps), g.ndim),
         label=label)
    case("batch_norm_infer_grad_gamma", infer, draws(g, x, (normal, c), (positive, c)),
         lambda a, g, x, mean, var: _per_channel(
             g * (x - _channel(mean, x.ndim)) / np.sqrt(_channel(var, x.ndim) + a.eps), sum),
         label=label)
    case("channel_mean", StatisticsAttrs(), draws(x),
         lambda a, x: _per_channel(x, lambda v: sum(v) / len(v)), label=label)
    case("channel_var", StatisticsAttrs(), draws(x),
         lambda a, x: _per_channel(x, lambda v: sum((u - sum(v) / len(v)) ** 2 for u in v)
                                   / (len(v) - 1)),
         label=label)


for _label, _shape in _BN_SHAPES.items():
    _bn_cases(_label, _shape)

case("ema", MomentumAttrs(0.9), lambda rng: (normal(rng, 4), normal(rng, 4)),
     lambda a, running, stat: 0.9 * running + 0.1 * stat)
case("ema", MomentumAttrs(0.25), lambda rng: (normal(rng, 4), normal(rng, 4)),
     lambda a, running, stat: 0.25 * running + 0.75 * stat, label="momentum 0.25")


def _lowbias32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x21F0AAAD) % 2**32
    h ^= h >> 15
    h = (h * 0x735A2D97) % 2**32
    return h ^ (h >> 15)


def _dropout_reference(attrs, x, key):
    """Element i is kept when lowbias32(lowbias32(j * phi ^ key0 ^ stream * c) + key1), read
    as a fraction of 2^32, is at least the rate, j = i + key2 * (elements per sample): the
    hash written with Python integers."""
    key0, key1, key2 = (int(k) for k in key)
    first = key0 ^ (attrs.stream * 0x85EBCA6B) % 2**32
    offset = key2 * (x.size // x.shape[0])
    keep = []
    for i in range(x.size):
        h = _lowbias32((((i + offset) * 0x9E3779B9) % 2**32) ^ first)
        h = _lowbias32((h + key1) % 2**32)
        keep.append(1.0 if h >= min(round(attrs.rate * 2**32), 2**32 - 1) else 0.0)
    return np.array(keep).reshape(x.shape) / (1 - attrs.rate)


for _rate, _stream, _key in ((0.5, 0, (1234, 0, 0)), (0.2, 3, (2**32 - 1, 77, 0)),
                             (0.5, 1, (9, 2**31, 5))):
    case("dropout_mask", RateAttrs(_rate, _stream),
         lambda rng, key=_key: (normal(rng, 4, 6), np.array(key, dtype=np.uint32)),
         _dropout_reference, label=f"rate {_rate} stream {_stream}")


# --- optimizer updates and clipping ------------------------------------------------------------
# Written as PyTorch's torch.optim documentation states the algorithms; test_registry.py also
# runs torch.optim itself when torch is importable.

def _sgd_reference(a, p, g, lr, step, *state):
    d = g + a.weight_decay * p
    if a.momentum == 0:
        return (p - lr * d,)
    buf = d if step == 1 else a.momentum * state[0] + d
    if a.nesterov:
        d = d + a.momentum * buf
    else:
        d = buf
    return p - lr * d, buf


def _adam_reference(a, p, g, lr, step, m, v):
    if a.decoupled:
        p = p - lr * a.weight_decay * p
    else:
        g = g + a.weight_decay * p
    m = a.beta1 * m + (1 - a.beta1) * g
    v = a.beta2 * v + (1 - a.beta2) * g ** 2
    m_hat = m / (1 - a.beta1 ** step)
    v_hat = v / (1 - a.beta2 ** step)
    return p - lr * m_hat / (np.sqrt(v_hat) + a.eps), m, v


def _rmsprop_reference(a, p, g, lr, step, square_avg, *buffer):
    g = g + a.weight_decay * p
    square_avg = a.alpha * square_avg + (1 - a.alpha) * g ** 2
    avg = np.sqrt(square_avg) + a.eps
    if a.momentum == 0:
        return p - lr * g / avg, square_avg
    buf = a.momentum * buffer[0] + g / avg
    return p - lr * buf, square_avg, buf


def _adagrad_reference(a, p, g, lr, step, total):
    g = g + a.weight_decay * p
    total = total + g ** 2
    return p - lr * g / (np.sqrt(total) + a.eps), total


def state_slots(name: str, attrs) -> int:
    """How many state arrays an update op carries."""
    if name == "sgd_update":
        return 1 if attrs.momentum else 0
    if name == "rmsprop_update":
        return 2 if attrs.momentum else 1
    return {"adam_update": 2, "adagrad_update": 1}[name]


UPDATE_ATTRS = {
    "sgd_update": [SgdAttrs(), SgdAttrs(momentum=0.9), SgdAttrs(momentum=0.9, nesterov=True),
                   SgdAttrs(weight_decay=0.01), SgdAttrs(0.8, True, 0.05)],
    "adam_update": [AdamAttrs(), AdamAttrs(0.8, 0.99, 1e-6, 0.1),
                    AdamAttrs(weight_decay=0.1, decoupled=True)],
    "rmsprop_update": [RmsPropAttrs(), RmsPropAttrs(momentum=0.9),
                       RmsPropAttrs(0.9, 1e-6, 0.5, 0.01)],
    "adagrad_update": [AdagradAttrs(), AdagradAttrs(1e-8, 0.1)],
}
_UPDATE_REFERENCES = {"sgd_update": _sgd_reference, "adam_update": _adam_reference,
                      "rmsprop_update": _rmsprop_reference, "adagrad_update": _adagrad_reference}


def _update_inputs(name, attrs, step):
    def inputs(rng):
        # Square-averaged state must be non-negative, so every state starts as |normal|.
        state = tuple(np.abs(normal(rng, 3, 4)) for _ in range(state_slots(name, attrs)))
        return normal(rng, 3, 4), normal(rng, 3, 4), scalar(0.05), scalar(step), *state

    return inputs


for _name, _attrs_list in UPDATE_ATTRS.items():
    for _attrs in _attrs_list:
        for _step in (1, 3):
            if _name == "sgd_update" and _step == 1 and _attrs.momentum:
                continue  # PyTorch's first momentum step ignores the buffer: tested from zeros
            case(_name, _attrs, _update_inputs(_name, _attrs, _step), _UPDATE_REFERENCES[_name],
                 label=f"{_attrs} step {_step}")


def _global_norm_reference(attrs, *grads):
    return np.array(math.sqrt(sum(v * v for g in grads for v in g.flat)))


def _clip_by_norm_reference(attrs, g, norm):
    factor = attrs.limit / (float(norm) + 1e-6)
    return g * min(factor, 1.0)


case("global_norm", NoAttrs(), draws((normal, (3, 4)), (normal, (4,)), (normal, (2, 3, 2))),
     _global_norm_reference)
case("global_norm", NoAttrs(), lambda rng: (normal(rng, 5),), _global_norm_reference, label="one")
# Alone (no communicator) the mean over one rank is the gradient itself; tests/runtime/
# test_distributed.py averages over ranks.
case("allreduce_mean", NoAttrs(), draws((normal, (3, 4)), (normal, (4,)), (normal, (2, 3, 2))),
     lambda a, *grads: tuple(np.array(g) for g in grads))
case("allreduce_mean", NoAttrs(), lambda rng: (normal(rng, 5),),
     lambda a, g: (np.array(g),), label="one")
case("clip_by_norm", ClipAttrs(1.0), lambda rng: (normal(rng, 3, 4), scalar(4.0)),
     _clip_by_norm_reference, label="clipped")
case("clip_by_norm", ClipAttrs(10.0), lambda rng: (normal(rng, 3, 4), scalar(4.0)),
     _clip_by_norm_reference, label="unclipped")
case("clip_by_value", ClipAttrs(0.5), lambda rng: (normal(rng, 3, 4),),
     lambda a, g: _elementwise(lambda v: max(-a.limit, min(a.limit, v)))(g))


# --- data movement -----------------------------------------------------------------------------

case("reshape", ReshapeAttrs((4, 3)), lambda rng: (normal(rng, 2, 3, 4),),
     lambda a, x: np.array([[list(x[b].flat)[r * 3:(r + 1) * 3] for r in range(4)]
                            for b in range(2)]),
     differentiable=(0,))
case("reshape", ReshapeAttrs((12,)), lambda rng: (normal(rng, 2, 3, 2, 2),),
     lambda a, x: np.array([list(x[b].flat) for b in range(2)]), differentiable=(0,),
     label="flatten")


def _concat_reference(attrs, *xs):
    parts = [np.moveaxis(x, attrs.axis, 0) for x in xs]
    return np.moveaxis(np.array([row for part in parts for row in part]), 0, attrs.axis)


case("concat", ConcatAttrs(1),
     lambda rng: (normal(rng, 2, 3, 4), normal(rng, 2, 1, 4), normal(rng, 2, 2, 4)),
     _concat_reference, differentiable=(0, 1, 2))
case("concat", ConcatAttrs(2), lambda rng: (normal(rng, 2, 3, 4), normal(rng, 2, 3, 2)),
     _concat_reference, differentiable=(0, 1), label="axis 2")


def _slice_reference(attrs, x):
    moved = np.moveaxis(x, attrs.axis, 0)
    return np.moveaxis(np.array([moved[i] for i in range(attrs.start, attrs.stop)]), 0, attrs.axis)


case("slice", SliceAttrs(1, 1, 3), lambda rng: (normal(rng, 2, 4, 3),), _slice_reference)
case("slice", SliceAttrs(2, 0, 2), lambda rng: (normal(rng, 2, 4, 3),), _slice_reference,
     label="axis 2")


def _source(i, n, mode):
    """The input index that padded index i (relative to the input's start) copies, or None."""
    if 0 <= i < n:
        return i
    if mode in ("zeros", "random"):
        return None
    if mode == "circular":
        return i % n
    if mode == "replicate":
        return min(max(i, 0), n - 1)
    return -i if i < 0 else 2 * (n - 1) - i  # reflect, without repeating the edge


def _pad_maps(attrs, spatial):
    """Every (padded index, input index or None) pair over the spatial axes."""
    pairs = pad_pairs(attrs.pad)
    padded = [n + lo + hi for n, (lo, hi) in zip(spatial, pairs)]
    for index in itertools.product(*(range(m) for m in padded)):
        yield index, [_source(i - lo, n, attrs.mode) for i, n, (lo, _) in
                      zip(index, spatial, pairs)]


def _pad_reference(attrs, x):
    pairs = pad_pairs(attrs.pad)
    out = np.zeros((*x.shape[:2], *(n + lo + hi for n, (lo, hi) in zip(x.shape[2:], pairs))))
    if attrs.mode == "random":  # documented: N(0, 1) from the seed, one border for every sample
        out[:] = np.random.default_rng(attrs.seed).standard_normal(out.shape[1:])
    for index, source in _pad_maps(attrs, x.shape[2:]):
        if None not in source:
            out[(slice(None), slice(None), *index)] = x[(slice(None), slice(None), *source)]
    return out


def _pad_grad_reference(attrs, g, x):
    grad = np.zeros_like(x)
    for index, source in _pad_maps(attrs, x.shape[2:]):
        if None not in source:
            grad[(slice(None), slice(None), *source)] += g[(slice(None), slice(None), *index)]
    return grad


_PAD_CONFIGS = [
    (mode, pad, shape)
    for mode in ("zeros", "reflect", "replicate", "circular", "random")
    for pad, shape in ((((1, 2), (2, 1)), (2, 2, 4, 5)), (((2, 1),), (2, 3, 5)))
] + [("circular", ((3, 4),), (2, 2, 2))]  # wider than the input: it wraps around again
for _mode, _pad, _shape in _PAD_CONFIGS:
    _padded_shape = (*_shape[:2], *padded_sizes(_shape[2:], _pad))
    _label = f"{_mode} {len(_pad)}-d" + (" wrapping twice" if _pad == ((3, 4),) else "")
    _attrs = PadAttrs(_pad, _mode, 7 if _mode == "random" else None)
    case("pad", _attrs, draws((normal, _shape)), _pad_reference, differentiable=(0,),
         label=_label)
    case("pad_grad", _attrs, draws((normal, _padded_shape), (normal, _shape)),
         _pad_grad_reference, label=_label)


# --- ops that only the optimizing passes emit ------------------------------------------------
# Their references are the unfused ops' references composed, or explicit loops.

from nnrun.compiler.ops.conv import ColumnsAttrs, ConvColumnsAttrs  # noqa: E402
from nnrun.compiler.ops.linear import BiasActivationAttrs  # noqa: E402
from nnrun.compiler.ops.optim import UpdateGroupAttrs  # noqa: E402
from nnrun.compiler.ops.pool import PoolGradAttrs  # noqa: E402


def columns_naive(attrs, x):
    """cols[c*K + k, b, o] ([c*K + k, o, b] when batch_last, [b, c*K + k, o] when by_sample):
    the padded input under kernel offset k of output position o."""
    padded = _pad_constant(x, pad_pairs(attrs.pad), 0.0)
    out = _out_sizes(padded.shape[2:], attrs.kernel, attrs.stride, attrs.dilation)
    offsets = list(itertools.product(*(range(k) for k in attrs.kernel)))
    positions = list(itertools.product(*(range(m) for m in out)))
    cols = np.zeros((x.shape[1] * len(offsets), x.shape[0], len(positions)))
    for b, c in np.ndindex(x.shape[:2]):
        for k, offset in enumerate(offsets):
            for o, position in enumerate(positions):
                index = tuple(p * s + q * d for p, q, s, d in
                              zip(position, offset, attrs.stride, attrs.dilation))
                cols[c * len(offsets) + k, b, o] = padded[(b, c, *index)]
    if attrs.batch_last:
        return np.ascontiguousarray(cols.swapaxes(1, 2))
    return np.ascontiguousarray(cols.swapaxes(0, 1)) if attrs.by_sample else cols


# The column layouts, by their axes (r: the rows c*K + k, b: batch, o: output positions):
# a label and the attrs that choose them
COLUMN_LAYOUTS = {"rbo": ("", {}), "rob": (" batch-last", {"batch_last": True}),
                  "bro": (" by-sample", {"by_sample": True})}


def _columns_attrs(attrs, w_shape):
    return ColumnsAttrs(tuple(w_shape[2:]), attrs.stride, attrs.pad, attrs.dilation)


def _column_cases(rank, label, attrs, x_shape, w_shape, layout):
    layout_label, layout_attrs = COLUMN_LAYOUTS[layout]
    columns = replace(_columns_attrs(attrs, w_shape), **layout_attrs)
    out = _out_sizes(padded_sizes(x_shape[2:], attrs.pad), w_shape[2:], attrs.stride,
                     attrs.dilation)
    batch_last = columns.batch_last
    label = f"{rank}-d {label}{layout_label}"
    case("im2col", columns, draws((normal, x_shape)), columns_naive, label=label)

    def cols_and_weight(rng):
        return columns_naive(columns, normal(rng, *x_shape)), normal(rng, *w_shape)

    case("conv_columns", ConvColumnsAttrs(out, batch_last, columns.by_sample), cols_and_weight,
         lambda a, cols, w: np.einsum(f"fr,{layout}->bfo", w.reshape(w.shape[0], -1), cols)
         .reshape(x_shape[0], w.shape[0], *a.out), label=label)

    def grad_and_cols(rng):
        return (normal(rng, x_shape[0], w_shape[0], *out),
                columns_naive(columns, normal(rng, *x_shape)))

    case("conv_grad_weight_columns", columns, grad_and_cols,
         lambda a, g, cols: np.einsum(f"bfo,{layout}->fr", g.reshape(g.shape[0], g.shape[1], -1),
                                      cols).reshape(w_shape), label=label)
    if batch_last:
        _batch_last_values_cases(rank, label, attrs, columns, out, x_shape, w_shape)


def to_batch_last(array):
    """[B, C, *spatial] -> [C, *spatial, B], contiguous."""
    return np.ascontiguousarray(np.moveaxis(array, 0, -1))


def to_batch_first(array):
    return np.moveaxis(array, -1, 0)


def _batch_last_values_cases(rank, label, attrs, columns, out, x_shape, w_shape):
    """The layouts compiler/passes/batch_last_layers.py gives values between convolutions."""
    values = replace(columns, values_batch_last=True)
    label = f"{label}, values batch-last"
    case("im2col", values, lambda rng: (to_batch_last(normal(rng, *x_shape)),),
         lambda a, x: columns_naive(columns, to_batch_first(x)), label=label)

    def cols_weight_bias(rng):
        return (columns_naive(columns, normal(rng, *x_shape)), normal(rng, *w_shape),
                normal(rng, w_shape[0]))

    def conv_bias_relu(a, cols, w, b):
        y = np.einsum("fr,rob->fob", w.reshape(w.shape[0], -1), cols) + b[:, None, None]
        return np.maximum(y, 0).reshape(w.shape[0], *out, x_shape[0])

    case("conv_columns", ConvColumnsAttrs(out, True, bias_relu_batch_last=True),
         cols_weight_bias, conv_bias_relu, label=label)

    def grad_and_cols(rng):
        return (to_batch_last(normal(rng, x_shape[0], w_shape[0], *out)),
                columns_naive(columns, normal(rng, *x_shape)))

    case("conv_grad_weight_columns", values, grad_and_cols,
         lambda a, g, cols: np.einsum("fob,rob->fr", g.reshape(g.shape[0], -1, g.shape[-1]),
                                      cols).reshape(w_shape), label=label)
    for g_batch_last, x_batch_last in ((True, False), (False, True), (True, True)):
        _conv_grad_input_layout_case(rank, label, attrs, out, x_shape, w_shape, g_batch_last,
                                     x_batch_last)


def _conv_grad_input_layout_case(rank, label, attrs, out, x_shape, w_shape, g_batch_last,
                                 x_batch_last):
    layouts = replace(attrs, g_batch_last=g_batch_last, x_batch_last=x_batch_last)

    def inputs(rng):
        g, x = normal(rng, x_shape[0], w_shape[0], *out), normal(rng, *x_shape)
        return (to_batch_last(g) if g_batch_last else g, to_batch_last(x) if x_batch_last else x,
                normal(rng, *w_shape))

    def reference(a, g, x, w):
        gx = _conv_grad_input_reference(attrs, to_batch_first(g) if g_batch_last else g,
                                        to_batch_first(x) if x_batch_last else x, w)
        return to_batch_last(gx) if x_batch_last else gx

    case(f"conv{rank}d_grad_input", layouts, inputs, reference,
         label=f"{label}, g {'batch-last' if g_batch_last else 'batch-first'}, "
               f"x {'batch-last' if x_batch_last else 'batch-first'}")


for _rank, _configs in CONV_CONFIGS.items():
    for _config in _configs:
        for _layout in COLUMN_LAYOUTS:
            _column_cases(_rank, *_config, _layout)


def _max_pool_index_reference(attrs, x):
    """(y, flat position of each window's first maximum in its sample's padded input)."""
    padded = _pad_constant(x, pad_pairs(attrs.pad), -np.inf)
    out = _out_sizes(padded.shape[2:], attrs.kernel, attrs.stride, attrs.dilation)
    y = np.zeros((*x.shape[:2], *out))
    index = np.zeros(y.shape, dtype=np.int64)
    for b, c in np.ndindex(x.shape[:2]):
        for position, window in windows(padded.shape[2:], attrs.kernel, attrs.stride,
                                        attrs.dilation):
            values = padded[(b, c, *window)]
            first = np.unravel_index(int(np.argmax(values)), values.shape)
            at = tuple(w.start + q * w.step for w, q in zip(window, first))
            y[(b, c, *position)] = values[first]
            index[(b, c, *position)] = np.ravel_multi_index((c, *at), padded.shape[1:])
    return y, index


def _max_pool_grad_index_reference(attrs, g, index):
    padded_shape = (*g.shape[:2], *padded_sizes(attrs.input, attrs.pad))
    grad = np.zeros(padded_shape).reshape(g.shape[0], -1)
    for position in np.ndindex(g.shape):
        grad[position[0], index[position]] += g[position]
    return _unpad(grad.reshape(padded_shape), pad_pairs(attrs.pad), attrs.input)


def _pool_index_cases(rank, label, attrs, x_shape):
    out = _out_sizes(padded_sizes(x_shape[2:], attrs.pad), attrs.kernel, attrs.stride,
                     attrs.dilation)
    case("max_pool_index", attrs, draws((distinct, x_shape)), _max_pool_index_reference,
         label=f"{rank}-d {label}")
    grad_attrs = PoolGradAttrs(attrs.kernel, attrs.stride, attrs.pad, attrs.dilation,
                               tuple(x_shape[2:]))

    def grad_and_index(rng):
        _, index = _max_pool_index_reference(attrs, distinct(rng, *x_shape))
        return normal(rng, *x_shape[:2], *out), index

    case("max_pool_grad_index", grad_attrs, grad_and_index, _max_pool_grad_index_reference,
         label=f"{rank}-d {label}")


for _rank, _configs in POOL_CONFIGS.items():
    for _config in _configs:
        _pool_index_cases(_rank, *_config)


for _activation in ("relu", "leaky_relu", "sigmoid", "tanh"):
    _attrs_of, _f = _ACTIVATIONS[_activation][0], _ACTIVATIONS[_activation][1]
    _alpha = getattr(_attrs_of, "alpha", 0.0)
    case("bias_activation", BiasActivationAttrs(_activation, _alpha),
         lambda rng: (away_from_zero(rng, 2, 3, 4), normal(rng, 3) * 0.1),
         lambda a, x, b, f=_f, attrs_of=_attrs_of: _elementwise(lambda v: f(attrs_of, v))(
             _bias_add_reference(None, x, b)),
         label=_activation)


def _update_group_inputs(name, attrs, shapes):
    slots = state_slots(name, attrs)

    def inputs(rng):
        params = [normal(rng, *s) for s in shapes]
        grads = [normal(rng, *s) for s in shapes]
        state = [np.abs(normal(rng, *s)) for _ in range(slots) for s in shapes]
        return (*params, *grads, scalar(0.05), scalar(3), *state)

    return inputs


def _update_group_reference(attrs, *arrays):
    n, slots = attrs.count, attrs.slots
    reference = _UPDATE_REFERENCES[attrs.update]
    results = [reference(attrs.attrs, arrays[i], arrays[n + i], arrays[2 * n], arrays[2 * n + 1],
                         *(arrays[2 * n + 2 + k * n + i] for k in range(slots)))
               for i in range(n)]
    return (*(r[0] for r in results), *(r[1 + k] for k in range(slots) for r in results))


for _name, _attrs in (("sgd_update", SgdAttrs(0.9, False, 0.01)), ("adam_update", AdamAttrs()),
                      ("rmsprop_update", RmsPropAttrs(momentum=0.9))):
    _shapes = [(3, 4), (4,), (2, 2, 3)]
    case("update_group", UpdateGroupAttrs(_name, _attrs, len(_shapes), state_slots(_name, _attrs)),
         _update_group_inputs(_name, _attrs, _shapes), _update_group_reference, label=_name)
