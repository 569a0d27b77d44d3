"""What the lowering checks and warns of a model's outputs, once its graph is built: outputs that
cannot fit the named dataset's labels under the loss (errors at the last layer, with the
arithmetic and the fix), and models that are legal but learn badly or not at all (warnings:
an activation squashing the scores a loss squashes itself, a step before the last layer,
layers whose output never reaches the model's)."""

from __future__ import annotations

import math

from . import schema
from .builder import CompileError, CompileWarning
from .checks import (more_than_binary, one_hot_needs_a_vector, one_output_on_classes,
                     position_class_metric)
from .datasets import DATASETS, defaulted_dataset
from .ir import Origin
from .ops import RANGE_KEEPING
from .shapes import per_sample, setting_text, shrink_factors

# The activation a loss applies itself, whose layer before it is left out of the loss path.
FUSED_ACTIVATION = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid",
                    "perceptron": "step"}


def check_outputs(spec, lowered) -> None:
    """Raises CompileError where the outputs cannot fit the dataset's labels; adds the
    warnings to the lowering's builder."""
    _check_output(spec, lowered)
    _warn_of_squashed_scores(lowered, spec)
    _warn_of_softmax_over_one_value(lowered, spec)
    _warn_of_one_class(lowered, spec)
    _warn_of_steps_that_stop_learning(lowered, spec)
    _warn_of_unread_layers(lowered, spec)
    _warn_of_an_ignored_class(lowered, spec)


def _warn_of_an_ignored_class(lowered, spec) -> None:
    """ignore_index naming one of a named dataset's classes: its samples (or pixels) add
    nothing to the loss, and the model never learns that class; a label beside the classes
    (255 on masks) is what it is for."""
    ignored = getattr(spec.loss, "ignore_index", None)
    dataset = DATASETS[spec.data.dataset] if spec.data else None
    classes = dataset.num_classes if dataset is not None else None
    if ignored is None or not classes or not 0 <= ignored < classes:
        return
    lowered.builder.warnings.append(CompileWarning(
        Origin("loss.ignore_index", keys=("loss", "ignore_index")),
        f"ignore_index {ignored} is one of the {classes} classes of dataset '{dataset.name}' "
        f"(0..{classes - 1}): the labels {ignored} add nothing to the loss, so the model never "
        "learns that class; give a label no sample has (PyTorch's default: -100), or remove it"))


def _warn_of_unread_layers(lowered, spec) -> None:
    """A layer on no path to the output (the next one names other inputs, and no later one
    reads it, or only such layers do) trains for nothing: likely not what the spec meant."""
    last = lowered.layers[-1].name
    reached = schema.layers_read_by({info.name: info.inputs for info in lowered.layers}, last)
    index_of = _index_by_name(spec)
    for info in lowered.layers:  # the layers shaped: a branch's shape error leaves some out
        if info.name in reached:
            continue
        index = index_of[info.name]
        learns = (f"; its {info.trainable_params:,} parameters get no gradient"
                  if info.trainable_params else "")
        lowered.builder.warnings.append(CompileWarning(
            Origin.of_layer(index, info.name),
            f"its output never reaches the model's output ({last}): no layer on the way there "
            f"reads it{learns}; remove it, or name it in a later layer's inputs"))


def _index_by_name(spec) -> dict[str, int]:
    """Each layer's place in the spec by its name: a shape error in a branch leaves some out
    of the layers lowered, so their places there are not the spec's."""
    return {name: index for index, name in
            enumerate(schema.default_layer_names(spec.model.layers))}


# What an activation does to the raw scores a classification loss takes.
_SQUASHING = {"softmax": "the scores are squashed twice, and learning slows",
              "sigmoid": "the scores are squashed into (0, 1) first, and learning slows",
              "tanh": "the scores are squashed into (-1, 1) first, and learning slows",
              "relu": "negative scores become 0 and pass no gradient back",
              "gelu": "negative scores are squashed into (-0.17, 0) and pass little gradient "
                      "back, and learning slows",
              "softplus": "the scores are made positive, negative ones squashed towards 0 "
                          "passing little gradient back, and learning slows",
              "elu": "negative scores are squashed into (-{alpha:g}, 0) and pass little "
                     "gradient back, and learning slows",
              "leaky_relu": "negative scores are multiplied by its slope {alpha:g}, and so is "
                            "their gradient{slows}"}
