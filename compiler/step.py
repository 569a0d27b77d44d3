"""The graphs that runtime executes, built from the forward graph of lower.py:
loss and gradients (eval mode), and the whole training step (train mode): forward, loss,
backward, clipping and the optimizer update."""

from __future__ import annotations

from dataclasses import dataclass, field

from .autodiff import append_backward, backward
from .builder import GraphBuilder
from .ir import BATCH, Graph, TensorType, Value
from .lower import Lowered, lower
from .ops.linear import ScaleAttrs
from .ops.loss import BinaryCrossEntropyAttrs, CrossEntropyAttrs, HuberAttrs
from .ops.optim import AdagradAttrs, AdamAttrs, ClipAttrs, RmsPropAttrs, SgdAttrs
from .schema import CLASS_LABEL_LOSSES


@dataclass
class TrainStep:
    graph: Graph
    lowered: Lowered
    # optimizer state: name -> (param it belongs to); all start at zero
    optimizer_state: dict[str, str] = field(default_factory=dict)


def add_loss(gb: GraphBuilder, lowered: Lowered, spec) -> Value:
    """Emits the loss of `spec.loss` on the model's logits against a new input %y."""
    loss_spec = spec.loss
    logits = lowered.logits
    if loss_spec.type in CLASS_LABEL_LOSSES:
        # one label per sample for class scores [B, K], a label map for scores [B, K, *S]
        y = gb.input("y", TensorType((BATCH, *logits.type.shape[2:]), "int64"))
        with gb.at(lowered.output_origin):  # logits that are not class scores: the last layer
            if loss_spec.type == "perceptron":
                loss = gb.emit("perceptron", logits, y)
            else:
                loss = gb.emit("softmax_cross_entropy", logits, y,
                               attrs=CrossEntropyAttrs(loss_spec.label_smoothing,
                                                       loss_spec.ignore_index))
    else:
        y = gb.input("y", logits.type)
        op = {"binary_cross_entropy": "sigmoid_binary_cross_entropy"}.get(loss_spec.type,
                                                                          loss_spec.type)
        attrs = None
        if loss_spec.type == "huber":
            attrs = HuberAttrs(loss_spec.delta)
        elif loss_spec.type == "binary_cross_entropy":
            attrs = BinaryCrossEntropyAttrs(loss_spec.ignore_index)
        loss = gb.emit(op, logits, y, attrs=attrs)
    if loss_spec.scale != 1.0:
        loss = gb.emit("scale", loss, attrs=ScaleAttrs(loss_spec.scale))
    gb.graph.outputs["loss"] = loss
    return loss


def build_loss_and_grads(spec) -> Lowered:
    """Eval mode (no dropout, running batchnorm statistics): outputs loss and grad/<param>."""
    lowered = lower(spec, mode="eval")
    gb = lowered.builder
    loss = add_loss(gb, lowered, spec)
    grads = append_backward(gb, loss, lowered.graph.params)
    for name, grad in grads.items():
        gb.graph.outputs[f"grad/{name}"] = grad
    return lowered


def build_evaluation(spec) -> Lowered:
    """Inference-mode forward plus the loss: what validation and `nnrun eval` run."""
    lowered = lower(spec, mode="eval")
    add_loss(lowered.builder, lowered, spec)
    lowered.graph.outputs["logits"] = lowered.logits
    return lowered


def build_train_step(spec, traced: bool = False, data_parallel: bool = False) -> TrainStep:
    """The training step; `traced` adds what `nnrun trace` prints as outputs: each layer's
    trace/z/<layer> (before its activation), trace/a/<layer>, trace/delta/<layer> (d loss / d z,
    or d loss / d a for a layer without activation) and each parameter's grad/<param>.
    `data_parallel`: each rank's gradients are averaged over the ranks (one all-reduce) before
    anything reads them: norms, clipping and the update see the whole batch's."""
    lowered = lower(spec, mode="train")
    gb = lowered.builder
    graph = gb.graph
    with gb.at(None):
        loss = add_loss(gb, lowered, spec)
        if data_parallel and getattr(spec.loss, "ignore_index", None) is not None:
            loss = _weighted_by_rank_share(gb, loss)
        graph.outputs["logits"] = lowered.logits
        grads = _traced_backward(gb, lowered, loss) if traced else append_backward(
            gb, loss, graph.params)
        if data_parallel and grads:
            grads = dict(zip(grads, gb.emit("allreduce_mean", *grads.values())))
        if spec.train.log_grad_norms:
            for name, grad in grads.items():
                graph.outputs[f"grad_norm/{name}"] = gb.emit("global_norm", grad)
        grads = _clip(gb, spec.optimizer, grads)
        step = TrainStep(graph, lowered)
        _apply_optimizer(gb, step, spec.optimizer, grads)
    return step


