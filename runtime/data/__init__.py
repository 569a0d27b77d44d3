"""Datasets for training: `load_dataset` turns a spec's `data:` section into arrays.

Order of work: load the raw arrays, keep the first `limit` training samples, hold out
`validation_split` of them (seeded), normalize with statistics of the remaining training split
only while casting to the requested dtype, then apply the `permute_features` permutation to
every split (preprocessing.py; a run directory stores what was fitted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nnrun.compiler.datasets import DATASETS, samples_the_data_holds, user_path
from nnrun.compiler.schema import REGRESSION_LOSSES
from nnrun.notices import warn

from .augment import augment_batch
from .errors import DataError
from .fetch import fetch_dataset
from .preprocessing import Preprocessing, fit_preprocessing
from .sources import load_raw, option
from .splits import Dataset, Split, carve_validation, first, not_finite_problem, sample_name

__all__ = ["DataError", "Dataset", "Preprocessing", "Split", "augment_batch", "fetch_dataset",
           "load_dataset"]


def load_dataset(data_spec: Any, *, spec_dir: Path, seed: int, dtype: str = "float32",
                 preprocessing: Preprocessing | None = None,
                 sample_shape: tuple | None = None, loss: Any = None,
                 ignore_index: int | None = None,
                 inputs_of: tuple[str, ...] = ("train", "val", "test")) -> Dataset:
    """`preprocessing` replaces what would be fitted on the training split (a run's stored one);
    `sample_shape`, what it was fitted to: samples of another shape are refused before it;
    `loss`, the spec's: its ignore_index (or `ignore_index`) is a label a user's file may hold
    besides the classes, and its type tells whole-number targets beside real values
    (sources.load_npz);
    `inputs_of`: the splits whose inputs are made (`eval --split test`: the others' labels
    are read, their inputs are placeholders of their shape and dtype, which hold no memory)."""
    path = option(data_spec, "path")
    where = str(Path(spec_dir) / user_path(path)) if path else data_spec.dataset
    if ignore_index is None:
        ignore_index = getattr(loss, "ignore_index", None)
    regression = getattr(loss, "type", None) in REGRESSION_LOSSES
    try:
        return _load(data_spec, Path(spec_dir), seed, dtype, preprocessing, sample_shape,
                     ignore_index, regression, where, inputs_of)
    except MemoryError:  # past the checks of the declared sizes: temporaries, other processes
        raise DataError(f"{where}: out of memory while loading the data and making its copies "
                        "in the model's dtype; use fewer samples, or run where more memory is "
                        "free") from None


def _load(data_spec: Any, spec_dir: Path, seed: int, dtype: str,
          preprocessing: Preprocessing | None, sample_shape: tuple | None,
          ignore_index: int | None, regression: bool, where: str,
          inputs_of: tuple[str, ...]) -> Dataset:
    """`regression`: whether the loss is mse, mae or huber (load_raw)."""
    raw = load_raw(data_spec, spec_dir, ignore_index, regression)
    if sample_shape is not None and tuple(raw.x_train.shape[1:]) != tuple(sample_shape):
        raise DataError(f"{where}: samples have shape {list(raw.x_train.shape[1:])}, the run was "
                        f"trained on {list(sample_shape)}; the file has changed since training "
                        "(evaluate on data of the run's shape)")
    limit = option(data_spec, "limit")
    train = first(Split(raw.x_train, raw.y_train), limit)
    if ("train" in inputs_of and limit is not None and limit > len(raw.x_train)
            and samples_the_data_holds(data_spec) is None):  # else validate's warning
        held = len(raw.x_train)
        warn(f"{where}: data.limit {limit:,} is more than the {held:,} training "
             f"sample{'s' if held != 1 else ''} the data holds: every one is used; lower "
             "data.limit, or remove it")
    if "train" in inputs_of and raw.task == "classification":
        _warn_of_classes_the_limit_leaves_out(raw.y_train, train.y, ignore_index, where,
                                              DATASETS[data_spec.dataset].user_file)
    numbers = {}  # of the samples of splits carved from the file's x and y: messages name them
    if raw.x_val is None:  # an npz's x_val is read only without a validation_split
        train, val, numbers = carve_validation(
            train, float(option(data_spec, "validation_split", 0.0)), seed, where)
    else:
        val = Split(raw.x_val, raw.y_val)
    test = Split(raw.x_test, raw.y_test) if raw.x_test is not None else None
    raw_splits = {name: split for name, split in
                  {"train": train, "val": val, "test": test}.items() if split is not None}
    # a run's preprocessing.npz, whose shift and scale may have been edited
    stored = preprocessing.file if preprocessing is not None and preprocessing.normalizer \
        else None
    # Values past the dtype's range become inf or NaN here; they are refused just below.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if preprocessing is None:
            preprocessing = fit_preprocessing(train.x, data_spec, seed)
        splits = {name: Split(preprocessing.apply(split.x, dtype) if name in inputs_of
                              else _placeholder(split.x.shape, dtype),
                              split.y.astype(dtype) if raw.task == "regression" else split.y)
                  for name, split in raw_splits.items()}
    for name in inputs_of:
        if name in splits:
            _check_finite(f"{where}: the {name} split's", splits[name], raw_splits[name], stored,
                          numbers.get(name), data_spec.dataset == "npz")
    return Dataset(
        train=splits["train"], val=splits.get("val"), test=splits.get("test"),
        input_shape=tuple(raw.x_train.shape[1:]), num_classes=raw.num_classes,
        name=data_spec.dataset, task=raw.task, preprocessing=preprocessing, where=where,
    )


def _warn_of_classes_the_limit_leaves_out(labels: np.ndarray, kept: np.ndarray,
                                          ignore_index: int | None, where: str,
                                          user_file: bool) -> None:
    """data.limit keeps the first samples: of a file sorted by label, one class or a few."""
    if len(kept) == len(labels) or labels.ndim != 1:
        return
    missing = np.setdiff1d(np.unique(labels), np.unique(kept))
    missing = missing[missing != ignore_index] if ignore_index is not None else missing
    if len(missing):
        shown = ", ".join(map(str, missing[:8].tolist())) + (", ..." if len(missing) > 8 else "")
        classes = len(np.unique(labels)) - (ignore_index is not None and ignore_index in labels)
        in_order = user_file and bool(np.all(np.diff(labels) >= 0))
        if len(kept) < classes:  # no order holds them all
            why = f"; {len(kept)} samples cannot hold the {classes} classes:"
        else:
            why = " (the file is sorted by label): shuffle its samples, or" if in_order else ";"
        warn(f"{where}: data.limit {len(kept)} keeps the first {len(kept)} samples, which hold "
             f"no sample of class{'es' * (len(missing) > 1)} {shown}{why} raise data.limit")


def _placeholder(shape: tuple, dtype: str) -> np.ndarray:
    """An array of `shape` and `dtype` that holds one zero (read-only, every entry that one)."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def _check_finite(whose: str, split: Split, raw: Split, stored: Path | None,
                  numbers: np.ndarray | None, npz: bool) -> None:
    """`numbers`: each sample's number in the training data (an npz's x and y), where the split
    was carved from it."""
    x_array, y_array = ("x", "y") if npz else ("the training data",) * 2
    x_numbers, y_numbers = ((None, None) if numbers is None else
                            ((x_array, numbers), (y_array, numbers)))
    x_problem = not_finite_problem(split.x, numbers=x_numbers)
    problem = x_problem or (not_finite_problem(split.y, "targets", numbers=y_numbers)
                            if split.y.dtype.kind == "f" else None)
    if problem:
        # With normalize: standard one huge value spoils every sample; name the huge one.
        values = np.abs(raw.x if x_problem else raw.y).reshape(len(raw.y), -1).max(axis=1)
        largest = int(np.argmax(values))
        fix = ("scale the values down or leave such samples out" if stored is None else
               f"scale the values down, or delete {stored} (its shift and scale, if edited, "
               "may be the cause) to fit it again")
        at = sample_name(largest, x_numbers if x_problem else y_numbers)
        raise DataError(f"{whose} {problem}; its largest value, "
                        f"{values[largest]:.3g} at {at}, may be the cause: {fix}")
