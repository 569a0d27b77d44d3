"""`nnrun plot`: the curves of one or more run directories in one PNG, a panel per metric:
loss and accuracy (train solid, validation dashed), the learning rate, and the gradient norm
of each layer (train.log_grad_norms; per step when grad-norms.jsonl has them). Runs are
overlaid, one colour each (in the gradient-norm panel one colour per layer, one line style per
run), and named in the legends.

matplotlib is the `plot` extra; it is imported only here, when a plot is drawn.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..compiler.checks import is_metric_name
from ..compiler.diagnostics import suggest
from .files import write_output
from .grad_norms import LAYER_PREFIX
from .run_dir import GRAD_NORMS, METRICS, SPEC, not_a_run_directory

GRAD_NORMS_PANEL = "grad_norms"
# Where a row sits, not what was measured: a diverged epoch's row holds the last two.
PLACE_KEYS = ("epoch", "diverged_at_batch", "batches")
LINE_STYLES = ("-", "--", ":", "-.")
# The file's suffix chooses the format: curves.pdf holds PDF, never PNG under another name.
COMMON_FORMATS = (".png", ".svg", ".pdf", ".jpg")  # named in the message; matplotlib has more


class PlotError(Exception):
    """A run directory or metric that cannot be plotted; one line."""


@dataclass
class RunCurves:
    label: str
    epochs: list[dict]  # metrics.jsonl
    steps: list[dict] = field(default_factory=list)  # grad-norms.jsonl

    def keys(self) -> set[str]:
        """The keys a curve can be drawn of: a number in some row (not the layer names of
        grad_norm_max_layer, nor a value edited into text), that is not a row's place."""
        return {key for row in self.epochs for key, value in row.items()
                if _drawable(value) and key not in PLACE_KEYS}

    def drawn_steps(self) -> list[dict]:
        """grad-norms.jsonl's rows, where a norm of them can be drawn: a run that diverged at
        its first logged step has only NaN there, and its epoch means are drawn instead."""
        if any(_norm_known(row, key) for row in self.steps for key in row
               if key.startswith(LAYER_PREFIX)):
            return self.steps
        return []

    def layers(self) -> list[str]:
        rows = self.drawn_steps() or self.epochs
        return list(dict.fromkeys(key[len(LAYER_PREFIX):] for row in rows for key in row
                                  if key.startswith(LAYER_PREFIX) and _norm_known(row, key)))


def image_format(out: Path) -> str:
    """matplotlib's format for the suffix of `out` (plot, data preview): any it writes."""
    from matplotlib.backend_bases import FigureCanvasBase

    image = Path(out).suffix.lower().removeprefix(".")
    if image not in FigureCanvasBase.get_supported_filetypes():
        raise PlotError(f"{out}: give a file name ending in {', '.join(COMMON_FORMATS)} or "
                        "another suffix of an image format matplotlib writes (the suffix "
                        "chooses the format)")
    return image


def read_runs(paths: list[Path]) -> list[RunCurves]:
    names = [_spec_name(path) for path in paths]
    unique = len(set(names)) == len(names) and None not in names
    return [RunCurves(name if unique else str(path), _rows(path / METRICS, required=True),
                      _step_rows(path / GRAD_NORMS))
            for path, name in zip(paths, names)]


def _step_rows(path: Path) -> list[dict]:
    """grad-norms.jsonl's rows with an epoch and a batch counted from 1, where the step's place
    is known (a row without them, hand-edited or torn, would stop the plot)."""
    return [row for row in _rows(path, required=False)
            if _counted(row.get("epoch")) and _counted(row.get("batch"))]


def _counted(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _spec_name(path: Path) -> str | None:
    spec = path / SPEC
    if not spec.is_file():
        return None
    for line in spec.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("name:"):
            return line.split(":", 1)[1].strip().strip("'\"") or None
    return None


def _rows(path: Path, required: bool) -> list[dict]:
    if not path.is_file():
        if required:
            why = (f"{path.name} is not a regular file" if os.path.lexists(path)
                   else f"no {path.name}")
            raise PlotError(not_a_run_directory(path.parent, why))
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line) if line.strip() else None
        # JSONDecodeError, an integer past Python's digit limit, or nested past its recursion limit
        except (ValueError, RecursionError):
            if number < len(lines):  # a torn last line is what a killed run may leave
                raise PlotError(f"{path}: line {number} is not JSON") from None
            row = None
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows.append(row)
    if required and not rows:
        raise PlotError(_no_rows(path, lines))
    return rows


def _no_rows(path: Path, lines: list[str]) -> str:
    if any(line.strip() for line in lines):  # something, but no row: not a run before epoch 1
        return (f"{path}: damaged (no line is a JSON row with an epoch); restore it from a "
                "backup, or train the run again")
    return f"{path}: no epochs yet; plot the run once it has finished one"