def _weighted_by_rank_share(gb: GraphBuilder, loss: Value) -> Value:
    """A loss that leaves out ignore_index is the mean over the labelled positions. Each rank
    knows only its own, so it scales its mean by a fed %loss_share (its labelled fraction over
    the whole batch's, distributed.MpiRanks.loss_share): the mean over the ranks of what they
    compute, and of their gradients, is then the whole batch's loss and gradient."""
    share = gb.input("loss_share", loss.type)
    loss = gb.emit("mul", loss, share)
    gb.graph.outputs["loss"] = loss
    return loss


def _traced_backward(gb: GraphBuilder, lowered: Lowered, loss: Value) -> dict[str, Value]:
    graph = gb.graph
    layer_values = [value for layer in lowered.layers
                    for value in (layer.pre_activation, layer.output) if value is not None]
    grads = backward(gb, loss, [*graph.params, *layer_values])
    for layer in lowered.layers:
        z = layer.pre_activation or layer.output
        graph.outputs[f"trace/a/{layer.name}"] = layer.output
        if layer.pre_activation is not None:
            graph.outputs[f"trace/z/{layer.name}"] = z
        if id(z) in grads:  # not for a layer the loss does not depend on
            graph.outputs[f"trace/delta/{layer.name}"] = grads[id(z)]
    by_name = {param.name: grads[id(param)] for param in graph.params if id(param) in grads}
    for name, grad in by_name.items():
        graph.outputs[f"grad/{name}"] = grad
    return by_name


def _clip(gb: GraphBuilder, optimizer, grads: dict[str, Value]) -> dict[str, Value]:
    if not grads:
        return grads  # a model without parameters has nothing to clip
    if optimizer.clip_grad_value:
        limit = ClipAttrs(optimizer.clip_grad_value)
        grads = {name: gb.emit("clip_by_value", g, attrs=limit) for name, g in grads.items()}
    if optimizer.clip_grad_norm:
        norm = gb.emit("global_norm", *grads.values())
        gb.graph.outputs["grad_norm"] = norm
        limit = ClipAttrs(optimizer.clip_grad_norm)
        grads = {name: gb.emit("clip_by_norm", g, norm, attrs=limit) for name, g in grads.items()}
    return grads


def optimizer_slots(optimizer) -> tuple[str, ...]:
    """The state the optimizer keeps per parameter (opt/<param>.<slot>): momentum, exp_avg, ..."""
    return _optimizer_op(optimizer)[2]


def _optimizer_op(optimizer):
    """(op name, attrs, state slot names) for the spec's optimizer."""
    kind = optimizer.type
    if kind == "sgd":
        slots = ("momentum",) if optimizer.momentum else ()
        return "sgd_update", SgdAttrs(optimizer.momentum, optimizer.nesterov,
                                      optimizer.weight_decay), slots
    if kind in ("adam", "adamw"):
        attrs = AdamAttrs(optimizer.beta1, optimizer.beta2, optimizer.eps,
                          optimizer.weight_decay, decoupled=kind == "adamw")
        return "adam_update", attrs, ("exp_avg", "exp_avg_sq")
    if kind == "rmsprop":
        slots = ("square_avg", "momentum") if optimizer.momentum else ("square_avg",)
        return "rmsprop_update", RmsPropAttrs(optimizer.alpha, optimizer.eps, optimizer.momentum,
                                              optimizer.weight_decay), slots
    return "adagrad_update", AdagradAttrs(optimizer.eps, optimizer.weight_decay), ("sum",)


def _apply_optimizer(gb: GraphBuilder, step: TrainStep, optimizer, grads) -> None:
    op, attrs, slots = _optimizer_op(optimizer)
    scalar = TensorType((), step.graph.params[0].type.dtype if step.graph.params else "float32")
    lr = gb.input("lr", scalar)
    count = gb.input("step", scalar)
    for param in step.graph.params:
        if param.name not in grads:
            continue  # a parameter the loss does not depend on
        state = []
        for slot in slots:
            name = f"opt/{param.name}.{slot}"
            state.append(gb.state(name, param.type))
            step.optimizer_state[name] = param.name
        new_values = gb.emit(op, param, grads[param.name], lr, count, *state, attrs=attrs)
        step.graph.updates[param.name] = new_values[0]
        for value, new in zip(state, new_values[1:]):
            step.graph.updates[value.name] = new
