"""What training prints (issue 10, item 7): every metric visible at 80 columns, no blank lines
on a pseudo-terminal that reports 0 columns, final tables aligned with long metric names."""

from __future__ import annotations

import io
import os
import re

import pytest
from rich.console import Console

from nnrun.runtime import progress

ROW = {"epoch": 3, "train_loss": 0.12345, "train_accuracy": 0.9861, "lr": 0.05,
       "val_loss": 0.23456, "val_accuracy": 0.9806, "val_top_3_accuracy": 0.9991,
       "sparsity": 0.5, "epoch_s": 1.5}
METRICS = ["train_loss 0.1235", "train_accuracy 0.9861", "val_loss 0.2346",
           "val_accuracy 0.9806", "val_top_3_accuracy 0.9991", "sparsity 0.5000"]
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def final_screen(text: str) -> list[str]:
    """What stays on the terminal: the lines after the live bar's last redraw."""
    return [CONTROL.sub("", line) for line in text.split("\x1b[2K")[-1].splitlines()]


def run_epoch(steps: int = 3) -> None:
    bar = progress.EpochProgress(3, 10, steps)
    for _ in range(steps):
        bar.update(0.5)
    bar.close(ROW)


@pytest.mark.parametrize("columns", [80, 120])
def test_every_metric_is_visible_on_a_terminal(monkeypatch, columns):
    screen = io.StringIO()
    monkeypatch.setattr(progress, "stderr_console", lambda: Console(
        file=screen, force_terminal=True, width=columns, color_system=None, markup=False))
    run_epoch()
    lines = final_screen(screen.getvalue())
    assert lines[0].startswith("epoch 3/10: 3 batches in")
    assert all(len(line) <= columns for line in lines)
    shown = " ".join(" ".join(line.split()) for line in lines)
    for metric in METRICS:
        assert metric in shown, (metric, lines)
    assert "lr" not in shown.split() and "epoch_s" not in shown


def test_a_zero_column_pseudo_terminal_prints_no_blank_lines(monkeypatch, capsys):
    monkeypatch.setattr(os, "get_terminal_size", lambda *fd: os.terminal_size((0, 0)))
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("COLUMNS", raising=False)
    run_epoch()
    lines = [line for line in final_screen(capsys.readouterr().err) if line.strip()]
    assert lines and all(0 < len(line) <= 80 for line in lines)
    assert all(metric in " ".join(lines) for metric in ("train_loss", "val_top_3_accuracy"))


def test_a_log_file_gets_one_line_per_epoch(capsys):
    run_epoch()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err
    assert all(metric in err for metric in METRICS)


@pytest.mark.parametrize(("steps", "said"), [(1, ": 1 batch in "), (3, ": 3 batches in ")])
def test_the_epochs_line_counts_its_batches_in_words(capsys, steps, said):
    run_epoch(steps)
    assert said in capsys.readouterr().err


def test_final_table_aligns_long_metric_names(capsys):
    summary = {"epochs_run": 2, "backend": "numpy", "wall_s": 1.0, "samples_per_s": 100.0,
               "stopped_early": False, "best_epoch": 2, "run_dir": "runs/x",
               "final": {"checkpoint": "best.npz", "epoch": 2, "train_loss": 0.1,
                         "val_accuracy": 0.98,
                         "test_top_3_accuracy_with_a_long_name": 0.999, "test_loss": None}}
    progress.print_final_table(summary, [])
    lines = capsys.readouterr().err.splitlines()
    values = [line for line in lines if line.split()[0] in summary["final"]]
    assert len(values) == 3 and len({len(line) for line in values}) == 1
    assert values[-1].split() == ["test_top_3_accuracy_with_a_long_name", "0.9990"]


@pytest.mark.parametrize("now, said", [
    (None, "trained 6 epoch(s) on numpy in 1.0 s"),
    (range(4, 7), "trained epochs 4-6 of the run's 6 on numpy in 1.0 s"),  # a resume
    (range(6, 7), "trained epoch 6 of the run's 6 on numpy"),
    (range(7, 7), "no epoch trained now; the run has 6 epoch(s)"),
])
def test_the_final_line_counts_the_epochs_this_command_trained(capsys, now, said):
    summary = {"epochs_run": 6, "backend": "numpy", "wall_s": 1.0, "samples_per_s": 100.0,
               "stopped_early": False, "best_epoch": 2, "run_dir": "runs/x",
               "final": {"checkpoint": "best.npz", "epoch": 2, "train_loss": 0.1}}
    progress.print_final_table(summary, [], now)
    assert capsys.readouterr().err.splitlines()[0].startswith(said)


