"""Where a step's time goes: each node of a workload's compiled inference (or training step)
timed on its own, node by node, on one thread, medians over rounds. With --off, the same
graph is built a second time with one optimisation off (as in toggle.py), and the two are
timed in interleaved rounds, node against node.

    python benchmarks/node_times.py benchmarks/workloads/lenet5.yaml
    python benchmarks/node_times.py benchmarks/workloads/lenet5.yaml --off by-sample
    python benchmarks/node_times.py benchmarks/workloads/lenet5.yaml --train

Nodes run one after the other on the calling thread, so batch segments run unsplit; the sum of
the nodes is a one-thread step. With --backend cupy each node is timed on the GPU between two
CUDA events (the planned executor, uncaptured: what a node's kernels take, launch gaps inside
the node included), to see where a captured step's time goes.

    python benchmarks/node_times.py benchmarks/workloads/lenet5.yaml --train --backend cupy \
        --batch-size 1024
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

from nnrun.backends import BackendUnavailable
from nnrun.runtime.threads import thread_limit
from toggle import switched_off, workload


def program(spec: str, batch: int, train: bool, backend: str = "numpy"):
    """The executor and its bound program for the batch, after a few calls."""
    model, feeds = workload(spec, batch, backend)
    executor = model.step_executor if train else model.forward_executor
    if not train:
        feeds.pop("y", None)
    for _ in range(3):
        _, updates = executor.run(feeds)
        feeds.update(updates)
    executor = getattr(executor, "executor", executor)  # the path a checked step settled on
    return executor, executor.program(batch)


def node_medians(sides: dict, rounds: int, clock=None) -> dict:
    """{side: [median seconds of each node]}, the sides' nodes timed in interleaved rounds."""
    clock = clock or HostClock()
    times = {side: [[] for _ in prog.node_steps] for side, (_, prog) in sides.items()}
    for _ in range(rounds):
        for side, (_, prog) in sides.items():
            for index, steps in enumerate(prog.node_steps):
                with clock.timing(times[side][index]):
                    for step in steps:
                        step(prog.env)
    return {side: [statistics.median(t) for t in node_times] for side, node_times in times.items()}


class HostClock:
    @contextmanager
    def timing(self, into: list):
        started = time.perf_counter()
        yield
        into.append(time.perf_counter() - started)


class DeviceClock:
    """The GPU's time between two events around the block (after what was queued before)."""

    def __init__(self):
        import cupy

        self.cupy = cupy

    @contextmanager
    def timing(self, into: list):
        cuda = self.cupy.cuda
        start, end = cuda.Event(), cuda.Event()
        cuda.get_current_stream().synchronize()
        start.record()
        yield
        end.record()
        end.synchronize()
        into.append(cuda.get_elapsed_time(start, end) / 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--off", help="an optimisation, as toggle.py's --off")
    parser.add_argument("--train", action="store_true", help="the training step, not inference")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    args = parser.parse_args()
    with thread_limit(1):
        sides = {"on": program(args.spec, args.batch_size, args.train, args.backend)}
        if args.off:
            switch_on = switched_off(args.off)
            sides["off"] = program(args.spec, args.batch_size, args.train, args.backend)
            switch_on()
        medians = node_medians(sides, args.rounds,
                               DeviceClock() if args.backend == "cupy" else None)
    graphs = {side: executor.graph for side, (executor, _) in sides.items()}
    for side, graph in graphs.items():
        print(f"# {side}: {len(graph.nodes)} nodes, sum {sum(medians[side]) * 1e3:.3f} ms")
        for index, node in enumerate(graph.nodes):
            shapes = ", ".join(str(list(v.type.shape)) for v in node.outputs)
            print(f"{index:4d} {node.op:32s} {medians[side][index] * 1e6:9.1f} us  {shapes}")


if __name__ == "__main__":
    try:
        main()
    except BackendUnavailable as missing:  # no CuPy, no device: one line, as nnrun says it,
        # with this script's option for the API's parameter
        advice = str(missing).replace("backend='numpy'", "--backend numpy")
        raise SystemExit(f"node_times benchmark: {advice}") from None
