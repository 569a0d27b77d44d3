"""Max and average pooling (1-D and 2-D) over the same im2col windows as convolution."""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import TensorType
from ..shapes import ShapeError, pad_pairs, per_sample, size_of, window_shape
from . import OpDef, always, register
from .common import (array_type, cached_constant, check_sample_rank, is_padded, onnx_pads,
                     pad_into, padded_scratch, padded_type, unpad)


@dataclass(frozen=True)
class PoolAttrs:
    kernel: tuple = (2, 2)
    stride: tuple = (2, 2)
    pad: tuple = (0, 0)
    dilation: tuple = (1, 1)


def _pool_shape(attrs, x: TensorType) -> TensorType:
    rank = len(attrs.kernel)
    check_sample_rank(x, rank, f"{rank}-D pooling")  # the layer adds what fixes it (lower.py)
    for k, (lo, hi) in zip(attrs.kernel, pad_pairs(attrs.pad)):
        if max(lo, hi) * 2 > k:
            raise ShapeError(f"padding {max(lo, hi)} is more than half the pool size {k}",
                             "use padding <= pool_size / 2", attribute="pad")
    return TensorType((x.shape[0], x.shape[1], *window_shape(attrs, x, attrs.kernel, "pool")),
                      x.dtype)


def _padded(xp, x, attrs, fill):
    if not is_padded(attrs.pad):
        return x
    return xp.pad(x, ((0, 0), (0, 0), *pad_pairs(attrs.pad)), constant_values=fill)


def _windows(be, attrs, x, fill):
    """[B, C, K, *out]: the K values of every pooling window, along axis 2."""
    cols = be.im2col(_padded(be.xp, x, attrs, fill), attrs.kernel, attrs.stride, attrs.dilation)
    return cols.reshape(*x.shape[:2], -1, *cols.shape[2 + len(attrs.kernel):])


def _scatter_windows(be, attrs, x, per_window):
    """Adds [B, C, K, *out] window values back onto x's positions."""
    cols = per_window.reshape(*x.shape[:2], *attrs.kernel, *per_window.shape[3:])
    padded = padded_type(array_type(x), attrs.pad).shape
    return unpad(be.col2im(cols, padded, attrs.kernel, attrs.stride, attrs.dilation), attrs.pad)


def _max_pool_forward(be, attrs, x):
    return _windows(be, attrs, x, -be.xp.inf).max(axis=2)


def _max_pool_grad(be, attrs, g, x):
    xp = be.xp
    windows = _windows(be, attrs, x, -xp.inf)
    # The whole gradient goes to the first maximum of each window, as in PyTorch.
    first_max = windows.argmax(axis=2)[:, :, None]
    positions = xp.arange(windows.shape[2]).reshape(-1, *(1,) * len(attrs.kernel))
    return _scatter_windows(be, attrs, x, (positions == first_max) * g[:, :, None])


def _avg_pool_forward(be, attrs, x):
    # Padding counts as zeros in the mean (PyTorch's count_include_pad=True).
    return _windows(be, attrs, x, 0).mean(axis=2)


def _avg_pool_grad(be, attrs, g, x):
    xp = be.xp
    size = 1
    for k in attrs.kernel:
        size *= k
    share = g[:, :, None] / size
    return _scatter_windows(be, attrs, x, xp.broadcast_to(share, (*g.shape[:2], size, *g.shape[2:])))


def _grad_vjp(grad_op):
    def vjp(gb, node, g):
        return (gb.emit(grad_op, g, node.inputs[0], attrs=node.attrs),)

    return vjp


def _input_shape(attrs, g, x):
    return x


# --- max pooling that keeps its argmax --------------------------------------------------
# The pooling-index pass rewrites y = max_pool(x), dx = max_pool_grad(g, x) into
# (y, index) = max_pool_index(x), dx = max_pool_grad_index(g, index): the backward pass
# scatters g through the saved positions instead of rebuilding and searching every window.
# `index` holds, for each output, its maximum's flat position in its own sample's padded
# input [C, *padded], so that both ops can work on any slice of the batch.


