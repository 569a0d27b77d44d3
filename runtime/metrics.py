"""Metrics computed on the host from a batch's outputs and targets, their running totals over
an epoch or a split, and the evaluation of a split.

Each metric returns a sum over the batch, so that epoch values are exact means however the
batches fall."""

from __future__ import annotations

import numpy as np

from nnrun.compiler.checks import metric_name  # noqa: F401 - one definition, shared

from .distributed import ALONE
from .model import target_array


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


# Metrics of every labelled position (pixel, or sample), read off one confusion matrix summed
# over the batches of an epoch or a split: the FCN paper's pixel accuracy and mean IoU.
CONFUSION_METRICS = ("pixel_accuracy", "mean_iou")


def predicted_labels(logits: np.ndarray, prediction: np.ndarray, loss: str | None) -> np.ndarray:
    """The class at every position: [B, *S] from scores [B, K, *S] (one output: above 0.5)."""
    if logits.shape[1] == 1:
        return (compared_outputs(loss, logits, prediction)[:, 0] > 0.5).astype(np.int64)
    return logits.argmax(axis=1)


def confusion_matrix(logits, prediction, target, loss, ignore_index) -> np.ndarray:
    """[K, K] counts of (true class, predicted class) over the positions not ignored."""
    predicted = predicted_labels(logits, prediction, loss)
    classes = max(logits.shape[1], 2)
    target = target.reshape(predicted.shape)
    if ignore_index is not None:
        kept = target != ignore_index
        target, predicted = target[kept], predicted[kept]
    pairs = target.astype(np.int64).ravel() * classes + predicted.ravel()
    return np.bincount(pairs, minlength=classes * classes).reshape(classes, classes)


def confusion_metrics(confusion: np.ndarray) -> dict:
    """Pixel accuracy: correct / labelled. Mean IoU: the mean over classes of
    |true & predicted| / |true or predicted|, over the classes that occur in either."""
    correct = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - correct
    present = union > 0
    return {"pixel_accuracy": float(correct.sum() / max(confusion.sum(), 1)),
            "mean_iou": float((correct[present] / union[present]).mean()) if present.any() else 0.0}


def default_mode(monitor: str) -> str:
    """Loss-like metrics improve downwards, the rest upwards."""
    return "min" if any(word in monitor for word in ("loss", "mae", "mse")) else "max"


class Totals:
    """Running sums of loss, metrics and gradient norms over batches (an epoch or a split).
    `accuracy` on label maps is the pixel accuracy."""

    def __init__(self, metrics, loss: str | None = None, ignore_index: int | None = None):
        self.tracked, self.loss_type, self.ignore_index = list(metrics), loss, ignore_index
        self.loss, self.count, self.metrics, self.norms, self.steps = 0.0, 0, {}, {}, 0
        self.confusion = None

    def add(self, outputs, y, be) -> None:
        n = len(y)
        self.loss += float(outputs["loss"]) * n
        self.count += n
        self.steps += 1
        logits, prediction = be.to_host(outputs["logits"]), be.to_host(outputs["prediction"])
        for metric in self.tracked:
            if self._by_confusion(metric, y):
                continue
            name = metric_name(metric)
            total = metric_sum(metric, logits, prediction, y, self.loss_type)
            self.metrics[name] = self.metrics.get(name, 0.0) + total
        if any(self._by_confusion(metric, y) for metric in self.tracked):
            confusion = confusion_matrix(logits, prediction, y, self.loss_type, self.ignore_index)
            self.confusion = confusion if self.confusion is None else self.confusion + confusion
        for name, value in outputs.items():
            if name.startswith("grad_norm/"):
                self.norms[name] = self.norms.get(name, 0.0) + float(value)

    @staticmethod
    def _by_confusion(metric, y) -> bool:
        return metric.type in CONFUSION_METRICS or (metric.type == "accuracy" and y.ndim > 1)

    def running_loss(self) -> float:
        return self.loss / max(self.count, 1)

    def means(self, prefix: str) -> dict:
        result = {f"{prefix}loss": self.loss / self.count}
        result.update({f"{prefix}{k}": v / self.count for k, v in self.metrics.items()})
        if self.confusion is not None:
            counted = confusion_metrics(self.confusion)
            counted["accuracy"] = counted["pixel_accuracy"]
            result.update({f"{prefix}{metric_name(m)}": counted[m.type] for m in self.tracked
                           if m.type in counted and f"{prefix}{metric_name(m)}" not in result})
        return result

    def grad_norms(self) -> dict:
        return {name: value / self.steps for name, value in self.norms.items()}

    def add_over_ranks(self, ranks) -> None:
        """The totals of every rank of a data-parallel run, added in rank order (gradient
        norms, of the gradients the ranks share, are already the same on each)."""
        parts = ranks.gather((self.loss, self.count, self.metrics, self.confusion))
        self.loss = sum(loss for loss, _, _, _ in parts)
        self.count = sum(count for _, count, _, _ in parts)
        self.metrics = {}
        for _, _, metrics, _ in parts:
            for name, value in metrics.items():
                self.metrics[name] = self.metrics.get(name, 0.0) + value
        confusions = [confusion for _, _, _, confusion in parts if confusion is not None]
        self.confusion = sum(confusions[1:], confusions[0]) if confusions else None


def evaluate(model, state, split, prefix: str, batch_size: int = 1000, ranks=ALONE) -> dict:
    """Loss and metrics of `state` on a data split, in inference mode, keys `<prefix>_...`;
    each rank of a data-parallel run evaluates its share of the split."""
    spec, be = model.spec, model.backend
    totals = Totals(spec.train.metrics, spec.loss.type, getattr(spec.loss, "ignore_index", None))
    share = ranks.shard(len(split.x))
    xs, ys = split.x[share], split.y[share]
    for start in range(0, len(xs), batch_size):
        x, y = xs[start:start + batch_size], ys[start:start + batch_size]
        feeds = dict(state)
        feeds.update(x=be.from_host(x), y=be.from_host(target_array(spec, model.lowered, y)))
        outputs, _ = model.evaluation_executor.run(feeds)
        totals.add(outputs, y, be)
    totals.add_over_ranks(ranks)
    return totals.means(f"{prefix}_")
