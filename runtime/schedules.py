"""Learning-rate schedules. Warm-up is linear per step over `warmup_epochs`; after it the
schedule changes the rate once per epoch, counting epochs from the end of the warm-up."""

from __future__ import annotations

import math


def depends_on_length(schedule) -> bool:
    return schedule.type == "cosine"


def learning_rate(optimizer, epoch: int, step_in_epoch: int, steps_per_epoch: int,
                  total_epochs: int, restarted_at: int = 0) -> float:
    """epoch counts from 0; the rate for that step. A schedule restarted at epoch r (a resumed
    run given another length) runs again from the base rate over epochs r..total, without
    warm-up."""
    schedule, base = optimizer.schedule, optimizer.lr
    if restarted_at and depends_on_length(schedule):
        return _cosine(schedule, base, epoch - restarted_at, max(total_epochs - restarted_at, 1))
    warmup = schedule.warmup_epochs
    if epoch < warmup:
        done = epoch * steps_per_epoch + step_in_epoch + 1
        return base * done / (warmup * steps_per_epoch)
    after = epoch - warmup
    if schedule.type == "step":
        return base * schedule.gamma ** (after // schedule.step_epochs)
    if schedule.type == "exponential":
        return base * schedule.gamma ** after
    if schedule.type == "cosine":
        return _cosine(schedule, base, after, max(total_epochs - warmup, 1))
    return base


def _cosine(schedule, base: float, after: int, span: int) -> float:
    return schedule.min_lr + (base - schedule.min_lr) * (1 + math.cos(math.pi * after / span)) / 2