def _window_scratch(attrs, x: TensorType):
    out = window_shape(attrs, x, attrs.kernel, "pool")
    windows = TensorType((*x.shape[:2], *attrs.kernel, *out), x.dtype)
    return (windows, *padded_scratch(x, attrs.pad))


def _windows_into(be, attrs, x, windows, padded, fill):
    source = pad_into(be.xp, x, attrs.pad, padded[0] if padded else None, fill)
    be.im2col_into(source, attrs.kernel, attrs.stride, attrs.dilation, windows)
    return windows.reshape(*x.shape[:2], -1, *windows.shape[2 + len(attrs.kernel):])


def _whole_window(attrs, spatial) -> bool:
    """One window that is the whole unpadded input (a global pool): a reduction over each
    channel, instead of one operation per window offset (4,096 of them over 64x64)."""
    return tuple(attrs.kernel) == tuple(spatial) and not is_padded(attrs.pad)


def _per_channel(x):
    """[B, C, *spatial] as [B, C, positions]."""
    return x.reshape(*x.shape[:2], -1)


def _avg_pool_into(be, attrs, out, x):
    y, windows, *padded = out
    if _whole_window(attrs, x.shape[2:]):
        be.xp.copyto(y, _per_channel(x).mean(axis=2).reshape(y.shape))
        return
    windows = _windows_into(be, attrs, x, windows, padded, 0)
    with be.short_buffers():  # a reduction over the window axis, between the others
        be.xp.mean(windows, axis=2, out=y)


def _avg_pool_grad_scratch(attrs, g, x):
    return (TensorType(g.shape, g.dtype), *padded_scratch(x, attrs.pad))


def _avg_pool_grad_into(be, attrs, out, g, x):
    gx, share, *padded = out
    xp = be.xp
    xp.divide(g, size_of(attrs.kernel), out=share)
    if _whole_window(attrs, gx.shape[2:]):  # every position of a channel gets its share
        xp.copyto(gx, share)
        return
    rank = len(attrs.kernel)
    # Every window offset carries the same share: a broadcast view, not a copy per offset.
    cols = xp.broadcast_to(share.reshape(*g.shape[:2], *(1,) * rank, *g.shape[2:]),
                           (*g.shape[:2], *attrs.kernel, *g.shape[2:]))
    target = padded[0] if padded else gx
    be.col2im_into(cols, attrs.kernel, attrs.stride, attrs.dilation, target)
    if padded:
        xp.copyto(gx, unpad(target, attrs.pad))


def _padded_scratch(attrs, x: TensorType):
    return padded_scratch(x, attrs.pad)


def _offset_views(be, attrs, x, padded, fill):
    """Each kernel offset's strided view of the (padded) input: the windows, never copied."""
    source = pad_into(be.xp, x, attrs.pad, padded[0] if padded else None, fill)
    every = (slice(None), slice(None))
    return [source[(*every, *slices)] for _, slices in
            be.window_slices(source.shape[2:], attrs.kernel, attrs.stride, attrs.dilation)]


def _max_pool_into(be, attrs, out, x):
    # The maximum of the offsets' strided views, one at a time: no window is copied (measured
    # up to 2.5x faster than building the windows and reducing them).
    y, *padded = out
    if _whole_window(attrs, x.shape[2:]):
        be.xp.copyto(y, _per_channel(x).max(axis=2).reshape(y.shape))
        return
    views = _offset_views(be, attrs, x, padded, -be.xp.inf)
    be.xp.copyto(y, views[0])
    with be.short_buffers():
        for view in views[1:]:
            be.xp.maximum(y, view, out=y)


def _max_pool_index_shape(attrs, x: TensorType):
    y = _pool_shape(attrs, x)
    return y, TensorType(y.shape, "int64")


