"""`nnrun bench`: training-step and inference throughput on random data of the spec's shape."""

from __future__ import annotations

import time

import numpy as np

from nnrun.compiler.passes.dead_code import eliminate_dead_code

from .executor import Executor
from .gradcheck import random_batch
from .model import Model, target_array


def bench(model: Model, batch_size: int, steps: int = 20, warmup: int = 3) -> dict:
    be, spec = model.backend, model.spec
    rng = np.random.default_rng(spec.seed)
    x, y = random_batch(model, batch_size, rng)
    state = {k: be.from_host(v) for k, v in model.init_params().items()}
    for name, param in model.train_step.optimizer_state.items():
        state[name] = be.xp.zeros_like(state[param])
    feeds = {**state, "x": be.from_host(x.astype(spec.dtype)),
             "y": be.from_host(target_array(spec, model.lowered, y)),
             "lr": be.xp.asarray(1e-6, dtype=spec.dtype), "step": be.xp.asarray(1, dtype=spec.dtype),
             "rng": be.rng(0)}
    step = Executor(eliminate_dead_code(model.train_step.graph), be)
    infer = Executor(eliminate_dead_code(model.lowered.graph), be)
    train_s = _time(lambda: step.run(feeds), steps, warmup, be)
    infer_s = _time(lambda: infer.run(feeds), steps, warmup, be)
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
