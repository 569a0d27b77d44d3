"""Training-time augmentations of one batch [N, C, ...], drawn from the caller's Generator."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from nnrun.compiler.shapes import as_tuple

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
    """Moves each sample by up to max_shift pixels along every spatial axis, filling with zeros
    (augment_batch makes them the background)."""
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
    # Drawn in float64 whatever the data's dtype, as the initializers draw: NumPy's float32
    # normals are other numbers, and a float32 run would not see its float64 check's data.
    return x + (std * rng.standard_normal(x.shape)).astype(x.dtype)


def random_crop(x: np.ndarray, spec: Any, rng: np.random.Generator) -> np.ndarray:
    """Pads each sample with `padding` zeros on every side of its spatial axes, then keeps a
    window of `size` (default: the sample's own size) at a random position."""
    padding = int(field(spec, "padding", 2))
    axes = spatial_axes(x, "random_crop")
    spatial = x.shape[2:]
    size = field(spec, "size", None)
    size = spatial if size is None else as_tuple(size, len(axes))
    padded = [n + 2 * padding for n in spatial]
    if len(size) != len(axes) or any(s > p for s, p in zip(size, padded)):
        raise DataError(f"random_crop size {list(size)} does not fit samples {list(spatial)} "
                        f"padded by {padding} ({padded})")
    source = np.pad(x, [(0, 0), (0, 0)] + [(padding, padding)] * len(axes))
    starts = np.stack([rng.integers(0, p - s + 1, size=len(x)) for s, p in zip(size, padded)], 1)
    cropped = np.empty((*x.shape[:2], *size), dtype=x.dtype)
    for index, start in enumerate(starts):
        window = tuple(slice(begin, begin + s) for begin, s in zip(start, size))
        cropped[index] = source[(index, slice(None)) + window]
    return cropped


def random_rotation(x: np.ndarray, spec: Any, rng: np.random.Generator) -> np.ndarray:
    """Turns each 2-D sample about its centre by an angle drawn uniformly from
    [-degrees, degrees], with bilinear interpolation; pixels from outside the sample are 0."""
    degrees = float(field(spec, "degrees", 10.0))
    if x.ndim != 4:
        raise DataError(f"random_rotation turns 2-D samples [C, H, W], got samples of shape "
                        f"{list(x.shape[1:])}")
    angles = np.deg2rad(rng.uniform(-degrees, degrees, size=len(x)))
    return rotate(x, angles)


def rotate(x: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Each sample [C, H, W] of x turned about its centre by its angle (radians; a positive
    angle turns clockwise as an image is shown, row 0 at the top)."""
    height, width = x.shape[2:]
    rows, cols = np.meshgrid(np.arange(height) - (height - 1) / 2,
                             np.arange(width) - (width - 1) / 2, indexing="ij")
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    # Each output pixel reads the input where the inverse rotation takes it.
    source_rows = cos * rows - sin * cols + (height - 1) / 2
    source_cols = sin * rows + cos * cols + (width - 1) / 2
    return _bilinear(x, source_rows, source_cols)


def _bilinear(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """x [N, C, H, W] read at fractional positions rows, cols [N, H', W']; 0 outside."""
    n, channels, height, width = x.shape
    top, left = np.floor(rows).astype(int), np.floor(cols).astype(int)
    down, right = rows - top, cols - left
    result = np.zeros((n, channels, *rows.shape[1:]), dtype=np.float64)
    batch = np.arange(n)[:, None, None]
    for dr, row_weight in ((0, 1 - down), (1, down)):
        for dc, col_weight in ((0, 1 - right), (1, right)):
            r, c = top + dr, left + dc
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            values = x[batch, :, np.clip(r, 0, height - 1), np.clip(c, 0, width - 1)]
            weight = row_weight * col_weight * inside  # [N, H', W']
            result += np.moveaxis(values, -1, 1) * weight[:, None]
    return result.astype(x.dtype)


AUGMENTATIONS: dict[str, Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]] = {
    "random_shift": random_shift,
    "random_flip": random_flip,
    "gaussian_noise": gaussian_noise,
    "random_crop": random_crop,
    "random_rotation": random_rotation,
}


# Those that bring in pixels from outside the sample, which hold the background.
FILLING = ("random_shift", "random_crop", "random_rotation")


def augment_batch(x: np.ndarray, augment_specs: Any, rng: np.random.Generator,
                  background: Any = 0.0) -> np.ndarray:
    """Applies the augmentations in order; the input batch is never modified. `background`:
    what a raw 0 becomes after preprocessing (one value per channel, Preprocessing.zero), the
    value of pixels moved in from outside the sample, as `eval --shift` moves the raw images.
    Each moves or mixes pixels channel by channel with weights summing to one inside the
    sample, so moving x - background and adding it back fills with it, rotation's border
    pixels included."""
    background = np.asarray(background, dtype=x.dtype)
    for spec in augment_specs or ():
        kind = field(spec, "type")
        if kind not in AUGMENTATIONS:
            raise DataError(f"unknown augmentation {kind!r}; known: {', '.join(AUGMENTATIONS)}")
        if kind in FILLING and background.any():  # in float64: float32 pixels it keeps are x's
            wide = background.astype(np.float64)
            moved = AUGMENTATIONS[kind](x.astype(np.float64) - wide, spec, rng)
            x = (moved + wide).astype(x.dtype)
        else:
            x = AUGMENTATIONS[kind](x, spec, rng)
    return x