def _positions(be, attrs, padded_shape, y_shape):
    """be.max_pool_index_into's position tables, made once per shape."""
    return cached_constant(be, ("pool positions", attrs, padded_shape),
                           lambda: be.pool_positions(padded_shape, y_shape[2:], attrs.kernel,
                                                     attrs.stride, attrs.dilation))


def _max_pool_index_forward(be, attrs, x):
    xp = be.xp
    windows = _windows(be, attrs, x, -xp.inf)
    first_max = windows.argmax(axis=2)
    y = windows.max(axis=2)
    starts, offsets = _positions(be, attrs, padded_type(array_type(x), attrs.pad).shape,
                                 y.shape)
    return y, starts + offsets[first_max]


def _offset_dtype(attrs) -> str:
    return "int8" if size_of(attrs.kernel) <= 127 else "int32"


def _max_pool_index_scratch(attrs, x):
    y, _ = _max_pool_index_shape(attrs, x)
    offset = TensorType(y.shape, _offset_dtype(attrs))
    return (*padded_scratch(x, attrs.pad), offset, offset, TensorType(y.shape, "bool"))


def _max_pool_index_into(be, attrs, out, x):
    y, index, *rest = out
    padded, work = rest[:-3], rest[-3:]
    source = pad_into(be.xp, x, attrs.pad, padded[0] if padded else None, -be.xp.inf)
    positions = _positions(be, attrs, source.shape, y.shape)
    be.max_pool_index_into(source, attrs.kernel, attrs.stride, attrs.dilation, positions,
                           (y, index, *work))


@dataclass(frozen=True)
class PoolGradAttrs:
    kernel: tuple = (2, 2)
    stride: tuple = (2, 2)
    pad: tuple = (0, 0)
    dilation: tuple = (1, 1)
    input: tuple = (2, 2)  # the pooled input's spatial sizes

    def windows_overlap(self) -> bool:
        return any(s < d * (k - 1) + 1 for k, s, d in zip(self.kernel, self.stride, self.dilation))


def _max_pool_grad_index_shape(attrs, g: TensorType, index: TensorType) -> TensorType:
    if index.shape != g.shape:
        raise ShapeError(f"index {per_sample(index)} does not match the gradient {per_sample(g)}")
    return TensorType((*g.shape[:2], *attrs.input), g.dtype)


def _sample_starts(xp, shape, sample_size):
    """[B, ...] of b * sample_size: a sample's first position in the flat batch."""
    rows = xp.arange(shape[0], dtype=xp.int64).reshape(-1, *([1] * (len(shape) - 1)))
    return xp.ascontiguousarray(xp.broadcast_to(rows * sample_size, shape))


def _scatter(xp, attrs, flat, positions, g):
    if attrs.windows_overlap():
        xp.add.at(flat, positions.reshape(-1), g.reshape(-1))  # an input in two windows
    else:
        flat[positions] = g  # each input is in one window at most


def _max_pool_grad_index_forward(be, attrs, g, index):
    xp = be.xp
    x_type = TensorType((*g.shape[:2], *attrs.input), str(g.dtype))
    padded = xp.zeros(padded_type(x_type, attrs.pad).shape, dtype=g.dtype)
    positions = index + _sample_starts(xp, index.shape, padded[0].size)
    _scatter(xp, attrs, padded.reshape(-1), positions, g)
    return xp.ascontiguousarray(unpad(padded, attrs.pad))


def _max_pool_grad_index_scratch(attrs, g, index):
    x_type = TensorType((*g.shape[:2], *attrs.input), g.dtype)
    return (TensorType(index.shape, "int64"), *padded_scratch(x_type, attrs.pad))


def _max_pool_grad_index_into(be, attrs, out, g, index):
    gx, positions, *padded = out
    target = padded[0] if padded else gx
    starts = cached_constant(be, ("sample starts", index.shape, target[0].size),
                             lambda: _sample_starts(be.xp, index.shape, target[0].size))
    be.max_pool_grad_index_into(g, index, attrs.kernel, attrs.stride, attrs.dilation, starts,
                                target, positions)
    if padded:
        be.xp.copyto(gx, unpad(target, attrs.pad))


