"""Upsampling (1-D and 2-D) by whole factors: nearest neighbour, or (bi)linear interpolation.

Linear interpolation follows PyTorch's `align_corners=False`: output position o reads the input
at the source coordinate (o + 0.5)/scale - 0.5 (clamped at 0), so pixel centres, not corners,
line up; the last input is repeated past the end. Along a short axis it is a product with a
fixed [out, n] matrix of two entries per row; along a long one, the outputs of one phase
(o mod scale) read two neighbours with the same weights. A 2-D upsampling is one axis after the
other, and its gradient the transposes in the other order. Nearest repeats each value `scale`
times; its gradient sums each block.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..ir import TensorType
from ..shapes import ShapeError, size_of
from . import OpDef, forward_through_into, register
from .common import array_type, cached_constant, check_sample_rank


@dataclass(frozen=True)
class UpsampleAttrs:
    scale: tuple = (2, 2)  # per spatial axis, whole numbers >= 1
    mode: str = "nearest"  # nearest | linear (1-D) | bilinear (2-D)


def _upsample_shape(attrs, x: TensorType) -> TensorType:
    check_sample_rank(x, len(attrs.scale), f"upsample{len(attrs.scale)}d")
    return TensorType((*x.shape[:2], *(n * s for n, s in zip(x.shape[2:], attrs.scale))), x.dtype)


def _upsample_grad_shape(attrs, g: TensorType) -> TensorType:
    check_sample_rank(g, len(attrs.scale), f"upsample{len(attrs.scale)}d_grad")
    for n, s in zip(g.shape[2:], attrs.scale):
        if n % s:
            raise ShapeError(f"the gradient's size {n} is not a multiple of the scale {s}")
    return TensorType((*g.shape[:2], *(n // s for n, s in zip(g.shape[2:], attrs.scale))), g.dtype)


# --- nearest: each value repeated `scale` times along each axis -------------------------------


def _blocks(shape, scale, repeat: bool) -> tuple:
    """[B, C, n1, s1, n2, s2]: the upsampled shape with each axis split into (n, s); with
    repeat=False the s axes are 1, ready to broadcast."""
    spatial = [size for n, s in zip(shape[2:], scale) for size in (n, s if repeat else 1)]
    return (*shape[:2], *spatial)


def _block_axes(scale) -> tuple:
    return tuple(3 + 2 * axis for axis in range(len(scale)))


# With a short last scale the blocks' innermost axis is that short, which NumPy copies and sums
# along slowly (a copy 6x, a sum 40x slower than per phase): there, one phase of the last axis
# at a time, whose innermost axis is the width.
SHORT_LAST_SCALE = 4


def _nearest_forward(be, attrs, x):
    blocks = be.xp.broadcast_to(x.reshape(_blocks(x.shape, attrs.scale, False)),
                                _blocks(x.shape, attrs.scale, True))
    return blocks.reshape(_upsample_shape(attrs, array_type(x)).shape)


def _nearest_into(be, attrs, out, x):
    (y,) = out
    blocks = y.reshape(_blocks(x.shape, attrs.scale, True))
    source = x.reshape(_blocks(x.shape, attrs.scale, False))
    if attrs.scale[-1] > SHORT_LAST_SCALE:
        be.xp.copyto(blocks, source)
        return
    for phase in range(attrs.scale[-1]):
        be.xp.copyto(blocks[..., phase], source[..., 0])


def _nearest_grad_into(be, attrs, out, g):
    (gx,) = out
    blocks = g.reshape(_blocks(gx.shape, attrs.scale, True))
    axes = _block_axes(attrs.scale)
    if attrs.scale[-1] > SHORT_LAST_SCALE:
        be.xp.sum(blocks, axis=axes, out=gx)
        return
    for number, phase in enumerate(itertools.product(*map(range, attrs.scale))):
        where = [slice(None)] * blocks.ndim
        for axis, r in zip(axes, phase):
            where[axis] = r
        if number == 0:
            be.xp.copyto(gx, blocks[tuple(where)])
        else:
            gx += blocks[tuple(where)]


# --- linear: an interpolation matrix along a short axis, two neighbours along a long one ------

# Up to this length an axis is interpolated by a product with its [n*s, n] matrix, which BLAS
# runs faster than the phase-by-phase form; past it the matrix grows with the square of the
# length (a sequence of 4,096 took 200 times PyTorch's step, measured in docs/benchmarks.md).
MATRIX_LENGTH = 64


def _linear_matrix(xp, n: int, scale: int, dtype):
    """A [n*scale, n]: output o = (1 - t) x[i0] + t x[i1] at source (o + 0.5)/scale - 0.5."""
    out = n * scale
    source = xp.maximum((xp.arange(out, dtype=xp.float64) + 0.5) / scale - 0.5, 0.0)
    first = xp.minimum(xp.floor(source).astype(xp.int64), n - 1)
    second = xp.minimum(first + 1, n - 1)
    weight = source - first
    matrix = xp.zeros((out, n), dtype=xp.float64)
    rows = xp.arange(out)
    matrix[rows, first] += 1.0 - weight
    matrix[rows, second] += weight  # at the end first == second: the weights add up to 1
    return matrix.astype(dtype)


def _matrix(be, n: int, scale: int, dtype):
    return cached_constant(be, ("upsample", n, scale, dtype),
                           lambda: _linear_matrix(be.xp, n, scale, dtype))


def _phases(scale: int):
    """Output o = s*i + r reads the input at i + d, d = (r + 0.5)/s - 0.5: per phase r, the
    shift of its lower neighbour (i or i - 1) and the weight of the upper one."""
    for r in range(scale):
        d = (r + 0.5) / scale - 0.5
        yield r, (0, d) if d >= 0 else (-1, 1.0 + d)


def _along(a, axis: int, index):
    where = [slice(None)] * a.ndim
    where[axis] = index
    return a[tuple(where)]


def _interpolate_into(be, x, axis: int, scale: int, out, spare=None) -> None:
    """out = x upsampled along `axis` (the last, or the height of [B, C, H, W]); `spare`: a
    batch-first buffer of at least twice x's size, where the axis is long."""
    n, xp = x.shape[axis], be.xp
    if n <= MATRIX_LENGTH:
        matrix = _matrix(be, n, scale, x.dtype)
        be.matmul_into(x, matrix.T, out) if axis == x.ndim - 1 else be.matmul_into(matrix, x, out)
        return
    # per phase, lower + w (upper - lower) between neighbours, computed in the spare buffer and
    # copied into the phase's every scale-th output once (NumPy's strided passes: 0.76 against
    # 0.27 ms for three of them a phase); the edge input is repeated past either end (PyTorch's
    # clamping)
    lower, upper = _along(x, axis, slice(0, n - 1)), _along(x, axis, slice(1, n))
    pair = spare.reshape(x.shape[0], -1)[:, :2 * size_of(x.shape[1:])].reshape(
        x.shape[0], 2, *x.shape[1:])
    difference, part = (_along(pair[:, half], axis, slice(0, n - 1)) for half in (0, 1))
    xp.subtract(upper, lower, out=difference)
    for r, (shift, weight) in _phases(scale):
        phase = _along(out, axis, slice(r, None, scale))
        xp.multiply(difference, weight, out=part)
        xp.add(part, lower, out=part)
        xp.copyto(_along(phase, axis, slice(0, n - 1) if shift == 0 else slice(1, n)), part)
        edge = slice(n - 1, n) if shift == 0 else slice(0, 1)
        xp.copyto(_along(phase, axis, edge), _along(x, axis, edge))


