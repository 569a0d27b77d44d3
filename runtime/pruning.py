"""Magnitude pruning (train.pruning): the smallest weights are set to zero and kept there.

Sparsity ramps linearly from start_epoch to end_epoch (default: the last epoch) up to
target_sparsity. At the start of each epoch from start_epoch on, every weight tensor (not
biases, not batchnorm parameters) gets a mask that zeroes its smallest-|w| fraction; after
every optimizer step the masks are applied again, so momentum cannot revive a pruned weight.
The masks follow from the weights alone, so a resumed run rebuilds them exactly.
"""

from __future__ import annotations


class MagnitudePruner:
    def __init__(self, pruning, weight_names: list[str], total_epochs: int, xp):
        self.pruning = pruning
        self.weight_names = weight_names
        self.end_epoch = pruning.end_epoch or total_epochs
        self.xp = xp
        self.masks: dict = {}

    def sparsity_at(self, epoch: int) -> float:
        start, end = self.pruning.start_epoch, max(self.end_epoch, self.pruning.start_epoch)
        if epoch < start:
            return 0.0
        progress = min(epoch - start + 1, end - start + 1) / (end - start + 1)
        return self.pruning.target_sparsity * progress

    def start_epoch(self, epoch: int, state: dict) -> None:
        sparsity = self.sparsity_at(epoch)
        if sparsity > 0:
            self.masks = {name: self._mask(state[name], sparsity) for name in self.weight_names}
            self.apply(state)

    def _mask(self, weight, sparsity: float):
        xp = self.xp
        pruned = int(round(sparsity * weight.size))
        mask = xp.ones(weight.size, dtype=weight.dtype)
        if pruned:
            mask[xp.argsort(xp.abs(weight).ravel(), kind="stable")[:pruned]] = 0
        return mask.reshape(weight.shape)

    def apply(self, state: dict) -> None:
        for name, mask in self.masks.items():
            state[name] = state[name] * mask

    def sparsity(self, state: dict) -> float:
        """The fraction of pruned-tensor weights that are exactly zero."""
        zeros = sum(int((state[name] == 0).sum()) for name in self.weight_names)
        return zeros / max(sum(state[name].size for name in self.weight_names), 1)
