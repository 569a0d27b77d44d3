"""`nnrun data preview SPEC --out grid.png`: training samples as the network sees them, each
beside a few augmented draws of itself (data.augment), in one image whose format the suffix of
--out chooses. matplotlib is the `plot` extra; without it the command says so in one line."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from nnrun.cli import (OutPath, UserError, handle_errors, in_own_caches, refuse_an_input_as_out,
                       refuse_an_unwritable_out, set_option, spec_argument, wrote)

EXTRA_MISSING = ("nnrun data preview draws with matplotlib, which is not installed; "
                 "install it with: pip install 'nnrun[plot]'")


@click.command()
@spec_argument
@click.option("--out", "out_path", type=OutPath(dir_okay=False, path_type=Path),
              required=True,
              help="The image to write; its suffix chooses the format: .png, .svg, .pdf, .jpg, "
                   "or another that matplotlib writes.")
@click.option("--samples", type=click.IntRange(1, 64), default=6, show_default=True,
              help="Training samples, one per row.")
@click.option("--draws", type=click.IntRange(1, 32), default=5, show_default=True,
              help="Augmented draws of each sample, beside it.")
@click.option("--seed", type=click.IntRange(min=0),
              help="Draw the samples and augmentations from this seed (default: the spec's).")
@set_option
@handle_errors
@in_own_caches
def preview(spec, out_path, samples, draws, seed, overrides) -> None:
    """A grid of augmented training samples: each row one sample as loaded and preprocessed,
    then DRAWS augmentations of it (the spec's data.augment, in order), as an image."""
    from nnrun.compiler.frontend import compile_checked, load_spec
    from nnrun.runtime.plot import PlotError, image_format

    plotting = _matplotlib()
    refuse_an_input_as_out(out_path, spec)
    refuse_an_unwritable_out(out_path)
    try:
        image_format(out_path)
    except PlotError as error:
        raise UserError(str(error)) from None
    source = load_spec(spec, overrides)
    compile_checked(source)  # a broken spec is reported as diagnostics before data loads
    grid = augmented_grid(source, samples, draws, seed)
    _save(plotting, grid, out_path, source.spec)
    augment = ", ".join(a.type for a in source.spec.data.augment) or "none (data.augment is empty)"
    click.echo(wrote(out_path, f"{_count(len(grid.x), 'training sample')} x "
                               f"{_count(draws, 'draw')}; augmentation: {augment}"))


class Grid:
    def __init__(self, x: np.ndarray, y: np.ndarray, drawn: np.ndarray):
        self.x, self.y, self.drawn = x, y, drawn  # drawn: [draws, samples, ...]


def augmented_grid(source, samples: int, draws: int, seed: int | None) -> Grid:
    """The training data as train prepares it, and draws of its augmentations: what train
    refuses (moves that an npz's label maps would miss, augmentations that cannot apply) is
    not previewed, and its warnings are train's to say."""
    from nnrun.notices import collected
    from nnrun.runtime.data import augment_batch
    from nnrun.runtime.train import Trainer, no_data_section

    spec = source.spec
    if spec.data is None:
        raise no_data_section(source, "a preview needs")
    seed = spec.seed if seed is None else seed
    with collected(("warning", "positioned")):  # a download's note is said as train says it
        trainer = Trainer(source, "numpy", memory_checked=False)
    train = trainer.data.train
    rng = np.random.default_rng([seed, 0])
    chosen = rng.choice(len(train.x), size=min(samples, len(train.x)), replace=False)
    x, y = train.x[chosen], train.y[chosen]
    drawn = np.stack([augment_batch(x, spec.data.augment, rng, trainer.augment_background)
                      for _ in range(draws)])
    return Grid(x, y, drawn)


def _matplotlib():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError(EXTRA_MISSING) from None
    return Figure


def _save(figure_class, grid: Grid, out_path: Path, spec) -> None:
    from nnrun.runtime.plot import save_figure

    rows, columns = len(grid.x), 1 + len(grid.drawn)
    figure = figure_class(figsize=(1.6 * columns, 1.6 * rows + 0.4), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for row in range(rows):
        # One colour scale per row, over the sample and its draws: noise and the background
        # moved in stay visible, where the sample's own range would clip them.
        values = np.concatenate([grid.x[row].ravel(), grid.drawn[:, row].ravel()])
        low, high = float(values.min()), float(values.max())
        for column in range(columns):
            sample = grid.x[row] if column == 0 else grid.drawn[column - 1, row]
            _draw(axes[row][column], sample, low, high)
        axes[row][0].set_ylabel(f"label {_label(grid.y[row])}", fontsize=8)
    axes[0][0].set_title("as loaded", fontsize=8)
    for column in range(1, columns):
        axes[0][column].set_title(f"draw {column}", fontsize=8)
    augment = ", ".join(a.type for a in spec.data.augment) or "no augmentation"
    figure.suptitle(f"{spec.name}: {augment}", fontsize=9)
    save_figure(figure, out_path)


def _draw(axis, sample: np.ndarray, low: float, high: float) -> None:
    axis.set_xticks([])
    axis.set_yticks([])
    if sample.ndim == 3:  # an image: RGB scaled to [0, 1], else its channels side by side
        if sample.shape[0] == 3:
            image = np.clip((np.moveaxis(sample, 0, -1) - low) / max(high - low, 1e-12), 0, 1)
        else:
            image = _side_by_side(sample)
        axis.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        return
    for channel in sample.reshape(sample.shape[0] if sample.ndim > 1 else 1, -1):
        axis.plot(channel, linewidth=0.8)  # sequences and vectors: one curve per channel
    margin = 0.1 * (high - low) or 0.5  # samples of one value: a band around it
    axis.set_ylim(low - margin, high + margin)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _side_by_side(channels: np.ndarray) -> np.ndarray:
    """Grey channels [C, H, W] as one image, a blank column (NaN: not drawn) between them."""
    gap = np.full((channels.shape[1], 1), np.nan)
    parts = [part for channel in channels for part in (gap, channel)][1:]
    return np.concatenate(parts, axis=1)


MOST_LISTED = 6  # a target of more values (a label map) is named by its shape and classes


def _label(value) -> str:
    value = np.asarray(value)
    if value.size == 1:
        return f"{value.item():g}"
    if value.size <= MOST_LISTED:
        return str(value.tolist())
    if value.dtype.kind in "iub":  # a label map: which classes it holds
        classes = [str(c) for c in np.unique(value)]
        listed = ", ".join(classes[:MOST_LISTED]) + (", ..." if len(classes) > MOST_LISTED else "")
        return f"map {list(value.shape)}: {listed}"
    return f"{list(value.shape)}: {value.min():.3g}..{value.max():.3g}"