def _interpolate_grad_into(be, g, axis: int, scale: int, gx, spare=None) -> None:
    """gx = the transpose of _interpolate_into applied to g; `spare`: a buffer of at least gx's
    size where the axis is long."""
    n, xp = gx.shape[axis], be.xp
    if n <= MATRIX_LENGTH:
        matrix = _matrix(be, n, scale, g.dtype)
        be.matmul_into(g, matrix, gx) if axis == g.ndim - 1 else be.matmul_into(matrix.T, g, gx)
        return
    # each phase's gradient goes to the two neighbours it read: w to the upper, 1 - w to the
    # lower, and the edge's whole to the edge
    gx.fill(0)
    lower, upper = _along(gx, axis, slice(0, n - 1)), _along(gx, axis, slice(1, n))
    part = _along(spare.reshape(-1)[:gx.size].reshape(gx.shape), axis, slice(0, n - 1))
    for r, (shift, weight) in _phases(scale):
        phase = _along(g, axis, slice(r, None, scale))
        inner = _along(phase, axis, slice(0, n - 1) if shift == 0 else slice(1, n))
        xp.multiply(inner, weight, out=part)
        upper += part
        xp.subtract(inner, part, out=part)
        lower += part
        edge = slice(n - 1, n) if shift == 0 else slice(0, 1)
        edge_gx = _along(gx, axis, edge)
        edge_gx += _along(phase, axis, edge)


