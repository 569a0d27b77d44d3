"""GELU keeps its CDF term: y = gelu(x) and dx = gelu_grad(g, x) become (y, cdf) = gelu_cdf(x)
and dx = gelu_grad_cdf(g, x, cdf), so the backward pass does not compute erf again (erf is most
of either op's time). The same numbers; the step holds one more activation-sized value from the
forward pass to the backward. The term depends on x alone: every gradient of a gelu of x reads
the one term of the first gelu of x."""

from __future__ import annotations

from ..ir import Graph
from .rewrite import Rewriter


def keep_gelu_cdf(graph: Graph) -> Graph:
    differentiated = {n.inputs[1] for n in graph.nodes if n.op == "gelu_grad"}
    rewriter = Rewriter(graph)
    terms = {}  # x -> the kept 1 + erf(x / sqrt(2))
    for node in graph.nodes:
        if node.op == "gelu" and node.inputs[0] in differentiated and node.inputs[0] not in terms:
            y, terms[node.inputs[0]] = rewriter.emit("gelu_cdf", node.inputs, node.attrs,
                                                     node.origin)
            rewriter.replace(node.output, y)
        elif node.op == "gelu_grad" and node.inputs[1] in terms:
            g, x = node.inputs
            (dx,) = rewriter.emit("gelu_grad_cdf", (g, x, terms[x]), node.attrs, node.origin)
            rewriter.replace(node.output, dx)
        else:
            rewriter.keep(node)
    return rewriter.result()
