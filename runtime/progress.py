"""What training prints on stderr: on a terminal, a tqdm bar per epoch (rate, ETA, running
loss) that stays as the epoch's line with its metrics; into a file or a CI log, where a live
bar would only add carriage-return noise, just that one line per epoch. Then a final table."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class EpochProgress:
    def __init__(self, epoch: int, epochs: int, steps: int, disabled: bool = False):
        self.label, self.steps, self.disabled = f"epoch {epoch}/{epochs}", steps, disabled
        self.started = time.perf_counter()
        self.bar = None
        if not disabled and sys.stderr.isatty():
            self.bar = tqdm(total=steps, desc=self.label, unit="batch", leave=True,
                            file=sys.stderr, dynamic_ncols=True,
                            bar_format="{desc} {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} "
                                       "[{elapsed}<{remaining}, {rate_fmt}]{postfix}")

    def update(self, running_loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {running_loss:.4f}", refresh=False)
            self.bar.update(1)

    def close(self, row: dict) -> None:
        metrics = "  ".join(f"{k} {_fmt(v)}" for k, v in row.items()
                            if k.startswith(("train_", "val_")) or k == "sparsity")
        if self.bar is not None:
            self.bar.set_postfix_str(metrics)
            self.bar.close()
        elif not self.disabled:
            seconds = time.perf_counter() - self.started
            print(f"{self.label}: {self.steps} batches in {seconds:.1f} s "
                  f"({self.steps / max(seconds, 1e-9):.1f} batch/s)  {metrics}", file=sys.stderr)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_final_table(summary: dict, rows: list[dict]) -> None:
    final = summary["final"]
    lines = [f"trained {summary['epochs_run']} epoch(s) on {summary['backend']} in "
             f"{summary['wall_s']:.1f} s ({summary['samples_per_s']:.0f} samples/s)"
             + ("; stopped early" if summary["stopped_early"] else ""),
             f"final model: {final['checkpoint']}, epoch {final['epoch']} (best epoch "
             f"{summary['best_epoch']}); nnrun eval and predict use it by default",
             f"{'metric':<18} {'value':>10}"]
    lines += [f"{name:<18} {_fmt(value):>10}" for name, value in final.items()
              if value is not None and name not in ("checkpoint", "epoch")]
    lines.append(f"run directory: {summary['run_dir']}")
    print("\n".join(lines), file=sys.stderr)
