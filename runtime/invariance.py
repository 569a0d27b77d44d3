"""Invariance experiments (`nnrun eval RUN_DIR --shift PIXELS --permute`): a trained model
evaluated on transformed inputs. The transformation acts on the raw samples, as the dataset
gives them, before the run's own preprocessing (normalisation, permute_features): the image is
moved, or its pixels shuffled, and the model then sees it as it saw its training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import DataError
from .data.preprocessing import Preprocessing
from .data.splits import feature_permutation, permute_features


@dataclass(frozen=True)
class InputTransform:
    """shift: pixels per spatial axis, the last ones when fewer are given (positive: right or
    down), vacated pixels filled with 0 (the background of MNIST-like images); permute_seed: one
    fixed shuffle of each sample's features, drawn as data.permute_features draws it (a seed,
    or True for the run's seed)."""

    shift: tuple[int, ...] = ()
    permute_seed: int | bool | None = None

    def describe(self, spatial_axes: int = 2) -> str:
        """`spatial_axes`: the samples' (1: a sequence's positions, 0: a vector's features,
        not pixels)."""
        parts = []
        unit = {0: "feature", 1: "position"}.get(spatial_axes, "pixel")
        if any(self.shift):
            parts.append("shifted " + ", ".join(_move_text(move, axis, unit) for move, axis in
                                                _named_axes(self.shift) if move))
        if self.permute_seed is not None:
            which = "the run's seed" if self.permute_seed is True else f"seed {self.permute_seed}"
            parts.append(f"{unit}s permuted ({which})")
        return ", ".join(parts) or "as they are (shift 0)"

    def apply(self, x: np.ndarray, run_seed: int) -> np.ndarray:
        if any(self.shift):
            x = shift_samples(x, self.shift)
        if self.permute_seed is not None:
            size = int(np.prod(x.shape[1:]))
            x = permute_features(x, feature_permutation(self.permute_seed, run_seed, size))
        return x


def _named_axes(shift: tuple[int, ...]) -> list[tuple[int, str]]:
    names = ("down", "right")[-len(shift):] if len(shift) <= 2 else (None,) * len(shift)
    return list(zip(shift, names))


def _move_text(move: int, axis: str | None, unit: str = "pixel") -> str:
    pixels = f"{abs(move)} {unit}{'s' if abs(move) != 1 else ''}"
    if axis is None:
        return f"{move:+d}"
    opposite = {"down": "up", "right": "left"}[axis]
    return f"{pixels} {axis if move > 0 else opposite}"


def shift_samples(x: np.ndarray, shift: tuple[int, ...]) -> np.ndarray:
    """Every sample [C, ...] moved by `shift` pixels along its last len(shift) axes."""
    spatial = x.shape[2:]
    if x.ndim < 3 or len(shift) > len(spatial):
        count = len(spatial) if x.ndim >= 3 else 0
        axes = f"{count or 'no'} spatial {'axis' if count == 1 else 'axes'}"
        fix = ("; give one number, positions along it (--shift 1)" if count == 1
               else " (samples are [C, L] or [C, H, W])")
        raise DataError(f"--shift {','.join(map(str, shift))}: samples of shape "
                        f"{list(x.shape[1:])} have {axes} to shift along{fix}")
    moves = (0,) * (len(spatial) - len(shift)) + tuple(shift)
    extents = ["high", "wide"][-len(spatial):] if len(spatial) > 1 else ["long"]
    unit = "pixel" if len(spatial) > 1 else "position"
    for move, size, extent in zip(moves, spatial, extents):
        if abs(move) >= size:
            raise DataError(f"--shift {','.join(map(str, shift))} moves every {unit} out of a "
                            f"sample {size} {unit}s {extent}; shift by less")
    shifted = np.zeros_like(x)
    target = [slice(None), slice(None)]
    source = [slice(None), slice(None)]
    for move, size in zip(moves, spatial):
        target.append(slice(max(move, 0), size + min(move, 0)))
        source.append(slice(max(-move, 0), size - max(move, 0)))
    shifted[tuple(target)] = x[tuple(source)]
    return shifted


@dataclass(frozen=True)
class TransformedPreprocessing(Preprocessing):
    """The run's preprocessing, after the transformation of the raw inputs."""

    inner: Preprocessing | None = None
    transform: InputTransform | None = None
    run_seed: int = 0

    def apply(self, x: np.ndarray, dtype: str) -> np.ndarray:
        return self.inner.apply(self.transform.apply(np.asarray(x), self.run_seed), dtype)
