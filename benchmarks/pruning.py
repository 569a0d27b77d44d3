"""The MNIST MLP at several pruning targets: the table of docs/results.md ("Pruning").

    NNRUN_DATA_DIR=../shared/data python benchmarks/pruning.py [--targets 0 0.5 0.8 0.9]

Each row is `nnrun train specs/mnist-mlp-pruned.yaml --set train.pruning.target_sparsity=S
--out runs/pruning/S --quiet`; the figures come from the run's summary.json (the final
checkpoint, chosen among the epochs at the target sparsity) and `nnrun summary RUN_DIR`'s
per-layer sparsity. Target 0 is the same spec unpruned.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from commands import run_nnrun

SPEC = "specs/mnist-mlp-pruned.yaml"


def run_target(target: float, out_root: Path) -> dict:
    out = out_root / f"{target:g}"
    shutil.rmtree(out, ignore_errors=True)
    command = ["nnrun", "train", SPEC, "--set", f"train.pruning.target_sparsity={target:g}",
               "--out", str(out), "--quiet"]
    run_nnrun(*command[1:])
    summary = json.loads((out / "summary.json").read_text())
    layers = json.loads(run_nnrun("summary", str(out), "--format", "json",
                                  capture_output=True, text=True).stdout)
    return {"target": target, "command": " ".join(command), "summary": summary,
            "layers": {row["name"]: row["sparsity"] for row in layers["layers"]
                       if row["sparsity"] is not None},
            "weights_sparsity": layers["weights_sparsity"]}


def line(result: dict) -> str:
    final = result["summary"]["final"]
    per_layer = ", ".join(f"{value:.1%}" for value in result["layers"].values())
    return (f"| {result['target']:.0%} | {result['weights_sparsity']:.2%} ({per_layer}) | "
            f"{final['test_accuracy']:.2%} | {final['val_accuracy']:.2%} | "
            f"{result['summary']['best_epoch']} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", nargs="*", type=float, default=[0.0, 0.5, 0.8, 0.9])
    parser.add_argument("--out", default="runs/pruning")
    args = parser.parse_args()
    out_root = Path(args.out)
    out_root.mkdir(parents=True, exist_ok=True)
    print("| target | zeros in the weights (per layer) | test accuracy | val accuracy | "
          "best epoch |\n|---:|---|---:|---:|---:|", flush=True)
    results = []
    for target in args.targets:
        results.append(run_target(target, out_root))
        print(line(results[-1]), flush=True)
    (out_root / "pruning.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
