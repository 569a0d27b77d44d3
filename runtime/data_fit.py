"""Whether a loaded dataset fits the compiled model: sample shapes and label ranges."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from nnrun.compiler.checks import (SPATIAL_AUGMENTATIONS, augmentation_errors,
                                   more_than_binary, one_hot_needs_a_vector,
                                   one_output_on_classes, tracked_metrics)
from nnrun.compiler.datasets import DATASETS, labels_name
from nnrun.compiler.diagnostics import SpecError
from nnrun.compiler.frontend import sample_layout_fix
from nnrun.compiler.initial_values import npz_shapes_or_none
from nnrun.compiler.ir import Origin
from nnrun.compiler.schema import CLASS_METRICS, REGRESSION_LOSSES
from nnrun.compiler.output_checks import (BINARY_ALTERNATIVE, class_scores_fix,
                                          cross_entropy_setting, one_class_message,
                                          one_score_per_position, output_count_fix,
                                          positions_fix, two_classes_per_position)
from nnrun.notices import warn

from .data.errors import DataError
from .data.sources import column_message, is_one_hot
from .data.targets import (LABEL_LOSSES, are_plus_minus_one, check_targets_fit,
                           is_multi_label, laid_out_as_outputs, multi_label_message,
                           one_hot_message, plus_minus_one_message)


class DataFitError(DataError):
    """The data cannot train this model; the message names the file and the setting to change.
    A DataError too, so that `except nnrun.DataError` catches every refusal of the data.
    `fix`, where the remedy is a change to the spec: kept apart from the `problem`, since for a
    trained run (eval) the spec is not what to change."""

    def __init__(self, problem: str, fix: str = ""):
        super().__init__(f"{problem}; {fix}" if fix else problem)
        self.problem, self.fix = problem, fix


def input_shape_known(spec) -> bool:
    """npz/csv samples whose file could not be read for its shape (compiler/frontend.py
    data_file_sample_shape): then the data loads first, and says what is wrong with it."""
    return bool(spec.model.input_shape or DATASETS[spec.data.dataset].input_shape)


def targets_for_model(spec, model, data):
    """The dataset with whole-number targets of exactly the outputs' shape read as values under
    mse, mae or huber: [C, L] for a conv1d's [C, L], [1, H, W] masks, [k] counts for k units.
    The loader reads integers of 2 or more axes as label maps, which have no channel axis and
    never the outputs' shape; these losses compare the values as they are."""
    outputs = tuple(model.lowered.logits.type.shape[1:])
    if (data.task != "segmentation" or spec.loss.type not in REGRESSION_LOSSES
            or tuple(data.train.y.shape[1:]) != outputs or outputs == (1,)):
        return data  # integers [N, 1] for one output: a column of labels, as beside vectors

    def as_values(split):
        return None if split is None else replace(split, y=split.y.astype(spec.dtype))

    return replace(data, task="regression", train=as_values(data.train),
                   val=as_values(data.val), test=as_values(data.test))


def task_for_model(spec, model, data) -> str:
    """The data's task for this model: whole-number labels beyond 0/1 that one output regresses
    as numbers under mse, mae or huber (counts, ratings, prices) are regression targets, tracked
    by mae, unless train.metrics asks for a class metric. Training and eval both ask here."""
    if not _numbers_for_one_output(spec, model, data):
        return data.task
    asked = [m.type for m in spec.train.metrics or ()]
    return "classification" if set(asked) & set(CLASS_METRICS) else "regression"


def _numbers_for_one_output(spec, model, data) -> bool:
    """The user's own labels (a named dataset's are its classes: validate says so), beyond 0/1
    in any split, one per sample, under mse, mae or huber with one output."""
    outputs = tuple(model.lowered.logits.type.shape[1:])
    splits = [s.y for s in (data.train, data.val, data.test) if s is not None and len(s.y)]
    return (DATASETS[spec.data.dataset].user_file and data.task == "classification"
            and spec.loss.type in REGRESSION_LOSSES and outputs == (1,)
            and data.train.y.ndim == 1 and bool(splits) and max(int(y.max()) for y in splits) > 1)


def check_augmentations(source, sample_shape) -> None:
    """Augmentations that cannot apply to these samples stop training before it starts, with
    the errors `nnrun validate` gives, at their positions in the spec."""
    errors = augmentation_errors(source.spec, list(sample_shape))
    if errors:
        raise SpecError([source.diagnostic(origin, message) for origin, message in errors])


