"""Which path each shipped spec's training step takes on a backend, and what its first-step
self-check said: one line per spec, and one JSON object per spec with --jsonl FILE.

    python benchmarks/step_paths.py --backend cupy --jsonl $OUT/step-paths.jsonl

For each spec: three steps on random batches of 16 from the same weights on the backend's
default path (captured on CuPy, runtime/step_path.py) and on NumPy; the path that ran, the
warning lines of any fallback (the self-check's result: none means it agreed), and the largest
difference of the weights from NumPy's, relative to the array's largest magnitude or 1. Then
train-step times, captured against uncaptured, on the benchmark workloads at batch 128
(`nnrun bench`'s median).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np

import nnrun
from nnrun.backends import BackendUnavailable, get_backend
from nnrun.runtime.bench import bench
from nnrun.runtime.gradcheck import random_batch
from nnrun.runtime.model import Model

ROOT = Path(__file__).resolve().parents[1]


def weights_after_steps(model: Model, x, y, steps: int = 3) -> dict:
    state = model.train_state()
    for step in range(1, steps + 1):
        _, updates = model.step_executor.run(model.step_feeds(state, x, y, 0.01, step, step))
        state.update(updates)
    return {name: np.array(model.backend.to_host(v), copy=True) for name, v in state.items()}


def spec_report(path: Path, backend: str) -> dict:
    source = nnrun.compile(path).source
    reference = Model(source, "numpy")
    x, y = random_batch(reference, 16, np.random.default_rng(0))
    expected = weights_after_steps(reference, x, y)
    model, warnings = Model(source, backend), io.StringIO()
    started = time.perf_counter()
    try:
        with contextlib.redirect_stderr(warnings):
            weights = weights_after_steps(model, x, y)
    except Exception as error:  # noqa: BLE001 - reported, and the next spec runs
        return {"spec": path.stem, "path": "error", "error": f"{type(error).__name__}: {error}"}
    # relative to the largest weight, or to 1 for weights that stay near 0 (spirals-mlp's biases
    # before batchnorm: their gradient is rounding noise, 1.9 "relative" under a CPU stand-in)
    difference = max(float(np.abs(weights[n] - v).max() / max(np.abs(v).max(), 1.0))
                     for n, v in expected.items())
    return {"spec": path.stem, "path": model.step_path,
            "self_check": warnings.getvalue().strip().splitlines() or "agreed",
            "max_relative_difference": difference,
            "seconds_first_3_steps": round(time.perf_counter() - started, 2)}


def timing_report(path: Path, backend: str, batch: int = 128) -> dict:
    source = nnrun.compile(path).source
    row = {"workload": path.stem, "batch": batch}
    for graph in (True, False):
        result = bench(Model(source, backend, graph=graph), batch, steps=30)
        row[f"{result['step_path']}_train_ms"] = result["train_step_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cupy")
    parser.add_argument("--jsonl", type=Path, help="also write one JSON object per line here")
    args = parser.parse_args()
    try:
        get_backend(args.backend)
    except BackendUnavailable as missing:  # no CuPy, no device: one line, as nnrun says it
        raise SystemExit(f"step_paths benchmark: {missing}") from None
    rows = []
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        rows.append(spec_report(path, args.backend))
        row = rows[-1]
        detail = row.get("error") or (f"self-check {row['self_check']}, max rel. diff vs "
                                      f"NumPy {row['max_relative_difference']:.1e}")
        print(f"{row['spec']:<28} {row['path']:<10} {detail}", flush=True)
    for name in ("mlp.yaml", "lenet5.yaml"):
        rows.append(timing_report(ROOT / "benchmarks" / "workloads" / name, args.backend))
        print(json.dumps(rows[-1]), flush=True)
    if args.jsonl:
        args.jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))


if __name__ == "__main__":
    main()