# Activations whose outputs keep the scores' signs, which is all a threshold unit reads.
_SIGN_KEEPING = ("tanh", "gelu", "elu", "leaky_relu")


def _warn_of_squashed_scores(lowered, spec) -> None:
    """A course's classic mistake: an activation left between the scores and a loss that
    applies its own softmax or sigmoid (the model is legal, and learns badly)."""
    own = FUSED_ACTIVATION.get(spec.loss.type)
    for producer in _squashing_nodes(lowered, spec):
        lowered.builder.warnings.append(CompileWarning(
            _activation_origin(producer, spec),
            f"{producer.op} before {spec.loss.type}, which takes raw scores and applies its own "
            f"{own}: {_squashing_effect(producer, own)}; remove this {producer.op} (a {own} "
            f"last is left out of the loss and kept for predict's "
            f"{'0/1 outputs' if own == 'step' else 'probabilities'})"))


def _squashing_effect(node, own: str) -> str:
    alpha = getattr(node.attrs, "alpha", None)
    op = "relu" if node.op == "leaky_relu" and alpha == 0 else node.op
    if own == "step" and op not in _SIGN_KEEPING:  # never below 0: the class is always 1
        return ("its outputs are never below 0, so the threshold unit reads every sample as "
                "class 1")
    if op == "softmax" and own != "softmax":  # once, not twice
        return "the scores are squashed into (0, 1) first, and learning slows"
    slows = ", and learning slows" if op == "leaky_relu" and alpha < 1 else ""
    return _SQUASHING[op].format(alpha=alpha, slows=slows)


def _squashes(node) -> bool:
    """Whether an activation changes the scores: a leaky_relu of slope 1 is the identity, one
    of slope 0 a relu."""
    if node.op == "leaky_relu" and node.attrs.alpha == 1:
        return False
    return node.op in _SQUASHING and not _softmax_over_one_value(node)  # (its own warning)


# Ops that pass the values of several inputs on to the loss (heads joined together).
_JOINING = ("concat", "add")


def _squashing_nodes(lowered, spec) -> list:
    """The activation nodes that give the scores to a loss that applies its own activation
    (relu before cross_entropy), where they squash them: the one before the scores, or before
    layers that keep its values' range (a flatten, a pooling) or join it with others."""
    if FUSED_ACTIVATION.get(spec.loss.type) is None:
        return []
    producers = {id(value): node for node in lowered.graph.nodes for value in node.outputs}
    found, pending = [], [producers.get(id(lowered.logits))]
    while pending:
        node = pending.pop(0)
        if node is None or node in found:
            continue
        if node.op in _SQUASHING:
            if _squashes(node):
                found.append(node)
        elif node.op in RANGE_KEEPING or node.op in _JOINING:
            read = node.inputs if node.op in _JOINING else node.inputs[:1]
            pending += [producers.get(id(value)) for value in read]
    return found


def _softmax_over_one_value(node) -> bool:
    return node.op == "softmax" and node.inputs[0].type.shape[node.attrs.axis] == 1


def _warn_of_softmax_over_one_value(lowered, spec) -> None:
    """A softmax over an axis of one value is 1 whatever its input: its gradient is 0, and
    nothing before it learns (`units: 1, activation: softmax` for a binary output)."""
    for node in lowered.graph.nodes:
        if not _softmax_over_one_value(node):
            continue
        lowered.builder.warnings.append(CompileWarning(
            _activation_origin(node, spec),
            "softmax over one value is always 1: it passes no gradient back, so neither its "
            f"own layer nor any before it learns; for one output {_one_output_activation(spec)}"
            ", for k classes k outputs (units or filters: k)"))


def _warn_of_one_class(lowered, spec) -> None:
    """cross_entropy over one output (one class): the softmax of one score is 1 whatever it
    is, so the loss is 0 and passes no gradient, and nothing learns (a named dataset of more
    classes is an error, said before; a file's labels are checked against the outputs when
    it loads, runtime/data_fit.py)."""
    if spec.loss.type != "cross_entropy" or lowered.logits.type.shape[1] != 1:
        return
    if spec.data is not None and DATASETS[spec.data.dataset].user_file:
        return  # said when the file loads, if its labels fit the output (runtime/data_fit.py)
    lowered.builder.warnings.append(CompileWarning(lowered.output_origin,
                                                   one_class_message(spec, lowered)))


