"""Ops that move data without arithmetic: reshape, concat, slice, pad."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import TensorType
from ..shapes import ShapeError, pad_pairs, per_sample, size_of
from . import OpDef, register
from .common import cached_constant, moved, onnx_op, onnx_pads, unpad


@dataclass(frozen=True)
class ReshapeAttrs:
    shape: tuple = ()  # per sample, without the batch axis; fully resolved (no -1)


def _reshape_shape(attrs, x: TensorType) -> TensorType:
    if size_of(attrs.shape) != size_of(x.shape[1:]):
        raise ShapeError(f"cannot reshape {per_sample(x)} ({size_of(x.shape[1:])} values) "
                         f"into {list(attrs.shape)} ({size_of(attrs.shape)} values)",
                         attribute="shape")
    return TensorType((x.shape[0], *attrs.shape), x.dtype)


def _reshape_vjp(gb, node, g):
    (x,) = node.inputs
    return (gb.emit("reshape", g, attrs=ReshapeAttrs(tuple(x.type.shape[1:]))),)


def _reshape_onnx(ox, node):
    (x,) = ox.inputs(node)
    return ox.emit("Reshape", x, ox.ints((0, *node.attrs.shape)))  # 0: keep the batch size


register(OpDef("reshape", ReshapeAttrs, _reshape_shape,
               lambda be, a, x: x.reshape(x.shape[0], *a.shape), _reshape_vjp,
               doc="same values, new per-sample shape", view=True, onnx=_reshape_onnx))


@dataclass(frozen=True)
class ConcatAttrs:
    axis: int = 1  # including the batch axis


def _concat_shape(attrs, *inputs: TensorType) -> TensorType:
    first = inputs[0]
    for other in inputs[1:]:
        same = [d for i, d in enumerate(other.shape) if i != attrs.axis]
        if other.rank != first.rank or same != [d for i, d in enumerate(first.shape) if i != attrs.axis]:
            raise ShapeError(
                f"concat on axis {attrs.axis - 1} needs equal sizes elsewhere, got "
                f"{per_sample(first)} and {per_sample(other)}",
                "check the branches' shapes, or concat on another axis",
            )
    total = sum(t.shape[attrs.axis] for t in inputs)
    shape = list(first.shape)
    shape[attrs.axis] = total
    return TensorType(tuple(shape), first.dtype)


def _concat_vjp(gb, node, g):
    grads, start = [], 0
    for x in node.inputs:
        stop = start + x.type.shape[node.attrs.axis]
        grads.append(gb.emit("slice", g, attrs=SliceAttrs(node.attrs.axis, start, stop)))
        start = stop
    return tuple(grads)


def _concat_into(be, attrs, out, *xs):
    be.xp.concatenate(xs, axis=attrs.axis, out=out[0])


register(OpDef("concat", ConcatAttrs, _concat_shape,
               lambda be, a, *xs: be.xp.concatenate(xs, axis=a.axis), _concat_vjp,
               doc="joins inputs along axis", onnx=onnx_op("Concat", axis="axis"),
               forward_into=_concat_into))


@dataclass(frozen=True)
class SliceAttrs:
    axis: int = 1
    start: int = 0
    stop: int = 0


def _slice_shape(attrs, x: TensorType) -> TensorType:
    shape = list(x.shape)
    shape[attrs.axis] = attrs.stop - attrs.start
    return TensorType(tuple(shape), x.dtype)


def _sliced(attrs, x):
    index = [slice(None)] * x.ndim
    index[attrs.axis] = slice(attrs.start, attrs.stop)
    return x[tuple(index)]


def _slice_forward(be, attrs, x):
    return be.xp.ascontiguousarray(_sliced(attrs, x))


def _slice_into(be, attrs, out, x):
    be.xp.copyto(out[0], _sliced(attrs, x))


register(OpDef("slice", SliceAttrs, _slice_shape, _slice_forward, None,
               doc="x[start:stop] along axis (the gradient of concat)", forward_into=_slice_into))


@dataclass(frozen=True)
class PadAttrs:
    pad: tuple = ((0, 0), (0, 0))  # per spatial axis
    mode: str = "zeros"  # zeros | reflect | replicate | circular | random
    seed: int | None = None  # random: the seed of the padding's values


# np.pad's names; random pads like zeros, then overwrites the border (random_border).
_NUMPY_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                "circular": "wrap", "random": "constant"}
_COPYING_MODES = ("reflect", "replicate", "circular")  # the border copies input values


def _pad_shape(attrs, x: TensorType) -> TensorType:
    shape = list(x.shape)
    for axis, (lo, hi) in enumerate(pad_pairs(attrs.pad), start=2):
        if attrs.mode == "reflect" and max(lo, hi) >= shape[axis]:
            raise ShapeError(f"reflect padding {max(lo, hi)} needs an input longer than that, "
                             f"got {shape[axis]}", "use padding_mode: zeros, replicate or circular")
        shape[axis] += lo + hi
    return TensorType(tuple(shape), x.dtype)


def random_border(seed: int, sample_shape: tuple, dtype) -> np.ndarray:
    """The values padding_mode: random puts around a sample [C, ...padded]: standard normal,
    drawn once from `seed`, the same for every sample and every step (so training, evaluation
    and prediction are deterministic and a sample's output does not depend on its batch)."""
    return np.random.default_rng(seed).standard_normal(sample_shape).astype(dtype)


def _pad_forward(be, attrs, x):
    xp = be.xp
    if attrs.mode == "random":
        y = xp.empty(_pad_shape(attrs, TensorType(x.shape, str(x.dtype))).shape, dtype=x.dtype)
        _pad_into(be, attrs, (y,), x)
        return y
    return xp.pad(x, ((0, 0), (0, 0), *pad_pairs(attrs.pad)), mode=_NUMPY_MODES[attrs.mode])


def _pad_scratch(attrs, x: TensorType) -> tuple:
    """Copying modes: room for one slab of the padded output across an axis (the largest),
    which border values are copied through (_copy_within)."""
    if attrs.mode not in _COPYING_MODES:
        return ()
    padded = _pad_shape(attrs, x).shape
    slab = max(size_of(padded[1:]) // padded[axis] for axis in range(2, len(padded)))
    return (TensorType((x.shape[0], slab), x.dtype),)


def _pad_into(be, attrs, out, x):
    """The border first (zeros or the random values), then the input inside it; copying modes
    then fill the border axis by axis from the buffer itself, as np.pad does."""
    xp = be.xp
    y, *scratch = out
    if attrs.mode == "random":
        border = cached_constant(be, ("random border", attrs.seed, y.shape[1:], y.dtype),
                                 lambda: xp.asarray(random_border(attrs.seed, y.shape[1:],
                                                                  y.dtype)))
        xp.copyto(y, border[None])
    elif attrs.mode not in _COPYING_MODES:
        y.fill(0)
    pairs = pad_pairs(attrs.pad)
    xp.copyto(unpad(y, pairs), x)
    if attrs.mode in _COPYING_MODES:
        for axis, (lo, hi) in enumerate(pairs, start=2):
            source = _source_index(np, x.shape[axis], lo, hi, attrs.mode)
            along = moved(y, axis, 0)
            for index in (*range(lo), *range(lo + x.shape[axis], y.shape[axis])):
                _copy_within(xp, along[index], along[lo + source[index]], scratch)


def _copy_within(xp, target, source, scratch) -> None:
    """target = source, two parts of one buffer: NumPy, which cannot tell that they do not
    overlap, copies the source to a temporary of its size first (a step's allocation that grew
    with the batch); through the plan's scratch instead, where there is one."""
    if not scratch:
        xp.copyto(target, source)
        return
    through = scratch[0].reshape(-1)[:source.size].reshape(source.shape)
    xp.copyto(through, source)
    xp.copyto(target, through)


def _source_index(xp, n, lo, hi, mode):
    """For each padded position, the input position it was copied from (-1: none, the border
    holds zeros or random values)."""
    if mode not in _COPYING_MODES:
        return xp.concatenate([xp.full(lo, -1), xp.arange(n), xp.full(hi, -1)])
    return xp.pad(xp.arange(n), (lo, hi), mode=_NUMPY_MODES[mode])


def _pad_grad_forward(be, attrs, g, x):
    xp = be.xp
    grad = g
    for axis, (lo, hi) in enumerate(pad_pairs(attrs.pad), start=2):
        n = x.shape[axis]
        source = _source_index(xp, n, lo, hi, attrs.mode)
        moved = xp.moveaxis(grad, axis, 0)
        summed = xp.zeros((n, *moved.shape[1:]), dtype=g.dtype)
        keep = source >= 0
        xp.add.at(summed, source[keep], moved[keep])
        grad = xp.moveaxis(summed, 0, axis)
    return xp.ascontiguousarray(grad)


def _pad_grad_scratch(attrs, g: TensorType, x: TensorType):
    """The gradient after each padded axis but the last: that axis summed back to the input's
    length, the later ones still padded."""
    pairs = pad_pairs(attrs.pad)
    return tuple(TensorType((*x.shape[:axis + 1], *g.shape[axis + 1:]), g.dtype)
                 for axis in range(2, 1 + len(pairs)))


def _pad_grad_into(be, attrs, out, g, x):
    """The plain forward's sums without its data-dependent indexing (which a captured CUDA
    graph cannot hold): axis by axis, each padded position added to the input position it
    copies, in the same order as add.at (ascending padded position)."""
    result, *between = out
    source = g
    for axis, (lo, _), target in zip(range(2, g.ndim), pad_pairs(attrs.pad), (*between, result)):
        _sum_copies_into(target, source, axis, lo, attrs.mode)
        source = target


def _sum_copies_into(target, g, axis, lo, mode):
    n, padded = target.shape[axis], g.shape[axis]
    along_g, along_target = moved(g, axis, 0), moved(target, axis, 0)
    origin = _source_index(np, n, lo, padded - lo - n, mode)

    def add_border(positions):
        for position in positions:
            if origin[position] >= 0:
                along_target[origin[position]] += along_g[position]

    target.fill(0)
    add_border(range(lo))
    along_target += along_g[lo:lo + n]
    add_border(range(lo + n, padded))


_ONNX_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
               "random": "constant"}


def _pad_onnx(ox, node):
    (x,) = ox.inputs(node)
    attrs = node.attrs
    if attrs.mode == "circular":  # Pad's "wrap" needs opset 19: one Gather per axis instead
        return _gathered_pad_onnx(ox, node, x)
    pads = onnx_pads(attrs.pad)
    rank = len(pads) // 2
    all_axes = [0, 0, *pads[:rank], 0, 0, *pads[rank:]]  # batch and channels unpadded
    y = ox.emit("Pad", x, ox.ints(all_axes), mode=_ONNX_MODES[attrs.mode])
    if attrs.mode != "random":
        return y
    # Zeros inside, the random values around: added to the zero-padded input, exactly the
    # forward's values.
    padded = node.outputs[0].type.shape[1:]
    border = random_border(attrs.seed, padded, ox.dtype)
    border[(slice(None), *(slice(lo, n - hi) for n, (lo, hi) in
                           zip(padded[1:], pad_pairs(attrs.pad))))] = 0
    return ox.emit("Add", y, ox.constant(border[None]))


def _gathered_pad_onnx(ox, node, x):
    x_type = node.inputs[0].type
    for axis, (lo, hi) in enumerate(pad_pairs(node.attrs.pad), start=2):
        source = _source_index(np, x_type.shape[axis], lo, hi, node.attrs.mode)
        x = ox.emit("Gather", x, ox.ints(source), axis=axis)
    return x


register(OpDef("pad", PadAttrs, _pad_shape, _pad_forward,
               lambda gb, node, g: (gb.emit("pad_grad", g, node.inputs[0], attrs=node.attrs),),
               forward_into=_pad_into, scratch=_pad_scratch,
               doc="pads the spatial axes with zeros, a reflection, the edge value, the "
                   "opposite edge (circular), or fixed random values (seeded)",
               onnx=_pad_onnx))
register(OpDef("pad_grad", PadAttrs, lambda attrs, g, x: x, _pad_grad_forward, None,
               forward_into=_pad_grad_into, scratch=_pad_grad_scratch,
               batch_parallel=True, doc="sums g over every padded copy of each input position"))
