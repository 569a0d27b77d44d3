"""Magnitude pruning (train.pruning): the smallest weights are set to zero and kept there.

Sparsity ramps linearly from start_epoch to end_epoch (default: the last epoch) up to
target_sparsity. At the start of each epoch from start_epoch on, every weight tensor (not
biases, not batchnorm parameters) gets a mask that zeroes its smallest-|w| fraction; after
every optimizer step the masks are applied again, so momentum cannot revive a pruned weight.

A pruned weight stays pruned: each new mask keeps the zeros of the previous one and prunes the
smallest of the surviving weights, and the level never goes down, so resuming a run with more
epochs (which stretches a ramp that ends at the last epoch) keeps the sparsity it reached. The
masks and their level are part of the checkpoint (`mask/<weight>` and meta's
`pruning_sparsity`).
"""

from __future__ import annotations

import numpy as np

from nnrun.compiler.checks import pruned_weights

# Sparsity levels are fractions of a ramp; a level this close to the target is the target.
LEVEL_TOLERANCE = 1e-9


class MagnitudePruner:
    def __init__(self, pruning, weight_names: list[str], total_epochs: int, xp):
        self.pruning = pruning
        self.weight_names = weight_names
        self.end_epoch = pruning.end_epoch or total_epochs
        self.xp = xp
        self.masks: dict = {}
        self.level = 0.0  # the sparsity the current masks were built for

    @property
    def target(self) -> float:
        return self.pruning.target_sparsity

    def sparsity_at(self, epoch: int) -> float:
        start, end = self.pruning.start_epoch, max(self.end_epoch, self.pruning.start_epoch)
        if epoch < start:
            return 0.0
        progress = min(epoch - start + 1, end - start + 1) / (end - start + 1)
        return self.target * progress

    def at_target(self) -> bool:
        """True once the masks prune the target fraction: the epochs a best checkpoint is
        chosen among."""
        return self.reaches_target(self.level)

    def reaches_target(self, level: float) -> bool:
        return level >= self.target - LEVEL_TOLERANCE

    def start_epoch(self, epoch: int, state: dict) -> None:
        level = max(self.level, self.sparsity_at(epoch))
        if level > 0 and (level > self.level or not self.masks):
            self.masks = {name: self._mask(state[name], level, self.masks.get(name))
                          for name in self.weight_names}
            self.level = level
        self.apply(state)

    def _mask(self, weight, sparsity: float, previous):
        xp = self.xp
        pruned = int(round(sparsity * weight.size))
        score = xp.abs(weight).ravel()
        if previous is not None:  # already pruned weights come first, whatever their value
            score = xp.where(previous.ravel() == 0, -1, score)
        mask = xp.ones(weight.size, dtype=weight.dtype)
        if pruned:
            mask[xp.argsort(score, kind="stable")[:pruned]] = 0
        return mask.reshape(weight.shape)

    def apply(self, state: dict) -> None:
        """Masks the weights in place: they are the step's own updates (its state buffer,
        which the next step then reads as it is, with nothing to copy in)."""
        for name, mask in self.masks.items():
            self.xp.multiply(state[name], mask, out=state[name])

    def sparsity(self, state: dict, to_host=np.asarray) -> float:
        """The fraction of pruned-tensor weights that are exactly zero, read from the
        backend in one transfer (`to_host`: the backend's)."""
        if not self.weight_names:
            return 0.0
        zeros = to_host(self.xp.stack([(state[name] == 0).sum() for name in self.weight_names]))
        return int(zeros.sum()) / sum(state[name].size for name in self.weight_names)

    # --- checkpoints ----------------------------------------------------------------------

    def saved_masks(self, to_host) -> dict[str, np.ndarray]:
        """The masks as checkpoint entries (booleans: True keeps the weight)."""
        return {f"mask/{name}": to_host(mask) != 0 for name, mask in self.masks.items()}

    def restore(self, masks: dict[str, np.ndarray], level: float | None, from_host,
                dtype: str) -> None:
        """The masks and level a checkpoint saved; without them (a checkpoint from before
        pruning started, or from an older nnrun) the next epoch builds them from the weights."""
        if not masks or level is None:
            return
        self.masks = {name: from_host(masks[name].astype(dtype)) for name in self.weight_names
                      if name in masks}
        self.level = level if len(self.masks) == len(self.weight_names) else 0.0
        if self.level == 0.0:
            self.masks = {}


def weight_sparsity(params: dict[str, np.ndarray]) -> tuple[dict[str, float], float]:
    """Per weight tensor, the fraction of its values that are exactly zero; and that fraction
    over all weight tensors together."""
    weights = {name: params[name] for name in pruned_weights(params) if params[name].size}
    zeros = {name: int((value == 0).sum()) for name, value in weights.items()}
    total = sum(value.size for value in weights.values())
    per_layer = {name: zeros[name] / value.size for name, value in weights.items()}
    return per_layer, sum(zeros.values()) / max(total, 1)


def run_sparsity(summary, run_dir, which: str | None = None) -> None:
    """Fills `summary` (compiler.summary.Summary) with the sparsity of a run's checkpoint."""
    from .evaluate import load_run

    run = load_run(run_dir, which, preprocess=False)
    summary.checkpoint, summary.checkpoint_epoch = run.checkpoint.name, run.epoch
    summary.sparsity, summary.weights_sparsity = weight_sparsity(run.params)
