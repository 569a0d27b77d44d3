"""What training prints on stderr, through rich.

On a terminal: a live bar per epoch (rate, ETA, running loss), replaced at the end of the epoch
by its line with every metric, wrapped into aligned columns when the terminal is too narrow for
one line (rich takes the width from the terminal, 80 when a pseudo-terminal reports 0 columns).
Into a file or a CI log, where a live bar would only add control-character noise: one line per
epoch. Then a final table.
"""

from __future__ import annotations

import sys
import time

from rich.columns import Columns
from rich.console import Console
from rich.padding import Padding
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                           TaskProgressColumn, TextColumn, TimeRemainingColumn)
from rich.text import Text

from nnrun.compiler.tables import metric_text, table_text
from nnrun.notices import one_line


REFRESH_S = 0.25  # seconds between two reads of the running loss for the bar


def stderr_console() -> Console:
    """Training's console (tests replace it with a fake terminal of a fixed width)."""
    return Console(stderr=True, markup=False, highlight=False, emoji=False)


class BatchRateColumn(ProgressColumn):
    """Batches per second, as rich measures the task's speed (its other rate column counts
    bytes)."""

    def render(self, task) -> Text:
        speed = task.speed
        if not speed:
            return Text("- batch/s")
        return Text(f"{speed:.1f} batch/s" if speed < 100 else f"{speed:.0f} batch/s")


class EpochProgress:
    def __init__(self, epoch: int, epochs: int, steps: int, disabled: bool = False):
        self.label, self.steps, self.disabled = f"epoch {epoch}/{epochs}", steps, disabled
        self.started = time.perf_counter()
        self.refreshed = self.started - REFRESH_S  # the first step shows its loss at once
        self.console = stderr_console()
        self.bar = None
        if not disabled and self.console.is_terminal:
            # the rate, the time left and the running loss (issue 3), within 80 columns
            self.bar = Progress(TextColumn(self.label), BarColumn(bar_width=12),
                                TaskProgressColumn(), MofNCompleteColumn(), BatchRateColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[loss]}"),
                                console=self.console, transient=True)
            self.task = self.bar.add_task(self.label, total=steps, loss="")
            self.bar.start()

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exception) -> None:
        """An error or Ctrl-C that ends the epoch without close() stops the bar too: its
        refresh thread, the streams it took over and the terminal's cursor are given back (a
        program calling nnrun.train goes on after the error)."""
        self._stop()

    def _stop(self) -> None:
        if self.bar is not None and self.bar.live.is_started:
            self.bar.stop()

    def update(self, running_loss: float | None = None) -> None:
        """One more step; its running loss when it was read (see refresh_due)."""
        if self.bar is None:
            return
        if running_loss is None:
            self.bar.update(self.task, advance=1)
        else:
            self.bar.update(self.task, advance=1, loss=f"loss {metric_text(running_loss)}")

    def refresh_due(self) -> bool:
        """Whether the bar wants a new running loss: a few times per second on a terminal,
        never otherwise. Reading the loss copies it from the device, so only then."""
        now = time.perf_counter()
        if self.bar is None or now - self.refreshed < REFRESH_S:
            return False
        self.refreshed = now
        return True

    def close(self, row: dict) -> None:
        # the epoch's training time, as metrics.jsonl's epoch_s (validation is not in it)
        seconds = row.get("epoch_s") or time.perf_counter() - self.started
        batches = "batch" if self.steps == 1 else "batches"
        head = (f"{self.label}: {self.steps} {batches} in {seconds:.1f} s "
                f"({self.steps / max(seconds, 1e-9):.1f} batch/s)")
        items = [f"{k} {_fmt(v)}" for k, v in row.items()
                 if (k.startswith(("train_", "val_")) or k == "sparsity") and v is not None]
        if "grad_norm_min" in row:  # train.log_grad_norms: the extremes over the layers
            items.append(f"grad_norm {row['grad_norm_min']:.3g} ({row['grad_norm_min_layer']}) "
                         f"to {row['grad_norm_max']:.3g} ({row['grad_norm_max_layer']})")
        if self.bar is not None:
            self._stop()
            self._print_wrapped(head, items)
        elif not self.disabled:
            print(f"{head}  {'  '.join(items)}", file=sys.stderr)

    def _print_wrapped(self, head: str, items: list[str]) -> None:
        line = f"{head}  {'  '.join(items)}"
        if len(line) <= self.console.width:
            self.console.print(line, soft_wrap=True)
            return
        # Too wide: the metrics go below, in columns that rich fits to the terminal.
        self.console.print(head, soft_wrap=True)
        self.console.print(Padding(Columns(items, padding=(0, 2)), (0, 0, 0, 2)))


def _fmt(value) -> str:
    return metric_text(value) if isinstance(value, float) else str(value)


def overall_rate(rows: list[dict]) -> float:
    """Samples per second over the epochs together: their samples over their time (the mean
    of the epochs' rates would count a short epoch as much as a long one)."""
    seconds = sum(row["epoch_s"] for row in rows)
    samples = sum(row["samples_per_s"] * row["epoch_s"] for row in rows)
    return round(samples / seconds, 1) if seconds > 0 else 0.0


def print_final_table(summary: dict, rows: list[dict], trained_now: range | None = None) -> None:
    """`trained_now`: the epochs this command trained (default: all of the run's); a resume
    trains the run's last ones, or none."""
    final, total = summary["final"], summary["epochs_run"]
    trained_now = range(1, total + 1) if trained_now is None else trained_now
    where = summary["backend"] + (f" x {summary['ranks']} ranks" if "ranks" in summary else "")
    if not trained_now:
        head = f"no epoch trained now; the run has {total} epoch(s)"
    else:
        first, last = trained_now.start, trained_now.stop - 1
        numbers = f"epoch {first}" if first == last else f"epochs {first}-{last}"
        epochs = (f"{len(trained_now)} epoch(s)" if first == 1
                  else f"{numbers} of the run's {total}")
        rate = overall_rate([row for row in rows if row["epoch"] in trained_now])
        head = (f"trained {epochs} on {where} in {summary['wall_s']:.1f} s "
                f"({rate:.0f} samples/s in the training steps)")
    best = summary["best_epoch"]
    which = ", the best epoch" if best == final["epoch"] else f" (best epoch {best})"
    lines = [head + ("; stopped early" if summary["stopped_early"] else ""),  # within 80 columns
             f"final model: {final['checkpoint']}, epoch {final['epoch']}{which}; nnrun eval and "
             "predict use it"]
    metrics = [[name, _fmt(value)] for name, value in final.items()
               if value is not None and name not in ("checkpoint", "epoch")]
    lines.append(table_text(["metric", "value"], metrics, right=(1,)).rstrip("\n"))
    lines.append(one_line(f"run directory: {summary['run_dir']}"))
    print("\n".join(lines), file=sys.stderr)
