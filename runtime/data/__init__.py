"""Datasets for training: `load_dataset` turns a spec's `data:` section into arrays.

Order of work: load the raw arrays, keep the first `limit` training samples, hold out
`validation_split` of them (seeded), normalize with statistics of the remaining training split
only while casting to the requested dtype, then apply the `permute_features` permutation to
every split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .augment import augment_batch
from .errors import DataError
from .fetch import fetch_dataset
from .sources import RawData, load_raw, option
from .splits import (
    Dataset,
    Split,
    carve_validation,
    feature_permutation,
    first,
    fit_normalizer,
    permute_features,
)

__all__ = ["DataError", "Dataset", "Split", "augment_batch", "fetch_dataset", "load_dataset"]


def load_dataset(data_spec: Any, *, spec_dir: Path, seed: int, dtype: str = "float32") -> Dataset:
    raw = load_raw(data_spec, Path(spec_dir))
    train = first(Split(raw.x_train, raw.y_train), option(data_spec, "limit"))
    train, val = carve_validation(train, float(option(data_spec, "validation_split", 0.0)), seed)
    test = Split(raw.x_test, raw.y_test) if raw.x_test is not None else None
    splits = {"train": train, "val": val, "test": test}
    splits = {name: split for name, split in splits.items() if split is not None}
    splits = transform(splits, data_spec, seed, raw, dtype)
    return Dataset(
        train=splits["train"], val=splits.get("val"), test=splits.get("test"),
        input_shape=tuple(raw.x_train.shape[1:]), num_classes=raw.num_classes,
        name=data_spec.dataset, task=raw.task,
    )


def transform(splits: dict[str, Split], data_spec: Any, seed: int, raw: RawData,
              dtype: str) -> dict[str, Split]:
    normalizer = fit_normalizer(splits["train"].x, option(data_spec, "normalize", "standard"))
    sample_size = int(np.prod(splits["train"].x.shape[1:]))
    permutation = feature_permutation(option(data_spec, "permute_features"), seed, sample_size)
    transformed = {}
    for name, split in splits.items():
        x = normalizer.apply(split.x, dtype) if normalizer else split.x.astype(dtype)
        x = permute_features(x, permutation) if permutation is not None else x
        y = split.y.astype(dtype) if raw.task == "regression" else split.y
        transformed[name] = Split(x, y)
    return transformed