def _linear_scratch(attrs, x):
    """[the upsampled height (2-D)], then, where an axis is long, a spare buffer of twice the
    largest stage's input (batch first, so that a batch segment takes its slice)."""
    if len(attrs.scale) == 1:
        long = x.shape[2] > MATRIX_LENGTH
        return (TensorType((x.shape[0], 2, *x.shape[1:]), x.dtype),) if long else ()
    tall = (*x.shape[:2], x.shape[2] * attrs.scale[0], x.shape[3])
    stage = tall if x.shape[3] > MATRIX_LENGTH else x.shape if x.shape[2] > MATRIX_LENGTH \
        else None
    spare = [TensorType((x.shape[0], 2, *stage[1:]), x.dtype)] if stage else []
    return (TensorType(tall, x.dtype), *spare)


def _linear_into(be, attrs, out, x):
    if len(attrs.scale) == 1:
        y, *spare = out
        _interpolate_into(be, x, 2, attrs.scale[0], y, *spare)
        return
    y, tall, *spare = out  # along the height, then along the width
    _interpolate_into(be, x, 2, attrs.scale[0], tall, *spare)
    _interpolate_into(be, tall, 3, attrs.scale[1], y, *spare)


def _linear_grad_scratch(attrs, g):
    """[the gradient along the width (2-D)], then, where an axis is long, a spare buffer of
    the largest stage's shape (batch first, so that a batch segment takes its slice)."""
    gx = _upsample_grad_shape(attrs, g).shape
    if len(attrs.scale) == 1:
        return (TensorType(gx, g.dtype),) if gx[2] > MATRIX_LENGTH else ()
    tall = (*g.shape[:3], gx[3])
    spare = tall if gx[3] > MATRIX_LENGTH else gx if gx[2] > MATRIX_LENGTH else None
    return (TensorType(tall, g.dtype), *([TensorType(spare, g.dtype)] if spare else []))


def _linear_grad_into(be, attrs, out, g):
    if len(attrs.scale) == 1:
        gx, *spare = out
        _interpolate_grad_into(be, g, 2, attrs.scale[0], gx, *spare)
        return
    gx, tall, *spare = out  # along the width, then along the height
    _interpolate_grad_into(be, g, 3, attrs.scale[1], tall, *spare)
    _interpolate_grad_into(be, tall, 2, attrs.scale[0], gx, *spare)


# --- one op per rank, the mode chosen by the attribute ----------------------------------------


def _by_mode(nearest, linear):
    def run(be, attrs, *arrays):
        return (nearest if attrs.mode == "nearest" else linear)(be, attrs, *arrays)

    return run


def _scratch_by_mode(linear):
    return lambda attrs, *types: () if attrs.mode == "nearest" else linear(attrs, *types)


def _upsample_onnx(ox, node):
    """Nearest: ONNX's Resize as PyTorch's nearest (floor of o / scale), exact; a 1-D sample
    goes through it as [C, 1, L]. Linear: per axis, as the forward computes it (Resize's linear
    mode rounds its source coordinates in float32: 2.9e-5 off at scale 3 along 688 inputs)."""
    (x,) = ox.inputs(node)
    attrs, shape = node.attrs, node.inputs[0].type.shape
    if attrs.mode == "nearest":
        return _nearest_onnx(ox, x, node)
    for axis, scale in enumerate(attrs.scale, start=2):  # the height first, as the forward
        x = _interpolate_onnx(ox, x, axis, shape[axis], scale, len(shape))
    return x


