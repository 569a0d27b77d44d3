"""softmax_cross_entropy and its gradient for the seed of back-propagation become one op.

The training step computes the loss, then its gradient d loss / d logits for the incoming
gradient ones_like(loss) = 1; both start from the same log softmax and one-hot target, which
the gradient op would build again. softmax_cross_entropy_with_grad builds them once and gives
both results, with the same numbers. A gradient for another incoming value (a scaled loss)
keeps its own op.
"""

from __future__ import annotations

from ..ir import Graph
from .rewrite import Rewriter, producers


def loss_with_gradient(graph: Graph) -> Graph:
    made_by = producers(graph)
    grads = {(n.inputs[1], n.inputs[2], n.attrs): n for n in graph.nodes
             if n.op == "softmax_cross_entropy_grad"
             and getattr(made_by.get(id(n.inputs[0])), "op", None) == "ones_like"}
    rewriter = Rewriter(graph)
    fused = set()
    for node in graph.nodes:
        partner = (grads.pop((*node.inputs, node.attrs), None)  # one gradient per loss
                   if node.op == "softmax_cross_entropy" else None)
        if partner is not None:
            loss, grad = rewriter.emit("softmax_cross_entropy_with_grad", node.inputs,
                                       node.attrs, node.origin)
            rewriter.replace(node.output, loss)
            rewriter.replace(partner.output, grad)
            fused.add(id(partner))
        elif id(node) not in fused:
            rewriter.keep(node)
    return rewriter.result()