def check_data_fits(spec, model, data, training: bool = True) -> None:
    """Labels must fit the output layer; samples must have the model's input shape.
    `training`: also what training alone refuses (augmentations that would misalign maps) and
    the warnings for data that fits but may not be what was meant (eval checks without)."""
    where = data.where or spec.data.path or spec.data.dataset
    expected = tuple(model.lowered.graph.inputs[0].type.shape[1:])
    if tuple(data.input_shape) != expected:
        problem = (f"{where}: samples have shape {list(data.input_shape)}, the model expects "
                   f"{list(expected)}")
        moved = sample_layout_fix(data.input_shape, expected) if data.name == "npz" else None
        if moved:
            raise DataFitError(f"{problem}; {moved}")
        raise DataFitError(problem, f"set model.input_shape to {list(data.input_shape)}")
    outputs = model.lowered.logits.type.shape[1:]
    # labels saved one-hot, integers or floats, for a vector output ([N, L] beside a conv1d's
    # [C, L] are label maps)
    multi_label = is_multi_label(spec, data.train.y, outputs)
    if spec.loss.type in LABEL_LOSSES and len(outputs) == 1 and is_one_hot(data.train.y) \
            and not multi_label:  # one positive label a sample is a multi-label set too
        raise DataFitError(one_hot_message(where, spec.loss.type, data.train.y.shape[1]))
    if data.task == "segmentation" and data.train.y.shape[1:] == (1,) and outputs[1:] != (1,):
        raise DataFitError(column_message(where))  # not maps of one position: [classes, 1]
    check_targets_fit(spec, data, model.lowered, where)
    labels = _labels_in_the_loss(spec, data, where)

    def check_binary(labels: np.ndarray, where: str) -> None:
        if spec.loss.type == "binary_cross_entropy" and not np.isin(labels, (0, 1)).all():
            raise DataFitError(f"{where}: {_beyond_binary(spec, data, labels, model.lowered)}")

    # the values first: what the shapes' checks advise is for 0/1 labels
    _naming_a_held_out_split(spec, data, labels, where, check_binary)
    _check_label_shape(spec, data, model.lowered, where)
    _check_one_hot_outputs(spec, data, model.lowered, where)
    maps = data.task == "segmentation" and not multi_label
    if maps:
        _check_label_maps(labels, where)
    moved = moved_with_inputs(spec, model, data)
    if training and moved:
        _check_no_moving_augmentation(spec, where, moved)
    _naming_a_held_out_split(spec, data, labels, where, lambda labels, where:
                             _check_labels_fit_the_loss(spec, data, labels, model.lowered, where))
    if training and _numbers_for_one_output(spec, model, data):
        _warn_of_numbers(spec, model.lowered, where, labels, task_for_model(spec, model, data))
    if training and task_for_model(spec, model, data) == "regression":  # whole numbers too
        _warn_of_target_scale(data.train.y, where)
    if training and spec.loss.type == "cross_entropy" and outputs[0] == 1:  # labels all 0
        warn(f"{where}: {one_class_message(spec, model.lowered)}")
    elif training and spec.loss.type == "cross_entropy" and data.task == "classification" \
            and DATASETS[spec.data.dataset].user_file and spec.data.limit is None:
        # a named dataset's classes are known; those a limit leaves out, its warning names
        _warn_of_outputs_no_label_names(spec, model.lowered, where, labels)


def _warn_of_outputs_no_label_names(spec, lowered, where: str, labels: np.ndarray) -> None:
    """More outputs than classes the labels name (of every split): no label is of the others.
    A named dataset's class count refuses it (validate)."""
    outputs, named = lowered.logits.type.shape[1], int(labels.max()) + 1
    if outputs <= named:
        return
    classes = f"{named} classes (0..{named - 1})" if named > 1 else "1 class (0)"
    unused = f"s {named}..{outputs - 1}" if outputs - named > 1 else f" {named}"
    warn(f"{where}: the labels of every split name {classes}, the model has {outputs} "
         f"outputs: no label is of output{unused}; {output_count_fix(spec, lowered, named)}, "
         "unless more classes are meant")


