"""Graph passes: one pipeline, run once when a model's graphs are built. Each pass is a
function from Graph to a new Graph; `optimize` checks every result with `verify`."""

from __future__ import annotations

from ..ir import Graph
from ..verify import verify
from .batch_last_layers import keep_batch_last_between_convolutions
from .batch_statistics import keep_batch_statistics
from .conv_columns import keep_conv_columns
from .dead_code import eliminate_dead_code
from .fuse_bias_activation import fuse_bias_activation
from .gelu_cdf import keep_gelu_cdf
from .gradient_before_unpool import gradient_before_unpool
from .group_updates import group_updates
from .loss_with_gradient import loss_with_gradient
from .pool_before_activation import pool_before_activation
from .pool_index import keep_pool_index

PIPELINE = (
    ("dead code", eliminate_dead_code),
    ("convolution columns", keep_conv_columns),
    ("pooling index", keep_pool_index),
    ("gelu's CDF term", keep_gelu_cdf),
    ("loss and its gradient", loss_with_gradient),
    ("batch statistics once", keep_batch_statistics),
    ("bias + activation", fuse_bias_activation),
    ("max pooling before its activation (inference)", pool_before_activation),
    ("activation gradient before the unpooling", gradient_before_unpool),
    ("batch-last values between convolutions", keep_batch_last_between_convolutions),
    ("optimizer update group", group_updates),
    ("dead code", eliminate_dead_code),
)


def optimize(graph: Graph) -> Graph:
    for _, run_pass in PIPELINE:
        graph = run_pass(graph)
        verify(graph)
    graph.renumber()
    return graph
