"""`nnrun plot`: curves of several runs in one PNG; without matplotlib, one line naming the
extra."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import nnrun
from nnrun.cli import main

pytest.importorskip("matplotlib")
ROOT = Path(__file__).resolve().parents[2]

RUN = """\
name: {name}
seed: 0
data: {{dataset: digits, validation_split: 0.1, limit: 200}}
model:
  layers:
    - {{type: flatten}}
    - {{type: dense, units: 16, activation: {activation}}}
    - {{type: dense, units: 10}}
optimizer: {{type: sgd, lr: 0.1, schedule: cosine}}
train: {{epochs: 3, batch_size: 32, log_grad_norms: {{every_steps: 2}}}}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, activation in (("sigmoid", "sigmoid"), ("relu", "relu")):
        spec = nnrun.load_spec_text(RUN.format(name=name, activation=activation))
        nnrun.train(spec, out_dir=root / name, quiet=True)
    return root


def test_writes_a_png_of_every_panel_for_several_runs(runs, tmp_path):
    out = tmp_path / "curves.png"
    result = CliRunner().invoke(main, ["plot", str(runs / "sigmoid"), str(runs / "relu"),
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "loss, accuracy, lr, grad_norms of 2 runs" in result.output
    from matplotlib.image import imread

    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(out)
    assert image.shape[0] > 400 and image.shape[1] > 600
    # non-trivial: many distinct colours (curves of two runs and several layers), not a blank
    colours = np.unique((image[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50


@pytest.mark.parametrize("suffix", [".eps", ".ps", ".pdf", ".svg"])
def test_every_format_is_written_without_a_warning(runs, tmp_path, suffix, caplog, recwarn):
    """PostScript has no transparency: a translucent grid or legend made matplotlib log a
    warning on the user's screen (pytest collects logs and warnings instead)."""
    out = tmp_path / f"curves{suffix}"
    result = CliRunner().invoke(main, ["plot", str(runs / "sigmoid"), str(runs / "relu"),
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and out.stat().st_size > 1000
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    warned = [str(w.message) for w in recwarn if not issubclass(w.category, DeprecationWarning)]
    assert logged == [] and warned == []


def test_every_tracked_metric_is_a_default_panel(tmp_path):
    """A style review: the default panels were a list of metric names that left top-k
    accuracy out (a run tracking it drew loss, accuracy and lr)."""
    text = RUN.format(name="top", activation="relu").replace(
        "log_grad_norms: {every_steps: 2}",
        "metrics: [mae, {type: top_k_accuracy, k: 3}, accuracy]")
    nnrun.train(nnrun.load_spec_text(text), out_dir=tmp_path / "top", quiet=True)
    result = CliRunner().invoke(main, ["plot", str(tmp_path / "top"), "--out",
                                       str(tmp_path / "top.png")])
    assert result.exit_code == 0, result.output
    assert "loss, mae, top_3_accuracy, accuracy, lr of 1 run" in result.output
    # keys of no metric in a hand-edited metrics.jsonl draw no panel of their own (a review)
    rows = (tmp_path / "top" / "metrics.jsonl").read_text().splitlines()
    edited = [row.replace('"epoch_s"', '"train_time_s": 1.5, "train_": 2, "epoch_s"')
              for row in rows]
    (tmp_path / "top" / "metrics.jsonl").write_text("\n".join(edited) + "\n")
    result = CliRunner().invoke(main, ["plot", str(tmp_path / "top"), "--out",
                                       str(tmp_path / "top.png")])
    assert "loss, mae, top_3_accuracy, accuracy, lr of 1 run" in result.output


def test_metrics_choose_the_panels(runs, tmp_path):
    out = tmp_path / "loss.png"
    result = CliRunner().invoke(main, ["plot", str(runs / "relu"), "--out", str(out),
                                       "--metrics", "loss,grad_norms"])
    assert result.exit_code == 0, result.output
    assert "loss, grad_norms of 1 run" in result.output and out.stat().st_size > 10_000


def test_unknown_metric_is_one_line(runs, tmp_path):
    result = CliRunner().invoke(main, ["plot", str(runs / "relu"), "--out",
                                       str(tmp_path / "x.png"), "--metrics", "f1"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "no run has 'f1'" in result.output
    assert not (tmp_path / "x.png").exists()
    assert "grad_norms" in result.output.split("these runs have: ")[1]


def test_a_misspelt_panel_is_offered_the_panel_and_the_panels_come_first(runs, tmp_path):
    """The toolbox audit: the list named metrics.jsonl's keys (train_loss) but not the panel
    names the docs give (loss, accuracy, lr)."""
    result = CliRunner().invoke(main, ["plot", str(runs / "relu"), "--out",
                                       str(tmp_path / "x.png"), "--metrics", "losss"])
    assert result.exit_code == 1
    assert "did you mean 'loss'? these runs have: loss, accuracy, lr, grad_norms, " \
        in result.output


def test_keys_that_hold_no_numbers_are_neither_offered_nor_drawn(runs, tmp_path):
    """grad_norm_max_layer names a layer: no curve; an empty panel and matplotlib's warning
    came out with exit 0."""
    offered = CliRunner().invoke(main, ["plot", str(runs / "relu"), "--out",
                                        str(tmp_path / "x.png"), "--metrics", "f1"]).output
    assert "grad_norm_max," in offered and "grad_norm_max_layer" not in offered
    result = CliRunner().invoke(main, ["plot", str(runs / "relu"), "--out",
                                       str(tmp_path / "y.png"), "--metrics",
                                       "grad_norm_max_layer"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "no run has 'grad_norm_max_layer'" in result.output
    assert not (tmp_path / "y.png").exists()


def test_a_regression_run_plots_its_mae_and_names_only_what_it_has(tmp_path):
    spec = nnrun.load_spec(ROOT / "specs" / "csv-regression.yaml", ["train.epochs=2"])
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    result = CliRunner().invoke(main, ["plot", str(tmp_path / "run"), "--out",
                                       str(tmp_path / "r.png")])
    assert result.exit_code == 0, result.output
    assert "loss, mae, lr of 1 run" in result.output
    result = CliRunner().invoke(main, ["plot", str(tmp_path / "run"), "--out",
                                       str(tmp_path / "x.png"), "--metrics", "f1"])
    assert "no run has 'f1'" in result.output and "grad_norms" not in result.output


def test_a_directory_without_metrics(tmp_path):
    result = CliRunner().invoke(main, ["plot", str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "no metrics.jsonl" in result.output
    os.mkfifo(tmp_path / "metrics.jsonl")  # was "no metrics.jsonl" too
    result = CliRunner().invoke(main, ["plot", str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "metrics.jsonl is not a regular file" in result.output


def test_without_matplotlib_one_line_names_the_extra(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    result = CliRunner().invoke(main, ["plot", str(runs / "relu"), "--out",
                                       str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "nnrun[plot]" in result.output


@pytest.mark.parametrize("row", ['{"epoch": 1, "layer_grad_norm/dense_1": 1.0}',
                                 '{"epoch": "2", "batch": 1, "layer_grad_norm/dense_1": 1.0}',
                                 '{"epoch": 1, "batch": 0, "layer_grad_norm/dense_1": 1.0}',
                                 '{"epoch": 1, "batch": "2", "layer_grad_norm/dense_1": 1.0}',
                                 '{"epoch": 1, "batch": null, "layer_grad_norm/dense_1": 1.0}'])
def test_step_rows_without_a_batch_count_are_left_out(runs, tmp_path, row):
    """A hand-edited or foreign grad-norms.jsonl row stopped the plot with an internal error
    (KeyError, ZeroDivisionError, TypeError) placing the step in its epoch."""
    run = tmp_path / "run"
    shutil.copytree(runs / "relu", run)
    with open(run / "grad-norms.jsonl", "a", encoding="utf-8") as log:
        log.write(row + "\n" + row + "\n")
    result = CliRunner().invoke(main, ["plot", str(run), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.png").stat().st_size > 0


@pytest.mark.parametrize("metrics", [",", "", " , "])
def test_metrics_that_name_nothing_are_one_line(runs, tmp_path, metrics):
    """--metrics , stopped with an internal error (a figure of 0 rows); --metrics "" drew the
    defaults as if the option were not given. A usage error (exit 2), as `--set =3` is."""
    result = CliRunner().invoke(main, ["plot", str(runs / "relu"), "--out",
                                       str(tmp_path / "x.png"), "--metrics", metrics])
    assert result.exit_code == 2, result.output
    assert "plot --help')" in result.output
    assert result.output.count("\n") == 1 and "names no metric" in result.output
    assert not (tmp_path / "x.png").exists()


def test_metrics_repeated_or_by_their_long_names_add_panels(runs, tmp_path):
    """A repeated --metrics kept only the last; learning_rate and grad_norm were unknown."""
    result = CliRunner().invoke(main, ["plot", str(runs / "relu"), "--out",
                                       str(tmp_path / "x.png"), "--metrics", "loss",
                                       "--metrics", "learning_rate,grad_norm"])
    assert result.exit_code == 0, result.output
    assert ": loss, lr, grad_norms of 1 run" in result.output


def test_a_metric_named_twice_is_drawn_once(runs, tmp_path):
    result = CliRunner().invoke(main, ["plot", str(runs / "relu"), "--out",
                                       str(tmp_path / "x.png"), "--metrics", "loss,lr,loss"])
    assert result.exit_code == 0 and "wrote" in result.output
    assert ": loss, lr of 1 run" in result.output


@pytest.mark.parametrize("name, magic", [("x.pdf", b"%PDF"), ("x.jpg", b"\xff\xd8\xff"),
                                         ("x.svg", b"<?xml"), ("x.PNG", b"\x89PNG"),
                                         ("x.tif", b"II*\x00"), ("x.eps", b"%!PS")])
def test_the_suffix_chooses_the_image_format(runs, tmp_path, name, magic):
    """--out x.pdf wrote PNG data under that name."""
    result = CliRunner().invoke(main, ["plot", str(runs / "relu"), "--out", str(tmp_path / name)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / name).read_bytes().startswith(magic)


@pytest.mark.parametrize("command", ["plot", "data preview"])
@pytest.mark.parametrize("name", ["x.doc", "x.txt", "x"])
def test_a_suffix_of_no_known_image_format_is_one_line(runs, tmp_path, command, name):
    spec = ROOT / "specs" / "quickstart.yaml"
    args = ["plot", str(runs / "relu")] if command == "plot" else ["data", "preview", str(spec)]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / name)])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert "give a file name ending in .png, .svg, .pdf" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["plot", "data preview"])
def test_a_format_matplotlib_writes_through_a_missing_program_is_one_line(runs, tmp_path,
                                                                          command, monkeypatch):
    """.pgf without a TeX installation: matplotlib's RuntimeError ('xelatex' not found) was
    an internal error, exit 70 (the toolbox audit)."""
    from matplotlib.figure import Figure

    def no_tex(*args, **kwargs):
        raise RuntimeError("'xelatex' not found; install it or change rcParams")

    monkeypatch.setattr(Figure, "savefig", no_tex)
    spec = ROOT / "specs" / "quickstart.yaml"
    args = ["plot", str(runs / "relu")] if command == "plot" else ["data", "preview", str(spec)]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "x.pgf")])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert "x.pgf: matplotlib cannot write pgf here ('xelatex' not found" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary\x9c", b"not json\n", b"{}\n"])
def test_a_damaged_metrics_file_is_named_not_taken_for_a_run_without_epochs(runs, tmp_path,
                                                                              content):
    """A binary metrics.jsonl was reported as `no epochs yet`."""
    run = tmp_path / "run"
    shutil.copytree(runs / "relu", run)
    (run / "metrics.jsonl").write_bytes(content)
    result = CliRunner().invoke(main, ["plot", str(run), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert f"{run / 'metrics.jsonl'}: damaged" in result.stderr
    (run / "metrics.jsonl").write_bytes(b"")
    result = CliRunner().invoke(main, ["plot", str(run), "--out", str(tmp_path / "x.png")])
    assert "no epochs yet" in result.stderr


def test_a_rate_of_zero_or_below_keeps_a_linear_axis_without_warnings(runs, tmp_path):
    """A hand-edited lr of -1 beside rates 1e4 apart: the log axis printed NumPy's warning."""
    import json
    import warnings

    run = tmp_path / "edited"
    shutil.copytree(runs / "sigmoid", run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows[0]["lr"], rows[1]["lr"] = -1.0, 1e-5
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = CliRunner().invoke(main, ["plot", str(run), "--metrics", "lr",
                                           "--out", str(tmp_path / "lr.png")])
    assert result.exit_code == 0, result.output


def test_huge_values_and_grad_norms_that_draw_nothing_are_no_crash_nor_warning(tmp_path,
                                                                               recwarn):
    """The hostile-input audit: losses of +-1e308 overflowed matplotlib's ticks (an internal
    error, exit 70); grad norms of 0 or -1 left a legend with nothing in it, and matplotlib
    warned."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"epoch": 1, "train_loss": 1e308, "layer_grad_norm/dense_1": -1}\n'
        '{"epoch": 2, "train_loss": 2.0, "layer_grad_norm/dense_1": 0}\n'
        '{"epoch": 3, "train_loss": -1e308}\n')
    result = CliRunner().invoke(main, ["plot", str(run), "--out", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p.png").stat().st_size > 0
    assert not [w for w in recwarn if issubclass(w.category, (UserWarning, RuntimeWarning))]
    (run / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1e308}\n')
    result = CliRunner().invoke(main, ["plot", str(run), "--out", str(tmp_path / "q.png")])
    assert result.exit_code == 1 and "no number to draw" in result.output


def test_a_logged_step_is_placed_by_its_epochs_batch_count(runs):
    """The toolbox audit: steps were placed at batch / the largest batch logged, so the first
    4 steps of a 41-batch epoch that diverged at its 5th were drawn over 80% of the epoch."""
    from nnrun.runtime.plot import _step_position, read_runs

    (run,) = read_runs([runs / "relu"])
    assert {row["batches"] for row in run.steps} == {6}  # 180 training samples, batches of 32
    position = _step_position(run.steps)
    assert [position(row) for row in run.steps][:3] == pytest.approx([2 / 6, 4 / 6, 1.0])
    diverged = [{"step": s, "epoch": 1, "batch": s, "batches": 41} for s in range(1, 6)]
    assert _step_position(diverged)(diverged[3]) == pytest.approx(4 / 41)
    # rows written before they held `batches`: the count from a later epoch's step number
    older = [{"step": 2, "epoch": 1, "batch": 2}, {"step": 45, "epoch": 2, "batch": 4}]
    assert _step_position(older)(older[0]) == pytest.approx(2 / 41)


def test_a_diverged_epochs_means_are_drawn_after_the_steps_they_are_of(tmp_path):
    """The course walk: the means of the 4 steps before a divergence at step 5 of 41 were
    drawn at the epoch's end, while the steps' own norms sit at 1/41 .. 5/41 of it. A row of
    earlier code, without the epoch's batch count, stays at its epoch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from nnrun.runtime.plot import _metric_panel, read_runs

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"epoch": 1, "train_loss": 2.0}\n'
        '{"epoch": 2, "diverged_at_batch": 5, "batches": 41, "train_loss": 2e17}\n')
    axis = Figure().subplots()
    _metric_panel(axis, "loss", read_runs([run]))
    assert axis.get_lines()[0].get_xdata().tolist() == pytest.approx([1, 1 + 4 / 41])
    (run / "metrics.jsonl").write_text(
        '{"epoch": 1, "train_loss": 2.0}\n{"epoch": 2, "diverged_at_batch": 5, '
        '"train_loss": 2e17}\n')
    axis = Figure().subplots()
    _metric_panel(axis, "loss", read_runs([run]))
    assert axis.get_lines()[0].get_xdata().tolist() == [1, 2]
    # the row's place is no metric to draw (the review: `--metrics batches` drew one)
    result = CliRunner().invoke(main, ["plot", str(run), "--metrics", "batches", "--out",
                                       str(tmp_path / "p.png")])
    assert result.exit_code == 1 and "these runs have: loss" in result.output
    assert "batches" not in result.output.split("these runs have:")[1]


@pytest.mark.parametrize("row", ['{"step": 5, "epoch": 2, "batch": 5}',
                                 '{"step": 1, "epoch": 3, "batch": 4}'])
def test_rows_of_an_older_run_whose_step_says_no_batch_count_are_still_placed(tmp_path, row):
    """The review: a grad-norms.jsonl row without `batches` whose step gives a count of 0 (or
    less) divided by it: an internal error."""
    from nnrun.runtime.plot import _step_position, read_runs

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.0}\n')
    (run / "grad-norms.jsonl").write_text(row[:-1] + ', "layer_grad_norm/dense_1": 1.0}\n')
    (curves,) = read_runs([run])
    # the last batch of its epoch: the count is at least the batch logged
    assert _step_position(curves.steps)(curves.steps[0]) == curves.steps[0]["epoch"]
    result = CliRunner().invoke(main, ["plot", str(run), "--out", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output


def test_a_run_that_diverged_at_its_first_logged_step_draws_its_epoch_means(tmp_path):
    """The toolbox audit: grad-norms.jsonl held only the diverged step's NaN norms, and the
    panel was drawn empty though metrics.jsonl had the epoch's means up to that step."""
    from nnrun.runtime.plot import default_panels, read_runs

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"epoch": 1, "diverged_at_batch": 5, "train_loss": 2e17, '
        '"layer_grad_norm/dense_1": 3e13, "layer_grad_norm/dense_2": 6e15}\n')
    (run / "grad-norms.jsonl").write_text(
        '{"step": 5, "epoch": 1, "batch": 5, "batches": 41, "loss": NaN, '
        '"layer_grad_norm/dense_1": NaN, "layer_grad_norm/dense_2": NaN}\n')
    (curves,) = read_runs([run])
    assert curves.drawn_steps() == [] and curves.layers() == ["dense_1", "dense_2"]
    assert "grad_norms" in default_panels([curves])
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from nnrun.runtime.plot import _grad_norm_panel

    axis = Figure().subplots()
    _grad_norm_panel(axis, [curves])
    assert [line.get_ydata().tolist() for line in axis.get_lines()] == [[3e13], [6e15]]
    assert all(line.get_marker() == "." for line in axis.get_lines())  # one point each
    result = CliRunner().invoke(main, ["plot", str(run), "--metrics", "grad_norms",
                                       "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 0, result.output


def test_norms_of_zero_are_marked_at_the_foot_of_the_log_axis(tmp_path, recwarn):
    """The course audit: a layer whose gradient died (norm exactly 0, which a log axis has no
    place for) vanished from the panel after its last nonzero step; one dead from the first
    was not in it at all."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from nnrun.runtime.plot import _grad_norm_panel, read_runs

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.0}\n')
    (run / "grad-norms.jsonl").write_text("".join(
        f'{{"step": {s}, "epoch": 1, "batch": {s}, "batches": 4, '
        f'"layer_grad_norm/dense_1": {0.5 if s == 1 else 0}, "layer_grad_norm/dense_2": 0, '
        f'"layer_grad_norm/dense_3": {s}}}\n' for s in range(1, 5)))
    (curves,) = read_runs([run])
    assert curves.layers() == ["dense_1", "dense_2", "dense_3"]
    axis = Figure().subplots()
    _grad_norm_panel(axis, [curves])
    bottom = axis.get_ylim()[0]
    marks = [line for line in axis.get_lines() if line.get_marker() == "v"]
    assert [line.get_xdata().tolist() for line in marks] == [[0.5, 0.75, 1.0],
                                                             [0.25, 0.5, 0.75, 1.0]]
    assert all(set(line.get_ydata()) == {bottom} for line in marks)
    labels = axis.get_legend_handles_labels()[1]
    assert sorted(labels) == ["dense_1 (0 at 3 of 4: \u25bc)", "dense_2 (0 at 4 of 4: \u25bc)",
                              "dense_3"]
    result = CliRunner().invoke(main, ["plot", str(run), "--out", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    assert not [w for w in recwarn if issubclass(w.category, (UserWarning, RuntimeWarning))]