def default_panels(runs: list[RunCurves]) -> list[str]:
    """The panels the runs have a number to draw in (loss first): without one, a PlotError."""
    panels = _drawn_panels(runs)
    if not panels:
        raise PlotError(f"the runs' metrics.jsonl hold {NOTHING_TO_DRAW}")
    return panels


def _drawn_panels(runs: list[RunCurves]) -> list[str]:
    """The loss, then every metric the runs tracked (train_X or val_X: top_5_accuracy too),
    as metrics.jsonl orders them, then the learning rate and the gradient norms."""
    keys = set().union(*(run.keys() for run in runs))
    metrics = dict.fromkeys(key.split("_", 1)[1] for run in runs for row in run.epochs
                            for key in row if key.startswith(("train_", "val_")) and key in keys)
    panels = sorted((name for name in metrics if is_metric_name(name)),
                    key=lambda name: name != "loss")
    panels += ["lr"] if "lr" in keys else []
    return panels + ([GRAD_NORMS_PANEL] if any(run.layers() for run in runs) else [])


def panel_keys(panel: str, runs: list[RunCurves]) -> list[str]:
    """The metrics.jsonl keys a panel draws: `name`, `train_name` and `val_name`."""
    keys = set().union(*(run.keys() for run in runs))
    return [key for key in (panel, f"train_{panel}", f"val_{panel}", f"test_{panel}")
            if key in keys]


def check_panels(panels: list[str], runs: list[RunCurves]) -> None:
    for panel in panels:
        found = (any(run.layers() for run in runs) if panel == GRAD_NORMS_PANEL
                 else panel_keys(panel, runs))
        if not found:
            # the panels first (`loss`, not only its keys train_loss, val_loss), then the keys
            keys = sorted(set().union(*(run.keys() for run in runs)))
            known = list(dict.fromkeys([*_drawn_panels(runs), *(k for k in keys if "/" not in k)]))
            meant = suggest(panel, known)
            if panel == GRAD_NORMS_PANEL:
                hint = "set train.log_grad_norms in the spec and train again"
            elif known:
                hint = (f"did you mean '{meant}'? " if meant else "") + \
                    f"these runs have: {', '.join(known)}"
            else:
                hint = f"their metrics hold {NOTHING_TO_DRAW}"
            raise PlotError(f"--metrics: no run has '{panel}'; {hint}")


def plot_runs(runs: list[RunCurves], panels: list[str], out: Path) -> None:
    from matplotlib.figure import Figure  # the plot extra; no pyplot: no global state

    figure = Figure(figsize=(6.4 * min(len(panels), 2), 4.2 * math.ceil(len(panels) / 2)),
                    layout="constrained")
    axes = figure.subplots(math.ceil(len(panels) / 2), min(len(panels), 2), squeeze=False)
    for index, panel in enumerate(panels):
        axis = axes.flat[index]
        if panel == GRAD_NORMS_PANEL:
            _grad_norm_panel(axis, runs)
        else:
            _metric_panel(axis, panel, runs)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    with warnings.catch_warnings():  # a layout too crowded to fit (3,000 curves) is still drawn
        warnings.simplefilter("ignore", UserWarning)
        save_figure(figure, out)


def save_figure(figure, out: Path) -> None:
    """The figure in the format `out`'s suffix names (plot, data preview). A format matplotlib
    writes through another program (pgf: a TeX installation) fails there in one line."""
    image = image_format(out)
    try:
        write_output(out, lambda stream: figure.savefig(stream, format=image, dpi=100))
    except RuntimeError as error:  # "'xelatex' not found; install it or change rcParams..."
        raise PlotError(f"{out}: matplotlib cannot write {image} here ({error}); choose "
                        f"another suffix, e.g. {', '.join(COMMON_FORMATS)}") from None


# Values past this size are left out as non-finite ones are: matplotlib's ticks overflow on
# a span such as -1e308..1e308 (a hand-edited or diverged metrics.jsonl).
MOST_DRAWN = 1e100
NOTHING_TO_DRAW = f"no number to draw (finite, at most {MOST_DRAWN:g} in size)"


def _drawable(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and abs(value) <= MOST_DRAWN)


def _metric_panel(axis, panel: str, runs: list[RunCurves]) -> None:
    colours = _colours(len(runs))
    for run, colour in zip(runs, colours):
        for key in panel_keys(panel, runs):
            points = [(_epoch_position(row), row[key]) for row in run.epochs
                      if _drawable(row.get(key))]
            if points:
                style = "--" if key.startswith("val_") else ":" if key.startswith("test_") else "-"
                axis.plot(*zip(*points), style, color=colour, marker=".",
                          label=f"{run.label} {key}" if len(runs) > 1 else key)
    values = [line.get_ydata() for line in axis.get_lines()]
    flat = [float(v) for data in values for v in data if math.isfinite(float(v))]
    # a diverging loss, or a decaying rate; not where a value is 0 or below (a log axis has
    # no place for it: a hand-edited lr of -1)
    if flat and min(flat) > 0 and max(flat) / min(flat) > 1e3:
        axis.set_yscale("log")
    _finish(axis, panel, fontsize="small")