def _nearest_onnx(ox, x, node):
    rank, shape = len(node.attrs.scale), node.inputs[0].type.shape
    if rank == 1:
        x = ox.emit("Reshape", x, ox.ints([0, shape[1], 1, shape[2]]))
    scales = ox.constant([1.0, 1.0, *([1.0] if rank == 1 else []), *map(float, node.attrs.scale)],
                         "float32")
    y = ox.emit("Resize", x, "", scales, mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    if rank == 1:
        y = ox.emit("Reshape", y, ox.ints([0, *node.output.type.shape[1:]]))
    return y


def _interpolate_onnx(ox, x, axis: int, n: int, scale: int, ndim: int):
    """_interpolate_into as ONNX: Gather of each output's two neighbours along `axis`, then
    the matrix's two weights (a short axis) or lower + w (upper - lower) (a long one)."""
    short = n <= MATRIX_LENGTH
    first, second, weights = (_matrix_neighbours if short else _phase_neighbours)(n, scale,
                                                                                   ox.dtype)
    across = (-1, *[1] * (ndim - 1 - axis))  # the weights broadcast along the later axes
    lower = ox.emit("Gather", x, ox.constant(first, "int64"), axis=axis)
    upper = ox.emit("Gather", x, ox.constant(second, "int64"), axis=axis)
    if short:
        lower_weight, upper_weight = (ox.constant(w.reshape(across)) for w in weights)
        return ox.emit("Add", ox.emit("Mul", lower, lower_weight),
                       ox.emit("Mul", upper, upper_weight))
    step = ox.emit("Mul", ox.emit("Sub", upper, lower), ox.constant(weights.reshape(across)))
    return ox.emit("Add", step, lower)


def _matrix_neighbours(n: int, scale: int, dtype):
    """Each row's two columns of _linear_matrix and their entries (the second 0 where the
    row has one column: the edge, whose entries were added up)."""
    matrix = _linear_matrix(np, n, scale, dtype)
    rows = np.arange(n * scale)
    first = np.argmax(matrix != 0, axis=1)
    second = np.minimum(first + 1, n - 1)
    upper = np.where(second > first, matrix[rows, second], 0).astype(dtype)
    return first, second, (matrix[rows, first], upper)


def _phase_neighbours(n: int, scale: int, dtype):
    """Output s*i + r reads i + shift and the next input, with its phase's weight (rounded to
    the dtype, as the forward's in-place product rounds it); past either end both are the
    edge input, which the forward copies."""
    first, weights = np.empty(n * scale, np.int64), np.empty(n * scale, dtype)
    for r, (shift, weight) in _phases(scale):
        first[r::scale] = np.arange(n) + shift
        weights[r::scale] = weight
    return np.clip(first, 0, n - 1), np.clip(first + 1, 0, n - 1), weights


def _upsample_vjp(gb, node, g):
    return (gb.emit(f"{node.op}_grad", g, attrs=node.attrs),)


for _rank in (1, 2):
    _name = f"upsample{_rank}d"
    register(OpDef(_name, UpsampleAttrs, _upsample_shape,
                   _by_mode(_nearest_forward, forward_through_into(_name)), _upsample_vjp,
                   doc="y[o] = x[o // s] (nearest), or linear interpolation at source "
                       "(o + 0.5)/s - 0.5 (align_corners=False)",
                   forward_into=_by_mode(_nearest_into, _linear_into),
                   scratch=_scratch_by_mode(_linear_scratch), batch_parallel=True,
                   onnx=_upsample_onnx))
    register(OpDef(f"{_name}_grad", UpsampleAttrs, _upsample_grad_shape,
                   forward_through_into(f"{_name}_grad"), None,
                   doc=f"gradient of {_name}: block sums (nearest), or A^T g per axis (linear)",
                   forward_into=_by_mode(_nearest_grad_into, _linear_grad_into),
                   scratch=_scratch_by_mode(_linear_grad_scratch), batch_parallel=True))