def _naming_a_held_out_split(spec, data, labels: np.ndarray, where: str, check) -> None:
    """check(labels, where) of every split's labels as one; where only an npz's own held-out
    split (x_test and y_test, x_val and y_val) fails it, the message names those arrays: a
    user who looks at y finds nothing wrong there."""
    try:
        check(labels, where)
    except DataFitError:
        own = _own_held_out_splits(spec, data)
        if own:
            check(_in_the_loss(spec, data.train.y), where)
            for arrays, split in own.items():
                try:
                    check(_in_the_loss(spec, split.y), f"{where} ({arrays})")
                except DataFitError as error:  # its fix is of that split's labels, not y's
                    raise _of_array(error, arrays.split(", ")[1]) from None
        raise


def _of_array(error: DataFitError, labels: str) -> DataFitError:
    """`error`, its fixes' `y` (save y - 1, y.ravel()) written as the array `labels`."""
    def named(text: str) -> str:
        return re.sub(r"(?<![\w.'])y(?=[\s.\[)-])", labels, text)

    return DataFitError(named(error.problem), named(error.fix))


def _own_held_out_splits(spec, data) -> dict[str, object]:
    """The held-out splits an npz gives in arrays of its own, by their arrays' names."""
    if spec.data is None or spec.data.dataset != "npz":
        return {}
    shapes = npz_shapes_or_none(Path(data.where)) or {}
    labels = labels_name(shapes)
    splits = {"test": data.test, "val": None if spec.data.validation_split else data.val}
    return {f"x_{name}, {labels}_{name}": split for name, split in splits.items()
            if split is not None and f"x_{name}" in shapes}


def _in_the_loss(spec, labels: np.ndarray) -> np.ndarray:
    ignore_index = getattr(spec.loss, "ignore_index", None)
    labels = labels.ravel()
    return labels if ignore_index is None else labels[labels != ignore_index]


def _labels_in_the_loss(spec, data, where: str) -> np.ndarray:
    """Every split's labels but those loss.ignore_index leaves out (some must be left)."""
    splits = (data.train, data.val, data.test)
    labels = np.concatenate([split.y.ravel() for split in splits if split is not None])
    ignore_index = getattr(spec.loss, "ignore_index", None)
    if ignore_index is None:
        return labels
    labels = labels[labels != ignore_index]
    if not len(labels):
        raise DataFitError(f"{where}: every label of the data is loss.ignore_index "
                           f"({ignore_index}): the loss would be 0 and nothing learned",
                           "set ignore_index to the value that marks only the positions to "
                           "leave out")
    for name, split in (("training", data.train), ("validation", data.val),
                        ("test", data.test)):
        if split is not None and split.y.size and (split.y == ignore_index).all():
            leave_out = "" if name == "training" else ", or leave the split out"
            raise DataFitError(f"{where}: every label of the {name} split is loss.ignore_index "
                               f"({ignore_index}): {_NOTHING_MEASURED[name]}; label some of its "
                               f"positions{leave_out}")
    return labels


# What a split whose every label loss.ignore_index leaves out would do: a loss of 0 throughout.
_NOTHING_MEASURED = {
    "training": "nothing would be learned",
    "validation": "its loss of 0 would choose the best epoch, its metrics measure nothing",
    "test": "its loss and metrics would measure nothing"}


def maps_over(targets: tuple, spatial: tuple) -> bool:
    """Whether targets of this shape per sample are maps over `spatial` positions (a sample's
    or the outputs' shape past the channels): label maps, or masks and counts to regress."""
    targets, spatial = tuple(targets), tuple(spatial)
    return bool(spatial) and len(targets) >= len(spatial) and targets[-len(spatial):] == spatial


def moved_with_inputs(spec, model, data) -> str | None:
    """What a move of the inputs (a spatial augmentation; eval's --shift and --permute) would
    leave behind, misaligned: "label maps", "target maps", or None."""
    outputs = model.lowered.logits.type.shape[1:]
    if data.task == "segmentation" and not is_multi_label(spec, data.train.y, outputs):
        return "label maps"
    return "target maps" if _target_maps(data, outputs) else None


