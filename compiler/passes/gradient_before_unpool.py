"""An activation's gradient behind a max pool is taken on the pooled values, before the scatter.

With a = activation(z) and (y, index) = max_pool_index(a), the backward pass reads
da = act_grad(max_pool_grad_index(g, index), a): a scatter of g into a zeroed input-sized
buffer, then g * h(a) over every position, most of them zeros. Where the pool's windows do not
overlap, each scattered value lands on one position p with a[p] equal to its window's maximum
y, so act_grad(g, y) on the pooled values, scattered after, gives the same numbers, bit for
bit: the same product at p, and zero elsewhere. The activation's gradient then runs over a
quarter of the values behind a 2x2 pool (LeNet-5: two of its larger elementwise passes).

It applies to the gradients that are g times a function of the value they read (relu,
leaky_relu, sigmoid, tanh), when that value is the pool's input, and to relu's gradient reading
relu's input z when relu's output is the pool's input (z > 0 exactly where relu(z) > 0).
"""

from __future__ import annotations

from ..ir import Graph
from .rewrite import Rewriter, consumers, producers, result_ids

_VALUE_GRADIENTS = ("relu_grad", "leaky_relu_grad", "sigmoid_grad", "tanh_grad")


def gradient_before_unpool(graph: Graph) -> Graph:
    readers, producer, results = consumers(graph), producers(graph), result_ids(graph)
    pool_of_index = {id(n.outputs[1]): n for n in graph.nodes if n.op == "max_pool_index"}
    rewriter = Rewriter(graph)
    for node in graph.nodes:
        pool = _pool_behind(results, node, readers, producer, pool_of_index)
        if pool is None:
            rewriter.keep(node)
            continue
        scatter = producer[id(node.inputs[0])]
        g, index = scatter.inputs
        (pooled_grad,) = rewriter.emit(node.op, (g, pool.outputs[0]), node.attrs, node.origin)
        (grad,) = rewriter.emit("max_pool_grad_index", (pooled_grad, index), scatter.attrs,
                                scatter.origin)
        rewriter.replace(node.output, grad)
    return rewriter.result()  # the old scatter, now unread, goes with the next dead-code pass


def _pool_behind(results, node, readers, producer, pool_of_index):
    """The max_pool_index node whose scatter `node` (an activation gradient) reads, when the
    rewrite applies; else None."""
    if node.op not in _VALUE_GRADIENTS:
        return None
    scattered, value = node.inputs
    scatter = producer.get(id(scattered))
    if (scatter is None or scatter.op != "max_pool_grad_index"
            or scatter.attrs.windows_overlap() or len(readers[id(scattered)]) != 1
            or id(scattered) in results):
        return None
    pool = pool_of_index.get(id(scatter.inputs[1]))
    if pool is None:
        return None
    pooled_input = pool.inputs[0]
    if value is pooled_input:
        return pool
    activation = producer.get(id(pooled_input))
    if (node.op == "relu_grad" and activation is not None and activation.op == "relu"
            and activation.inputs[0] is value):
        return pool
    return None