def one_class_message(spec, lowered) -> str:
    """What a cross_entropy output of one class does, and the fix."""
    return (f"cross_entropy over 1 output{' channel' if lowered.logits.type.rank > 2 else ''} "
            "is over one class: its softmax is 1 whatever the score, so the loss is 0 for every "
            "sample and nothing learns; give one output per class "
            f"({output_count_fix(spec, lowered, 2)} for two), or for one output use "
            "binary_cross_entropy")


def _one_output_activation(spec) -> str:
    """What ends one output under the spec's loss, where a softmax cannot."""
    own = FUSED_ACTIVATION.get(spec.loss.type)
    if own in ("sigmoid", "step"):  # the loss's own: a last one is left out of it
        return f"use no activation or a {own} ({spec.loss.type} applies its own {own})"
    return "use a sigmoid (or no activation under binary_cross_entropy)"


def _activation_origin(node, spec) -> Origin | None:
    """Where an activation node was written: its layer's `activation:` field, or the
    activation layer itself."""
    origin = node.origin
    layer = spec.model.layers[origin.keys[2]] if origin and len(origin.keys) > 2 else None
    if getattr(layer, "activation", None) is not None:
        return origin.at_field("activation")
    return origin


def _warn_of_steps_that_stop_learning(lowered, spec) -> None:
    """A threshold unit passes no gradient back: anywhere but last before loss: perceptron
    (which reads the scores before it), the layers before it never learn."""
    fused_scores = next((info.pre_activation for info in lowered.layers
                         if info.name == lowered.fused_layer), None)
    own = FUSED_ACTIVATION.get(spec.loss.type)
    last = len(spec.model.layers) - 1
    for node in lowered.graph.nodes:
        if node.op != "step" or node.inputs[0] is fused_scores:
            continue
        instead = ("a sigmoid, which the perceptron became in multi-layer networks for this "
                   "reason")
        if own in ("softmax", "sigmoid") and node.origin and node.origin.keys[2:3] == (last,):
            instead = f"no activation ({spec.loss.type} applies its own {own})"
        lowered.builder.warnings.append(CompileWarning(
            _activation_origin(node, spec),
            "step passes no gradient back (its derivative is 0 wherever it is defined), so "
            "neither its own layer nor any before it learns; use it as the last activation with "
            f"loss: perceptron, or {instead}"))


def _check_output(spec, lowered) -> None:
    try:
        _check_output_fits(spec, lowered)
    except CompileError as error:
        error.message += defaulted_dataset(spec.data)
        raise


def _check_output_fits(spec, lowered) -> None:
    logits, origin = lowered.logits.type, lowered.output_origin
    dataset = DATASETS[spec.data.dataset] if spec.data else None
    if dataset is None or dataset.input_shape is None:
        return  # labels known only on load (npz, csv): checked with the data (data_fit.py)
    sizing = _output_sizing(spec, lowered)
    if spec.loss.type in schema.CLASS_LABEL_LOSSES:
        _check_label_positions(origin, lowered, dataset, spec.loss.type)
        _check_class_outputs(sizing, origin, logits, dataset, spec.loss.type,
                             next(iter(_squashing_nodes(lowered, spec)), None))
    elif spec.loss.type == "binary_cross_entropy" and ((dataset.num_classes or 0) >= 2 or
                                                       dataset.task in ("binary", "segmentation")):
        _check_binary_outputs(spec, lowered, dataset, sizing)
    elif dataset.num_classes and not dataset.label_shape:  # mse, mae, huber on class labels
        _check_one_hot_outputs(spec, lowered, origin, dataset, sizing)
    elif dataset.label_shape and spec.loss.type in schema.REGRESSION_LOSSES:
        _check_one_score_per_position(spec, lowered, origin, dataset, sizing)