def _target_maps(data, outputs: tuple) -> bool:
    """Targets that are maps, position by position, of outputs that are maps: over the
    outputs' positions, or values laid out as the outputs in another accepted form (flat,
    one channel last), which an augmentation's move of the inputs would leave behind too."""
    targets = tuple(data.train.y.shape[1:])
    return maps_over(targets, outputs[1:]) or (
        data.task == "regression" and len(outputs) >= 2 and laid_out_as_outputs(targets, outputs))


def _check_no_moving_augmentation(spec, where: str, maps: str) -> None:
    """Said at the augmentation's entry (its `origin`), which the fix removes."""
    moving = [(index, augmentation.type) for index, augmentation in enumerate(spec.data.augment)
              if augmentation.type in SPATIAL_AUGMENTATIONS]
    if moving:
        index, kind = moving[0]
        error = DataFitError(f"{where}: {kind} would move the pixels but not the {maps}; "
                             "remove it (gaussian_noise keeps them aligned)")
        error.origin = Origin(f"data.augment[{index}]", keys=("data", "augment", index))
        raise error


def _check_label_maps(labels: np.ndarray, where: str) -> None:
    if len(labels) and labels.min() < 0:
        raise DataFitError(f"{where}: label maps hold {int(labels.min())}; classes are 0..k-1 "
                           "(mark pixels to leave out with loss.ignore_index)")


def _check_labels_fit_the_loss(spec, data, labels: np.ndarray, lowered, where: str) -> None:
    loss, maps = spec.loss.type, data.task == "segmentation"
    outputs = lowered.logits.type.shape[1:]
    if loss == "cross_entropy" or (loss == "perceptron" and outputs[0] > 1):
        _check_classes(spec, lowered, where, labels, maps)
    elif loss == "perceptron" and int(labels.max()) > 1:
        top = int(labels.max())
        raise DataFitError(f"{where}: labels go up to {top}, but one output under perceptron "
                           "reads labels 0 and 1 (z >= 0 is class 1)",
                           f"for {top + 1} classes {output_count_fix(spec, lowered, top + 1)}, "
                           "without the step")
    elif loss in REGRESSION_LOSSES and data.task != "regression" and len(outputs) == 1 \
            and outputs[0] > 1:
        _check_classes(spec, lowered, where, labels)  # labels become one-hot targets
    elif loss in REGRESSION_LOSSES and outputs[0] == 1 and (maps or len(outputs) == 1) \
            and len(labels) and labels.max() > 1 and data.task != "regression":
        # a void mark is refused as a value all the same: these losses have no ignore_index
        classes, void = _classes_and_mark(spec, labels)
        _check_two_classes_per_position(spec, lowered, where, classes - 1, maps, void)


def _beyond_binary(spec, data, labels: np.ndarray, lowered) -> str:
    # Class labels by now: real values under a label loss were refused (data/targets.py);
    # negative ones too, but in label maps and several labels a sample, which the loader
    # does not read as classes.
    if any(split is not None and are_plus_minus_one(split.y)
           for split in (data.train, data.val, data.test)):
        return plus_minus_one_message("binary_cross_entropy")
    others = [int(value) for value in np.unique(labels) if value not in (0, 1)]
    if len(others) == 1 and not 0 <= others[0] <= 2:  # 0/1 and one more: 255 often marks a void
        void = others[0]
        return (f"binary_cross_entropy needs 0/1 labels, but the data also holds {void}; to "
                f"leave out the positions labelled {void}, set loss.ignore_index: {void}")
    y, outputs = data.train.y, lowered.logits.type.shape[1:]
    if y.ndim == 2 and y.shape[1] > 1 and not maps_over(y.shape[1:], outputs[1:]):
        return (f"binary_cross_entropy needs 0/1 labels, but the data also holds "
                f"{', '.join(map(str, others[:3]))}: each of several labels a sample is 0 or 1 "
                "(for one of k classes a sample, use y [N] with cross_entropy)")
    classes = int(labels.max()) + 1
    return more_than_binary("the data", classes,
                            class_scores_fix(spec, lowered, classes, maps=y.ndim > 1))


