"""Shape rules and helpers shared by several op families."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..ir import TensorType
from ..shapes import ShapeError, pad_pairs, per_sample, size_of


def same_as_first(attrs, x: TensorType, *rest: TensorType) -> TensorType:
    for other in rest:
        if other.rank and other.shape != x.shape:
            raise ShapeError(f"shapes differ: {per_sample(x)} and {per_sample(other)}")
    return x


def scalar_like(x: TensorType) -> TensorType:
    return TensorType((), x.dtype)


def all_same(attrs, *types: TensorType) -> TensorType:
    first = types[0]
    for other in types[1:]:
        if other.shape != first.shape:
            raise ShapeError(
                f"inputs must have equal shapes, got {per_sample(first)} and {per_sample(other)}",
                "make the branches produce the same shape (or use concat)",
            )
    return first


def check_sample_rank(x: TensorType, rank: int, what: str, hint: str = "") -> None:
    """Samples [channels, *rank spatial axes] for `what`, else the ShapeError that says so."""
    if x.rank != rank + 2:
        axes = "length" if rank == 1 else "height, width"
        raise ShapeError(f"{what} expects a [channels, {axes}] sample, got shape {per_sample(x)}",
                         hint)


def array_type(array) -> TensorType:
    """The type of a concrete array, its batch size included."""
    return TensorType(tuple(array.shape), str(array.dtype))


def onnx_op(op_type: str, **attribute_of):
    """An ONNX lowering of one node of `op_type` (compiler/export_onnx.py); `attribute_of` maps
    ONNX attribute names to the op's attribute names."""

    def lower(ox, node):
        attributes = {key: getattr(node.attrs, name) for key, name in attribute_of.items()}
        return ox.emit(op_type, *ox.inputs(node), **attributes)

    return lower


_CONSTANTS: dict = {}


def cached_constant(be, key: tuple, build):
    """An array that depends only on shapes (position tables, vectors of ones), built once per
    backend and key: a step that needs it allocates nothing."""
    full_key = (be.name, *key)
    if full_key not in _CONSTANTS:
        be.refuse_during_capture(f"the constant {key[0]!r}")
        _CONSTANTS[full_key] = build()
    return _CONSTANTS[full_key]


def ones_vector(be, size: int, dtype):
    """A vector of ones, kept: per-channel sums are products with it."""
    return cached_constant(be, ("ones", size, dtype), lambda: be.xp.ones(size, dtype=dtype))


def channel_sums_scratch(x: TensorType) -> tuple[TensorType, ...]:
    """The scratch channel_sums_into needs for an x of this type."""
    return (TensorType((size_of(x.shape[1:]),), x.dtype),) if x.rank > 2 else ()


def channel_sums_into(be, x, out, scratch=()) -> None:
    """out[c] = the sum of channel c of x [B, C, *space] over batch and space, as products with
    vectors of ones (BLAS's gemv): over the batch, then over the positions. Measured 2-5x
    faster than per-sample sums or NumPy's sum over several axes at once."""
    over_batch = ones_vector(be, x.shape[0], x.dtype)
    if x.ndim == 2:
        be.matmul_into(over_batch, x, out)
        return
    (per_position,) = scratch
    be.matmul_into(over_batch, x.reshape(x.shape[0], -1), per_position)
    be.matmul_into(per_position.reshape(x.shape[1], -1),
                   ones_vector(be, size_of(x.shape[2:]), x.dtype), out)


def matmul(be, a, b):
    """a @ b, for operands of two axes or more, through the backend's matmul_into: on CuPy a
    plain forward can then run inside a step captured as a CUDA graph too."""
    shape = (*np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1])
    out = be.xp.empty(shape, dtype=a.dtype)
    be.matmul_into(a, b, out)
    return out


def moved(x, source: int, destination: int):
    """xp.moveaxis(x, source, destination), the same view, as a transpose: without moveaxis's
    argument checks (NumPy 2.4: 4.8 against 0.25 us a call; a step takes a few dozen)."""
    return x.transpose(_moved_axes(x.ndim, source, destination))


def moved_into(be, out, x, source: int, destination: int, spare=None) -> None:
    """out = moved(x, source, destination), for x whose moved axis is its first or last: a
    transposed copy of two axes, the backend's (NumPy read rows of 512 bytes and more down
    their columns at 5-8x the time). An `out` that is a view (the inside of a padded buffer)
    takes that copy through `spare`, a contiguous buffer of its shape, where it is faster."""
    rows = (x.reshape(x.shape[0], -1) if source == 0 else x.reshape(-1, x.shape[-1])) \
        if x.flags.c_contiguous else None
    if rows is not None and out.flags.c_contiguous:
        be.transpose_into(rows, out.reshape(rows.shape[::-1]))
        return
    if rows is not None and spare is not None and be.transposes_faster_than_copyto(rows):
        be.transpose_into(rows, spare.reshape(rows.shape[::-1]))
        be.xp.copyto(out, spare.reshape(out.shape))
        return
    be.xp.copyto(out, moved(x, source, destination))


@lru_cache(maxsize=256)
def _moved_axes(ndim: int, source: int, destination: int) -> tuple:
    order = [axis for axis in range(ndim) if axis != source % ndim]
    order.insert(destination % ndim, source % ndim)
    return tuple(order)


# --- padding the spatial axes of [B, C, *spatial] arrays (conv, pool, pad) ------------------

def zero_pad(xp, x, pad):
    if not is_padded(pad):
        return x
    return xp.pad(x, ((0, 0), (0, 0), *pad_pairs(pad)))


def unpad(x, pad):
    slices = tuple(slice(lo, x.shape[2 + i] - hi) for i, (lo, hi) in enumerate(pad_pairs(pad)))
    return x[(slice(None), slice(None), *slices)]


def padded_type(x: TensorType, pad) -> TensorType:
    return TensorType((*x.shape[:2], *(n + lo + hi for n, (lo, hi) in
                                       zip(x.shape[2:], pad_pairs(pad)))), x.dtype)


def is_padded(pad) -> bool:
    return any(lo or hi for lo, hi in pad_pairs(pad))


def padded_scratch(x: TensorType, pad) -> tuple:
    """The scratch buffer a kernel pads x into: none when there is no padding."""
    return (padded_type(x, pad),) if is_padded(pad) else ()


def pad_into(xp, x, pad, padded, fill=0):
    """x into the preallocated `padded` buffer, `fill` around it; returns what to read."""
    if not is_padded(pad):
        return x
    padded.fill(fill)
    xp.copyto(unpad(padded, pad), x)
    return padded


def onnx_pads(pad: tuple) -> list[int]:
    """ONNX's order: every axis's padding before, then every axis's padding after."""
    pairs = pad_pairs(pad)
    return [lo for lo, _ in pairs] + [hi for _, hi in pairs]