def _check_one_score_per_position(spec, lowered, origin, dataset, sizing) -> None:
    """mse, mae and huber compare label maps as they are: one score per position, [1, *maps];
    what train says of the data, known here from the dataset."""
    logits, labels, loss = lowered.logits.type, list(dataset.label_shape), spec.loss.type
    classes = dataset.num_classes or logits.shape[1]
    compares = one_score_per_position(loss, labels, labels, per_sample(logits),
                                      f" of '{dataset.name}'")
    spatial = list(logits.shape[2:])
    if spatial != labels:
        raise CompileError(origin, f"{compares} "
                           f"({positions_fix(spatial, labels, lowered, 'one filter')})")
    if logits.shape[1] != 1:
        where, fix = _count_fix(sizing, origin, logits, 1)
        if classes > 2 and position_class_metric(spec):
            fix += " with train.metrics: [mae]"  # accuracy reads one score as class 0 or 1
        scores = "" if logits.shape[1] == classes else \
            f" ({output_count_fix(spec, lowered, classes)})"
        raise CompileError(where, f"{compares}; {fix}, or use loss: cross_entropy for its "
                           f"{classes} classes per position{scores}")
    problem = two_classes_per_position(spec, lowered, classes - 1) if classes > 2 else None
    if problem:
        raise CompileError(origin, problem)


def _output_sizing(spec, lowered) -> tuple[Origin, str] | None:
    """The layer whose units or filters give the model's output its count, and that field:
    the last layer, or the one before layers that keep the count (an upsample, a pool, an
    activation, dropout, batchnorm); None past a reshape, flatten or join, whose output is
    not one layer's count."""
    info_of = {info.name: info for info in lowered.layers}  # of the layers shaped
    index_of = _index_by_name(spec)
    info = lowered.layers[-1]
    while True:
        index = index_of[info.name]
        layer = spec.model.layers[index]
        for field_name in ("units", "filters"):
            if hasattr(layer, field_name):
                return Origin.of_layer(index, info.name), field_name
        if layer.type in ("flatten", "reshape", "add", "concat") or len(info.inputs) != 1 \
                or info.inputs[0] not in info_of:
            return None
        info = info_of[info.inputs[0]]


def one_score_per_position(loss: str, labels: list, positions: list, ends: list,
                           of: str = "") -> str:
    """What mse, mae and huber do with label maps `labels` (`of` a named dataset), in the words
    of the named datasets' check and the data's: one score per position of `positions`."""
    return (f"{loss} compares the label maps {labels}{of} with one score per position, "
            f"[1, {', '.join(map(str, positions))}], the model ends with {ends}")


def output_count_fix(spec, lowered, count: int) -> str:
    """How to give the model `count` outputs (or channels of its output maps), in words that
    name the layer that sets them, for messages about the data (which point at data.path)."""
    sizing = _output_sizing(spec, lowered)
    if sizing is None:
        return _count_fix(None, lowered.output_origin, lowered.logits.type, count)[1]
    layer, field_name = sizing
    return f"set {field_name}: {count} in {layer.where()}"


def class_scores_fix(spec, lowered, classes: int, maps: bool) -> str:
    """What gives the model one score per class under cross_entropy: for one label a sample
    (`maps` False), a vector of `classes` outputs; for label maps, `classes` channels. "" where
    it has them."""
    logits = lowered.logits.type
    if not maps and logits.rank > 2:
        return f"end the model with {{type: flatten}} and a dense layer of units: {classes}"
    if maps and logits.rank == 2:  # a flatten, dense or global pool took the positions away
        return ("keep the positions (no flatten, dense or global pool): end the model with a "
                f"convolution of kernel_size 1 and filters: {classes}")
    return "" if logits.shape[1] == classes else output_count_fix(spec, lowered, classes)