def _warn_of_numbers(spec, lowered, where: str, labels: np.ndarray, task: str) -> None:
    """Whole-number labels one output regresses: said unless train.metrics shows it is meant."""
    low, top = int(labels.min()), int(labels.max())
    more = output_count_fix(spec, lowered, top + 1)
    if task == "classification":  # train.metrics asks for accuracy: 0..top read as classes
        warn(f"{where}: {one_output_on_classes(spec.loss.type, top + 1, fix=more)}; to track "
             "them as numbers, use train.metrics: [mae]")
    elif spec.train.metrics is None:
        warn(f"{where}: {spec.loss.type} with one output regresses the labels {low}..{top} as "
             "numbers, tracked by mae (train.metrics: [mae] says so and silences this); if "
             f"they are classes (indices 0..{top}), {more} (one-hot targets) or "
             "use loss: cross_entropy")


# Targets whose spread is this far from 1 make a loss of that scale: at the usual learning
# rates the steps are far too large (1e6) or too small (1e-6) for the weights. Targets whose
# mean is beyond the spread's upper bound begin with a loss of at least its square, and the
# output layer's bias has to travel that far.
TARGET_SPREAD = (1e-3, 1e3)


def _warn_of_target_scale(y: np.ndarray, where: str) -> None:
    """nnrun normalises the inputs, not the targets (spec-reference.md): said where their
    scale, or their distance from 0 (per output), will keep the run from learning, with the
    usual fix: one divisor where it brings every output's spread within TARGET_SPREAD, else
    each output's own."""
    if not y.size:
        return
    flat = y.reshape(len(y), -1)
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float64: refused on load
        means = np.mean(flat, axis=0, dtype=np.float64)
        spreads = np.std(flat - means, axis=0, dtype=np.float64)  # each around its own mean
        spread = float(np.sqrt(np.mean(spreads**2)))  # of every output's value
    if not np.isfinite(spread):
        return
    low, high = TARGET_SPREAD
    varying = spreads[spreads > 0]
    # the loss's scale: that of all the outputs, or of one far too wide (an output of small
    # spread beside others, a rarely lit pixel, is no scale of the loss's)
    scaled = bool(spread) and not low <= spread <= high or bool((varying > high).any())
    shown = float(f"{spread:.3g}")  # the divisor the advice gives
    # each output by its own spread, where one divisor leaves some beyond the bounds (an
    # output of 1e6 beside one of 1: divided by the spread of both, the second is drowned)
    each = scaled and not ((varying / shown >= low) & (varying / shown <= high)).all()
    divisors = np.where(spreads > 0, spreads, 1.0) if each else shown
    # far from 0, beyond its spread (else dividing is the fix), or far once divided by it
    far = (np.abs(means) > np.maximum(high, spreads)) | \
        (scaled & (np.abs(means) > high * divisors))
    if not (scaled or far.any()):
        return
    center = float(means[np.argmax(np.abs(means))])  # the output farthest from 0
    offset, constant = bool(far.any()), len(varying) < len(spreads)
    said = ([f"mean is {center:.6g}" + ("" if means.size == 1 else " (an output's)")]
            if offset else []) + (
        [f"standard deviations run from {varying.min():.3g} to {varying.max():.3g} (per "
         "output)" if each else f"standard deviation is {spread:.3g}"] if scaled else [])
    # a constant output is divided by 1, once brought to 0
    divisor = ("np.where(y.std(0) > 0, y.std(0), 1)" if constant else "y.std(0)") if each \
        else f"{spread:.3g}"
    subtract = offset or each and constant
    saved = {(True, False): "y - y.mean(0)", (False, True): f"y / {divisor}",
             (True, True): f"(y - y.mean(0)) / {divisor}"}[subtract, scaled]
    warn(f"{where}: the targets' {' and their '.join(said)}; nnrun normalises the inputs, "
         "not the targets, and a loss of that scale trains slowly or not at all: save the "
         f"targets as {saved} and map the predictions back")


def _check_two_classes_per_position(spec, lowered, where: str, top: int, maps: bool,
                                    void: int | None) -> None:
    problem = two_classes_per_position(spec, lowered, top, maps, void)
    if problem:
        raise DataFitError(f"{where}: {problem}")


ABSURD_CLASSES_PER_LABEL = 100


