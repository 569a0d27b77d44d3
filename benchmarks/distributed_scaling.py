"""Samples/s of data-parallel training, and where a distributed step's time goes
(docs/distributed.md).

    python benchmarks/distributed_scaling.py SPEC --threads 2              # 1 rank
    mpiexec -n 2 python benchmarks/distributed_scaling.py SPEC --threads 1 # 2 ranks

Trains `--epochs` epochs of `--steps` batches through `nnrun.train` (into a temporary run
directory, removed after) and prints one JSON line from rank 0, over every step: samples/s,
and per step, the milliseconds of the whole step and those spent in the gradient all-reduce
and in the agreement after the step. Those two include the time a rank waits for the slower
one; `transfer_ms` is the all-reduce of a buffer of the gradients' size alone, the ranks
starting it together (after a barrier), the median of 20.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from nnrun.compiler.frontend import load_spec
from nnrun.runtime import distributed
from nnrun.runtime.model import Model
from nnrun.runtime.threads import thread_limit
from nnrun.runtime.train import train

SPENT: dict[str, float] = defaultdict(float)


def timed(owner, name: str) -> None:
    original = getattr(owner, name)

    def measured(*arguments, **keywords):
        started = time.perf_counter()
        try:
            return original(*arguments, **keywords)
        finally:
            SPENT[name] += time.perf_counter() - started

    setattr(owner, name, measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--steps", type=int, default=100, help="batches per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per rank")
    arguments = parser.parse_args()
    ranks = distributed.connect("numpy") if _under_mpi() else distributed.ALONE
    timed(distributed.MpiReduction, "allreduce_mean")
    timed(distributed.MpiRanks, "agree")
    out = Path(tempfile.mkdtemp(prefix="nnrun-scaling-")) if ranks.is_root else None
    source = load_spec(arguments.spec, [f"train.epochs={arguments.epochs}"])
    try:
        with thread_limit(arguments.threads):
            summary = train(source, out_dir=out and out / "run", quiet=True,
                            max_steps=arguments.steps, ranks=ranks)
        transfer = _transfer_ms(ranks, source) if ranks.size > 1 else 0.0
        if ranks.is_root:
            metrics = (out / "run/metrics.jsonl").read_text().splitlines()
            rows = [json.loads(line) for line in metrics]
            seconds, steps = sum(row["epoch_s"] for row in rows), arguments.steps * len(rows)
            print(json.dumps({
                "spec": arguments.spec.name, "ranks": ranks.size, "threads": arguments.threads,
                "batch": source.spec.train.batch_size,
                "samples_per_s": round(steps * source.spec.train.batch_size / seconds),
                "step_ms": round(1000 * seconds / steps, 2),
                "allreduce_ms": round(1000 * SPENT["allreduce_mean"] / steps, 2),
                "agree_ms": round(1000 * SPENT["agree"] / steps, 2),
                "transfer_ms": round(transfer, 3), "wall_s": summary["wall_s"]}))
    finally:
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)


def _transfer_ms(ranks, source) -> float:
    model = Model(source)
    count = sum(int(np.prod(info.shape)) for info in model.lowered.params.values())
    gradients = np.ones(count, dtype=source.spec.dtype)
    reduction, times = distributed.MpiReduction(ranks.comm), []
    for _ in range(20):
        ranks.comm.Barrier()
        started = time.perf_counter()
        reduction.allreduce_mean(gradients)
        times.append(1000 * (time.perf_counter() - started))
    return float(np.median(times))


def _under_mpi() -> bool:
    import os

    return any(name in os.environ for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"))


if __name__ == "__main__":
    main()
