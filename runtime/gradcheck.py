"""`nnrun gradcheck`: the compiled gradients against central finite differences, in float64."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import Model


@dataclass
class ParamCheck:
    name: str
    worst_relative_error: float
    checked: int


def random_batch(model: Model, batch: int, rng) -> tuple[np.ndarray, np.ndarray]:
    shape = model.lowered.graph.inputs[0].type.shape[1:]
    x = rng.standard_normal((batch, *shape))
    logits = model.lowered.logits.type.shape[1:]
    if model.spec.loss.type == "cross_entropy":
        return x, rng.integers(0, logits[0], batch)
    if model.spec.loss.type == "binary_cross_entropy":
        return x, rng.integers(0, 2, (batch, *logits)).astype(np.float64)
    return x, rng.standard_normal((batch, *logits))


def gradcheck(model: Model, batch: int = 4, samples: int = 8, eps: float = 1e-6,
              seed: int = 0) -> list[ParamCheck]:
    """For each parameter, `samples` random entries: |analytic - numeric| / max(|a|, |n|, 1e-8)."""
    rng = np.random.default_rng(seed)
    params = {k: v.astype(np.float64) for k, v in model.init_params(seed).items()}
    x, y = random_batch(model, batch, rng)
    _, grads = model.loss_and_grads(params, x, y)
    results = []
    for name, grad in grads.items():
        indices = [tuple(rng.integers(0, n) for n in grad.shape) for _ in range(samples)]
        worst = max(_relative_error(model, params, x, y, name, index, grad[index], eps)
                    for index in indices)
        results.append(ParamCheck(name, worst, len(indices)))
    return results


def _relative_error(model, params, x, y, name, index, analytic, eps) -> float:
    original = params[name][index]
    params[name][index] = original + eps
    plus, _ = model.loss_and_grads(params, x, y)
    params[name][index] = original - eps
    minus, _ = model.loss_and_grads(params, x, y)
    params[name][index] = original
    numeric = (plus - minus) / (2 * eps)
    return abs(analytic - numeric) / max(abs(analytic), abs(numeric), 1e-8)
