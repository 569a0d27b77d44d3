"""`nnrun bench`: training-step and inference throughput on random data of the spec's shape."""

from __future__ import annotations

import time

import numpy as np

from .gradcheck import random_batch
from .model import Model


def bench(model: Model, batch_size: int, steps: int = 20, warmup: int = 3) -> dict:
    be, spec = model.backend, model.spec
    rng = np.random.default_rng(spec.seed)
    x, y = random_batch(model, batch_size, rng)
    feeds = model.step_feeds(model.train_state(), x, y, lr=1e-6, step=1, seed=0)
    train_s = _time(lambda: model.step_executor.run(feeds), steps, warmup, be)
    infer_s = _time(lambda: model.forward_executor.run(feeds), steps, warmup, be)
    return {"backend": be.name, "batch_size": batch_size, "steps": steps,
            "train_step_ms": round(train_s * 1e3, 3),
            "train_samples_per_s": round(batch_size / train_s, 1),
            "inference_ms": round(infer_s * 1e3, 3),
            "inference_samples_per_s": round(batch_size / infer_s, 1)}


def _time(call, steps: int, warmup: int, be) -> float:
    for _ in range(warmup):
        call()
    be.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        call()
    be.synchronize()
    return (time.perf_counter() - started) / steps