def _check_classes(spec, lowered, where: str, labels: np.ndarray, maps: bool = False) -> None:
    """Labels 0..k-1 for k outputs (a dense layer's units, a convolution's filters for label
    maps [classes, H, W]). `maps`: label maps, where a value such as 255 often marks pixels to
    leave out (loss.ignore_index)."""
    outputs = lowered.logits.type.shape[1]
    top = int(labels.max())
    if top >= outputs and top >= ABSURD_CLASSES_PER_LABEL * len(labels):
        # Far more classes than labels: no output layer makes sense of them; they are likely
        # ids, hashes or an unconverted column, not class indices. (A small split of a task
        # of many classes has more classes than labels too: hence the margin.)
        raise DataFitError(f"{where}: labels go up to {top}, far more classes than the "
                           f"{len(labels):,} labels given; they look wrong: labels are class "
                           "indices 0, 1, ..., k-1 (the model has "
                           f"{outputs} output{'s' * (outputs != 1)})")
    if top >= outputs:
        left_out = (f", or leave out the pixels labelled {top} with loss.ignore_index: {top}"
                    if maps and _a_void_mark(spec, labels, top, outputs) else "")
        from_one = (f"; numbered from 1 (no label 0)? save y - 1, classes 0..{top - 1}"
                    if top == outputs and len(labels) and labels.min() == 1 else "")
        binary = (BINARY_ALTERNATIVE if top == 1 and outputs == 1 and not maps
                  and spec.loss.type == "cross_entropy" else "")
        raise DataFitError(f"{where}: labels go up to {top} but the model has {outputs} "
                           f"output{'s' * (outputs != 1)}",
                           f"{output_count_fix(spec, lowered, top + 1)}{binary}{left_out}"
                           f"{from_one}")


def _a_void_mark(spec, labels: np.ndarray, top: int, outputs: int) -> bool:
    """Whether the label maps' top value looks like a mark of pixels to leave out (255 beside
    classes 0..k-1 the outputs fit), under a loss that can leave them out."""
    others = labels[labels != top]
    return (hasattr(spec.loss, "ignore_index") and top >= 2 * outputs
            and (not others.size or int(others.max()) < outputs))


def _check_one_hot_outputs(spec, data, lowered, where: str) -> None:
    """Under mse, mae and huber, one class label per sample becomes a one-hot target of a
    vector output (compiler/lower.py checks the named datasets before any data); label maps
    are compared as they are, with one score per position."""
    loss = spec.loss.type
    if data.task == "regression" or loss not in REGRESSION_LOSSES:
        return
    outputs = lowered.logits.type.shape[1:]
    label_shape = list(data.train.y.shape[1:])
    if not label_shape and len(outputs) > 1:
        raise DataFitError(f"{where}: " + one_hot_needs_a_vector(loss, "class labels", "classes",
                                                                 list(outputs)))
    spatial = list(outputs[1:])
    if label_shape and outputs[0] != 1 and label_shape == spatial:
        raise DataFitError(_one_score_per_position(spec, data, lowered, where))
    if label_shape and spatial and label_shape in ([1, *spatial], [*spatial, 1]):
        # a channel axis of 1: [1, H, W] is one score per position's layout, [H, W, 1] not
        fixes = ([] if label_shape == [1, *spatial] else ["save y[..., 0]"]) + \
            ([output_count_fix(spec, lowered, 1)] if outputs[0] != 1 else [])
        if fixes:
            raise DataFitError(f"{where}: " + one_score_per_position(
                loss, label_shape, spatial, list(outputs)) + f"; {' and '.join(fixes)}")
    elif label_shape and label_shape != spatial:
        fix = positions_fix(spatial, label_shape, lowered, "one filter")
        raise DataFitError(f"{where}: " + one_score_per_position(
            loss, label_shape, label_shape, list(outputs)) + f" ({fix})")


def _class_count(spec, data) -> tuple[int, int | None]:
    """The classes the training labels name (0..top; those loss.ignore_index leaves out are
    none, and so is a value that marks positions to leave out), for a fix's count, and that
    mark (_void_mark) or None."""
    ignored = getattr(spec.loss, "ignore_index", None)
    labels = data.train.y if ignored is None else data.train.y[data.train.y != ignored]
    return _classes_and_mark(spec, labels)


def _classes_and_mark(spec, labels: np.ndarray) -> tuple[int, int | None]:
    """The classes `labels` name, 0..top but a value marking positions to leave out (at least
    one), and that mark (_void_mark) or None."""
    void = _void_mark(spec, labels)
    classes = labels[labels != void] if void is not None else labels
    return (int(classes.max()) + 1 if classes.size else 1), void


