"""The scalars a training step reads besides the batch and the state: the learning rate, the
step count (from 1, for Adam's bias correction), the dropout key and, where a data-parallel
step scales its loss, the rank's share of it (distributed.MpiRanks.loss_share).

An epoch's scalars are known at its start: they go to the backend then, each kind in one copy,
and a step reads views of them. On a GPU no step then copies anything from the host: a copy
per step is a transfer in the step's stream, and host work beside a captured step's replay.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnrun.compiler.ops.norm import dropout_key


class StepScalars:
    """Steps `start`, `start + 1`, ... of an epoch (counted from 0), whose step counts begin
    at `first_count`; `seeds` and `first_samples`: each step's dropout key (norm.dropout_key)."""

    def __init__(self, backend, dtype, start: int, lrs: Sequence[float], first_count: int,
                 seeds: Sequence[int], first_samples: Sequence[int],
                 loss_shares: Sequence[float] | None = None):
        self.start, self.lrs = start, list(lrs)
        host = {"lr": np.asarray(self.lrs, dtype),
                "step": (first_count + np.arange(len(self.lrs))).astype(dtype),
                "rng": np.array([dropout_key(int(seed), first)
                                 for seed, first in zip(seeds, first_samples)],
                                np.uint32).reshape(-1, 3)}
        if loss_shares is not None:
            host["loss_share"] = np.asarray(loss_shares, dtype)
        self.arrays = {name: backend.from_host(values) for name, values in host.items()}

    def lr(self, index: int) -> float:
        return self.lrs[index - self.start]

    def feeds(self, index: int) -> dict:
        """Step `index`'s scalars, as the training step reads them: views, no copies."""
        row = index - self.start
        return {name: values[row, ...] for name, values in self.arrays.items()}
