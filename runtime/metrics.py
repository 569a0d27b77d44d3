"""Metrics of a batch's outputs and targets, their running totals over an epoch or a split, and
the evaluation of a split.

Each metric returns a sum over the batch, so that epoch values are exact means however the
batches fall. The functions are written against an array module `xp` (NumPy by default), so
that the totals accumulate on the backend and are read once (see Totals)."""

from __future__ import annotations

import numpy as np

from nnrun.compiler.checks import metric_name
from nnrun.compiler.schema import CONFUSION_METRICS

from .batches import copied_batch
from .distributed import ALONE


def metric_total(metric, logits, prediction, target, loss: str | None = None, xp=np,
                 ignore_index: int | None = None) -> tuple:
    """(sum, count): the metric summed over the batch and what its mean divides that by. The
    count is the batch's samples (mae and mse: each sample's mean over its outputs); with
    `ignore_index`, the positions (samples, or pixels of a label map) not labelled with it, of
    which mae and mse sum each one's mean over its outputs. Accuracy here is of one label per
    sample: Totals counts it over label maps and with ignore_index by its confusion matrix.
    `prediction` is the model's output after its final activation; `logits` before a final
    softmax/sigmoid that the loss absorbed (else the same array); `loss` the spec's loss type."""
    kind, samples = metric.type, len(target)
    if kind == "accuracy":
        labels = predicted_labels(logits, prediction, loss, xp)
        return (labels == target.reshape(samples, -1)[:, 0]).sum(), samples
    if kind == "top_k_accuracy":
        top = xp.argsort(-logits, axis=1, kind="stable")[:, : metric.k]  # ties: lower class first
        hits = (top == target[:, None]).any(axis=1)
        return _over_labelled(hits, target, ignore_index, xp)
    errors = _position_errors(kind, compared_outputs(loss, logits, prediction, xp), target, xp)
    if ignore_index is None:
        return errors.mean(axis=1).sum(), samples
    return _over_labelled(errors, target.reshape(errors.shape), ignore_index, xp)


def _position_errors(kind: str, outputs, target, xp):
    """[B, positions]: the absolute or squared error at each position, of the outputs there
    against the targets as the mse loss sees them: class labels as one-hot vectors along
    the outputs' class axis (whose errors are averaged), other targets as they are."""
    batch = len(outputs)
    classes = outputs.shape[1] if outputs.ndim > 1 else 1
    if (np.issubdtype(target.dtype, np.integer) and classes > 1
            and target.ndim == outputs.ndim - 1):
        class_axis = xp.arange(classes).reshape(1, classes, *([1] * (target.ndim - 1)))
        difference = outputs - (target[:, None] == class_axis).astype(outputs.dtype)
        per_position = (xp.abs(difference) if kind == "mae" else difference**2).mean(axis=1)
        return per_position.reshape(batch, -1)
    difference = outputs.reshape(batch, -1) - target.reshape(batch, -1)
    return xp.abs(difference) if kind == "mae" else difference**2


def _over_labelled(values, target, ignore_index, xp) -> tuple:
    """(sum, count) of `values` at the positions of `target` not labelled ignore_index."""
    if ignore_index is None:
        return values.sum(), values.size
    labelled = target != ignore_index
    return xp.where(labelled, values, 0).sum(), labelled.sum()


def compared_outputs(loss: str | None, logits, prediction, xp=np):
    """What mae and mse compare with the targets: a classifier's probabilities (so mse is the
    Brier score; its logits are unbounded scores, not estimates of one-hot targets), else the
    outputs as the loss sees them."""
    if loss == "cross_entropy":
        shifted = xp.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    if loss == "binary_cross_entropy":
        return 0.5 * (1.0 + xp.tanh(0.5 * logits))  # the sigmoid, without exp's overflow
    return prediction



