"""Weight initializers, with PyTorch's formulas (fan_in, fan_out as in torch.nn.init), and the
values a spec writes out (compiler/initial_values.py checked their shapes)."""

from __future__ import annotations

import math

import numpy as np

from .archives import DamagedFile, first_not_finite, npz_headers, read_npz
from .checkpoint import CheckpointError
from .options import option


def initial_value(info, rng: np.random.Generator, dtype: str) -> np.ndarray:
    init, shape = info.init, info.shape
    fan_in, fan_out = max(info.fan_in, 1), max(info.fan_out, 1)
    kind = init.type
    if kind == "zeros":
        return np.zeros(shape, dtype)
    if kind == "ones":
        return np.ones(shape, dtype)
    if kind == "constant":
        return np.full(shape, init.value, dtype)
    if kind == "given":
        return _given(init, shape, dtype)
    if kind == "xavier_uniform":
        return _uniform(rng, shape, math.sqrt(6 / (fan_in + fan_out)), dtype)
    if kind == "he_uniform":
        return _uniform(rng, shape, math.sqrt(6 / fan_in), dtype)
    if kind == "uniform":
        return _uniform(rng, shape, init.limit, dtype)
    std = {
        "xavier_normal": math.sqrt(2 / (fan_in + fan_out)),
        "he_normal": math.sqrt(2 / fan_in),
        "lecun_normal": math.sqrt(1 / fan_in),
        "normal": getattr(init, "std", 0.0),
    }[kind]
    return (rng.standard_normal(shape) * std).astype(dtype)


def _given(init, shape, dtype) -> np.ndarray:
    if init.file is None:
        return np.asarray(init.values, dtype=dtype)
    try:
        headers = npz_headers(init.file)
        array = read_npz(init.file, {init.key: headers[init.key]})[init.key]
    except (DamagedFile, KeyError) as error:
        raise _refused(init, f"cannot read array '{init.key}' ({error})") from None
    if array.shape != shape:
        raise _refused(init, f"array '{init.key}' changed to shape {list(array.shape)} since "
                             "the spec was checked")
    if first_not_finite({init.key: array}):
        raise _refused(init, f"array '{init.key}' holds nan or inf; init_from needs finite "
                             "weights (a checkpoint from before the loss diverged)")
    with np.errstate(over="ignore"):  # said below, as one line
        values = array.astype(dtype)
    if first_not_finite({init.key: values}):
        raise _refused(init, f"array '{init.key}' holds values beyond the range of {dtype} (at "
                             f"most {float(np.finfo(dtype).max):.4g} in size); give smaller "
                             f"values, or train with {option('--set', 'dtype=float64')}")
    return values


def _refused(init, problem: str) -> CheckpointError:
    """An init_from file's array that cannot begin the model, with the spec's init_from (its
    `origin`) for the command to say it there."""
    error = CheckpointError(f"{init.file}: {problem}")
    error.origin = init.origin
    return error


def _uniform(rng, shape, limit, dtype) -> np.ndarray:
    return rng.uniform(-limit, limit, shape).astype(dtype)


def init_params(infos: dict, seed: int, dtype: str) -> dict[str, np.ndarray]:
    """Every parameter and buffer in declaration order from one generator seeded by `seed`."""
    rng = np.random.default_rng(seed)
    return {name: initial_value(info, rng, dtype) for name, info in infos.items()}