def _grad_norm_panel(axis, runs: list[RunCurves]) -> None:
    zero_marks = []  # (positions, colour, label) of norms of exactly 0 (a dead layer)
    layers = list(dict.fromkeys(layer for run in runs for layer in run.layers()))
    colours = dict(zip(layers, _colours(len(layers), "viridis")))
    per_step = any(run.drawn_steps() for run in runs)
    for run, style in zip(runs, LINE_STYLES * len(runs)):
        steps = run.drawn_steps()
        rows = steps or run.epochs
        x_of = _step_position(steps) if steps else _epoch_position
        for layer in run.layers():
            key = LAYER_PREFIX + layer
            points = [(x_of(row), row[key]) for row in rows if _norm_drawn(row, key)]
            zeros = [x_of(row) for row in rows if _norm_known(row, key) and row[key] == 0]
            label = f"{run.label} {layer}" if len(runs) > 1 else layer
            if zeros:
                label += f" (0 at {len(zeros)} of {len(zeros) + len(points)}: \u25bc)"
            if points:
                # a lone point (one epoch, or the steps up to a divergence) has no line
                axis.plot(*zip(*points), style, color=colours[layer], label=label,
                          marker="." if len(points) == 1 else None)
            if zeros:  # every norm 0: its marks carry the legend
                zero_marks.append((zeros, colours[layer], None if points else label))
    axis.set_yscale("log")
    _mark_zeros(axis, zero_marks)
    _finish(axis, "gradient norm per layer" + (" (per step)" if per_step else " (epoch mean)"),
            fontsize="x-small")


def _finish(axis, title: str, fontsize: str) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set(title=title, xlabel="epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    # Opaque, light colours rather than transparency, which PostScript (.eps, .ps) lacks:
    # matplotlib would warn on every such plot.
    axis.grid(color="0.85")
    if not axis.get_lines():  # nothing drawable (matplotlib would warn of an empty legend)
        return
    if len(axis.get_lines()) > 6:  # beside the panel, where it hides no curve
        axis.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                    framealpha=1.0)
    else:
        axis.legend(fontsize=fontsize, framealpha=1.0)


def _epoch_position(row: dict) -> float:
    """Where an epoch's means are drawn: at its end, or for the epoch a diverged run stopped
    in, after the steps they are of (those before `diverged_at_batch` of its `batches`), as
    the steps' own gradient norms are placed (_step_position)."""
    batch, batches = row.get("diverged_at_batch"), row.get("batches")
    if _counted(batch) and _counted(batches) and batch <= batches:
        return row["epoch"] - 1 + (batch - 1) / batches
    return row["epoch"]


def _step_position(rows: list[dict]):
    """A logged step's place in epochs: epoch - 1 + batch / the epoch's batches. Rows written
    before they held `batches` give it by their step count when a later epoch's row does
    (step = (epoch - 1) * batches + batch), else by the largest batch logged."""
    known = [(row["step"] - row["batch"]) / (row["epoch"] - 1) for row in rows
             if row["epoch"] > 1 and _counted(row.get("step"))]
    # at least the largest batch logged (an edited row's step may say less, or nothing)
    fallback = max([*known, *(row["batch"] for row in rows)])

    def position(row: dict) -> float:
        batches = row.get("batches")
        if not (isinstance(batches, int) and batches >= row["batch"]):
            batches = fallback
        return row["epoch"] - 1 + row["batch"] / batches

    return position


def _norm_drawn(row: dict, key: str) -> bool:
    return _norm_known(row, key) and row[key] > 0


def _norm_known(row: dict, key: str) -> bool:
    """A norm to show: above 0 on the log axis, 0 as a mark at its foot (_mark_zeros)."""
    return _drawable(row.get(key)) and row[key] >= 0


def _mark_zeros(axis, zero_marks: list) -> None:
    """Norms of exactly 0, which a log axis has no place for, as triangles along its foot:
    a layer whose gradient died stays in sight."""
    if not zero_marks:
        return
    bottom, top = axis.get_ylim()
    for zeros, colour, label in zero_marks:
        axis.plot(zeros, [bottom] * len(zeros), "v", color=colour, markersize=4,
                  clip_on=False, label=label)
    axis.set_ylim(bottom, top)


def _colours(count: int, name: str = "tab10") -> list:
    from matplotlib import colormaps

    colormap = colormaps[name]
    if name == "tab10":
        return [colormap(index % 10) for index in range(count)]
    return [colormap(index / max(count - 1, 1) * 0.9) for index in range(count)]