def test_the_final_lines_rate_is_of_the_epochs_this_command_trained(capsys):
    """A resume said the rate of all the run's epochs, those of earlier commands (another
    backend, perhaps) among them, beside the epochs it trained."""
    summary = {"epochs_run": 3, "backend": "numpy", "wall_s": 1.0, "samples_per_s": 50.0,
               "stopped_early": False, "best_epoch": 2, "run_dir": "runs/x",
               "final": {"checkpoint": "best.npz", "epoch": 2, "train_loss": 0.1}}
    rows = [{"epoch": 1, "epoch_s": 2.0, "samples_per_s": 10.0},
            {"epoch": 2, "epoch_s": 2.0, "samples_per_s": 10.0},
            {"epoch": 3, "epoch_s": 1.0, "samples_per_s": 400.0}]
    progress.print_final_table(summary, rows, range(3, 4))
    assert "(400 samples/s in the training steps)" in capsys.readouterr().err


def test_an_epoch_cut_short_gives_the_cursor_the_streams_and_the_thread_back(monkeypatch):
    """An error that ends the epoch without close() stops the bar there, not at exit (the
    growth audit: each failed nnrun.train in a notebook left a refresh thread running and
    sys.stdout and sys.stderr taken over, one more per call)."""
    import sys

    screen = io.StringIO()
    monkeypatch.setattr(progress, "stderr_console", lambda: Console(
        file=screen, force_terminal=True, width=80, color_system=None, markup=False))
    streams = (sys.stdout, sys.stderr)
    with pytest.raises(KeyboardInterrupt):
        with progress.EpochProgress(1, 1, 5) as bar:
            bar.update(0.5)
            refresh = bar.bar.live._refresh_thread
            assert refresh.is_alive() and sys.stdout is not streams[0]  # rich's, while it runs
            raise KeyboardInterrupt
    assert "\x1b[?25h" in screen.getvalue().split("\x1b[?25l")[-1]  # the cursor is back
    refresh.join(timeout=2.0)  # it sees its stop between refreshes
    assert (sys.stdout, sys.stderr) == streams and not refresh.is_alive()


def test_failed_trainings_on_a_terminal_leave_no_bar_behind(monkeypatch, tmp_path):
    import sys
    import threading

    import nnrun

    monkeypatch.setattr(progress, "stderr_console", lambda: Console(
        file=io.StringIO(), force_terminal=True, width=80, color_system=None, markup=False))
    streams, before = (sys.stdout, sys.stderr), set(threading.enumerate())
    for call in range(3):
        with pytest.raises(nnrun.TrainingError):  # diverges in its first epoch
            nnrun.train(nnrun.load_spec_text(
                "data: {dataset: xor}\nmodel: {layers: [{type: dense, units: 2}]}\n"
                "optimizer: {type: sgd, lr: 1.0e+38}\ntrain: {epochs: 2, batch_size: 2}\n"),
                out_dir=tmp_path / str(call))
        assert (sys.stdout, sys.stderr) == streams
    bars = [thread for thread in set(threading.enumerate()) - before
            if type(thread).__name__ == "_RefreshThread"]
    for thread in bars:  # each sees its stop between refreshes
        thread.join(timeout=2.0)
    assert not any(thread.is_alive() for thread in bars)


def test_the_live_bar_shows_the_rate_the_time_left_and_the_running_loss(monkeypatch):
    """Issue 3: a progress bar per epoch with rate, ETA and running loss."""
    screen = io.StringIO()
    monkeypatch.setattr(progress, "stderr_console", lambda: Console(
        file=screen, force_terminal=True, width=120, color_system=None, markup=False))
    bar = progress.EpochProgress(1, 2, 50)
    for _ in range(10):
        bar.update(0.25)
    bar.bar.refresh()
    live = CONTROL.sub("", screen.getvalue())
    assert "batch/s" in live and "10/50" in live and "loss 0.2500" in live
    assert re.search(r"\d+:\d\d:\d\d", live)  # the time left
    bar.close({"epoch": 1, "train_loss": 0.25})


def test_the_live_bar_fits_80_columns_with_long_counts_and_a_fast_rate(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(progress, "stderr_console", lambda: Console(
        file=screen, force_terminal=True, width=80, color_system=None, markup=False))
    bar = progress.EpochProgress(100, 100, 18750)
    task = bar.bar.tasks[0]
    for _ in range(1875):
        bar.update(0.123456)
    monkeypatch.setattr(type(task), "speed", property(lambda self: 12345.6))
    bar.bar.refresh()
    bar.bar.stop()
    lines = [line for line in CONTROL.sub("\n", screen.getvalue()).splitlines() if line.strip()]
    assert "12346 batch/s" in lines[-1] and "loss 0.1235" in lines[-1], lines[-1]
    assert all(len(line) <= 80 for line in lines)


def test_the_epoch_line_gives_the_training_time_that_metrics_jsonl_keeps(capsys):
    """The report audit: "24 batches in 1.8 s (13.6 batch/s)" counted a large validation
    split's pass, where epoch_s (and the run's samples/s) said 0.40 s."""
    bar = progress.EpochProgress(1, 2, 24)
    bar.close({**ROW, "epoch_s": 0.4})
    assert "epoch 1/2: 24 batches in 0.4 s (60.0 batch/s)" in capsys.readouterr().err
