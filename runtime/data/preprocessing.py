"""What the data pipeline fits on the training split and applies to every input: normalisation
(shift and scale) and the `permute_features` permutation.

Training stores it in the run directory (preprocessing.npz) so that `predict`, `eval` and the
Python API give a trained model the inputs it was trained on, not raw ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnrun.notices import shell_word, warn

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
    file: Path | None = None  # the run's preprocessing.npz it was read from

    def zero(self) -> np.ndarray:
        """What a raw 0 becomes (-shift / scale: one value per channel, or one in all), the
        background that augmentations move into a sample. The permutation is left out: it
        moves features, not values."""
        if self.normalizer is None:
            return np.zeros(())
        return -np.asarray(self.normalizer.shift, np.float64) / self.normalizer.scale

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


def preprocessing_digest(preprocessing: Preprocessing) -> str:
    """SHA-256 of the fitted arrays (not of the file, whose zip entries carry times): what a
    checkpoint keeps, to tell the preprocessing.npz it was trained with."""
    digest = hashlib.sha256()
    fields = {"permutation": preprocessing.permutation}
    if preprocessing.normalizer is not None:
        fields.update(shift=preprocessing.normalizer.shift, scale=preprocessing.normalizer.scale)
    for name, value in sorted(fields.items()):
        if value is not None:
            value = np.ascontiguousarray(value)
            digest.update(f"{name} {value.dtype.str} {value.shape};".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def save_preprocessing(run_dir: Path, preprocessing: Preprocessing) -> None:
    arrays = {"meta": np.array(json.dumps({"version": VERSION}))}
    if preprocessing.normalizer is not None:
        arrays["shift"] = np.asarray(preprocessing.normalizer.shift)
        arrays["scale"] = np.asarray(preprocessing.normalizer.scale)
    if preprocessing.permutation is not None:
        arrays["permutation"] = preprocessing.permutation
    write_atomically(Path(run_dir) / FILE_NAME, lambda stream: np.savez(stream, **arrays))


def load_preprocessing(run_dir: Path, sample_shape: tuple[int, ...], dtype: str,
                       spec: Any, checkpoint: tuple[str, str] | None = None
                       ) -> Preprocessing | None:
    """The run's stored preprocessing, checked against the model's `sample_shape` and `dtype`
    and against what the run's `spec` fits, or None for a run trained before nnrun stored
    it. `checkpoint`: (its file name, the preprocessing_digest it keeps): the file must be
    that one, which is used where spec.yaml changed since (a resume stopped before its first
    epoch, or an edit)."""
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
        raise DataError(f"{path}: not a readable preprocessing file ({error}); {REFIT}") from None
    problem = stored_problem(arrays, tuple(sample_shape), dtype)
    if problem:
        raise DataError(f"{path}: {problem}; {REFIT}")
    stored = Preprocessing(normalizer, arrays.get("permutation"), path)
    own = checkpoint is not None and preprocessing_digest(stored) == checkpoint[1]
    at_odds = _spec_problem(arrays, spec, int(np.prod(sample_shape)))
    if at_odds and not own:
        raise DataError(f"{path}: {at_odds}; {REFIT}")
    if at_odds:  # the checkpoint's own, spec.yaml changed since
        warn(f"{path}: {at_odds}; it is what the checkpoint was trained with (spec.yaml "
             "changed since, by a resume stopped before its first epoch or by hand), so the "
             "inputs are preprocessed as the checkpoint's were; a resume trains with the change")
    elif checkpoint is not None and not own:  # a run killed between the two writes
        raise DataError(
            f"{path}: is not the preprocessing {checkpoint[0]} was trained with (edited, or the "
            "run stopped between writing the two); resume the run to write it again: nnrun "
            f"train {shell_word(str(Path(run_dir) / 'spec.yaml'))} --resume "
            f"{shell_word(str(run_dir))}")
    return stored


REFIT = "delete it to fit the preprocessing again from the run's data"


def stored_problem(arrays: dict[str, np.ndarray], sample_shape: tuple[int, ...],
                   dtype: str) -> str | None:
    """What is wrong with the stored fields for samples of `sample_shape` of a `dtype` model,
    or None."""
    if "scale" in arrays and "shift" not in arrays:
        return "has 'scale' but no 'shift'"
    problems = [_statistic_problem(name, arrays[name], sample_shape, dtype)
                for name in ("shift", "scale") if name in arrays]
    if "permutation" in arrays:
        problems.append(_permutation_problem(arrays["permutation"], sample_shape))
    return next((problem for problem in problems if problem), None)


def fits_preprocessing(spec: Any) -> bool:
    """Whether training fits anything to apply to the inputs: normalisation statistics, or a
    permutation of the features."""
    return spec.data is not None and (
        option(spec.data, "normalize", "standard") != "none"
        or bool(option(spec.data, "permute_features")))


def _spec_problem(arrays: dict[str, np.ndarray], spec: Any, sample_size: int) -> str | None:
    """A file that is not what the spec fits (another run's, or one written by hand) would
    feed the model other inputs than it was trained on, without a word."""
    if spec.data is None:
        return None
    normalize = option(spec.data, "normalize", "standard")
    if (normalize == "none") == ("shift" in arrays):
        held = "holds" if "shift" in arrays else "has no"
        return f"{held} fitted 'shift' and 'scale', though spec.yaml has normalize: {normalize}"
    permute = option(spec.data, "permute_features")
    expected = feature_permutation(permute, spec.seed, sample_size)
    stored = arrays.get("permutation")
    if expected is None and stored is None:
        return None
    setting = f"permute_features: {json.dumps(bool(permute) if expected is None else permute)}"
    if expected is None or stored is None:
        held = "holds a" if stored is not None else "has no"
        return f"{held} 'permutation', though spec.yaml has {setting}"
    if not np.array_equal(stored, expected):
        return f"holds another 'permutation' than spec.yaml's {setting} (seed {spec.seed}) gives"
    return None


def _statistic_problem(name: str, value: np.ndarray, sample_shape: tuple,
                       dtype: str) -> str | None:
    # Fitted statistics are one number, or one per channel/feature kept as a broadcastable
    # axis: they must broadcast over a sample without changing its shape.
    batch = (1, *sample_shape)
    if value.dtype.kind not in "iuf":
        return f"'{name}' holds {value.dtype}, not numbers"
    if value.ndim > len(batch) or _broadcast(value.shape, batch) != batch:
        return (f"'{name}' has shape {list(value.shape)}, which does not fit samples of shape "
                f"{list(sample_shape)}")
    if not np.isfinite(value).all():
        return f"'{name}' holds NaN or inf"
    if name != "scale":  # the shift is subtracted in float64, before the cast
        return None
    largest, held = float(np.abs(value).max(initial=0)), float(np.finfo(dtype).max)
    if largest > held:  # cast to the model's dtype, it divides: inf would zero every input
        return (f"'scale' holds {largest:g}, beyond the range of the model's {dtype} (at most "
                f"{held:.4g} in size)")
    if not (value.astype(dtype) > 0).all():  # 1e-300 is 0 in float32
        return f"'scale' holds {value.min():g}; a scale must be greater than 0 in {dtype}"
    return None


def _broadcast(shape: tuple, batch: tuple) -> tuple | None:
    try:
        return np.broadcast_shapes(shape, batch)
    except ValueError:
        return None


def _permutation_problem(value: np.ndarray, sample_shape: tuple) -> str | None:
    size = int(np.prod(sample_shape))
    if value.dtype.kind not in "iu" or value.shape != (size,):
        return (f"'permutation' is {value.dtype} {list(value.shape)}; samples of shape "
                f"{list(sample_shape)} need {size} integers")
    if not np.array_equal(np.sort(value), np.arange(size)):
        return f"'permutation' is not a permutation of 0..{size - 1} (it repeats or skips indices)"
    return None
