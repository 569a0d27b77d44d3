"""A run's batches on the backend.

A split that fits the device-data budget is copied to the backend once per run
(`be.from_host`): a training batch is then gathered there (`take` with the batch's indices,
copied once per epoch, into buffers allocated once), an evaluation batch is a slice of it. A
split that does not fit, and the training split when data.augment is set (augmentation works
on the host), goes batch by batch: each batch is copied on its own, as it is drawn.

The budget: NNRUN_DEVICE_DATA_LIMIT (bytes, or a size such as 2GB; 0 keeps every split on the
host), else half of what the backend's memory has left once the training step's estimated
memory is set aside (memory.py: the free GPU memory on CuPy, the host's available memory on
NumPy). The splits are taken in the order train, val, test, each one that fits beside those
before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .memory import available_memory, estimate_bytes, size_variable
from .model import target_array

LIMIT_VARIABLE = "NNRUN_DEVICE_DATA_LIMIT"


@dataclass
class Batch:
    """Backend arrays: the inputs, what the loss reads, and the labels the metrics compare with."""
    x: Any
    targets: Any
    labels: Any

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def nbytes(self) -> int:
        return self.x.nbytes + self.targets.nbytes + self.labels.nbytes


def host_batch(model, x, y) -> Batch:
    """Host arrays of a batch (or a whole split) as the model reads them, still on the host."""
    return Batch(np.asarray(x, dtype=model.spec.dtype),
                 target_array(model.spec, model.lowered, y), np.asarray(y))


def to_backend(model, batch: Batch) -> Batch:
    be = model.backend
    return Batch(be.from_host(batch.x), be.from_host(batch.targets), be.from_host(batch.labels))


def copied_batch(model, x, y) -> Batch:
    """One batch copied to the backend: the path of data kept on the host."""
    return to_backend(model, host_batch(model, x, y))


class ResidentSplit:
    """A split held on the backend."""

    def __init__(self, model, whole: Batch):
        self.backend = model.backend
        self.whole = to_backend(model, whole)
        self.buffers: Batch | None = None

    def __len__(self) -> int:
        return len(self.whole)

    def range(self, start: int, stop: int) -> Batch:
        whole = self.whole
        return Batch(whole.x[start:stop], whole.targets[start:stop], whole.labels[start:stop])

    def gather(self, index_lists: list[np.ndarray]):
        """The batches of the given sample indices, gathered on the backend; the indices of
        all of them are copied there at once."""
        if not index_lists:
            return
        bounds = np.cumsum([0, *map(len, index_lists)])
        order = self.backend.from_host(np.concatenate(index_lists))
        for start, stop in zip(bounds[:-1], bounds[1:]):
            yield self.rows(order[start:stop])

    def rows(self, indices) -> Batch:
        """The samples at `indices` (a backend array), in buffers reused from batch to batch:
        a batch is read by its step before the next one is gathered."""
        count = int(indices.shape[0])
        if self.buffers is None or len(self.buffers) < count:
            xp, whole = self.backend.xp, self.whole
            self.buffers = Batch(*(xp.empty((count, *a.shape[1:]), dtype=a.dtype)
                                   for a in (whole.x, whole.targets, whole.labels)))
        parts = []
        for table, buffer in zip((self.whole.x, self.whole.targets, self.whole.labels),
                                 (self.buffers.x, self.buffers.targets, self.buffers.labels)):
            self.backend.take_into(table, indices, buffer[:count], axis=0)
            parts.append(buffer[:count])
        return Batch(*parts)


def device_data_budget(model, batch_size: int) -> tuple[int, str]:
    """Bytes of data the backend may hold, and where the number comes from."""
    limit = size_variable(LIMIT_VARIABLE)
    if limit is not None:
        return limit, LIMIT_VARIABLE
    available, source = available_memory(model.backend)
    left = available - estimate_bytes(model, batch_size)
    return max(left // 2, 0), f"half of {source} left beside the training step"


def resident_splits(model, splits: dict, budget: int) -> dict[str, ResidentSplit]:
    """The splits (name -> Split, or None) that fit the budget together, on the backend."""
    resident, used = {}, 0
    for name, split in splits.items():
        if split is None:
            continue
        whole = host_batch(model, split.x, split.y)
        if used + whole.nbytes <= budget:
            resident[name] = ResidentSplit(model, whole)
            used += whole.nbytes
    return resident
