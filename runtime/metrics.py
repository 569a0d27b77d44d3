"""Metrics computed on the host from a batch's outputs and targets.

Each returns a sum over the batch, so that epoch values are exact means however the
batches fall."""

from __future__ import annotations

import numpy as np

from nnrun.compiler.checks import metric_name  # noqa: F401 - one definition, shared


def predicted_classes(prediction: np.ndarray) -> np.ndarray:
    """argmax of several outputs; one output (a probability or a 0/1 regression) splits at 0.5."""
    if prediction.ndim == 2 and prediction.shape[1] == 1:
        return (prediction[:, 0] > 0.5).astype(np.int64)
    return prediction.argmax(axis=1)


def metric_sum(metric, logits: np.ndarray, prediction: np.ndarray, target: np.ndarray,
               loss: str | None = None) -> float:
    """`prediction` is the model's output after its final activation; `logits` before a final
    softmax/sigmoid that the loss absorbed (else the same array). `loss` is the spec's loss type."""
    kind = metric.type
    if kind == "accuracy":
        return float((predicted_classes(prediction) == target.reshape(len(target), -1)[:, 0]).sum())
    if kind == "top_k_accuracy":
        top = np.argsort(-logits, axis=1)[:, : metric.k]
        return float((top == target[:, None]).any(axis=1).sum())
    outputs = compared_outputs(loss, logits, prediction).reshape(len(prediction), -1)
    if target.ndim == 1 and np.issubdtype(target.dtype, np.integer) and outputs.shape[1] > 1:
        target = np.eye(outputs.shape[1], dtype=outputs.dtype)[target]  # as the mse loss sees it
    difference = outputs - target.reshape(len(target), -1)
    per_sample = np.abs(difference) if kind == "mae" else difference**2
    return float(per_sample.mean(axis=1).sum())


def compared_outputs(loss: str | None, logits: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """What mae and mse compare with the targets: a classifier's probabilities (so mse is the
    Brier score; its logits are unbounded scores, not estimates of one-hot targets), else the
    outputs as the loss sees them."""
    if loss == "cross_entropy":
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    if loss == "binary_cross_entropy":
        return 0.5 * (1.0 + np.tanh(0.5 * logits))  # the sigmoid, without exp's overflow
    return prediction


def default_mode(monitor: str) -> str:
    """Loss-like metrics improve downwards, the rest upwards."""
    return "min" if any(word in monitor for word in ("loss", "mae", "mse")) else "max"