def _max_pool_index_constants(attrs, x):
    """_positions' tables: each window's first position [B, C, *out], the offsets [K]."""
    y, _ = _max_pool_index_shape(attrs, x)
    return [(("pool positions", attrs, padded_type(x, attrs.pad).shape),
             TensorType(y.shape, "int64")),
            (("pool offsets", attrs), TensorType((size_of(attrs.kernel),), "int64"))]


def _max_pool_grad_index_constants(attrs, g, index):
    sample = size_of(padded_type(TensorType((*g.shape[:2], *attrs.input), g.dtype),
                                 attrs.pad).shape[1:])
    return [(("sample starts", index.shape, sample), TensorType(index.shape, "int64"))]


register(OpDef("max_pool_index", PoolAttrs, _max_pool_index_shape, _max_pool_index_forward,
               None, forward_into=_max_pool_index_into,
               scratch=_max_pool_index_scratch, constants=_max_pool_index_constants,
               batch_parallel=True, kink=always,
               doc="max pooling that also returns each maximum's flat position in its sample's "
                   "padded input"))
register(OpDef("max_pool_grad_index", PoolGradAttrs, _max_pool_grad_index_shape,
               _max_pool_grad_index_forward, None,
               forward_into=_max_pool_grad_index_into, scratch=_max_pool_grad_index_scratch,
               constants=_max_pool_grad_index_constants, batch_parallel=True,
               doc="gradient of max pooling: g put at the positions max_pool_index saved"))


def _window_attributes(attrs) -> dict:
    return {"kernel_shape": list(attrs.kernel), "strides": list(attrs.stride),
            "pads": onnx_pads(attrs.pad)}


def _max_pool_onnx(ox, node):
    # ONNX's MaxPool pads with -inf, as nnrun does.
    return ox.emit("MaxPool", *ox.inputs(node), **_window_attributes(node.attrs),
                   dilations=list(node.attrs.dilation))


def _avg_pool_onnx(ox, node):
    if set(node.attrs.dilation) != {1}:
        ox.refuse("a dilated average pool needs opset 19 (nnrun exports opset 17)")
    # nnrun counts the padding as zeros in the mean.
    return ox.emit("AveragePool", *ox.inputs(node), **_window_attributes(node.attrs),
                   count_include_pad=1)


_INTO = {"max": (_max_pool_into, _padded_scratch, None, None),
         "avg": (_avg_pool_into, _window_scratch, _avg_pool_grad_into, _avg_pool_grad_scratch)}
_ONNX = {"max": _max_pool_onnx, "avg": _avg_pool_onnx}

MAX_POOLS = ("max_pool1d", "max_pool2d")  # the passes that rewrite max pooling read these
_AVG_POOLS = ("avg_pool1d", "avg_pool2d")

for _kind, _names, _forward, _grad, _doc in (
    ("max", MAX_POOLS, _max_pool_forward, _max_pool_grad, "maximum of each window"),
    ("avg", _AVG_POOLS, _avg_pool_forward, _avg_pool_grad,
     "mean of each window (padding counts as 0)"),
):
    _into, _scratch, _grad_into, _grad_scratch = _INTO[_kind]
    for _name in _names:
        register(OpDef(_name, PoolAttrs, _pool_shape, _forward, _grad_vjp(f"{_name}_grad"),
                       doc=_doc, forward_into=_into, scratch=_scratch, batch_parallel=True,
                       onnx=_ONNX[_kind], kink=always if _kind == "max" else None))
        register(OpDef(f"{_name}_grad", PoolAttrs, _input_shape, _grad, None,
                       doc=f"gradient of {_name}: g routed back to the window positions",
                       forward_into=_grad_into, scratch=_grad_scratch, batch_parallel=True))
