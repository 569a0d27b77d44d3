"""Upsampling (1-D and 2-D) by whole factors: nearest neighbour, or (bi)linear interpolation.

Linear interpolation follows PyTorch's `align_corners=False`: output position o reads the input
at the source coordinate (o + 0.5)/scale - 0.5 (clamped at 0), so pixel centres, not corners,
line up; the last input is repeated past the end. Along each axis it is a fixed matrix
[out, n] with two entries per row, and a 2-D upsampling is A_h x A_w^T; its gradient is
A_h^T g A_w. Nearest repeats each value `scale` times; its gradient sums each block.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import TensorType
from ..shapes import ShapeError
from . import OpDef, register
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


def _nearest_forward(be, attrs, x):
    blocks = be.xp.broadcast_to(x.reshape(_blocks(x.shape, attrs.scale, False)),
                                _blocks(x.shape, attrs.scale, True))
    return blocks.reshape(_upsample_shape(attrs, array_type(x)).shape)


def _nearest_into(be, attrs, out, x):
    (y,) = out
    be.xp.copyto(y.reshape(_blocks(x.shape, attrs.scale, True)),
                 x.reshape(_blocks(x.shape, attrs.scale, False)))


def _nearest_grad(be, attrs, g):
    gx_shape = _upsample_grad_shape(attrs, array_type(g)).shape
    return g.reshape(_blocks(gx_shape, attrs.scale, True)).sum(axis=_block_axes(attrs.scale))


def _nearest_grad_into(be, attrs, out, g):
    (gx,) = out
    be.xp.sum(g.reshape(_blocks(gx.shape, attrs.scale, True)), axis=_block_axes(attrs.scale),
              out=gx)


# --- linear: one interpolation matrix per axis ------------------------------------------------


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


def _matrices(be, attrs, spatial, dtype) -> list:
    """One matrix per spatial axis, built once per size and dtype."""
    return [cached_constant(be, ("upsample", n, s, dtype),
                            lambda n=n, s=s: _linear_matrix(be.xp, n, s, dtype))
            for n, s in zip(spatial, attrs.scale)]


def _linear_forward(be, attrs, x):
    *rows, columns = _matrices(be, attrs, x.shape[2:], x.dtype)
    y = rows[0] @ x if rows else x  # along the height, then along the width
    return y @ columns.T


def _linear_scratch(attrs, x):
    if len(attrs.scale) == 1:
        return ()
    return (TensorType((*x.shape[:2], x.shape[2] * attrs.scale[0], x.shape[3]), x.dtype),)


def _linear_into(be, attrs, out, x):
    y, *tall = out
    *rows, columns = _matrices(be, attrs, x.shape[2:], x.dtype)
    if rows:
        be.matmul_into(rows[0], x, tall[0])
        x = tall[0]
    be.matmul_into(x, columns.T, y)


def _linear_grad(be, attrs, g):
    spatial = _upsample_grad_shape(attrs, array_type(g)).shape[2:]
    *rows, columns = _matrices(be, attrs, spatial, g.dtype)
    gx = g @ columns
    return rows[0].T @ gx if rows else gx


def _linear_grad_scratch(attrs, g):
    if len(attrs.scale) == 1:
        return ()
    return (TensorType((*g.shape[:3], g.shape[3] // attrs.scale[1]), g.dtype),)


def _linear_grad_into(be, attrs, out, g):
    gx, *tall = out
    *rows, columns = _matrices(be, attrs, gx.shape[2:], g.dtype)
    if not rows:
        be.matmul_into(g, columns, gx)
        return
    be.matmul_into(g, columns, tall[0])
    be.matmul_into(rows[0].T, tall[0], gx)


# --- one op per rank, the mode chosen by the attribute ----------------------------------------


def _by_mode(nearest, linear):
    def run(be, attrs, *arrays):
        return (nearest if attrs.mode == "nearest" else linear)(be, attrs, *arrays)

    return run


def _scratch_by_mode(linear):
    return lambda attrs, *types: () if attrs.mode == "nearest" else linear(attrs, *types)


def _upsample_onnx(ox, node):
    """ONNX's Resize: nearest as PyTorch's (floor of o / scale), linear with PyTorch's
    align_corners=False (pytorch_half_pixel). 1-D samples go through it as [C, 1, L]."""
    (x,) = ox.inputs(node)
    attrs, x_type = node.attrs, node.inputs[0].type
    rank = len(attrs.scale)
    if rank == 1:
        x = ox.emit("Reshape", x, ox.ints([0, x_type.shape[1], 1, x_type.shape[2]]))
    scales = ox.constant([1.0, 1.0, *([1.0] if rank == 1 else []), *map(float, attrs.scale)],
                         "float32")
    options = ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                "nearest_mode": "floor"} if attrs.mode == "nearest" else
               {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"})
    y = ox.emit("Resize", x, "", scales, **options)
    if rank == 1:
        y = ox.emit("Reshape", y, ox.ints([0, *node.output.type.shape[1:]]))
    return y


def _upsample_vjp(gb, node, g):
    return (gb.emit(f"{node.op}_grad", g, attrs=node.attrs),)


for _rank in (1, 2):
    _name = f"upsample{_rank}d"
    register(OpDef(_name, UpsampleAttrs, _upsample_shape,
                   _by_mode(_nearest_forward, _linear_forward), _upsample_vjp,
                   doc="y[o] = x[o // s] (nearest), or linear interpolation at source "
                       "(o + 0.5)/s - 0.5 (align_corners=False)",
                   forward_into=_by_mode(_nearest_into, _linear_into),
                   scratch=_scratch_by_mode(_linear_scratch), batch_parallel=True,
                   onnx=_upsample_onnx))
    register(OpDef(f"{_name}_grad", UpsampleAttrs, _upsample_grad_shape,
                   _by_mode(_nearest_grad, _linear_grad), None,
                   doc=f"gradient of {_name}: block sums (nearest), or A^T g per axis (linear)",
                   forward_into=_by_mode(_nearest_grad_into, _linear_grad_into),
                   scratch=_scratch_by_mode(_linear_grad_scratch), batch_parallel=True))
