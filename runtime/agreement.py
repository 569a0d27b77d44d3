"""Whether two executions of a graph agree: the measure `nnrun check-backends` and the
first-step self-check of an unverified path (runtime/step_path.py) both use."""

from __future__ import annotations

import numpy as np

from nnrun.backends import get_backend
from nnrun.compiler.ir import Graph
from nnrun.compiler.passes.dead_code import eliminate_dead_code

from .executor import Executor


def relative_difference(want, have, skip=None) -> float:
    """max |have - want| scaled by max |want|: one number per array, robust to entries near
    zero; `skip`: a mask of entries left out (rounding-sensitive ones, still in the scale).
    Shapes that differ, and integer or boolean arrays that differ at all, give inf."""
    want, have = np.asarray(want), np.asarray(have)
    if want.shape != have.shape:
        return float("inf")
    scale = 0.0
    if skip is not None:
        scale = float(np.max(np.abs(want[np.isfinite(want)]), initial=0.0))
        want, have = want[~skip], have[~skip]
    if want.size == 0:
        return 0.0
    if want.dtype.kind in "biu":
        return 0.0 if np.array_equal(want, have) else float("inf")
    want64, have64 = want.astype(np.float64), have.astype(np.float64)
    finite = np.isfinite(want64)
    # inf where the reference has -inf, or nan where it has inf, is as wrong as a wrong number
    if not (np.array_equal(np.isfinite(have64), finite)
            and np.array_equal(have64[~finite], want64[~finite], equal_nan=True)):
        return float("inf")
    scale = max(float(np.max(np.abs(want64[finite]), initial=0.0)), scale,
                float(np.finfo(np.float32).tiny))  # (a NumPy float32 made the result one)
    return float(np.max(np.abs(have64[finite] - want64[finite]), initial=0.0)) / scale


ROUNDING_NUDGE_ULPS = 4
ROUNDING_NUDGES = 3  # nudges with different signs: an entry of noise moved by none is rare
NOISE_SHARE = 0.1  # an array with more of its entries moved is noise as a whole


def rounding_sensitive(graph: Graph, host_feeds: dict, tolerance: float,
                       first: dict | None = None) -> dict:
    """For each result of `graph` ("output NAME", and updated state by name) with entries that
    multiplying the float feeds by 1 +- a few ulps moves by more than a tenth of `tolerance` (of
    the array's largest magnitude) on NumPy's reference executor, in any of a few such nudges:
    the mask of those entries (all of them when more than NOISE_SHARE moved). Two correct
    backends sum in other orders and differ as much there (a gradient of rounding noise, as a
    bias's before a batchnorm, which Adam turns into a full step of its sign), so such entries
    cannot tell a right kernel from a wrong one. `first`: the results on the feeds as they
    are, when the caller has them already (named_results' names)."""
    executor = Executor(eliminate_dead_code(graph), get_backend("numpy"))

    def run(feeds: dict) -> dict:
        return named_results(executor.run(feeds), np.asarray)

    return sensitive_entries(run, dict(host_feeds), tolerance, first=first)


def sensitive_entries(run, inputs: dict, tolerance: float, first: dict | None = None) -> dict:
    """run(inputs) -> {name: array}: for each result with entries that some nudge of the
    inputs moves beyond a tenth of `tolerance`, their mask (all entries when more than
    NOISE_SHARE of them moved). `first`: run(inputs), when the caller has it already."""
    first = run(inputs) if first is None else first
    masks: dict = {}
    for seed in range(ROUNDING_NUDGES):
        again = run({name: nudged(value, seed) for name, value in inputs.items()})
        for name, value in first.items():
            moved = moved_entries(value, again[name], tolerance)
            if moved is not None:
                masks[name] = moved | masks.get(name, False)
    return {name: np.ones_like(mask) if mask.mean() > NOISE_SHARE else mask
            for name, mask in masks.items()}


def nudged(array, seed: int = 0):
    """A float array times 1 +- a few ulps (signs drawn from `seed`); anything else as it is."""
    array = np.asarray(array)
    if array.dtype.kind != "f":
        return array
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], array.shape)
    return (array * (1 + ROUNDING_NUDGE_ULPS * np.finfo(array.dtype).eps * signs)).astype(
        array.dtype)


def moved_entries(value, nudged_value, tolerance: float):
    """The mask of the float entries a nudge moved by more than a tenth of `tolerance` (of the
    array's largest magnitude), or None when there are none."""
    value = np.asarray(value)
    if value.dtype.kind != "f" or value.shape != np.shape(nudged_value):
        return None
    finite = np.isfinite(value)
    scale = max(float(np.max(np.abs(value[finite]), initial=0.0)), np.finfo(np.float32).tiny)
    moved = ~(np.abs(np.asarray(nudged_value, np.float64) - value) <= tolerance / 10 * scale)
    moved &= finite
    return moved if moved.any() else None


def named_results(result, to_host) -> dict:
    """An executor's (outputs, updates) as host copies: "output NAME" and updated state NAME."""
    outputs, updates = result
    named = {f"output {name}": np.array(to_host(v), copy=True) for name, v in outputs.items()}
    named.update({name: np.array(to_host(v), copy=True) for name, v in updates.items()})
    return named
