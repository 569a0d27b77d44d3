"""Training-time augmentations of one batch [N, C, ...], drawn from the caller's Generator."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .errors import DataError


def field(spec: Any, name: str, default: Any = None) -> Any:
    value = spec.get(name) if isinstance(spec, dict) else getattr(spec, name, None)
    return default if value is None else value


def spatial_axes(x: np.ndarray, augmentation: str) -> tuple[int, ...]:
    if x.ndim < 3:
        raise DataError(
            f"{augmentation} needs samples with a spatial axis ([C, L] or [C, H, W]), "
            f"got samples of shape {list(x.shape[1:])}"
        )
    return tuple(range(2, x.ndim))


def random_shift(x: np.ndarray, spec: Any, rng: np.random.Generator) -> np.ndarray:
    """Moves each sample by up to max_shift pixels along every spatial axis, filling with zeros."""
    max_shift = int(field(spec, "max_shift", 2))
    axes = spatial_axes(x, "random_shift")
    shifts = rng.integers(-max_shift, max_shift + 1, size=(len(x), len(axes)))
    padded = np.pad(x, [(0, 0), (0, 0)] + [(max_shift, max_shift)] * len(axes))
    shifted = np.empty_like(x)
    for index, shift in enumerate(shifts):
        # Content moving by +s means reading the padded sample from offset max_shift - s.
        window = tuple(
            slice(max_shift - step, max_shift - step + size)
            for step, size in zip(shift, x.shape[2:])
        )
        shifted[index] = padded[(index, slice(None)) + window]
    return shifted


def random_flip(x: np.ndarray, spec: Any, rng: np.random.Generator) -> np.ndarray:
    """Mirrors each sample with probability 1/2: horizontal along width, vertical along height."""
    axis = field(spec, "axis", "horizontal")
    spatial = spatial_axes(x, "random_flip")
    if axis not in ("horizontal", "vertical"):
        raise DataError(f"random_flip axis must be horizontal or vertical, not {axis!r}")
    if axis == "vertical" and len(spatial) < 2:
        raise DataError("random_flip axis vertical needs 2-D samples [C, H, W]")
    flip_axis = x.ndim - 1 if axis == "horizontal" else x.ndim - 2
    chosen = rng.random(len(x)) < 0.5
    flipped = x.copy()
    flipped[chosen] = np.flip(x[chosen], axis=flip_axis)
    return flipped


def gaussian_noise(x: np.ndarray, spec: Any, rng: np.random.Generator) -> np.ndarray:
    std = float(field(spec, "std", 0.05))
    noise_dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    return x + (std * rng.standard_normal(x.shape, dtype=noise_dtype)).astype(x.dtype)


AUGMENTATIONS: dict[str, Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]] = {
    "random_shift": random_shift,
    "random_flip": random_flip,
    "gaussian_noise": gaussian_noise,
}


def augment_batch(x: np.ndarray, augment_specs: Any, rng: np.random.Generator) -> np.ndarray:
    """Applies the augmentations in order; the input batch is never modified."""
    for spec in augment_specs or ():
        kind = field(spec, "type")
        if kind not in AUGMENTATIONS:
            raise DataError(f"unknown augmentation {kind!r}; known: {', '.join(AUGMENTATIONS)}")
        x = AUGMENTATIONS[kind](x, spec, rng)
    return x
