"""Convolution (1-D and 2-D share one N-d implementation) through im2col and one matrix product."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..ir import BATCH, TensorType
from ..shapes import ShapeError, pad_pairs, size_of, transposed_output, window_shape, window_sizes
from . import SLICED, SUMMED, OpDef, forward_through_into, register
from .common import (array_type, check_sample_rank, is_padded, matmul, moved, moved_into,
                     onnx_pads, pad_into, padded_scratch, padded_type, unpad, zero_pad)


@dataclass(frozen=True)
class ConvAttrs:
    stride: tuple = (1, 1)
    pad: tuple = (0, 0)  # per spatial axis: an int (both sides) or a (before, after) pair
    dilation: tuple = (1, 1)
    # Only for the input gradient, set by compiler/passes/batch_last_layers.py: g, or x and
    # the result, laid out [channels, *spatial, B].
    g_batch_last: bool = False
    x_batch_last: bool = False
    # Only for the lowering's shape check of a convolution padded otherwise than with zeros
    # (None): a reflect padding's fix must stay below each axis's length, and only a zeros
    # one must leave no tap on the zeros alone.
    padding_mode: str | None = None


def _conv_shape(attrs, x: TensorType, w: TensorType) -> TensorType:
    rank = w.rank - 2
    check_sample_rank(x, rank, f"conv{rank}d")  # the lowering says what fits the spec
    if x.shape[1] != w.shape[1]:
        raise ShapeError(f"input has {x.shape[1]} channels, the weight expects {w.shape[1]}")
    out = window_shape(attrs, x, w.shape[2:], "kernel")
    return TensorType((x.shape[0], w.shape[0], *out), x.dtype)


# With columns [B, C*K, O] (K the kernel size, O the output size, both flattened) and the
# weight as [F, C*K], each of the three products below is one batched matrix product.


def _columns(be, attrs, x, w):
    """[B, C*K, O]: im2col of the zero-padded input."""
    cols = be.im2col(zero_pad(be.xp, x, attrs.pad), w.shape[2:], attrs.stride, attrs.dilation)
    return cols.reshape(x.shape[0], w[0].size, -1)


def _conv_forward(be, attrs, x, w):
    out = window_sizes(x.shape[2:], w.shape[2:], attrs)
    y = matmul(be, w.reshape(w.shape[0], -1), _columns(be, attrs, x, w))
    return y.reshape(x.shape[0], w.shape[0], *out)


# A convolution whose columns nothing else reads (inference, or a training step that recomputes
# them for the weight gradient) builds them a chunk of samples at a time, [S, C*K, O], and
# multiplies each chunk while it is still in the cache: the columns are K times the input, and
# written out whole and read back they cost more memory traffic than their product (LeNet-5's
# first convolution: 10 MB of columns from a 0.5 MB input). Measured on 2 cores, two threads
# each taking half the batch (docs/benchmarks.md): chunks of 1-2.5 MB gave LeNet-5's first
# convolution in 0.94-1.12 ms against 1.38-1.50 ms whole, its second 1.37-1.50 ms against
# 1.46-1.47 ms; in the compiled inference 2 MiB chunks beat 0.25-1 MiB and 4-8 MiB ones.
COLUMN_CHUNK_BYTES = 2 << 20


def _conv_scratch(attrs, x: TensorType, w: TensorType):
    """A chunk's columns [S, C*K, O], and its padded input when there is padding. S: samples
    of COLUMN_CHUNK_BYTES of columns, at least one, at most the batch where the batch size is
    known (a memory plan's)."""
    rows, positions = size_of(w.shape[1:]), size_of(window_shape(attrs, x, w.shape[2:], "kernel"))
    chunk = max(1, COLUMN_CHUNK_BYTES // (rows * positions * np.dtype(x.dtype).itemsize))
    if isinstance(x.shape[0], int):
        chunk = min(chunk, x.shape[0])
    cols = TensorType((chunk, rows, positions), x.dtype)
    if not is_padded(attrs.pad):
        return (cols,)
    return cols, TensorType((chunk, *padded_type(x, attrs.pad).shape[1:]), x.dtype)


def _column_chunks(be, attrs, x, kernel, out_sizes, cols, padded):
    """(rows of the batch, their columns [S, C*K, O]) for each chunk of samples in turn, the
    columns built into the chunk buffer `cols` (the padded input into `padded`, if any)."""
    batch, channels = x.shape[:2]
    for start in range(0, batch, cols.shape[0]):
        rows = slice(start, min(start + cols.shape[0], batch))
        count = rows.stop - start
        source = pad_into(be.xp, x[rows], attrs.pad, padded[0][:count] if padded else None)
        chunk = cols[:count]
        be.im2col_into(source, kernel, attrs.stride, attrs.dilation,
                       chunk.reshape(count, channels, *kernel, *out_sizes))
        yield rows, chunk


def _conv_into(be, attrs, out, x, w):
    y, cols, *padded = out
    weight, y_rows = w.reshape(w.shape[0], -1), y.reshape(*y.shape[:2], -1)
    for rows, chunk in _column_chunks(be, attrs, x, w.shape[2:], y.shape[2:], cols, padded):
        be.matmul_into(weight, chunk, y_rows[rows])


def _conv_grad_weight_scratch(attrs, g, x, w):
    """The forward's chunk buffers, and each sample's product [B, F, C*K] to sum."""
    return (*_conv_scratch(attrs, x, w),
            TensorType((x.shape[0], w.shape[0], size_of(w.shape[1:])), x.dtype))


def _conv_grad_weight_into(be, attrs, out, g, x, w):
    # A convolution whose columns are recomputed (over 1 MiB a sample): each sample's product
    # g cols^T chunk by chunk, then their sum over the batch, as the plain form takes them.
    _conv_weight_products(be, attrs, out, g, x, w)
    _sum_conv_weight_products(be, attrs, out, g, x, w)


def _conv_weight_products(be, attrs, out, g, x, w):
    """Each sample's g cols^T into the scratch [B, F, C*K]: per sample, so a slice of the batch
    computes its own samples' products (a batch segment's per-sample part)."""
    _, cols, *rest = out
    padded, products = rest[:-1], rest[-1]
    g_rows = g.reshape(*g.shape[:2], -1)
    for rows, chunk in _column_chunks(be, attrs, x, w.shape[2:], g.shape[2:], cols, padded):
        be.matmul_into(g_rows[rows], chunk.transpose(0, 2, 1), products[rows])


def _sum_conv_weight_products(be, attrs, out, g, x, w):
    """Their sum over the whole batch, in one reduction at any thread count."""
    gw, products = out[0], out[-1]
    be.xp.sum(products, axis=0, out=gw.reshape(products.shape[1:]))


def _grad_weight_batch_role(attrs, inputs, outputs):
    """A sum over the samples of per-sample products (SUMMED), where g and x are batch-first."""
    return SUMMED if all(t.shape[:1] == (BATCH,) for t in inputs[:2]) else None


def _conv_grad_input(be, attrs, g, x, w):
    xp = be.xp
    g = xp.moveaxis(g, -1, 0) if attrs.g_batch_last else g
    x_shape = batch_first_shape(x.shape) if attrs.x_batch_last else x.shape
    gx = _spread_through_kernel(be, attrs, g, w, x_shape)
    return xp.ascontiguousarray(xp.moveaxis(gx, 0, -1)) if attrs.x_batch_last else gx


def batch_first_shape(shape: tuple) -> tuple:
    """[C, *spatial, B] -> [B, C, *spatial]."""
    return (shape[-1], *shape[:-1])


def _spread_through_kernel(be, attrs, g, w, x_shape):
    """col2im(w^T g) cropped to x_shape: each value of g spread over the window it came from.
    The gradient of a convolution w.r.t. its input, and the forward of a transposed one; with
    stride 1 and long rows, the same as a convolution of g (below)."""
    if _as_convolution(attrs, g.shape, x_shape):
        flipped = be.xp.ascontiguousarray(_flipped_kernel(w))
        return _conv_forward(be, _gradient_attrs(attrs, g.shape, x_shape), g, flipped)
    kernel = w.shape[2:]
    cols = matmul(be, w.reshape(w.shape[0], -1).T, g.reshape(g.shape[0], g.shape[1], -1))
    cols = cols.reshape(g.shape[0], w.shape[1], *kernel, *g.shape[2:])
    padded = (*x_shape[:2],
              *(n + lo + hi for n, (lo, hi) in zip(x_shape[2:], pad_pairs(attrs.pad))))
    return unpad(be.col2im(cols, padded, kernel, attrs.stride, attrs.dilation), attrs.pad)


def _conv_grad_weight(be, attrs, g, x, w):
    # One product per sample, then the sum: cheaper than transposing the columns for one GEMM.
    per_sample = matmul(be, g.reshape(g.shape[0], g.shape[1], -1),
                        _columns(be, attrs, x, w).transpose(0, 2, 1))
    return per_sample.sum(axis=0).reshape(w.shape)


def _conv_vjp(gb, node, g):
    x, w = node.inputs
    name = node.op
    return (gb.emit(f"{name}_grad_input", g, x, w, attrs=node.attrs),
            gb.emit(f"{name}_grad_weight", g, x, w, attrs=node.attrs))


def _conv_flops(attrs, inputs, output) -> int:
    x, w = inputs
    return 2 * size_of(w.shape) * size_of(output.shape[2:])


def _second_input_shape(attrs, g, x, w):
    return w


def _first_input_shape(attrs, g, x, w):
    return x


def _conv_grad_input_scratch(attrs, g, x, w):
    if attrs.g_batch_last or attrs.x_batch_last:
        g = TensorType(batch_first_shape(g.shape), g.dtype) if attrs.g_batch_last else g
        x = TensorType(batch_first_shape(x.shape), x.dtype) if attrs.x_batch_last else x
        return _batch_last_scratch(attrs, g, x, w)
    if _as_convolution(attrs, g.shape, x.shape):
        return _as_convolution_scratch(attrs, g, x, w)
    return _batch_last_scratch(attrs, g, x, w)


def _conv_grad_input_into(be, attrs, out, g, x, w):
    if _as_convolution(attrs, g.shape, out[0].shape):  # out[0]: x's gradient
        _conv_grad_input_as_convolution(be, attrs, out, g, w)
    else:
        _conv_grad_input_batch_last(be, attrs, out, g, x, w)


# With a stride above 1, col2im's additions in the [B, C, ...] layout run over the O output
# positions of a row, read with a stride: a few values each in a 1-D net (MNIST-1D: 10, 5).
# With the batch as the last axis every addition runs over contiguous runs of B values instead:
# g is transposed to [F, *O, B] once, one product gives the columns as [C, *K, *O, B], the K
# additions go into the padded input as [C, *padded, B], and the result is transposed back.
# Measured 1.8x faster on the MNIST-1D CNN's second convolution (docs/benchmarks.md). The
# scratch buffers are declared batch-first, so that a split along the batch hands each worker
# a contiguous block, which it reads in the batch-last layout.


def _batch_last_scratch(attrs, g, x, w):
    columns = w.shape[1] * size_of(w.shape[2:]) * size_of(g.shape[2:])
    g_copy = (g.shape[0], 0) if attrs.g_batch_last else g.shape  # batch-last g: not copied
    padded = padded_type(x, attrs.pad)
    return (TensorType(g_copy, g.dtype),  # g as [F, *O, B]
            TensorType((g.shape[0], columns), g.dtype),  # columns as [C, *K, *O, B]
            padded,  # the padded input's gradient as [C, *padded, B]
            *_phase_scratch(attrs, padded, w.shape[2:]))


def _phase_scratch(attrs, padded: TensorType, kernel) -> tuple[TensorType, ...]:
    """col2im's spare buffer for one phase [C, *phase, B] (backends/base.py's
    _col2im_by_phases), where a phase takes two window offsets or more: some stride above 1
    with kernel taps closer than it."""
    # the taps t*d of an axis fall on s / gcd(s, d) phases of it; at stride 3 the nine
    # phases' fills and copies took longer than the strided additions they spare (measured)
    if max(attrs.stride) > 2 or not any(s > 1 and k > s // math.gcd(s, d) for k, s, d
                                        in zip(kernel, attrs.stride, attrs.dilation)):
        return ()
    largest = [-(-n // s) for n, s in zip(padded.shape[2:], attrs.stride)]
    return (TensorType((padded.shape[0], padded.shape[1] * size_of(largest)), padded.dtype),)


def batch_last(buffer, shape):
    """A batch-first buffer [B, ...] read as [*shape, B] (same size, contiguous)."""
    return buffer.reshape(-1).reshape(*shape, buffer.shape[0])


def _unpad_batch_last(x, pad):
    """unpad for a batch-last buffer [C, *padded, B]."""
    slices = tuple(slice(lo, n - hi) for n, (lo, hi) in zip(x.shape[1:-1], pad_pairs(pad)))
    return x[(slice(None), *slices)]


def _grad_input_batch_role(attrs, inputs, outputs):
    """Cut by samples only as whole rows (below): the same per-sample products and additions
    for any number of samples. The batch-last form takes one product over all of them, which
    BLAS may round otherwise for another number."""
    conv = attrs if isinstance(attrs, ConvAttrs) else attrs.conv()
    if conv.g_batch_last or conv.x_batch_last:
        return None
    return SLICED if _as_convolution(conv, inputs[0].shape, outputs[0].shape) else None


def _conv_grad_input_batch_last(be, attrs, out, g, x, w):
    xp = be.xp
    gx, g_scratch, cols_scratch, padded_scratch_, *spare = out
    filters, channels, kernel = w.shape[0], w.shape[1], w.shape[2:]
    if attrs.g_batch_last:  # already [F, *O, B]
        g_t, out_sizes = g, g.shape[1:-1]
    else:
        g_t, out_sizes = batch_last(g_scratch, g.shape[1:]), g.shape[2:]
        moved_into(be, g_t, g, 0, -1)
    cols = batch_last(cols_scratch, (channels, *kernel, *out_sizes))
    be.matmul_into(w.reshape(filters, -1).T, g_t.reshape(filters, -1),
                   cols.reshape(channels * size_of(kernel), -1))
    target = batch_last(padded_scratch_, padded_scratch_.shape[1:])
    # one sample whose elements are runs of B values, as in _im2col_batch_last
    be.col2im_into(cols[None], kernel, attrs.stride, attrs.dilation, target[None],
                   spare[0] if spare else None)
    unpadded = _unpad_batch_last(target, attrs.pad)
    xp.copyto(gx, unpadded if attrs.x_batch_last else moved(unpadded, -1, 0))


# With stride 1 x's gradient is itself a convolution: of g padded by d(k-1) - p on each side,
# with the kernel reversed along every axis and its two channel axes exchanged. Its columns
# have F*K rows and x's positions, so each sample's product [C, F*K] @ [F*K, X] has a long
# inner dimension and a small output, the orientation BLAS runs fastest, and col2im's K
# additions are gone: the im2col of g is a copy. It runs as the forward does, a chunk of
# samples at a time (_conv_into). Measured on the FCN workloads' 3x3 convolutions, one thread
# (docs/benchmarks.md): [16, 16, 64, 64] from 16 filters 10.6 -> 7.1 ms, [32, 8, 32, 32] from
# 4 filters 2.0 -> 0.9 ms, where col2im's form (g widened to the padded rows, then the K
# additions of whole rows) wrote batch-sized columns. The sums are taken in another order: the
# same numbers within float rounding, not bit for bit. Where a sample's rows are short (under
# AS_CONVOLUTION_MIN values: LeNet-5's second convolution, 10 rows of 14) the batch-last form
# above stays, as it did against the rows' additions; so does padding beyond d(k-1), which
# would crop g.

AS_CONVOLUTION_MIN = 256


def _as_convolution(attrs, g_shape, x_shape) -> bool:
    """x's gradient taken as a convolution of g: stride 1, batch-first values, long rows."""
    if attrs.g_batch_last or attrs.x_batch_last or set(attrs.stride) != {1}:
        return False
    rows = size_of(g_shape[2:-1])
    width = x_shape[-1] + sum(pad_pairs(attrs.pad)[-1])
    pads = _gradient_pads(attrs, g_shape, x_shape)
    return min(min(pair) for pair in pads) >= 0 and rows * width >= AS_CONVOLUTION_MIN


def _gradient_pads(attrs, g_shape, x_shape) -> tuple:
    """g's padding as the convolution giving x's gradient: d(k-1) - p on each side, which
    with stride 1 is n + p_after - o before and n + p_before - o after."""
    return tuple((n + hi - o, n + lo - o)
                 for n, o, (lo, hi) in zip(x_shape[2:], g_shape[2:], pad_pairs(attrs.pad)))


def _gradient_attrs(attrs, g_shape, x_shape) -> ConvAttrs:
    return ConvAttrs((1,) * len(attrs.stride), _gradient_pads(attrs, g_shape, x_shape),
                     attrs.dilation)


def _flipped_kernel(w):
    """w [F, C, *K] as [C, F, *K], every kernel axis reversed (a view)."""
    return w.swapaxes(0, 1)[(slice(None), slice(None), *(slice(None, None, -1),) * (w.ndim - 2))]


def _flipped_type(w: TensorType) -> TensorType:
    return TensorType((w.shape[1], w.shape[0], *w.shape[2:]), w.dtype)


def _as_convolution_scratch(attrs, g, x, w):
    # The reversed kernel as [1, F*C*K]: a first axis of 1 is never taken for the batch's,
    # whose slices an executor hands each worker (a batch of 1 has one slice, the whole).
    return (TensorType((1, size_of(w.shape)), w.dtype),
            *_conv_scratch(_gradient_attrs(attrs, g.shape, x.shape), g, _flipped_type(w)))


def _conv_grad_input_as_convolution(be, attrs, out, g, w):
    gx, flipped, *chunks = out
    flipped = flipped.reshape(_flipped_type(w).shape)
    be.xp.copyto(flipped, _flipped_kernel(w))
    _conv_into(be, _gradient_attrs(attrs, g.shape, gx.shape), (gx, *chunks), g, flipped)


def _conv_onnx(ox, node):
    # ONNX's Conv is the same cross-correlation, with the weight in the same [F, C, *kernel].
    attrs = node.attrs
    return ox.emit("Conv", *ox.inputs(node), kernel_shape=list(node.inputs[1].type.shape[2:]),
                   strides=list(attrs.stride), pads=onnx_pads(attrs.pad),
                   dilations=list(attrs.dilation))


CONVOLUTIONS = ("conv1d", "conv2d")  # the passes derive the gradient ops' names from these

for _name in CONVOLUTIONS:
    register(OpDef(_name, ConvAttrs, _conv_shape, _conv_forward, _conv_vjp, flops=_conv_flops,
                   doc="cross-correlation: y[b,f] = sum_c sum_k w[f,c,k] * x_padded[b,c,s*o + d*k]",
                   forward_into=_conv_into, scratch=_conv_scratch, batch_parallel=True,
                   onnx=_conv_onnx))
    register(OpDef(f"{_name}_grad_input", ConvAttrs, _first_input_shape, _conv_grad_input, None,
                   doc="col2im(w^T g): gradient of conv w.r.t. its input",
                   forward_into=_conv_grad_input_into, scratch=_conv_grad_input_scratch,
                   batch_parallel=True, batch_role=_grad_input_batch_role))
    register(OpDef(f"{_name}_grad_weight", ConvAttrs, _second_input_shape, _conv_grad_weight,
                   None, doc="g im2col(x)^T: gradient of conv w.r.t. its weight",
                   forward_into=_conv_grad_weight_into, scratch=_conv_grad_weight_scratch,
                   batch_role=_grad_weight_batch_role,
                   batch_parts=(_conv_weight_products, _sum_conv_weight_products)))


# --- transposed convolution ---------------------------------------------------------------
# The adjoint of a convolution: each input value spreads over a kernel-sized window of the
# output, the windows `stride` apart (PyTorch's conv_transpose, weight [in, out, *kernel]).
# Its forward is a convolution's input gradient, its input gradient is a convolution and its
# weight gradient is a convolution's weight gradient with the roles of x and g exchanged, all
# with the same stride, padding and dilation: `padding` crops the output, `output_padding` adds
# rows at its end (which no input reaches) so that out = (n-1)*s - 2p + d(k-1) + 1 +
# output_padding. Unlike PyTorch (output_padding < max(stride, dilation)), output_padding stays
# below the stride: the convolution of the gradient then has exactly one window per input.


@dataclass(frozen=True)
class ConvTransposeAttrs:
    stride: tuple = (1, 1)
    pad: tuple = (0, 0)  # per spatial axis: an int (both sides) or a (before, after) pair
    output_padding: tuple = (0, 0)
    dilation: tuple = (1, 1)

    def conv(self) -> ConvAttrs:
        return ConvAttrs(self.stride, self.pad, self.dilation)


def _conv_transpose_shape(attrs, x: TensorType, w: TensorType) -> TensorType:
    rank = w.rank - 2
    check_sample_rank(x, rank, f"conv{rank}d_transpose")
    if x.shape[1] != w.shape[0]:
        raise ShapeError(f"input has {x.shape[1]} channels, the weight expects {w.shape[0]}")
    axis_names = ["length"] if rank == 1 else ["rows", "columns"]
    sizes = []
    for axis, n, k, s, pad, extra, d in zip(axis_names, x.shape[2:], w.shape[2:], attrs.stride,
                                            pad_pairs(attrs.pad), attrs.output_padding,
                                            attrs.dilation):
        if extra >= s:
            raise ShapeError(f"output_padding {extra} must be smaller than the stride {s} "
                             f"({axis})", f"use output_padding 0..{s - 1}",
                             attribute="output_padding")
        result = transposed_output(n, k, s, pad, extra, d)
        if result.size < 1:
            lo, hi = pad
            raise ShapeError(f"padding {lo if lo == hi else [lo, hi]} crops the whole output "
                             f"({axis}: {result.formula})", _uncropped_fix(n, k, s, extra, d),
                             attribute="pad")
        sizes.append(result.size)
    return TensorType((x.shape[0], w.shape[1], *sizes), x.dtype)


def _uncropped_fix(n: int, k: int, s: int, extra: int, d: int) -> str:
    """Padding that leaves a transposed convolution's output at least 1 long; the stride
    spreads the input's positions apart, nothing of an input 1 long."""
    room = (n - 1) * s + d * (k - 1) + extra  # what both sides' padding may crop
    stride = " or a larger stride" if n > 1 else ""
    return f"use padding at most {room // 2}, or a larger kernel{stride}"


def _output_type(attrs, x, w) -> TensorType:
    return _conv_transpose_shape(attrs, array_type(x), array_type(w))


def _conv_transpose_forward(be, attrs, x, w):
    return _spread_through_kernel(be, attrs.conv(), x, w, _output_type(attrs, x, w).shape)


def _conv_transpose_scratch(attrs, x, w):
    return _conv_grad_input_scratch(attrs.conv(), x, _conv_transpose_shape(attrs, x, w), w)


def _conv_transpose_into(be, attrs, out, x, w):
    _conv_grad_input_into(be, attrs.conv(), out, x, None, w)


def _conv_transpose_vjp(gb, node, g):
    x, w = node.inputs
    rank = w.type.rank - 2
    conv = node.attrs.conv()
    return (gb.emit(f"conv{rank}d", g, w, attrs=conv),
            gb.emit(f"conv{rank}d_grad_weight", x, g, w, attrs=conv))


def _conv_transpose_flops(attrs, inputs, output) -> int:
    x, w = inputs
    return 2 * size_of(w.shape) * size_of(x.shape[2:])


def _conv_transpose_onnx(ox, node):
    # ONNX's ConvTranspose: the same weight layout [C, F, *kernel] and output size formula.
    attrs = node.attrs
    return ox.emit("ConvTranspose", *ox.inputs(node),
                   kernel_shape=list(node.inputs[1].type.shape[2:]), strides=list(attrs.stride),
                   pads=onnx_pads(attrs.pad), output_padding=list(attrs.output_padding),
                   dilations=list(attrs.dilation))


for _rank in (1, 2):
    register(OpDef(f"conv{_rank}d_transpose", ConvTransposeAttrs, _conv_transpose_shape,
                   _conv_transpose_forward, _conv_transpose_vjp, flops=_conv_transpose_flops,
                   doc="y[b,f,s*i + d*k - p] += sum_c x[b,c,i] * w[c,f,k]: the adjoint of conv "
                       "(out = (n-1)*s - 2p + d(k-1) + 1 + output_padding)",
                   forward_into=_conv_transpose_into, scratch=_conv_transpose_scratch,
                   batch_parallel=True, batch_role=_grad_input_batch_role,
                   onnx=_conv_transpose_onnx))


# --- convolution through columns kept for the backward pass --------------------------------
# The column-reuse pass rewrites y = conv(x, w) and dw = conv_grad_weight(g, x, w) into
# cols = im2col(x); y = conv_columns(cols, w); dw = conv_grad_weight_columns(g, cols): the
# columns are built once per step. In the layout [C*K, B, O], read as a [C*K, B*O] matrix,
# they allow the weight gradient as one matrix product over the whole batch; read sample by
# sample (strided, no copy) they give each sample's product straight into y. Measured on 2
# cores with OpenBLAS (docs/benchmarks.md): per-sample products are faster for the forward at
# every size tried, and for the weight gradient when a sample has many output positions
# (LeNet-5: 0.98 against 3.4 ms); one product is faster when it has few (MNIST-1D: 0.04
# against 0.08 ms). Per-sample products are split across the worker threads.
#
# Where every product goes by sample, the pass lays the columns out [B, C*K, O] instead
# (by_sample): each sample's columns are one contiguous matrix, which im2col writes in the
# input's own order (LeNet-5's two im2col 15-20% faster) and BLAS reads faster with many rows
# (its second convolution's product 27% faster; the first's, with 25 rows, 19% slower).
# LeNet-5's inference, one process: 11-28% faster in five runs; its training step within the
# machine's noise (docs/benchmarks.md). With the thresholds below the pass no longer chooses
# [C*K, B, O] (a sample's positions are either at most 64, batch_last, or more, by_sample); it
# stays the reference the ops' tests and `benchmarks/toggle.py --off by-sample` compare with.

ONE_PRODUCT_MAX_POSITIONS = 64  # per sample; above it the weight gradient goes sample by sample


# A sample with few output positions (a 1-D net: MNIST-1D's 19, 10 and 5) makes every copy in
# the [C*K, B, O] layout a run of O values. Its columns are laid out [C*K, O, B] instead
# (batch_last): im2col copies runs of B values from the input transposed to [C, *padded, B],
# and the convolution and its weight gradient are one matrix product each, their [F, O, B]
# side transposed from or to [B, F, O]. Measured on the MNIST-1D CNN (docs/benchmarks.md).
BATCH_LAST_MAX_POSITIONS = 64


@dataclass(frozen=True)
class ColumnsAttrs:
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    pad: tuple = (0, 0)
    dilation: tuple = (1, 1)
    batch_last: bool = False  # columns [C*K, O, B] instead of [C*K, B, O]
    by_sample: bool = False  # columns [B, C*K, O]: each sample's columns one contiguous matrix
    # im2col's x, or the weight gradient's g, laid out [channels, *spatial, B] (with
    # batch_last columns; set by compiler/passes/batch_last_layers.py)
    values_batch_last: bool = False

    def conv(self) -> ConvAttrs:
        return ConvAttrs(self.stride, self.pad, self.dilation)


def _check_layout(attrs) -> None:
    if attrs.batch_last and attrs.by_sample:
        raise ShapeError("batch_last and by_sample are two column layouts: set at most one")
    if getattr(attrs, "values_batch_last", False) and not attrs.batch_last:
        raise ShapeError("values_batch_last needs batch_last columns")


def _column_rows(attrs, cols_shape) -> int:
    """C*K, the columns' rows, wherever the layout puts them."""
    return cols_shape[1] if attrs.by_sample else cols_shape[0]


def _im2col_shape(attrs, x: TensorType) -> TensorType:
    _check_layout(attrs)
    if attrs.values_batch_last:
        x = TensorType(batch_first_shape(x.shape), x.dtype)
    out = window_shape(attrs.conv(), x, attrs.kernel, "kernel")
    rows = x.shape[1] * size_of(attrs.kernel)
    if attrs.batch_last:
        return TensorType((rows, size_of(out), x.shape[0]), x.dtype)
    if attrs.by_sample:
        return TensorType((x.shape[0], rows, size_of(out)), x.dtype)
    return TensorType((rows, x.shape[0], size_of(out)), x.dtype)


def _im2col_scratch(attrs, x):
    if attrs.values_batch_last:
        x = TensorType(batch_first_shape(x.shape), x.dtype)
    if attrs.batch_last:  # the padded input, [C, *padded, B], and x's transposed copy
        padded = padded_type(x, attrs.pad)
        moved_x = (x,) if is_padded(attrs.pad) and not attrs.values_batch_last else ()
        return (TensorType((*padded.shape[1:], padded.shape[0]), x.dtype), *moved_x)
    return padded_scratch(x, attrs.pad)


def _im2col_into(be, attrs, out, x):
    cols, *padded = out
    spatial = x.shape[1:-1] if attrs.values_batch_last else x.shape[2:]
    out_sizes = window_sizes(spatial, attrs.kernel, attrs)
    if attrs.batch_last:
        _im2col_batch_last(be, attrs, cols, *padded, x=x, out_sizes=out_sizes)
        return
    source = pad_into(be.xp, x, attrs.pad, padded[0] if padded else None)
    if attrs.by_sample:
        cols = cols.reshape(*x.shape[:2], *attrs.kernel, *out_sizes)

        def copy(batch: slice) -> None:
            be.im2col_into(source[batch], attrs.kernel, attrs.stride, attrs.dilation, cols[batch])

        be.run_in_slices(copy, x.shape[0], cols.nbytes)
        return
    cols = cols.reshape(x.shape[1], *attrs.kernel, x.shape[0], *out_sizes)
    be.batch_columns_into(source, attrs.kernel, attrs.stride, attrs.dilation, cols)


def _im2col_batch_last(be, attrs, cols, padded, spare=None, *, x, out_sizes):
    xp = be.xp
    if is_padded(attrs.pad):
        padded.fill(0)
    inside = _unpad_batch_last(padded, attrs.pad)  # [C, *spatial, B]
    if attrs.values_batch_last:
        xp.copyto(inside, x)
    else:
        moved_into(be, inside, x, 0, -1, spare)
    channels, batch = padded.shape[0], padded.shape[-1]
    cols = cols.reshape(channels, *attrs.kernel, *out_sizes, batch)
    # [C, *padded, B] as one sample whose elements are runs of B values
    be.im2col_into(padded[None], attrs.kernel, attrs.stride, attrs.dilation, cols[None])


@dataclass(frozen=True)
class ConvColumnsAttrs:
    out: tuple = (1, 1)  # output spatial sizes
    batch_last: bool = False  # the columns are [C*K, O, B]
    by_sample: bool = False  # the columns are [B, C*K, O]
    # Set by compiler/passes/batch_last_layers.py, with batch_last columns: y is laid out
    # [F, *out, B] (the product's own layout, no transpose) and is relu(y + b), b a third input
    bias_relu_batch_last: bool = False


def _conv_columns_shape(attrs, cols: TensorType, w: TensorType, b=None) -> TensorType:
    _check_layout(attrs)
    rows = _column_rows(attrs, cols.shape)
    if rows != size_of(w.shape[1:]):
        raise ShapeError(f"columns of {rows} rows do not fit a {list(w.shape)} weight")
    fused = attrs.bias_relu_batch_last
    if fused != (b is not None) or (fused and (not attrs.batch_last or b.shape != w.shape[:1])):
        raise ShapeError("conv_columns takes a bias [filters] exactly when bias_relu_batch_last "
                         "is set, with batch-last columns")
    batch = cols.shape[2] if attrs.batch_last else cols.shape[0 if attrs.by_sample else 1]
    if fused:
        return TensorType((w.shape[0], *attrs.out, batch), cols.dtype)
    return TensorType((batch, w.shape[0], *attrs.out), cols.dtype)


def _conv_columns_scratch(attrs, cols, w, b=None):
    if attrs.batch_last:  # y as [F, O, B]; with the bias, the bias across it (bias_add_into)
        return (TensorType((w.shape[0], cols.shape[1], cols.shape[2]), cols.dtype),)
    return ()


def _conv_columns_into(be, attrs, out, cols, w, b=None):
    weight = w.reshape(w.shape[0], -1)
    if attrs.bias_relu_batch_last:  # bias_activation's numbers: b + z == z + b, then max(., 0)
        y, z = out
        z = z.reshape(y.shape)
        be.matmul_into(weight, cols.reshape(cols.shape[0], -1), z.reshape(z.shape[0], -1))
        # the bias across y, then the product added: a broadcast bias added in place makes
        # NumPy allocate a buffer at each call (backends/fused.py bias_add_into)
        be.xp.copyto(y, b.reshape(-1, *(1,) * (y.ndim - 1)))
        be.xp.add(y, z, out=y)
        be.relu_into(y, y)
        return
    if attrs.batch_last:
        y, y_t = out
        be.matmul_into(weight, cols.reshape(cols.shape[0], -1), y_t.reshape(y_t.shape[0], -1))
        moved_into(be, y.reshape(y.shape[0], y.shape[1], -1), y_t, -1, 0)
        return
    (y,) = out
    by_sample = _by_sample(attrs, cols)
    y_rows = y.reshape(y.shape[0], y.shape[1], -1)

    def product(batch: slice) -> None:
        be.matmul_into(weight, by_sample[batch], y_rows[batch])

    be.run_in_slices(product, y.shape[0], y.nbytes, flops=2 * y.size * weight.shape[1])


def _by_sample(attrs, cols):
    """The columns as [B, C*K, O]: themselves, or a strided view of [C*K, B, O]."""
    return cols if attrs.by_sample else cols.swapaxes(0, 1)


def _conv_grad_weight_columns_shape(attrs, g: TensorType, cols: TensorType) -> TensorType:
    _check_layout(attrs)
    channels = _column_rows(attrs, cols.shape) // size_of(attrs.kernel)
    filters = g.shape[0] if attrs.values_batch_last else g.shape[1]
    return TensorType((filters, channels, *attrs.kernel), g.dtype)


def _one_product(attrs, cols_shape) -> bool:
    """The weight gradient as one product over the batch, not one per sample summed."""
    if attrs.by_sample:
        return False
    return attrs.batch_last or cols_shape[2] < ONE_PRODUCT_MAX_POSITIONS


def _conv_grad_weight_columns_scratch(attrs, g, cols):
    if attrs.values_batch_last:  # g is [F, O, B] already
        return ()
    positions = size_of(g.shape[2:])
    if attrs.batch_last:  # g as [F, O, B]
        return (TensorType((g.shape[1], positions, g.shape[0]), g.dtype),)
    if _one_product(attrs, cols.shape):  # g by filter, [F, B, O]
        return (TensorType((g.shape[1], g.shape[0], positions), g.dtype),)
    # [B, C*K, F], and their sum [C*K, F]
    rows = _column_rows(attrs, cols.shape)
    return (TensorType((g.shape[0], rows, g.shape[1]), g.dtype),
            TensorType((rows, g.shape[1]), g.dtype))


def _conv_grad_weight_columns_into(be, attrs, out, g, cols):
    gw, *work = out
    xp = be.xp
    rows = _column_rows(attrs, cols.shape)
    gw_rows = gw.reshape(gw.shape[0], rows).T  # [C*K, F]: cols @ g^T is the faster orientation
    if attrs.values_batch_last:
        be.matmul_into(cols.reshape(rows, -1), g.reshape(g.shape[0], -1).T, gw_rows)
        return
    work = work[0]
    g_rows = g.reshape(g.shape[0], g.shape[1], -1)
    if _one_product(attrs, cols.shape):
        if attrs.batch_last:
            moved_into(be, work, g_rows, 0, -1)
        else:
            xp.copyto(work, g_rows.swapaxes(0, 1))
        be.matmul_into(cols.reshape(rows, -1), work.reshape(g.shape[1], -1).T, gw_rows)
        return
    _weight_products(be, attrs, out, g, cols)
    _sum_weight_products(be, attrs, out, g, cols)


def _weight_products(be, attrs, out, g, cols):
    """Each sample's weight gradient, cols @ g^T, into the scratch [B, C*K, F]."""
    work = out[1]
    by_sample = _by_sample(attrs, cols)
    g_rows = g.reshape(g.shape[0], g.shape[1], -1)

    def products(batch: slice) -> None:
        be.matmul_into(by_sample[batch], g_rows[batch].swapaxes(1, 2), work[batch])

    be.run_in_slices(products, g.shape[0], work.nbytes, flops=2 * work.size * g_rows.shape[2])


def _sum_weight_products(be, attrs, out, g, cols):
    # Summed into [C*K, F] as laid out, then transposed: summed straight into the transposed
    # view of the weight, NumPy's reduction runs through its ufunc buffers, 3.5x slower with a
    # step's small ones (LeNet-5's second convolution: 242 against 30 us), the same sums.
    gw, work, summed = out
    be.xp.sum(work, axis=0, out=summed)
    be.xp.copyto(gw.reshape(gw.shape[0], -1), summed.T)


def _columns_batch_role(role):
    """Columns laid out [C*K, B, O] or [B, C*K, O], the other values batch-first: each
    sample's columns are its own (im2col, conv_columns: SLICED), and the weight gradient sums
    over samples (SUMMED) when it takes one product per sample; its single product over the
    batch reads the columns as one [C*K, B*O] matrix, which a slice of the batch is not (nor
    are batch-last layouts)."""
    def batch_role(attrs, inputs, outputs):
        if attrs.batch_last or getattr(attrs, "values_batch_last", False):
            return None
        if role == SUMMED and _one_product(attrs, inputs[1].shape):
            return None
        return role

    return batch_role


register(OpDef("im2col", ColumnsAttrs, _im2col_shape, forward_through_into("im2col"), None,
               forward_into=_im2col_into, scratch=_im2col_scratch,
               batch_role=_columns_batch_role(SLICED),
               doc="cols[c*K + k, b, o] = x_padded[b, c, s*o + d*k]: convolution columns, "
                   "batch-merged ([c*K + k, o, b] when batch_last, [b, c*K + k, o] when "
                   "by_sample)"))
register(OpDef("conv_columns", ConvColumnsAttrs, _conv_columns_shape,
               forward_through_into("conv_columns"), None,
               forward_into=_conv_columns_into, scratch=_conv_columns_scratch,
               batch_role=_columns_batch_role(SLICED),
               doc="y[b, f, o] = sum_r w[f, r] cols[r, b, o]: a matrix product per sample "
                   "(one for the batch when batch_last)"))
register(OpDef("conv_grad_weight_columns", ColumnsAttrs, _conv_grad_weight_columns_shape,
               forward_through_into("conv_grad_weight_columns"), None,
               forward_into=_conv_grad_weight_columns_into,
               scratch=_conv_grad_weight_columns_scratch,
               batch_role=_columns_batch_role(SUMMED),
               batch_parts=(_weight_products, _sum_weight_products),
               doc="dw[f, r] = sum_(b,o) g[b, f, o] cols[r, b, o]: one matrix product, or one "
                   "per sample summed when a sample has many output positions"))
