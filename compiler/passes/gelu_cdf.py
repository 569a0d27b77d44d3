"""GELU keeps its CDF term: y = gelu(x) and dx = gelu_grad(g, x) become (y, cdf) = gelu_cdf(x)
and dx = gelu_grad_cdf(g, x, cdf), so the backward pass does not compute erf again (erf is most
of either op's time). The same numbers; the step holds one more activation-sized value from the
forward pass to the backward."""

from __future__ import annotations

from ..ir import Graph
from .rewrite import Rewriter


def keep_gelu_cdf(graph: Graph) -> Graph:
    grads = {n.inputs[1]: n for n in graph.nodes if n.op == "gelu_grad"}
    rewriter = Rewriter(graph)
    kept = {}  # id of the grad node -> the cdf value
    for node in graph.nodes:
        partner = grads.get(node.inputs[0]) if node.op == "gelu" else None
        if partner is not None:
            y, cdf = rewriter.emit("gelu_cdf", node.inputs, node.attrs, node.origin)
            rewriter.replace(node.output, y)
            kept[id(partner)] = cdf
            continue
        if id(node) in kept:
            g, x = node.inputs
            (dx,) = rewriter.emit("gelu_grad_cdf", (g, x, kept[id(node)]), node.attrs,
                                  node.origin)
            rewriter.replace(node.output, dx)
            continue
        rewriter.keep(node)
    return rewriter.result()
