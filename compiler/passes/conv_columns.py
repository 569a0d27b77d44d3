"""Convolution columns built once per step: the weight gradient reuses the forward's im2col.

y = conv(x, w) and dw = conv_grad_weight(g, x, w) become cols = im2col(x),
y = conv_columns(cols, w), dw = conv_grad_weight_columns(g, cols). The columns then live from
the forward pass to the weight gradient, so a convolution whose columns per sample exceed
MAX_COLUMN_BYTES_PER_SAMPLE keeps recomputing them instead. The columns' layout follows a sample's
output positions: at most BATCH_LAST_MAX_POSITIONS, batch-last [C*K, O, B] (one product for
the whole batch); at least BY_SAMPLE_MIN_POSITIONS, by sample [B, C*K, O] (one product per
sample); compiler/ops/conv.py says why. A convolution without a weight gradient (inference)
takes batch-last columns too where its positions are few (but a 1-D one whose output would be
transposed back to rows of a multiple of 512 bytes); otherwise it stays one op, which builds
its columns a chunk of samples at a time (CHUNKED_FORWARD).
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph
from ..ops.conv import (BATCH_LAST_MAX_POSITIONS, CONVOLUTIONS, ONE_PRODUCT_MAX_POSITIONS,
                        ColumnsAttrs, ConvColumnsAttrs)
from ..shapes import size_of
from .rewrite import Rewriter, consumers

MAX_COLUMN_BYTES_PER_SAMPLE = 1 << 20

# Columns [B, C*K, O] where the weight gradient takes one product per sample anyway
BY_SAMPLE_MIN_POSITIONS = ONE_PRODUCT_MAX_POSITIONS
# A forward-only convolution without batch-last columns stays one op that builds its columns
# a chunk of samples at a time (False: im2col and conv_columns over the whole batch)
CHUNKED_FORWARD = True

_GRAD_WEIGHTS = tuple(f"{conv}_grad_weight" for conv in CONVOLUTIONS)


def keep_conv_columns(graph: Graph) -> Graph:
    grad_weight = {(n.inputs[1], n.inputs[2], n.attrs, n.op): n for n in graph.nodes
                   if n.op in _GRAD_WEIGHTS}
    rewriter = Rewriter(graph)
    readers = consumers(graph)
    columns = {}  # id of the grad-weight node -> the columns value
    for node in graph.nodes:
        if node.op in CONVOLUTIONS:
            x, w = node.inputs
            partner = grad_weight.get((x, w, node.attrs, f"{node.op}_grad_weight"))
            out = tuple(node.output.type.shape[2:])
            batch_last = size_of(out) <= BATCH_LAST_MAX_POSITIONS and (
                partner is not None or not _transposed_back_slowly(node, readers))
            kept = partner is not None and _column_bytes(node) <= MAX_COLUMN_BYTES_PER_SAMPLE
            # Without a weight gradient (inference) the columns die at once: batch-last, one
            # product for the batch is still the faster convolution; otherwise the convolution
            # stays, building its columns a chunk of samples at a time (compiler/ops/conv.py).
            whole_batch = partner is None and (batch_last or not CHUNKED_FORWARD)
            if kept or whole_batch:
                by_sample = not batch_last and size_of(out) >= BY_SAMPLE_MIN_POSITIONS
                attrs = ColumnsAttrs(tuple(w.type.shape[2:]), node.attrs.stride, node.attrs.pad,
                                     node.attrs.dilation, batch_last, by_sample)
                (cols,) = rewriter.emit("im2col", (x,), attrs, node.origin)
                (y,) = rewriter.emit("conv_columns", (cols, w),
                                     ConvColumnsAttrs(out, batch_last, by_sample), node.origin)
                rewriter.replace(node.output, y)
                if partner is not None:
                    columns[id(partner)] = (cols, attrs)
                continue
        if id(node) in columns:
            cols, attrs = columns[id(node)]
            (dw,) = rewriter.emit("conv_grad_weight_columns", (node.inputs[0], cols), attrs,
                                  node.origin)
            rewriter.replace(node.output, dw)
            continue
        rewriter.keep(node)
    return rewriter.result()


# What a value may pass through between two convolutions and stay batch-last
# (passes/batch_last_layers.py keeps it so)
_ELEMENTWISE = ("bias_add", "bias_activation", "relu")


def _transposed_back_slowly(node, readers) -> bool:
    """Whether a 1-D inference convolution's batch-last output [F, O, B] would be transposed
    back to rows [B, F*O] of a multiple of 512 bytes, which NumPy writes across at several
    times the product's time (conv1d-64-positions: 0.59 against 0.36 ms for the convolution by
    chunks, docs/benchmarks.md); not where it reaches another convolution through elementwise
    nodes, between which it stays batch-last. 2-D convolutions were measured slower by chunks
    (the quickstart's 1.30 against 1.70 ms): they keep their batch-last columns."""
    y = node.output
    row_bytes = size_of(y.type.shape[1:]) * np.dtype(y.type.dtype).itemsize
    return node.op == "conv1d" and row_bytes % 512 == 0 and not _feeds_a_convolution(y, readers)


def _feeds_a_convolution(value, readers) -> bool:
    for reader in readers.get(id(value), ()):
        if reader.op in CONVOLUTIONS or (reader.op in _ELEMENTWISE
                                         and _feeds_a_convolution(reader.output, readers)):
            return True
    return False


def _column_bytes(node) -> int:
    x, w = node.inputs
    rows = size_of(w.type.shape[1:])
    return rows * size_of(node.output.type.shape[2:]) * np.dtype(x.type.dtype).itemsize
