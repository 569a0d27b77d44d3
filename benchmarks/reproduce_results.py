"""Runs every row of docs/results.md with the NumPy backend and prints the table.

    NNRUN_DATA_DIR=../shared/data python benchmarks/reproduce_results.py [--only NAME ...]

Each row is `nnrun train specs/<spec>.yaml --out runs/results/<time>-<id>/<spec> --quiet` (a
new directory each time: earlier runs are kept); the figures come from the run's summary.json (test
accuracy of the final weights, epochs, wall time, mean training samples/s). Rows run one after
another so that timings do not compete for cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from datetime import date, datetime
from pathlib import Path

from commands import run_nnrun

ROWS = [
    ("1", "mnist-mlp", "MNIST, MLP 784-256-128-10, SGD momentum", ">= 98.0%"),
    ("2", "lenet5", "MNIST, LeNet-5", ">= 99.0% (LeCun et al. 1998: 0.95% error)"),
    ("3", "mnist-mlp-shuffled", "MNIST, MLP, shuffled pixels", "within 0.5 points of row 1"),
    ("3", "lenet5-shuffled", "MNIST, LeNet-5, shuffled pixels", "clearly below row 2"),
    ("4", "mnist1d-logreg", "MNIST-1D, logistic regression", "~32% (Greydanus 2020)"),
    ("4", "mnist1d-mlp", "MNIST-1D, MLP", "~68%"),
    ("4", "mnist1d-cnn", "MNIST-1D, CNN", "~94%"),
    ("5", "quickstart", "digits, the quickstart CNN", ">= 97% validation"),
    ("6", "fcn-segmentation", "shapes, FCN-8 (per-pixel labels)", "mean IoU >= 0.75"),
]


def run_row(spec: str, out_root: Path) -> dict:
    out = out_root / spec
    command = ["nnrun", "train", f"specs/{spec}.yaml", "--out", str(out), "--quiet"]
    run_nnrun(*command[1:])
    summary = json.loads((out / "summary.json").read_text())
    return {"spec": spec, "command": " ".join(command), **summary}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", help="spec names to run (default: every row)")
    parser.add_argument("--out", default="runs/results")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_root = Path(tempfile.mkdtemp(prefix=f"{stamp}-", dir=args.out))  # its own, if two start
    results = []
    for row, spec, what, target in ROWS:
        if args.only and spec not in args.only:
            continue
        result = run_row(spec, out_root)
        result.update(row=row, what=what, target=target)
        results.append(result)
        print(_line(result), flush=True)
    (out_root / f"results-{date.today()}.json").write_text(json.dumps(
        {"machine": platform.platform(), "python": sys.version.split()[0], "rows": results},
        indent=2))


def _line(r: dict) -> str:
    final = r["final"]
    accuracy = final.get("test_accuracy", final.get("test_pixel_accuracy"))
    shown = f"{100 * accuracy:.2f}%" if accuracy is not None else "n/a"
    if final.get("test_mean_iou") is not None:  # segmentation: pixel accuracy and mean IoU
        shown += f" of pixels, mean IoU {final['test_mean_iou']:.3f}"
    return (f"| {r['row']} | {r['what']} | `{r['spec']}` | {shown} | {r['target']} | "
            f"{r['epochs_run']} ({r['best_epoch']}) | {r['wall_s']:.0f} s | "
            f"{r['samples_per_s']:,.0f} |")


if __name__ == "__main__":
    main()
