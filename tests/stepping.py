"""Training steps the way the training loop runs them, shared by the tests."""

from __future__ import annotations

import numpy as np


def train_steps(model, x, y, steps: int):
    """`steps` steps on one batch from the model's initial state, the updates fed back:
    (losses, the final state as host arrays)."""
    state = {name: value.copy() for name, value in model.train_state().items()}
    losses = []
    for step in range(1, steps + 1):
        feeds = model.step_feeds(state, x, y, model.spec.optimizer.lr, step, seed=step)
        outputs, updates = model.step_executor.run(feeds)
        losses.append(float(outputs["loss"]))
        state.update(updates)
    return losses, {name: np.array(model.backend.to_host(value)) for name, value in state.items()}


class RoundsOtherwise:
    """A backend mixin: matrix products rounded otherwise (in float64, then float32), as a
    GPU's cuBLAS does: a correct device whose results differ from NumPy's at rounding level."""

    def matmul_into(self, a, b, out) -> None:
        np.copyto(out, np.matmul(np.asarray(a, np.float64), np.asarray(b, np.float64)),
                  casting="same_kind")