def predicted_labels(logits, prediction, loss: str | None, xp=np):
    """The class at every position: [B, *S] from scores [B, K, *S]. One output is class 1 above
    0.5 as the loss reads it: after the sigmoid for binary_cross_entropy, whose logits the model
    may end with; after the step for perceptron. Under binary_cross_entropy each of K outputs
    is such a label of its own (several labels a sample): [B, K]."""
    if logits.shape[1] == 1 and loss == "perceptron":
        return (logits[:, 0] >= 0).astype(xp.int64)  # the threshold unit's class
    if loss == "cross_entropy":  # one output too: one class, 0 (its softmax is 1)
        return logits.argmax(axis=1)
    if logits.shape[1] == 1:
        return (compared_outputs(loss, logits, prediction, xp)[:, 0] > 0.5).astype(xp.int64)
    if loss == "binary_cross_entropy":  # several 0/1 labels a sample (multi-label): each one
        return (compared_outputs(loss, logits, prediction, xp) > 0.5).astype(xp.int64)
    return logits.argmax(axis=1)


def class_count(logits, loss: str | None) -> int:
    """The classes a position's label is one of: 0 and 1 for one output and under
    binary_cross_entropy (whose several outputs are labels of their own), else one per
    output."""
    return 2 if loss == "binary_cross_entropy" else max(logits.shape[1], 2)


def confusion_matrix(logits, prediction, target, loss, ignore_index, xp=np):
    """[K, K] counts of (true class, predicted class) over the positions not ignored."""
    predicted = predicted_labels(logits, prediction, loss, xp)
    classes = class_count(logits, loss)
    target = target.reshape(predicted.shape).astype(xp.int64)
    pairs = target * classes + predicted
    if ignore_index is not None:
        # Counted in an extra last cell, dropped below: a boolean selection would have a size
        # known only on the host, a device-to-host copy per batch.
        pairs = xp.where(target != ignore_index, pairs, classes * classes)
    # Counted as uint64: CuPy's add.at adds into int32, uint32, uint64 and floats only (and
    # bincount would read the labels' range back to the host).
    counts = xp.zeros(classes * classes + 1, dtype=xp.uint64)
    xp.add.at(counts, pairs.ravel(), 1)
    return counts[:-1].astype(xp.int64).reshape(classes, classes)


def confusion_metrics(confusion: np.ndarray) -> dict:
    """Pixel accuracy: correct / labelled. Mean IoU: the mean over classes of
    |true & predicted| / |true or predicted|, over the classes that occur in either."""
    correct = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - correct
    present = union > 0
    return {"pixel_accuracy": float(correct.sum() / max(confusion.sum(), 1)),
            "mean_iou": float((correct[present] / union[present]).mean()) if present.any() else 0.0}


