"""A change measured alone: the train step and inference of a workload with one optimisation on
and off, in one process, in interleaved rounds (the two sides see the same phases of a noisy
machine), medians over rounds of each round's median. For what the passes and the memory plan
gain one at a time; against PyTorch, use vs_torch.py.

    python benchmarks/toggle.py benchmarks/workloads/mlp.yaml --batch-size 1024 --off overwrites
    python benchmarks/toggle.py benchmarks/workloads/mnist1d-mlp.yaml --off "loss and its gradient"

--off takes a pass of compiler/passes' PIPELINE by name, `overwrites` (values written over an
input: memory_plan.py), `relu-zeros` (NumPy's relu against a block of zeros), `by-sample`
(convolution columns [B, C*K, O]: compiler/passes/conv_columns.py) or `conv-chunks` (a
convolution whose columns nothing else reads builds them a chunk of samples at a time:
compiler/ops/conv.py; off, im2col and conv_columns over the whole batch).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import nnrun
from nnrun.backends.fused import FusedKernels
from nnrun.backends.numpy_backend import NumpyBackend
from nnrun.compiler import passes
from nnrun.compiler.passes import conv_columns, memory_plan
from nnrun.runtime.bench import _inference
from nnrun.runtime.gradcheck import random_batch
from nnrun.runtime.threads import thread_limit


def workload(spec: str, batch: int, backend: str = "numpy"):
    """The spec compiled as `nnrun bench` runs it (SGD with momentum), with whatever
    optimisations are on now, and a step's feeds for a random batch. On a GPU, uncaptured:
    the planned executor, node by node."""
    model = nnrun.compile(spec, backend=backend, graph=False,
                          overrides=["optimizer.type=sgd", "optimizer.momentum=0.9"])
    x, y = random_batch(model, batch, np.random.default_rng(0))
    return model, model.step_feeds(model.train_state(), x, y, lr=1e-6, step=1, seed=0)


def build(spec: str, batch: int):
    """The workload's train step (fed back its updates) and inference, as `nnrun bench` runs
    them."""
    model, feeds = workload(spec, batch)

    def train():
        _, updates = model.step_executor.run(feeds)
        feeds.update(updates)

    train()
    return {"train": train, "inference": _inference(model, feeds)}


def switched_off(name: str):
    """Sets the optimisation off; returns what sets it on again."""
    if name == "overwrites":
        saved = memory_plan._overwrites
        memory_plan._overwrites = lambda *args: {}
        return lambda: setattr(memory_plan, "_overwrites", saved)
    if name == "conv-chunks":
        conv_columns.CHUNKED_FORWARD = False
        return lambda: setattr(conv_columns, "CHUNKED_FORWARD", True)
    if name == "by-sample":
        saved = conv_columns.BY_SAMPLE_MIN_POSITIONS
        conv_columns.BY_SAMPLE_MIN_POSITIONS = float("inf")
        return lambda: setattr(conv_columns, "BY_SAMPLE_MIN_POSITIONS", saved)
    if name == "relu-zeros":
        saved = NumpyBackend.relu_into
        NumpyBackend.relu_into = FusedKernels.relu_into
        return lambda: setattr(NumpyBackend, "relu_into", saved)
    if name not in {pass_name for pass_name, _ in passes.PIPELINE}:
        raise SystemExit(f"--off {name!r}: not a pass of the pipeline, nor overwrites, "
                         "relu-zeros, by-sample or conv-chunks")
    saved = passes.PIPELINE
    passes.PIPELINE = tuple(p for p in saved if p[0] != name)
    return lambda: setattr(passes, "PIPELINE", saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--off", required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20, help="timed calls per round")
    args = parser.parse_args()
    with thread_limit(args.threads):
        on = build(args.spec, args.batch_size)
        switch_on = switched_off(args.off)
        off = build(args.spec, args.batch_size)
        switch_on()
        times = {(side, what): [] for side in ("on", "off") for what in ("train", "inference")}
        for _ in range(args.rounds):
            for side, calls in (("on", on), ("off", off)):
                # off while its side runs too: relu-zeros is chosen at each call, not when
                # the step is built
                switch_on = switched_off(args.off) if side == "off" else (lambda: None)
                for what, call in calls.items():
                    times[side, what].append(_round(call, args.steps))
                switch_on()
    for what in ("train", "inference"):
        on_ms, off_ms = (statistics.median(times[side, what]) * 1e3 for side in ("on", "off"))
        print(f"{what:>9}: {args.off} off {off_ms:.3f} ms, on {on_ms:.3f} ms "
              f"({(on_ms / off_ms - 1) * 100:+.1f}%)")


def _round(call, steps: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


if __name__ == "__main__":
    main()
