"""`nnrun bench`: training-step and inference time on random data of the spec's shape.

Each step is timed on its own (after a synchronize on a GPU) and the median is reported, so a
stray slow step does not move the figure. The train step runs as training runs it: the
updated state is fed back. Peak memory is what the step holds at its peak: on NumPy traced by
tracemalloc (the arrays a fresh model's first step makes and keeps: buffers, state, constants;
the batch; and the temporaries of the next step, _traced_step_bytes), on CuPy the memory pool's
bytes in use, and those a captured step's own pool holds.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc

import numpy as np

from nnrun.notices import silenced

from .gradcheck import random_batch
from .model import Model
from .threads import thread_limit


def bench(model: Model, batch_size: int, steps: int = 20, warmup: int = 3,
          threads: int | None = None) -> dict:
    with thread_limit(threads) as count:
        return _bench(model, batch_size, steps, warmup, count)


def _bench(model: Model, batch_size: int, steps: int, warmup: int, threads: int) -> dict:
    be, spec = model.backend, model.spec
    x, y = random_batch(model, batch_size, np.random.default_rng(spec.seed))
    with silenced():  # a fresh copy of the model, whose fallbacks this one says in its run
        peak = _peak_step_bytes(model, x, y)
    state = model.train_state()
    feeds = model.step_feeds(state, x, y, lr=1e-6, step=1, seed=0)

    def train_step():
        _, updates = model.step_executor.run(feeds)
        feeds.update(updates)

    train_s = median_step_seconds(train_step, steps, warmup, be.synchronize)
    infer_s = median_step_seconds(_inference(model, feeds), steps, warmup, be.synchronize)
    return {"backend": be.name, "batch_size": batch_size, "steps": steps,
            "threads": threads if be.host_threads else None,
            "executor": "planned" if model.optimized else "reference",
            "step_path": model.step_path,
            "train_step_ms": round(train_s * 1e3, 3),
            "train_samples_per_s": round(batch_size / train_s, 1),
            "inference_ms": round(infer_s * 1e3, 3),
            "inference_samples_per_s": round(batch_size / infer_s, 1),
            "peak_memory_mb": round(peak / 2**20, 6)}


def _inference(model: Model, feeds: dict):
    """A forward pass on a batch with the weights already in place, as an inference server
    runs: the planned executor keeps its own copy of the weights, fed back to it after the
    first call so that no call copies them again."""
    executor = model.forward_executor
    forward_feeds = {name: value for name, value in feeds.items() if name != "y"}
    executor.run(forward_feeds)
    forward_feeds.update(getattr(executor, "state", {}))
    return lambda: executor.run(forward_feeds)


def median_step_seconds(call, steps: int, warmup: int, synchronize) -> float:
    """The median of `steps` calls each timed on its own (after a synchronize, so that a GPU's
    queued work counts), after `warmup` untimed calls."""
    for _ in range(warmup):
        call()
    synchronize()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        call()
        synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _peak_step_bytes(model: Model, x, y) -> int:
    """Bytes held at the peak of a steady-state training step: state, the batch, the step's
    buffers and any temporaries, traced from a fresh model (compiled before tracing starts)."""
    be = model.backend
    fresh = Model(model.source, be, optimized=model.optimized, graph=model.capture_graph)
    start = be.device_pool_bytes(emptied=True)
    if start is not None:  # a device's pool: what it grows to over two steps
        _two_steps(fresh, x, y)
        be.synchronize()
        # A captured step also holds what its kernels allocated, in a pool of its own.
        return be.device_pool_bytes() - start + getattr(fresh.step_executor, "held_bytes",
                                                        lambda: 0)()
    # Outside the trace: the initial state the first step copies into the executor's own
    # buffer (which is traced, and which the state lives in from then on), and the backend's
    # blocks of a process or a thread (relu's zeros, GELU's float32 rows, a transposed copy's
    # tile), which are no step's.
    feeds = fresh.step_feeds(fresh.train_state(), x, y, 1e-6, 1, 0)
    scalar = be.xp.zeros(1, dtype=model.spec.dtype)
    be.relu_into(scalar, scalar)
    be.gelu_cdf_into(scalar, scalar)
    square = be.xp.zeros((128, 128), dtype=model.spec.dtype)
    be.transpose_into(square, square.copy())
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        return _traced_step_bytes(fresh, feeds)
    finally:
        if not tracing:
            tracemalloc.stop()


def _traced_step_bytes(model: Model, feeds: dict) -> int:
    """The arrays the first step makes and keeps (the arena, the state buffer, constants),
    counted in NumPy's own tracemalloc domain, so that the Python objects of the executor's
    program (some 40 KB, whatever the model) do not count; the batch, as the step holds it;
    and the most the steady-state second step holds on top, temporaries included."""
    arrays = tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)
    before = tracemalloc.take_snapshot().filter_traces([arrays])
    _step(model, feeds)
    after = tracemalloc.take_snapshot().filter_traces([arrays])
    kept = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    batch = sum(feeds[name].nbytes for name in ("x", "y"))
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    _step(model, feeds)
    _, peak = tracemalloc.get_traced_memory()
    return kept + batch + max(peak - current, 0)


def _step(model: Model, feeds: dict) -> None:
    _, updates = model.step_executor.run(feeds)
    feeds.update(updates)


def _two_steps(model: Model, x, y) -> None:
    """The first step allocates the plan; the second is the steady state."""
    feeds = model.step_feeds(model.train_state(), x, y, 1e-6, 1, 0)
    for _ in range(2):
        _step(model, feeds)
