"""The invariance table of docs/course.md: trained runs evaluated on shifted and shuffled test
images with `nnrun eval RUN_DIR --shift PIXELS` and `--permute`.

    NNRUN_DATA_DIR=../shared/data python benchmarks/invariance.py [--train] [--runs runs/invariance]

--train first trains the four specs (`nnrun train specs/<spec>.yaml --out RUNS/<spec>`);
without it the run directories must exist. Prints one Markdown row per run: test accuracy on
the images as they are, shifted 2 and 4 pixels right, and with the pixels shuffled by the run's
seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from commands import run_nnrun

SPECS = ["mnist-mlp", "lenet5", "mnist-mlp-shuffled", "lenet5-shuffled"]
COLUMNS = [("as they are", []), ("shifted 2 px", ["--shift", "2"]),
           ("shifted 4 px", ["--shift", "4"]), ("pixels shuffled", ["--permute"])]


def accuracy(run_dir: Path, extra: list[str]) -> float:
    result = run_nnrun("eval", str(run_dir), "--format", "json", *extra,
                       capture_output=True, text=True)
    return json.loads(result.stdout)["test_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="runs/invariance")
    parser.add_argument("--train", action="store_true")
    args = parser.parse_args()
    root = Path(args.runs)
    print("| run | " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS), flush=True)
    for spec in SPECS:
        if args.train:
            run_nnrun("train", f"specs/{spec}.yaml", "--out", str(root / spec), "--quiet")
        cells = [f"{accuracy(root / spec, extra):.2%}" for _, extra in COLUMNS]
        print(f"| `{spec}` | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