# The least value read as a mark of positions to leave out (255, say) where it stands apart from
# the classes below it; 0..9 beside 4 are classes, some unused.
VOID_MARK_LEAST = 10


def _void_mark(spec, labels: np.ndarray) -> int | None:
    """A top label that stands apart from the classes below it (255 beside 0..2), where no
    loss.ignore_index leaves it out already: a mark of positions to leave out, not a class."""
    if getattr(spec.loss, "ignore_index", None) is not None or not labels.size:
        return None
    top = int(labels.max())
    below = labels[labels != top]
    return top if below.size and top >= max(VOID_MARK_LEAST, 2 * (int(below.max()) + 1)) \
        else None


def _one_score_per_position(spec, data, lowered, where: str) -> str:
    """Every loss but cross_entropy compares label maps as they are (0/1 or numbers)."""
    outputs = lowered.logits.type.shape[1:]
    label_shape = list(data.train.y.shape[1:])
    classes, void = _class_count(spec, data)
    scores = f"its {classes} classes per position" + (
        "" if classes == outputs[0] else f" ({output_count_fix(spec, lowered, classes)})")
    return (f"{where}: "
            + one_score_per_position(spec.loss.type, label_shape, label_shape, list(outputs))
            + f"; {output_count_fix(spec, lowered, 1)}, or use {cross_entropy_setting(void)} "
            f"for {scores}")


def _check_label_shape(spec, data, lowered, where: str) -> None:
    """Label maps [H, W] need an output [classes, H, W] (binary: [1, H, W]); one label per
    sample needs class scores [classes]."""
    if data.task == "regression" or spec.loss.type not in LABEL_LOSSES:
        return
    label_shape = list(data.train.y.shape[1:])
    outputs = lowered.logits.type.shape[1:]
    spatial = list(outputs[1:])
    if spec.loss.type == "binary_cross_entropy" and len(outputs) == 1 and len(label_shape) <= 1:
        _check_labels_per_output(spec, data, lowered, where)
        return
    # y[..., 0] below; not where the output's positions are all of size 1, [1, 1, 1] being
    # the output's own shape as well
    channel_last_of_one = outputs[0] == 1 and label_shape == [*spatial, 1] != list(outputs)
    if spec.loss.type == "binary_cross_entropy" and len(label_shape) == len(outputs) > 1 \
            and not channel_last_of_one:
        # a 0/1 label of each output's own (k maps a sample, [k, H, W]): as a vector's
        if label_shape != list(outputs):
            raise DataFitError(_maps_like_the_output_fix(spec, lowered, label_shape, where))
        _refuse_top_k(spec, data, where, "0/1 label maps", "pixel_accuracy")
        return
    ignored = getattr(spec.loss, "ignore_index", None)
    marks = (0, 1) if ignored is None else (0, 1, ignored)
    if label_shape == list(outputs) and len(outputs) == 1 and np.isin(data.train.y, marks).all():
        raise DataFitError(f"{where}: the labels are {label_shape} per sample, each 0 or 1 "
                           f"(several labels a sample); {spec.loss.type} takes one class a "
                           "sample, y [N]", "for several labels a sample use loss: "
                           "binary_cross_entropy")
    if label_shape == spatial:
        if label_shape and spec.loss.type == "binary_cross_entropy" and outputs[0] != 1:
            raise DataFitError(_one_score_per_position(spec, data, lowered, where))
        if label_shape:
            _refuse_top_k(spec, data, where, "label maps", "pixel_accuracy or mean_iou")
        return
    if not label_shape:
        maps = f", y [N, {', '.join(map(str, spatial))}]" if spatial else ""
        units = 1 if spec.loss.type == "binary_cross_entropy" else _class_count(spec, data)[0]
        raise DataFitError(f"{where}: has one label per sample, the model ends with "
                           f"{list(outputs)}", f"end the model with {{type: flatten}} and a "
                           f"dense layer of units: {units} (or give label maps for "
                           f"segmentation{maps})")
    # a channel axis of 1 around maps that fit: [1, H, W] or [H, W, 1] for [H, W]
    index = ("y[:, 0]" if spatial and label_shape == [1, *spatial]
             else "y[..., 0]" if spatial and label_shape == [*spatial, 1] else None)
    if index:
        raise DataFitError(f"{where}: label maps are {label_shape}, with an axis of 1 the "
                           f"model's {list(outputs)} has no place for; label maps are {spatial} "
                           f"per sample: save {index}.astype(int)")
    one_hot = _one_hot_axis(spec, data.train.y, label_shape, list(outputs))
    if one_hot is not None:
        raise DataFitError(f"{where}: label maps are {label_shape}, one-hot (a 0/1 map per "
                           f"class); {spec.loss.type} takes a class index per position, maps "
                           f"{spatial}: save y.argmax(axis={one_hot}) as y")
    several = spec.loss.type == "binary_cross_entropy" and len(label_shape) == 1
    if several and len(spatial) != 1:  # no 1-D maps of these outputs: several labels a sample
        raise DataFitError(multi_label_message(where, label_shape, spec, lowered))
    scores = "1" if spec.loss.type == "binary_cross_entropy" else "classes"
    also = (f"; or, for several labels a sample, end the model with {{type: flatten}} and a "
            f"dense layer of units: {label_shape[0]}" if several else "")
    raise DataFitError(f"{where}: label maps are {label_shape}, the model ends with "
                       f"{list(outputs)}", f"{spec.loss.type} needs [{scores}, "
                       f"{', '.join(map(str, label_shape))}] "
                       f"({positions_fix(spatial, label_shape, lowered)}){also}")


