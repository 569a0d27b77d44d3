"""Whether a dataset's targets fit the spec's loss: integer classes for cross-entropy, real
values (one per output) for mse, mae and huber. Messages name the fix."""

from __future__ import annotations

import numpy as np

from nnrun.compiler.checks import tracked_metrics
from nnrun.compiler.output_checks import map_size_fix, output_count_fix
from nnrun.compiler.schema import CLASS_LABEL_LOSSES, CLASS_METRICS

from .errors import DataError
from .sources import are_class_labels

# the losses that read labels, not values
LABEL_LOSSES = (*CLASS_LABEL_LOSSES, "binary_cross_entropy")


def check_targets_fit(spec, data, lowered, where: str) -> None:
    if data.task != "regression":
        return
    loss, output_shape = spec.loss.type, lowered.logits.type.shape[1:]
    y = data.train.y
    if loss in LABEL_LOSSES and y.ndim >= 4 \
            and are_class_labels(y, getattr(spec.loss, "ignore_index", None)):
        # float maps of 4 or more axes are read as values: [N, 1, H, W] masks, say (0/1 maps
        # shaped like the output are binary_cross_entropy's own)
        alike = list(y.shape[1:]) == list(output_shape[1:]) or (
            loss == "binary_cross_entropy" and list(y.shape[1:]) == list(output_shape))
        index = ("y.astype(int)" if alike
                 else "y[:, 0].astype(int)" if y.shape[1] == 1
                 else "y[..., 0].astype(int)" if y.shape[-1] == 1 else None)
        raise DataError(f"{where}: the labels are {list(y.shape[1:])} per sample, floats read "
                        f"as values; {loss} takes label maps, a whole number per position: "
                        f"{f'save {index}' if index else 'save one map per sample, as integers'}")
    if loss in LABEL_LOSSES and y.ndim == 2 and are_class_labels(y):
        # whole numbers saved as floats [N, k]: regression targets, unless the loss says not
        if y.shape[1] == 1 and tuple(output_shape[1:]) != (1,):  # a column of class labels
            raise DataError(multi_label_message(where, [1], loss=loss))
        marks = (0, 1, getattr(spec.loss, "ignore_index", None))
        others = np.unique(y[~np.isin(y, [mark for mark in marks if mark is not None])])
        if len(output_shape) == 1 and loss == "binary_cross_entropy" and others.size:
            raise DataError(f"{where}: the labels are {list(y.shape[1:])} per sample, floats "
                            f"holding {', '.join(f'{v:g}' for v in others[:3])} beside 0 and 1; "
                            f"{loss} takes several 0/1 labels a sample, as integers (for one of "
                            "k classes a sample, use y [N] with cross_entropy)")
        if len(output_shape) == 1 and loss == "binary_cross_entropy":
            if is_multi_label(spec, y, output_shape):
                raise DataError(f"{where}: the labels are {list(y.shape[1:])} per sample, "
                                f"floats read as values; {loss} takes several 0/1 labels a "
                                "sample as integers: save y.astype(int)")
            raise DataError(multi_label_message(where, list(y.shape[1:]), spec, lowered))
        raise DataError(f"{where}: {loss} takes float labels [N, k] as real values; save 1-D "
                        "label maps [N, L] as integers (y.astype(int))")
    if loss in LABEL_LOSSES and are_plus_minus_one(y):
        raise DataError(f"{where}: {plus_minus_one_message(loss)}")
    if loss in LABEL_LOSSES:
        value = _first_value_that_is_not_a_class(data)
        what = (f"hold {value:g}, below 0; number the classes from 0" if value == round(value)
                else f"are real values (e.g. {value:g})")
        labels = "labels 0 or 1" if loss == "binary_cross_entropy" else \
            "integer class labels 0..k-1"
        raise DataError(f"{where}: {loss} needs {labels}, but the labels {what}; for "
                        "regression targets use loss: mse (or mae, huber)")
    per_sample = int(np.prod(data.train.y.shape[1:]))
    outputs = int(np.prod(output_shape))
    if per_sample == 0:
        raise DataError(f"{where}: the targets are empty ({list(data.train.y.shape)}: no value "
                        "per sample); give y one value per output, [N] or [N, k]")
    if per_sample != outputs:
        targets = (f"are {list(y.shape[1:])} per sample ({per_sample} "
                   f"value{'s' * (per_sample != 1)})" if y.ndim > 1
                   else "have one value per sample")
        raise DataError(f"{where}: the targets {targets}, the model's outputs are "
                        f"{list(output_shape)} ({outputs} value{'s' * (outputs != 1)}); "
                        f"{_target_count_fix(spec, lowered, y.shape[1:], per_sample)}")
    target_shape = tuple(y.shape[1:])
    if not laid_out_as_outputs(target_shape, tuple(output_shape)):
        raise DataError(f"{where}: the targets are {list(target_shape)} per sample, the outputs "
                        f"{list(output_shape)}: save y in the outputs' layout, [N, "
                        f"{', '.join(map(str, output_shape))}]"
                        f"{' (channels first)' if len(output_shape) > 1 else ''}")
    class_metrics = [m.type for m in tracked_metrics(spec, data.task) if m.type in CLASS_METRICS]
    if class_metrics:
        raise DataError(f"{where}: the metric {class_metrics[0]} needs class labels, the targets "
                        "are real values; use train.metrics: [mae] (or mse)")


