"""Batch normalisation takes its batch statistics once per step.

Lowered, a training batchnorm on x is channel_mean(x) and channel_var(x) for the running
statistics, batch_norm_train(x, gamma, beta), and in the backward pass
batch_norm_train_grad_input(g, x, gamma), batch_norm_train_grad_gamma(g, x) and
bias_add_grad(g) for beta: each op takes the statistics of x anew. They become
(mean, var, unbiased) = batch_statistics(x), y = batch_norm_apply(x, mean, var, gamma, beta)
and (dx, dgamma, dbeta) = batch_norm_grad(g, x, mean, var, gamma) (compiler/ops/norm.py).
A backward without dx (x needs no gradient) keeps its own ops.
"""

from __future__ import annotations

from ..ir import Graph
from ..ops.norm import StatisticsAttrs
from .rewrite import Rewriter

RUNNING_STATISTICS = {"channel_mean": 0, "channel_var": 2}  # op -> batch_statistics' output


def keep_batch_statistics(graph: Graph) -> Graph:
    normalised = {(id(n.inputs[0]), n.attrs.sync) for n in graph.nodes
                  if n.op == "batch_norm_train"}
    backward = _backward_groups(graph)
    rewriter = Rewriter(graph)
    statistics = {}  # (id of x, sync) -> (mean, var, unbiased)
    gradients = {}  # id of a replaced gradient node -> its value in batch_norm_grad's outputs
    for node in graph.nodes:
        if id(node) in gradients:
            rewriter.replace(node.output, gradients[id(node)])
            continue
        x = node.inputs[0] if node.inputs else None
        if node.op in RUNNING_STATISTICS and (id(x), node.attrs.sync) in normalised:
            stats = _statistics(rewriter, statistics, x, node.attrs.sync, node.origin)
            rewriter.replace(node.output, stats[RUNNING_STATISTICS[node.op]])
        elif node.op == "batch_norm_train":
            mean, var, _ = _statistics(rewriter, statistics, x, node.attrs.sync, node.origin)
            _, gamma, beta = node.inputs
            (y,) = rewriter.emit("batch_norm_apply", (x, mean, var, gamma, beta), node.attrs,
                                 node.origin)
            rewriter.replace(node.output, y)
        elif id(node) in backward and (id(node.inputs[1]), node.attrs.sync) in statistics:
            g, x, gamma = node.inputs
            mean, var, _ = statistics[(id(x), node.attrs.sync)]
            dx, dgamma, dbeta = rewriter.emit("batch_norm_grad", (g, x, mean, var, gamma),
                                              node.attrs, node.origin)
            rewriter.replace(node.output, dx)
            partners = backward[id(node)]
            # every bias_add_grad(g) sums g's channels, as dbeta does: a conv's bias reached
            # through an add reads the same g, and takes the same value
            gradients.update({id(partners[0]): dgamma,
                              **{id(beta_grad): dbeta for beta_grad in partners[1]}})
        else:
            rewriter.keep(node)
    return rewriter.result()


def _statistics(rewriter, statistics, x, sync, origin):
    key = (id(x), sync)
    if key not in statistics:
        statistics[key] = rewriter.emit("batch_statistics", (x,), StatisticsAttrs(sync), origin)
    return statistics[key]


def _backward_groups(graph: Graph) -> dict:
    """For each batch_norm_train_grad_input(g, x, gamma) whose batchnorm's other gradients are
    there too: that node -> (its batch_norm_train_grad_gamma(g, x), the bias_add_grad(g) nodes
    of beta). The input gradient comes first in the graph (the vjp emits it first)."""
    gamma_grads, beta_grads = {}, {}  # two batchnorms of one x summed (add) share g and x
    for n in graph.nodes:
        if n.op == "batch_norm_train_grad_gamma":
            gamma_grads.setdefault((id(n.inputs[0]), id(n.inputs[1]), n.attrs), []).append(n)
        elif n.op == "bias_add_grad" and not n.attrs.batch_last:
            beta_grads.setdefault(id(n.inputs[0]), []).append(n)
    groups = {}
    for n in graph.nodes:
        if n.op != "batch_norm_train_grad_input":
            continue
        g, x, _ = n.inputs
        candidates = gamma_grads.get((id(g), id(x), n.attrs))
        if candidates and beta_grads.get(id(g)):
            groups[id(n)] = (candidates.pop(0), beta_grads[id(g)])
    return groups