def two_classes_per_position(spec, lowered, top: int, maps: bool = True,
                             void: int | None = None) -> str | None:
    """One score per position (or, `maps` False, per sample) regresses classes as numbers
    (mse, mae, huber); position_class_metric reads it as class 0 or 1, which cannot count
    classes up to `top`: why, or None when no such metric is tracked. Per sample, only the
    confusion metrics refuse (their matrix has two classes; accuracy is warned of). `void`: a
    value beside the classes that marks positions to leave out (255), which cross_entropy's
    ignore_index does."""
    metric = position_class_metric(spec) if maps else next(
        (m.type for m in spec.train.metrics or () if m.type in schema.CONFUSION_METRICS), None)
    if metric is None:
        return None
    score, labels = ("one score per position", "the label maps hold") if maps else \
        ("the one output", "the labels hold")
    marked = "" if void is None else f" and {void}"
    return (f"{metric} reads {score} as class 0 or 1 (above 0.5), {labels} classes up to "
            f"{top}{marked}; {output_count_fix(spec, lowered, top + 1)} with "
            f"{cross_entropy_setting(void)}, or track train.metrics: [mae] to regress the values")


# What one output of two classes may mean, beside a second output.
BINARY_ALTERNATIVE = ", or loss: binary_cross_entropy with its one output"


def cross_entropy_setting(void: int | None = None) -> str:
    """The loss to switch to, leaving out the positions marked `void` (if any)."""
    return "loss: cross_entropy" if void is None else \
        f"loss: {{type: cross_entropy, ignore_index: {void}}}"


def _check_class_outputs(sizing, origin: Origin, logits, dataset, loss: str,
                         squashing=None) -> None:
    """One score per class (the perceptron's one output reads two classes). `sizing`: the
    layer and field that give the output its count (_output_sizing), or None; `squashing`:
    the activation node before the loss that the fix also takes away (_squashing_nodes)."""
    classes, outputs = dataset.num_classes, logits.shape[1]
    one_for_two = loss == "perceptron" and outputs == 1 and classes == 2
    if classes and outputs != classes and not one_for_two:
        binary = BINARY_ALTERNATIVE if classes == 2 and outputs == 1 else ""
        where, fix = _count_fix(sizing, origin, logits, classes)
        # (a sigmoid on one output of two classes is binary_cross_entropy's, offered below)
        if squashing is not None and sizing is not None and not (
                binary and squashing.op == "sigmoid"):  # no sizing: the fix adds a layer after
            own = squashing.origin.keys[:3] == sizing[0].keys[:3]
            fix += (f", and remove {'its' if own else 'the'} {squashing.op} "
                    f"{'activation' if own else 'layer after it'} ({loss} applies its own "
                    f"{FUSED_ACTIVATION[loss]})")
        raise CompileError(where, f"the model ends with {outputs} "
                           f"output{'s' if outputs > 1 else ''} but dataset "
                           f"'{dataset.name}' has {classes} classes; {fix}{binary}")


def _count_fix(sizing, origin: Origin, logits, count: int) -> tuple[Origin, str]:
    """Where and how to give the output `count` channels: the units or filters of the layer
    that sizes it, else (a flatten, reshape or join last) a layer that does, added at the end."""
    if sizing is not None:
        layer, field_name = sizing
        return layer.at_field(field_name), f"set {field_name}: {count}"
    if logits.rank == 2:
        return origin, f"end the model with {{type: dense, units: {count}}}"
    conv = f"conv{logits.rank - 2}d"
    return origin, f"end the model with {{type: {conv}, filters: {count}, kernel_size: 1}}"


def _check_binary_outputs(spec, lowered, dataset, sizing=None) -> None:
    """0/1 labels, and one output per sample (or per pixel of a label map). `sizing`: the
    layer and field that give the output its count (_output_sizing), if one does."""
    logits, origin = lowered.logits.type, lowered.output_origin
    if (dataset.num_classes or 0) > 2:
        fix = class_scores_fix(spec, lowered, dataset.num_classes, bool(dataset.label_shape))
        raise CompileError(Origin("loss", keys=("loss",)), more_than_binary(
            f"dataset '{dataset.name}'", dataset.num_classes, fix))
    wanted = [1, *dataset.label_shape]
    if per_sample(logits) != wanted:
        needs = (f"binary_cross_entropy on '{dataset.name}' needs one output"
                 f"{' per pixel' if dataset.label_shape else ''}, the model ends with "
                 f"{per_sample(logits)}")
        if sizing is not None and logits.shape[1] != 1 and list(logits.shape[2:]) == wanted[1:]:
            layer, field_name = sizing
            raise CompileError(layer.at_field(field_name), f"{needs}; set {field_name}: 1")
        raise CompileError(origin, f"{needs}; make the last layer give {wanted}")