def _target_count_fix(spec, lowered, target_shape: tuple, per_sample: int) -> str:
    """What gives the model one output per target: as many units, or output maps of as many
    channels where the targets are maps over the outputs' positions."""
    output_shape = lowered.logits.type.shape[1:]
    if len(output_shape) == 1:
        return output_count_fix(spec, lowered, per_sample)
    spatial, target_shape = list(output_shape[1:]), list(target_shape)
    if len(target_shape) <= 1:  # one value, or a vector, per sample beside output maps
        return f"end the model with {{type: flatten}} and a dense layer of units: {per_sample}"
    if spatial in (target_shape[-len(spatial):], target_shape[:len(spatial)]):
        # [H, W], [C, H, W] or [H, W, C] over the outputs' positions: C channels
        return output_count_fix(spec, lowered, per_sample // int(np.prod(spatial)))
    if len(target_shape) in (len(spatial), len(spatial) + 1):
        return map_size_fix(spatial, target_shape[-len(spatial):], lowered)
    return "make the model's output as large as the targets (nnrun summary shows each layer's)"


def laid_out_as_outputs(target: tuple, output: tuple) -> bool:
    """Whether one sample's targets, of as many values as the outputs, are laid out as them:
    the same shape, flat ([k]), or for one channel without its axis or with it last ([H, W] or
    [H, W, 1] for [1, H, W]: the same order). Others of that size ([H, W, C] for [C, H, W])
    would be read in another order."""
    forms = {output, (int(np.prod(output)),)}
    if output[:1] == (1,):
        forms |= {output[1:], output[1:] + (1,)}
    return target in forms


def is_multi_label(spec, y: np.ndarray, outputs: tuple) -> bool:
    """Several 0/1 labels a sample under binary_cross_entropy, one per output of a vector:
    y [N, k] for units: k (k >= 2), each output a yes/no of its own (PyTorch's
    BCEWithLogitsLoss on such targets). The loader reads integers [N, k] as 1-D label maps;
    these are no maps, and accuracy counts each label."""
    outputs = tuple(outputs)
    return (spec.loss.type == "binary_cross_entropy" and len(outputs) == 1 and outputs[0] > 1
            and tuple(y.shape[1:]) == outputs)


def are_plus_minus_one(y: np.ndarray) -> bool:
    """Labels -1 and +1: two classes as a perceptron writes them."""
    return set(np.unique(y).tolist()) == {-1, 1}


def plus_minus_one_message(loss: str) -> str:
    needs = "labels 0 or 1" if loss == "binary_cross_entropy" else "class labels 0..k-1"
    return (f"{loss} needs {needs}, but the labels are -1 and +1, two classes as a perceptron "
            "writes them: save them as 0 and 1, (y > 0).astype(int)")


def one_hot_message(where: str, loss: str, classes: int) -> str:
    if loss == "binary_cross_entropy" and classes > 2:
        return (f"{where}: the labels are one-hot, [N, {classes}]: {classes} classes, where "
                f"binary_cross_entropy takes two; use loss: cross_entropy, units: {classes}, "
                "and save y.argmax(axis=1), one class index per sample")
    label = "one 0/1 label" if loss == "binary_cross_entropy" else "one class index"
    return (f"{where}: the labels are one-hot, [N, {classes}]; {loss} takes {label} per "
            "sample, y [N]: save y.argmax(axis=1)")


def multi_label_message(where: str, label_shape: list, spec=None, lowered=None,
                        loss: str = "binary_cross_entropy") -> str:
    """[N, k] labels beside a vector output of another size (of the model `lowered`): several
    0/1 labels a sample (multi-label) need as many outputs; [N, 1] is one label each, in a
    column."""
    if label_shape == [1]:  # one label each, in a column
        label = "one 0/1 label" if loss == "binary_cross_entropy" else "one class label"
        return (f"{where}: the labels are a column, [N, 1]; {loss} takes {label} per sample "
                "as y [N]: save y.ravel()")
    count, outputs = label_shape[0], lowered.logits.type.shape[1:]
    fix = (output_count_fix(spec, lowered, count) if len(outputs) == 1 else
           f"end the model with {{type: flatten}} and a dense layer of units: {count}")
    return (f"{where}: the labels are {label_shape} per sample (several 0/1 labels each), the "
            f"model ends with {list(outputs)}; binary_cross_entropy needs one output per "
            f"label: {fix} (for one of {count} classes a sample, use y [N] with "
            "cross_entropy)")


def _first_value_that_is_not_a_class(data) -> float:
    """In any split: one a validation_split held out is as wrong as one left to train on."""
    splits = [split.y.ravel() for split in (data.train, data.val, data.test) if split is not None]
    values = np.concatenate(splits)
    return float(next((v for v in values if not are_class_labels(np.array([v]))), values[0]))
