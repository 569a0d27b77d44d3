"""What training prints on stderr: a tqdm bar per epoch (rate, ETA, running loss) that stays
as the epoch's line, and a final table."""

from __future__ import annotations

import sys

from tqdm import tqdm


class EpochProgress:
    def __init__(self, epoch: int, epochs: int, steps: int, disabled: bool = False):
        self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=True,
                        file=sys.stderr, disable=disabled, dynamic_ncols=True,
                        bar_format="{desc} {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} "
                                   "[{elapsed}<{remaining}, {rate_fmt}]{postfix}")

    def update(self, samples: int, running_loss: float) -> None:
        self.bar.set_postfix_str(f"loss {running_loss:.4f}", refresh=False)
        self.bar.update(1)

    def close(self, row: dict) -> None:
        shown = {k: v for k, v in row.items() if k.startswith(("train_", "val_"))}
        self.bar.set_postfix_str("  ".join(f"{k} {_fmt(v)}" for k, v in shown.items()))
        self.bar.close()


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_final_table(summary: dict, rows: list[dict]) -> None:
    final = summary["final"]
    lines = [f"trained {summary['epochs_run']} epoch(s) on {summary['backend']} in "
             f"{summary['wall_s']:.1f} s ({summary['samples_per_s']:.0f} samples/s)"
             + ("; stopped early" if summary["stopped_early"] else ""),
             f"best epoch: {summary['best_epoch']}",
             f"{'metric':<18} {'value':>10}"]
    lines += [f"{name:<18} {_fmt(value):>10}" for name, value in final.items() if value is not None]
    lines.append(f"run directory: {summary['run_dir']}")
    print("\n".join(lines), file=sys.stderr)
