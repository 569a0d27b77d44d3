"""What the data pipeline fits on the training split and applies to every input: normalisation
(shift and scale) and the `permute_features` permutation.

Training stores it in the run directory (preprocessing.npz) so that `predict`, `eval` and the
Python API give a trained model the inputs it was trained on, not raw ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..archives import DamagedFile, npz_headers, read_npz
from ..files import write_atomically
from .errors import DataError
from .sources import option
from .splits import Normalizer, feature_permutation, fit_normalizer, permute_features

FILE_NAME = "preprocessing.npz"
VERSION = 1
LIMIT_BYTES = 1 << 30  # statistics and a permutation of one sample's features


@dataclass(frozen=True)
class Preprocessing:
    """Applied in this order: (x - shift) / scale, then the permutation of each sample's
    features."""

    normalizer: Normalizer | None = None
    permutation: np.ndarray | None = None

    def apply(self, x: np.ndarray, dtype: str) -> np.ndarray:
        x = self.normalizer.apply(x, dtype) if self.normalizer else np.asarray(x).astype(dtype)
        return permute_features(x, self.permutation) if self.permutation is not None else x


IDENTITY = Preprocessing()


def fit_preprocessing(train_x: np.ndarray, data_spec: Any, seed: int) -> Preprocessing:
    """Statistics from the training split only; the permutation from the spec's seed."""
    sample_size = int(np.prod(train_x.shape[1:]))
    return Preprocessing(fit_normalizer(train_x, option(data_spec, "normalize", "standard")),
                         feature_permutation(option(data_spec, "permute_features"), seed,
                                             sample_size))


def save_preprocessing(run_dir: Path, preprocessing: Preprocessing) -> None:
    arrays = {"meta": np.array(json.dumps({"version": VERSION}))}
    if preprocessing.normalizer is not None:
        arrays["shift"] = np.asarray(preprocessing.normalizer.shift)
        arrays["scale"] = np.asarray(preprocessing.normalizer.scale)
    if preprocessing.permutation is not None:
        arrays["permutation"] = preprocessing.permutation
    write_atomically(Path(run_dir) / FILE_NAME, lambda stream: np.savez(stream, **arrays))


def load_preprocessing(run_dir: Path) -> Preprocessing | None:
    """The run's stored preprocessing, or None for a run trained before nnrun stored it."""
    path = Path(run_dir) / FILE_NAME
    if not path.exists():
        return None
    try:
        headers = npz_headers(path)
        too_big = [name for name, header in headers.items() if header.size_bytes > LIMIT_BYTES]
        if too_big:
            raise DamagedFile(f"'{too_big[0]}' declares more than {LIMIT_BYTES:,} bytes")
        arrays = read_npz(path, headers)
        normalizer = Normalizer(arrays["shift"], arrays["scale"]) if "shift" in arrays else None
    except (DamagedFile, KeyError) as error:
        raise DataError(f"{path}: not a readable preprocessing file ({error}); delete it to fit "
                        "the preprocessing again from the run's data") from None
    return Preprocessing(normalizer, arrays.get("permutation"))
