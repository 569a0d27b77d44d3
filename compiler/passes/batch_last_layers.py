"""Between two convolutions over batch-last columns, values stay batch-last.

A convolution whose samples have few output positions (the MNIST-1D CNN's) takes batch-last
columns [C*K, O, B]: its product comes out [F, O, B] and is transposed to [B, F, O], biased and
relu'd, and the next convolution's im2col transposes it back to [F, O, B]. Backward, the same
round trips: the input gradient is transposed to [B, C, L], and the weight and input gradients
of the layer below transpose it back. With small layers each transpose costs about as much as
the matrix product (docs/benchmarks.md), so where y = conv_columns(cols, w) is read only by
a = bias_activation(y, b) (relu), and a only by the next batch-last im2col, relu's gradient and
the next convolution's input gradient, the pass keeps a, its gradient and the gradient of y in
[F, O, B]: conv_columns adds the bias and takes relu in that layout, and the readers take it
as it is. The same products as before, only copies go; the bias gradient sums [F, O*B] in one
product instead of over the batch, then the positions (another order of the same sum).
Measured on the MNIST-1D CNN, one thread: training step 2.08 -> 1.58 ms, inference 0.64 ->
0.47 ms (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import replace

from ..ir import Graph
from ..ops.conv import CONVOLUTIONS
from .rewrite import Rewriter, consumers, producers, result_ids

_CONV_GRAD_INPUTS = tuple(f"{conv}_grad_input" for conv in CONVOLUTIONS)


def keep_batch_last_between_convolutions(graph: Graph) -> Graph:
    readers, producer, results = consumers(graph), producers(graph), result_ids(graph)
    # id of a node -> the attrs it takes, {"dropped": True}, or the {"bias", "activation"} a
    # conv_columns absorbs
    changes: dict[int, dict] = {}
    for node in graph.nodes:
        boundary = _boundary(results, node, readers, producer)
        if boundary is not None:
            for changed, update in boundary:
                changes.setdefault(id(changed), {}).update(update)
    if not changes:
        return graph
    rewriter = Rewriter(graph)
    for node in graph.nodes:
        update = changes.get(id(node))
        if update is None:
            if _retyped(rewriter, node):
                _reemit(rewriter, node, node.attrs)  # a layout-blind reader: relu's gradient
            else:
                rewriter.keep(node)
        elif update.get("dropped"):
            continue
        elif "bias" in update:  # conv_columns taking the bias_activation that follows it
            activation = update["activation"]
            (a,) = rewriter.emit("conv_columns", (*node.inputs, update["bias"]),
                                 replace(node.attrs, bias_relu_batch_last=True), node.origin)
            rewriter.replace(activation.output, a)
        else:
            _reemit(rewriter, node, replace(node.attrs, **update))
    return rewriter.result()


def _retyped(rewriter, node) -> bool:
    return any(rewriter.use(v).type != v.type for v in node.inputs)


def _reemit(rewriter, node, attrs) -> None:
    outputs = rewriter.emit(node.op, tuple(rewriter.use(v) for v in node.inputs), attrs,
                            node.origin)
    for old, new in zip(node.outputs, outputs):
        rewriter.replace(old, new)


def _boundary(results, conv, readers, producer):
    """For conv_columns `conv` followed by bias + relu and the next batch-last convolution: the
    nodes to change and how; None when any reader would need [B, ...]."""
    if conv.op != "conv_columns" or not conv.attrs.batch_last or id(conv.output) in results:
        return None
    uses = readers[id(conv.output)]
    activation = uses[0] if len(uses) == 1 else None
    if (activation is None or activation.op != "bias_activation"
            or activation.attrs.activation != "relu" or id(activation.output) in results):
        return None
    a = activation.output
    changes = [(conv, {"bias": activation.inputs[1], "activation": activation}),
               (activation, {"dropped": True})]
    next_im2col, signs, input_gradients = None, [], set()
    for reader in readers[id(a)]:
        if (reader.op == "im2col" and reader.attrs.batch_last and next_im2col is None
                and reader.inputs[0] is a):
            next_im2col = reader
            changes.append((reader, {"values_batch_last": True}))
        elif reader.op in _CONV_GRAD_INPUTS and reader.inputs[1] is a and reader.inputs[0] is not a:
            changes.append((reader, {"x_batch_last": True}))
            input_gradients.add(id(reader))
            if not _only_read_by_sign_gradient(results, reader.output, a, readers):
                return None
        elif reader.op == "relu_grad" and reader.inputs[1] is a and reader.inputs[0] is not a:
            signs.append(reader)
        else:
            return None
    if next_im2col is None:
        return None
    for sign in signs:
        if id(producer.get(id(sign.inputs[0]))) not in input_gradients:
            return None
        gradient = _gradient_readers(results, sign.output, readers, cols=conv.inputs[0])
        if gradient is None:
            return None
        changes += gradient
    return changes


def _only_read_by_sign_gradient(results, value, a, readers) -> bool:
    return id(value) not in results and all(
        r.op == "relu_grad" and r.inputs[0] is value and r.inputs[1] is a
        for r in readers[id(value)])


def _gradient_readers(results, g, readers, cols):
    """The readers of the pre-activation's gradient g, given g in [F, O, B]; None when one of
    them cannot take it."""
    if id(g) in results:
        return None
    changes = []
    for reader in readers[id(g)]:
        if reader.op == "bias_add_grad":
            changes.append((reader, {"batch_last": True}))
        elif reader.op == "conv_grad_weight_columns" and reader.inputs == (g, cols):
            changes.append((reader, {"values_batch_last": True}))
        elif reader.op in _CONV_GRAD_INPUTS and reader.inputs[0] is g:
            changes.append((reader, {"g_batch_last": True}))
        else:
            return None
    return changes
