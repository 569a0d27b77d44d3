"""bias_add followed by relu, leaky_relu, sigmoid or tanh becomes one bias_activation op.

The pre-activation z = x + b is then never stored. That is possible when nothing else needs z:
sigmoid's and tanh's gradients read the output y, and relu's and leaky_relu's (slope >= 0)
gradients read only the sign of z, which y has too (y > 0 exactly where z > 0), so those
gradient ops are given y instead. When z has any other reader it stays, unfused.
"""

from __future__ import annotations

from ..ir import Graph
from ..ops.linear import FUSABLE_ACTIVATIONS, BiasActivationAttrs
from .rewrite import Rewriter, consumers, result_ids

# The gradient ops that read only the sign of their activation's input.
_SIGN_GRADIENT = {"relu": "relu_grad", "leaky_relu": "leaky_relu_grad"}


def fuse_bias_activation(graph: Graph) -> Graph:
    readers, results = consumers(graph), result_ids(graph)
    fused = {}  # id of the activation node -> (its bias_add node, BiasActivationAttrs)
    dropped = set()
    for node in graph.nodes:
        if node.op != "bias_add" or id(node.output) in results:
            continue
        uses = readers[id(node.output)]
        activations = [n for n in uses if n.op in FUSABLE_ACTIVATIONS]
        if len(activations) != 1 or not _only_sign_gradients(uses, activations[0], node.output):
            continue
        activation = activations[0]
        alpha = getattr(activation.attrs, "alpha", 0.0)
        if alpha < 0:
            continue
        fused[id(activation)] = (node, BiasActivationAttrs(activation.op, alpha))
        dropped.add(id(node))
    rewriter = Rewriter(graph)
    for node in graph.nodes:
        if id(node) in dropped:
            continue
        if id(node) in fused:
            bias_node, attrs = fused[id(node)]
            (y,) = rewriter.emit("bias_activation", bias_node.inputs, attrs, node.origin)
            rewriter.replace(node.output, y)
            rewriter.replace(bias_node.output, y)  # the sign gradients read y from here on
            continue
        rewriter.keep(node)
    return rewriter.result()


def _only_sign_gradients(uses, activation, z) -> bool:
    sign_gradient = _SIGN_GRADIENT.get(activation.op)
    return all(n is activation or (n.op == sign_gradient and n.inputs[1] is z
                                   and n.inputs[0] is not z)
               for n in uses)