class Totals:
    """Running sums of loss, metrics and gradient norms over batches (an epoch or a split).
    `accuracy` on label maps is the pixel accuracy, of several labels a sample (multi-label)
    the fraction of labels right; with ignore_index, of the labels it does not mark, and the
    loss is the mean over those labels of the whole epoch or split: each batch's loss (the
    mean over its labelled positions) weighed by their count, not by its samples.

    The sums accumulate on the backend (a float64 vector, and the confusion matrix) and only
    read() copies them to the host, in one transfer: the host fields (loss, count, steps,
    metrics, norms, confusion) are those of the last read. Each batch adds the same float64
    numbers in the same order as when each batch was read on its own."""

    def __init__(self, metrics, loss: str | None = None, ignore_index: int | None = None,
                 backend=None):
        self.tracked, self.loss_type, self.ignore_index = list(metrics), loss, ignore_index
        self.backend = backend
        self.loss, self.count, self.metrics, self.norms, self.steps = 0.0, 0, {}, {}, 0
        self.loss_weight = 0.0  # the samples, or with ignore_index the labelled positions
        self.confusion = None
        self.previous = self._host_fields()  # of the read before the last (forget_last_read)
        # Known at the first batch: the metrics summed batch by batch (the others are read
        # off the confusion matrix) and the gradient norms the outputs hold.
        self.summed_metrics = self.norm_names = None
        self.sums = self.confusion_sums = None  # on the backend

    def add(self, outputs, batch, counts=None, loss_share=None) -> None:
        """A batch's outputs and its Batch (batches.py). `counts`: a backend bool, whether
        the batch counts (training stops counting at the first non-finite loss).
        `loss_share`: what the step scaled its loss by (a backend scalar, a rank's share:
        distributed.MpiRanks.loss_share), divided out here: each rank adds its own mean over
        its own labelled positions, times their count."""
        xp = self.backend.xp
        if self.sums is None:
            self._start(outputs, batch.labels)
        entries = xp.stack([entry.astype(xp.float64)
                            for entry in self._entries(outputs, batch, loss_share)])
        self.sums += entries if counts is None else xp.where(counts, entries, 0.0)
        if self.confusion_sums is not None:
            confusion = confusion_matrix(outputs["logits"], outputs["prediction"], batch.labels,
                                         self.loss_type, self.ignore_index, xp)
            self.confusion_sums += confusion if counts is None else xp.where(counts, confusion, 0)

    def _start(self, outputs, labels) -> None:
        xp = self.backend.xp
        self.summed_metrics = [m for m in self.tracked if not self._by_confusion(m, labels)]
        self.norm_names = [name for name in outputs if name.startswith("grad_norm/")]
        self.one = xp.ones((), dtype=xp.float64)
        self.sums = xp.zeros(4 + 2 * len(self.summed_metrics) + len(self.norm_names),
                             dtype=xp.float64)
        if len(self.summed_metrics) < len(self.tracked):
            classes = class_count(outputs["logits"], self.loss_type)
            self.confusion_sums = xp.zeros((classes, classes), dtype=xp.int64)

    def _entries(self, outputs, batch, loss_share) -> list:
        """loss * weight, n, 1 (a step), the loss's weight (n, or the labelled positions),
        each summed metric and its count, each gradient norm."""
        n, xp = len(batch), self.backend.xp
        metrics = [part for metric in self.summed_metrics
                   for part in metric_total(metric, outputs["logits"], outputs["prediction"],
                                            batch.labels, self.loss_type, xp, self.ignore_index)]
        loss = outputs["loss"].astype(xp.float64)
        if self.ignore_index is None:
            weight, weighted = self.one * n, loss * n
        else:
            weight = (batch.labels != self.ignore_index).sum().astype(xp.float64)
            weighted = loss * weight
            if loss_share is not None:  # a share of 0 has nothing labelled: it adds 0
                share = loss_share.astype(xp.float64)
                weighted = xp.where(share != 0, weighted / xp.where(share != 0, share, 1), 0.0)
        return [weighted, self.one * n, self.one, weight,
                *(self.one * part for part in metrics),
                *(outputs[name] for name in self.norm_names)]

    def read(self, extra=None):
        """Copies the sums, and `extra` (a float64 backend vector), to the host in one
        transfer; returns extra's host copy."""
        if self.sums is None and extra is None:
            return None
        xp = self.backend.xp
        parts = [] if self.sums is None else [self.sums]
        if self.confusion_sums is not None:  # counts up to 2**53 are exact in float64
            parts.append(self.confusion_sums.ravel().astype(xp.float64))
        parts += [] if extra is None else [extra]
        host = self.backend.to_host(xp.concatenate(parts))
        return host if self.sums is None else self._take_sums(host)

    def _take_sums(self, host):
        """The host fields from the head of `host`; returns the rest."""
        self.previous = self._host_fields()
        values, host = host[:len(self.sums)], host[len(self.sums):]
        self.loss, self.count, self.steps = float(values[0]), int(values[1]), int(values[2])
        self.loss_weight = float(values[3])
        metrics, norms = np.split(values[4:], [2 * len(self.summed_metrics)])
        self.metrics = {metric_name(m): (float(total), float(count)) for m, total, count
                        in zip(self.summed_metrics, metrics[0::2], metrics[1::2])}
        self.norms = {name: float(v) for name, v in zip(self.norm_names, norms)}
        if self.confusion_sums is not None:
            size = self.confusion_sums.size
            self.confusion = host[:size].astype(np.int64).reshape(self.confusion_sums.shape)
            host = host[size:]
        return host

    def _host_fields(self) -> tuple:
        return (self.loss, self.count, self.loss_weight, self.steps, self.metrics, self.norms,
                self.confusion)

    def forget_last_read(self) -> None:
        """The host fields back to those of the read before the last (what the batches read
        since then added is left out)."""
        (self.loss, self.count, self.loss_weight, self.steps, self.metrics, self.norms,
         self.confusion) = self.previous

    def _by_confusion(self, metric, y) -> bool:
        """Read off the confusion matrix summed over the batches, which counts every labelled
        position (pixel, or sample) and leaves out the labels loss.ignore_index marks: the FCN
        paper's pixel_accuracy and mean_iou, and accuracy of label maps or with ignored
        labels."""
        return metric.type in CONFUSION_METRICS or (
            metric.type == "accuracy" and (y.ndim > 1 or self.ignore_index is not None))

    def running_loss(self) -> float:
        # nothing labelled yet (with ignore_index): a loss of 0, as each such batch's is
        return self.loss / self.loss_weight if self.loss_weight else 0.0

    def means(self, prefix: str) -> dict:
        result = {f"{prefix}loss": self.running_loss()}
        result.update({f"{prefix}{name}": total / max(count, 1)
                       for name, (total, count) in self.metrics.items()})
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
        parts = ranks.gather((self.loss, self.count, self.loss_weight, self.metrics,
                              self.confusion))
        self.loss = sum(loss for loss, *_ in parts)
        self.count = sum(count for _, count, *_ in parts)
        self.loss_weight = sum(weight for _, _, weight, *_ in parts)
        self.metrics = {}
        for *_, metrics, _ in parts:
            for name, (total, count) in metrics.items():
                added = self.metrics.get(name, (0.0, 0.0))
                self.metrics[name] = (added[0] + total, added[1] + count)
        confusions = [confusion for *_, confusion in parts if confusion is not None]
        self.confusion = sum(confusions[1:], confusions[0]) if confusions else None