def _check_one_hot_outputs(spec, lowered, origin, dataset, sizing) -> None:
    """Under mse, mae and huber, class labels become one-hot targets of a vector of one output
    per class (or, with one output, numbers: a likely mistake beyond two classes)."""
    logits, classes, loss = lowered.logits.type, dataset.num_classes, spec.loss.type
    if logits.rank > 2:
        raise CompileError(origin, one_hot_needs_a_vector(loss, f"'{dataset.name}'", classes,
                                                          per_sample(logits)))
    outputs = logits.shape[1]
    if outputs not in (1, classes):
        where, fix = _count_fix(sizing, origin, logits, classes)
        raise CompileError(where, f"the model ends with {outputs} outputs but "
                           f"dataset '{dataset.name}' has {classes} classes, one-hot targets "
                           f"under {loss}; {fix}")
    if classes > 2 and outputs == 1:
        confusion = two_classes_per_position(spec, lowered, classes - 1, maps=False)
        if confusion:  # a matrix of two classes: refused, as train refuses a file's labels
            raise CompileError(origin, confusion)
        message = one_output_on_classes(loss, classes, f" of '{dataset.name}'")
        lowered.builder.warnings.append(CompileWarning(origin.at_field("units"), message))


def positions_fix(spatial: list[int], labels: list[int], lowered,
                  filters: str = "one filter per class") -> str:
    """What brings a model's output positions (`spatial`: its output's shape past the
    channels) to those of the label maps `labels`."""
    if len(spatial) == len(labels):
        return map_size_fix(spatial, labels, lowered)
    if len(labels) == len(spatial) + 1 and 1 in (labels[0], labels[-1]):  # an axis of 1 more
        maps, index = (labels[1:], "y[:, 0]") if labels[0] == 1 else (labels[:-1], "y[..., 0]")
        return f"save {index}, maps {maps}" + (
            "" if maps == spatial else f"; then {map_size_fix(spatial, maps, lowered)}")
    if 0 < len(labels) < len(spatial):
        if math.prod(labels) == math.prod(spatial):  # maps saved flat, say
            return (f"save the label maps in the output's positions, {spatial} a sample: "
                    f"y.reshape(len(y), {', '.join(map(str, spatial))})")
        return (f"the labels, {labels} a sample, are no maps of the output's positions "
                f"{spatial}: for labels of the whole sample, end the model with a global pool, "
                "or a flatten and a dense layer")
    sample = list(lowered.graph.inputs[0].type.shape[1:])
    if len(sample) - 1 < len(labels):  # samples [C, L] for maps [H, W]; vectors for any
        return (f"the samples {sample} have no {len(labels)}-D positions to label: give one "
                f"label per sample, y [N], or samples [channels, {', '.join(map(str, labels))}]")
    return ("a flatten, dense, global pool or reshape took the positions away: keep them, and "
            f"end with a convolution of kernel_size 1 and {filters}")


def map_size_fix(spatial: list[int], labels: list[int], lowered) -> str:
    """What brings output maps of `spatial` to the size of label maps of `labels` (as many
    axes), for the model `lowered`: shared by the named datasets' check and the data's."""
    scales = shrink_factors(spatial, labels)
    return (_shrink_fix(scales, spatial, labels, lowered) if scales
            else _growth_fix(spatial, labels, lowered))


