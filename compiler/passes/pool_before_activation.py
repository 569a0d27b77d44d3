"""In a forward-only graph, max pooling comes before the bias and activation that feed it.

max_pool(act(z + b)) = act(max_pool(z) + b) for a per-channel bias and a non-decreasing
activation (relu, leaky_relu with slope >= 0, sigmoid, tanh), exactly: rounding z + b is
non-decreasing in z, so the window's largest sum is its largest z plus b, rounded once. The
bias and activation then run over the pooled values, a quarter of them behind a 2x2 pool
(LeNet-5's inference). Only max pools without a gradient are moved: in a training step the
pooling index pass has already made the others max_pool_index, whose argmax among equal
activated values (relu's zeros) must stay the one the backward pass expects.
"""

from __future__ import annotations

from ..ir import Graph
from ..ops.pool import MAX_POOLS
from .rewrite import Rewriter, consumers, producers, result_ids

_NON_DECREASING = ("relu", "sigmoid", "tanh")


def pool_before_activation(graph: Graph) -> Graph:
    readers, producer, results = consumers(graph), producers(graph), result_ids(graph)
    moved = {}  # id of the pool node -> its activation node
    for node in graph.nodes:
        if node.op in MAX_POOLS:
            activation = producer.get(id(node.inputs[0]))
            if (activation is not None and _non_decreasing(activation)
                    and len(readers[id(activation.output)]) == 1
                    and id(activation.output) not in results):
                moved[id(node)] = activation
    dropped = {id(activation) for activation in moved.values()}
    rewriter = Rewriter(graph)
    for node in graph.nodes:
        if id(node) in dropped:
            continue
        activation = moved.get(id(node))
        if activation is None:
            rewriter.keep(node)
            continue
        (pooled,) = rewriter.emit(node.op, (activation.inputs[0],), node.attrs, node.origin)
        (y,) = rewriter.emit(activation.op, (pooled, *activation.inputs[1:]), activation.attrs,
                             activation.origin)
        rewriter.replace(node.output, y)
    return rewriter.result()


def _non_decreasing(node) -> bool:
    if node.op == "bias_activation":
        return (node.attrs.activation in _NON_DECREASING
                or (node.attrs.activation == "leaky_relu" and node.attrs.alpha >= 0))
    if node.op == "leaky_relu":
        return node.attrs.alpha >= 0
    return node.op in _NON_DECREASING