EVALUATION_BATCH = 1000  # samples per forward pass in evaluation, where they fit


def evaluate(model, state, split, prefix: str, metrics: list,
             batch_size: int = EVALUATION_BATCH,
             ranks=ALONE, resident=None) -> dict:
    """Loss and metrics of `state` on a data split, in inference mode, keys `<prefix>_...`;
    `metrics`: those tracked (checks.tracked_metrics). Each rank of a data-parallel run
    evaluates its share of each batch, so that the ranks' sums added are one process's.
    `resident`: the split held on the backend (batches.ResidentSplit), else each batch is
    copied there."""
    spec = model.spec
    ignore_index = getattr(spec.loss, "ignore_index", None)
    totals = Totals(metrics, spec.loss.type, ignore_index, model.backend)
    for whole_start in range(0, len(split.x), batch_size):
        whole = slice(whole_start, min(whole_start + batch_size, len(split.x)))
        share = ranks.shard(whole.stop - whole.start)
        start, stop = whole.start + share.start, whole.start + share.stop
        if start == stop:
            continue  # a last batch smaller than the rank count
        batch = (resident.range(start, stop) if resident is not None
                 else copied_batch(model, split.x[start:stop], split.y[start:stop]))
        feeds = dict(state)
        feeds.update(x=batch.x, y=batch.targets)
        # weights that diverged give a nan loss, which the row reports: NumPy's warnings about
        # the overflows on the way would only add noise
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            outputs, _ = model.evaluation_executor.run(feeds)
        totals.add(outputs, batch)
    totals.read()
    totals.add_over_ranks(ranks)
    return totals.means(f"{prefix}_")