def _one_hot_axis(spec, y, label_shape: list, outputs: list) -> int | None:
    """The axis of y (1 or -1) holding one-hot class maps ([C, H, W] or [H, W, C] of 0/1 for
    an output of C classes on H x W) under a loss that takes class indices; None otherwise."""
    if spec.loss.type != "cross_entropy" or len(outputs) < 2:
        return None
    classes, spatial = outputs[0], outputs[1:]
    axis = 1 if label_shape == outputs else -1 if label_shape == [*spatial, classes] else None
    if axis is None or not np.isin(y, (0, 1)).all():
        return None
    return axis


def _maps_like_the_output_fix(spec, lowered, label_shape: list, where: str) -> str:
    """k 0/1 maps a sample [k, H, W] against an output of their rank but not their shape:
    its channels, its positions, or maps saved channels last."""
    outputs = list(lowered.logits.type.shape[1:])
    count, maps = label_shape[0], label_shape[1:]
    if label_shape == [*outputs[1:], outputs[0]] and count != outputs[0]:
        what, fixes = "channels last", ["save np.moveaxis(y, -1, 1), the maps channels first"]
    else:
        what = f"{count} 0/1 map{'s' * (count != 1)} a sample"
        fixes = ([output_count_fix(spec, lowered, count)] if count != outputs[0] else []) + (
            [positions_fix(outputs[1:], maps, lowered)] if maps != outputs[1:] else [])
    return (f"{where}: label maps are {label_shape} ({what}), the model ends with {outputs}; "
            "binary_cross_entropy compares each output with the label at its place: "
            f"{', and '.join(fixes)}")


def _check_labels_per_output(spec, data, lowered, where: str) -> None:
    """binary_cross_entropy on a vector output compares each output with a 0/1 label of its
    own: one label a sample for units: 1, k labels a sample (multi-label) for units: k."""
    label_shape = list(data.train.y.shape[1:])
    outputs = lowered.logits.type.shape[1:]
    if is_multi_label(spec, data.train.y, outputs):
        _refuse_top_k(spec, data, where, "several labels a sample", "accuracy (of each label)")
    elif label_shape:
        raise DataFitError(multi_label_message(where, label_shape, spec, lowered))
    elif outputs[0] > 1:  # the API refuses such targets too
        raise DataFitError(f"{where}: one 0/1 label per sample, the model ends with "
                           f"{list(outputs)}; binary_cross_entropy compares each output with a "
                           "label of its own", f"{output_count_fix(spec, lowered, 1)} (or, for "
                           f"{outputs[0]} classes, use loss: cross_entropy)")


def _refuse_top_k(spec, data, where: str, labels: str, instead: str) -> None:
    if any(m.type == "top_k_accuracy" for m in tracked_metrics(spec, data.task)):
        raise DataFitError(f"{where}: top_k_accuracy is for one label per sample; for {labels} "
                           f"use {instead}")
