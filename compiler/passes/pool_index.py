"""Max pooling keeps its argmax: y = max_pool(x) and dx = max_pool_grad(g, x) become
(y, index) = max_pool_index(x) and dx = max_pool_grad_index(g, index), so the backward pass
neither rebuilds the windows nor searches them again."""

from __future__ import annotations

from ..ir import Graph
from ..ops.pool import MAX_POOLS, PoolGradAttrs
from .rewrite import Rewriter


def keep_pool_index(graph: Graph) -> Graph:
    grads = {(n.inputs[1], n.attrs, n.op): n for n in graph.nodes
             if n.op in (f"{p}_grad" for p in MAX_POOLS)}
    rewriter = Rewriter(graph)
    indices = {}  # id of the grad node -> (index value, grad attrs)
    for node in graph.nodes:
        if node.op in MAX_POOLS:
            (x,) = node.inputs
            partner = grads.get((x, node.attrs, f"{node.op}_grad"))
            if partner is not None:
                y, index = rewriter.emit("max_pool_index", (x,), node.attrs, node.origin)
                rewriter.replace(node.output, y)
                a = node.attrs
                indices[id(partner)] = (index, PoolGradAttrs(a.kernel, a.stride, a.pad,
                                                             a.dilation, tuple(x.type.shape[2:])))
                continue
        if id(node) in indices:
            index, attrs = indices[id(node)]
            (dx,) = rewriter.emit("max_pool_grad_index", (node.inputs[0], index), attrs,
                                  node.origin)
            rewriter.replace(node.output, dx)
            continue
        rewriter.keep(node)
    return rewriter.result()
