"""Datasets for training: `load_dataset` turns a spec's `data:` section into arrays.

Order of work: load the raw arrays, keep the first `limit` training samples, hold out
`validation_split` of them (seeded), normalize with statistics of the remaining training split
only while casting to the requested dtype, then apply the `permute_features` permutation to
every split (preprocessing.py; a run directory stores what was fitted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .augment import augment_batch
from .errors import DataError
from .fetch import fetch_dataset
from .preprocessing import Preprocessing, fit_preprocessing
from .sources import load_raw, option
from .splits import Dataset, Split, carve_validation, first

__all__ = ["DataError", "Dataset", "Preprocessing", "Split", "augment_batch", "fetch_dataset",
           "load_dataset"]


def load_dataset(data_spec: Any, *, spec_dir: Path, seed: int, dtype: str = "float32",
                 preprocessing: Preprocessing | None = None) -> Dataset:
    """`preprocessing` replaces what would be fitted on the training split (a run's stored one)."""
    raw = load_raw(data_spec, Path(spec_dir))
    train = first(Split(raw.x_train, raw.y_train), option(data_spec, "limit"))
    train, val = carve_validation(train, float(option(data_spec, "validation_split", 0.0)), seed)
    test = Split(raw.x_test, raw.y_test) if raw.x_test is not None else None
    if preprocessing is None:
        preprocessing = fit_preprocessing(train.x, data_spec, seed)
    splits = {"train": train, "val": val, "test": test}
    splits = {name: Split(preprocessing.apply(split.x, dtype),
                          split.y.astype(dtype) if raw.task == "regression" else split.y)
              for name, split in splits.items() if split is not None}
    return Dataset(
        train=splits["train"], val=splits.get("val"), test=splits.get("test"),
        input_shape=tuple(raw.x_train.shape[1:]), num_classes=raw.num_classes,
        name=data_spec.dataset, task=raw.task, preprocessing=preprocessing,
    )