def _growth_fix(spatial: list[int], labels: list[int], lowered) -> str:
    """What brings output maps smaller than the label maps to their size: an upsample by a
    whole factor, or, a position or two short, the last transposed convolution's
    output_padding where it stays below the stride, else more padding."""
    if len(spatial) == len(labels) and all(spatial):
        if all(n % o == 0 for o, n in zip(spatial, labels)):
            factors = [n // o for o, n in zip(spatial, labels)]
            scale = factors[0] if len(set(factors)) == 1 else factors
            return (f"add {{type: upsample{len(labels)}d, scale: {scale}}} at the end (or "
                    "upsample that much more before it)")
        if all(0 <= n - o <= 2 for o, n in zip(spatial, labels)):
            short = [n - o for o, n in zip(spatial, labels)]
            return (f"the maps fall {'x'.join(map(str, short))} short of the labels: "
                    f"{_few_positions_more(short, lowered)}")
        # the labels need not be the input's size: "upsample back to it" could miss them
        return _no_whole_factor(spatial, labels)
    return "upsample back to the input size (no flatten or dense layer)"


def _few_positions_more(short: list[int], lowered) -> str:
    """The last transposed convolution's output_padding where it stays below the stride, or
    its padding (which crops both sides) less by half the shortfall; else more padding."""
    node = _last_transposed(lowered)
    # only where the layers after it keep its size (a stride or pool after it scales the gain)
    if node is not None and node.outputs[0].type.shape[2:] == lowered.logits.type.shape[2:]:
        attrs = node.attrs
        output_padding = [have + more for have, more in zip(attrs.output_padding, short)]
        if all(value < stride for value, stride in zip(output_padding, attrs.stride)):
            return f"give {node.origin.where()} output_padding: {setting_text(output_padding)}"
        if all(isinstance(pad, int) and more % 2 == 0 and pad >= more // 2
               for pad, more in zip(attrs.pad, short)):
            padding = [pad - more // 2 for pad, more in zip(attrs.pad, short)]
            return f"give {node.origin.where()} padding: {setting_text(padding)}"
    return ("pad the convolutions more (padding: same keeps a stride-1 convolution's size; "
            "nnrun summary shows each layer's output)")


def _last_transposed(lowered):
    """The model's last transposed convolution node, or None."""
    return next((node for node in reversed(lowered.graph.nodes)
                 if node.op.endswith("_transpose")), None)


def _shrink_fix(scales: list[float], spatial: list[int], labels: list[int], lowered) -> str:
    """What brings output maps larger than the label maps to their size: a pool (or an
    upsample less) by a whole factor, or, a position or two over, padding (no pool gives
    18 -> 16)."""
    transposed = _last_transposed(lowered)
    if all(f == int(f) for f in scales):
        factor = setting_text([int(f) for f in scales])
        less = ("upsample less, or " if transposed or any(
            node.op.startswith("upsample") for node in lowered.graph.nodes) else "")
        return (f"the maps are {'x'.join(f'{f:g}' for f in scales)} too large: {less}pool or "
                f"stride down once more ({{type: maxpool{len(labels)}d, pool_size: {factor}}} "
                "at the end)")
    over = [o - n for o, n in zip(spatial, labels)]
    if all(extra <= 2 for extra in over):
        crop = (f"give {transposed.origin.where()} less output_padding or more padding, or "
                if transposed else "")
        return (f"the maps are {'x'.join(map(str, over))} position(s) over the labels: {crop}"
                "give the convolutions padding: same (a stride-1 convolution then keeps its "
                "input's size) or less padding")
    return _no_whole_factor(spatial, labels)


def _no_whole_factor(spatial: list[int], labels: list[int]) -> str:
    scales = [o / n for o, n in zip(spatial, labels)]
    return (f"the maps are {'x'.join(f'{f:.3g}' for f in scales)} the labels' size, not a "
            "whole factor: change the layers' strides, pools or upsampling so that the last "
            f"gives {'x'.join(map(str, labels))} (nnrun summary shows each layer's output)")


def _check_label_positions(origin, lowered, dataset, loss: str = "cross_entropy") -> None:
    """Per-sample labels need scores [classes]; label maps need scores [classes, *map]."""
    logits = lowered.logits.type
    spatial = list(logits.shape[2:])
    labels = list(dataset.label_shape)
    if spatial == labels:
        return
    if not labels:
        raise CompileError(origin, f"{loss} needs class scores [classes], the model ends "
                           f"with shape {per_sample(logits)}; '{dataset.name}' has one label per "
                           "sample: end the model with {type: flatten} and a dense layer, one "
                           "unit per class")
    fix = map_size_fix(spatial, labels, lowered)
    raise CompileError(origin, f"'{dataset.name}' has label maps {labels}, the model ends with "
                       f"{per_sample(logits)}: {loss} wants scores [classes, "
                       f"{', '.join(map(str, labels))}]; {fix}")
