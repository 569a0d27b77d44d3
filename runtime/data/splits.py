"""Splits and the transforms fitted on them: limit, validation split, normalize, permute."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from nnrun.compiler.datasets import held_out

from .errors import DataError

if TYPE_CHECKING:
    from .preprocessing import Preprocessing

# The data's uses of the spec's seed draw from streams of their own, so adding one never shifts
# another. They are not apart from training's: epoch e draws from default_rng([seed, e])
# (runtime/train.py), so epoch 1 starts where the validation split does and epoch 2 where the
# feature permutation does. Each stays reproducible; parting them would change every run's
# shuffles.
VALIDATION_STREAM = 1
PERMUTATION_STREAM = 2
CHUNK_SAMPLES = 4096


@dataclass
class Split:
    x: np.ndarray  # [N, *input_shape], the requested float dtype
    y: np.ndarray  # [N] int64 labels, or float targets for regression

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return f"Split(x={self.x.dtype}{list(self.x.shape)}, y={self.y.dtype}{list(self.y.shape)})"

    def take(self, indices: np.ndarray | slice) -> Split:
        return Split(self.x[indices], self.y[indices])


@dataclass
class Dataset:
    train: Split
    val: Split | None
    test: Split | None
    input_shape: tuple[int, ...]
    num_classes: int | None
    name: str
    task: str = "classification"  # "classification" | "binary" | "regression"
    preprocessing: Preprocessing | None = None  # fitted on the training split, or given
    where: str = ""  # what messages call it: a user's file as found from here, else `name`

    def background(self):
        """What a raw 0 is after preprocessing: the fill of the augmentations that move pixels
        (Preprocessing.zero)."""
        return self.preprocessing.zero() if self.preprocessing is not None else 0.0

    def splits(self) -> dict[str, Split]:
        named = {"train": self.train, "val": self.val, "test": self.test}
        return {name: split for name, split in named.items() if split is not None}


def first(split: Split, limit: int | None) -> Split:
    return split if limit is None else split.take(slice(0, limit))


def carve_validation(train: Split, fraction: float, seed: int,
                     where: str = "data") -> tuple[Split, Split | None, dict]:
    """Holds out a random `fraction` of train; the rest keeps its original order. `where`:
    the data, as messages name it. Also gives each new split's samples' numbers in train."""
    if not fraction:
        return train, None, {}
    count = held_out(len(train), fraction)
    if count >= len(train):
        fix = "lower data.validation_split" if len(train) > 1 else "remove data.validation_split"
        samples = f"{len(train)} training sample{'s' if len(train) != 1 else ''}"
        raise DataError(f"{where}: validation_split {fraction} of {samples} leaves none to "
                        f"train on; {fix}, or use more samples")
    order = np.random.default_rng([seed, VALIDATION_STREAM]).permutation(len(train))
    numbers = {"train": np.sort(order[count:]), "val": np.sort(order[:count])}
    return train.take(numbers["train"]), train.take(numbers["val"]), numbers


@dataclass(frozen=True)
class Normalizer:
    shift: np.ndarray
    scale: np.ndarray

    def apply(self, x: np.ndarray, dtype: str, chunk: int = CHUNK_SAMPLES) -> np.ndarray:
        """(x - shift) / scale as a new array of `dtype`, one chunk of samples at a time: the
        difference cast to `dtype`, then divided there (the rounding every documented figure
        was measured with); a chunk whose difference overflows `dtype` but whose quotient does
        not (inputs of 1e40 standardised) is computed in float64 and cast once instead.

        Chunks keep the float64 intermediates small; a full-size temporary of MNIST costs
        more in page faults than the arithmetic.
        """
        result = np.empty(x.shape, dtype)
        scale = self.scale.astype(dtype)
        for start in range(0, len(x), chunk):
            block = result[start:start + chunk]
            with np.errstate(over="ignore", invalid="ignore"):
                np.subtract(x[start:start + chunk], self.shift, out=block, casting="unsafe")
                block /= scale
            if not np.isfinite(block).all():  # beyond dtype once shifted: in float64
                with np.errstate(over="ignore", invalid="ignore"):
                    wide = np.subtract(x[start:start + chunk], self.shift, dtype=np.float64)
                    wide /= self.scale
                    block[...] = wide
        return result


# A feature whose std is at most this part of its mean is constant up to float64's rounding
# (a few units of its last place): a spread of 1e6 around 1.7e18 is real and scaled.
CONSTANT_SPREAD = 1e-15


def fit_normalizer(x: np.ndarray, mode: str) -> Normalizer | None:
    """Statistics come from the training split only, so val and test stay unseen."""
    if mode == "none":
        return None
    if mode == "scale":
        low, high = float(x.min()), float(x.max())
        return Normalizer(np.asarray(low), np.asarray(high - low if high > low else 1.0))
    if mode == "standard":
        mean, std = channel_statistics(x)
        # constant up to rounding (relative to the values, whatever their unit), or a spread
        # no float32 model could divide by: scale 1
        spread = np.maximum(CONSTANT_SPREAD * np.abs(mean), np.finfo(np.float32).tiny)
        return Normalizer(mean, np.where(std > spread, std, 1.0))
    raise DataError(f"normalize must be none, scale or standard, not {mode!r}")


def channel_statistics(x: np.ndarray, chunk: int = CHUNK_SAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per channel for images and sequences, per feature for vectors (axis 1)."""
    axes = tuple(axis for axis in range(x.ndim) if axis != 1)
    # One pass over the data; sums are taken around the first sample's values, which lie
    # near the mean, so subtracting the squared mean afterwards loses no precision.
    reference = x[:1].mean(axis=axes, keepdims=True, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is taken up below
        mean, std = _statistics_around(x, reference, None, axes, chunk)
    if np.isfinite(mean).all() and np.isfinite(std).all():
        return mean, std
    # Values past about 1e154 overflow float64's squares (a std of NaN, read as a constant
    # feature, left them unscaled): again in units of each channel's largest value.
    unit = np.abs(x).max(axis=axes, keepdims=True).astype(np.float64)
    unit[unit == 0] = 1.0
    return _statistics_around(x, reference, unit, axes, chunk)


def _statistics_around(x, reference, unit, axes, chunk) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std, from sums of (x - reference) / unit (None: 1, without the divisions)."""
    count = x.size // x.shape[1]
    total = squares = 0.0
    for start in range(0, len(x), chunk):
        block = (x[start:start + chunk] - reference if unit is None
                 else x[start:start + chunk] / unit - reference / unit)
        total = total + block.sum(axis=axes, keepdims=True)
        squares = squares + np.square(block, out=block).sum(axis=axes, keepdims=True)
    offset = total / count
    std = np.sqrt(np.maximum(squares / count - offset**2, 0.0))
    return (reference + offset, std) if unit is None else (reference + offset * unit, std * unit)


def feature_permutation(permute: bool | int | None, seed: int, size: int) -> np.ndarray | None:
    """`true` derives the permutation from the spec's seed; an integer is its own seed."""
    if permute is None or permute is False:
        return None
    generator_seed = [seed, PERMUTATION_STREAM] if permute is True else int(permute)
    return np.random.default_rng(generator_seed).permutation(size)


def permute_features(x: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    # Fancy indexing along axis 1 gives a column-major array, and a reshape keeps it a view:
    # each batch gathered from it then strides across the whole split (30x slower training).
    return np.ascontiguousarray(x.reshape(len(x), -1)[:, permutation].reshape(x.shape))


def first_non_finite_sample(x: np.ndarray) -> int | None:
    """The first sample holding a NaN or inf, or None. By slices of about 4 MB of values, so that
    data full of NaN costs no more memory than a slice (every NaN's index would be 17x the
    data)."""
    if x.dtype.kind != "f":
        return None
    samples = x.reshape(len(x), -1)
    step = max(1, 2**22 // max(1, samples.shape[1]))
    for start in range(0, len(samples), step):
        finite = np.isfinite(samples[start:start + step]).all(axis=1)
        if not finite.all():
            return start + int(np.argmin(finite))
    return None


def not_finite_problem(x: np.ndarray, what: str = "x", after: str = "once preprocessed",
                       first: int = 0, numbers: tuple[str, np.ndarray] | None = None) -> str | None:
    """Why preprocessed inputs in their final dtype cannot be computed with, or None. `first`:
    the number of x's first sample, where x is a batch of the inputs; `numbers`: the file's
    array x was carved from and each sample's number there (sample_name).

    Checked after the preprocessing and the cast: 1e300 is finite in float64, not in float32.
    """
    sample = first_non_finite_sample(x)
    if sample is None:
        return None
    return (f"{what} must hold finite {x.dtype} numbers ({sample_name(first + sample, numbers)} "
            f"is NaN, inf or too large for {x.dtype} {after})")


def sample_name(sample: int, numbers: tuple[str, np.ndarray] | None = None) -> str:
    """`sample 3`, or where the split was carved from a file's array (`numbers`: its name and
    each sample's number there), the number a user finds in the file: `x's sample 47`."""
    if numbers is None:
        return f"sample {sample}"
    array, index = numbers
    return f"{array}'s sample {int(index[sample])}"
