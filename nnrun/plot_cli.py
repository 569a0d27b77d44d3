"""`nnrun plot RUN_DIR...`: training curves of one or more runs in one image (runtime/plot.py)."""

from __future__ import annotations

from pathlib import Path

import click

from nnrun.cli import (OutPath, RunDirPath, UserError, handle_errors, in_own_caches,
                       refuse_an_input_as_out, refuse_an_unwritable_out, wrote)


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=RunDirPath())
@click.option("--out", "out_path", type=OutPath(dir_okay=False, path_type=Path),
              default=Path("curves.png"), show_default=True,
              help="The image to write; its suffix chooses the format: .png, .svg, .pdf, .jpg, "
                   "or another that matplotlib writes.")
@click.option("--metrics", "metrics", metavar="NAME,...", multiple=True,
              callback=lambda context, option, value: value and _panels(",".join(value)),
              help="Panels, in order: loss, accuracy, lr, grad_norms, or any metric of "
                   "metrics.jsonl (mae draws train_mae and val_mae, those logged); "
                   "comma-separated or repeated "
                   "[default: loss, every metric the runs tracked (accuracy, top_<k>_accuracy, "
                   "pixel_accuracy, mean_iou, mae, mse), lr and grad_norms, those the runs "
                   "have].")
@handle_errors
@in_own_caches
def plot(run_dirs, out_path, metrics) -> None:
    """Loss, accuracy, learning rate and per-layer gradient norms of RUN_DIRs, overlaid."""
    from nnrun.runtime.plot import (PlotError, check_panels, default_panels, image_format,
                                    plot_runs, read_runs)

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("nnrun plot needs matplotlib: pip install 'nnrun[plot]'") from None
    refuse_an_input_as_out(out_path, *run_dirs)
    refuse_an_unwritable_out(out_path)
    try:
        image_format(out_path)
        runs = read_runs(list(run_dirs))
        panels = metrics or default_panels(runs)
        check_panels(panels, runs)
    except PlotError as error:
        raise UserError(str(error)) from None
    plot_runs(runs, panels, out_path)
    click.echo(wrote(out_path, f"{', '.join(panels)} of {len(runs)} run"
                               f"{'s' * (len(runs) != 1)}"))


# What users also call the learning rate and gradient-norm panels.
PANEL_ALIASES = {"learning_rate": "lr", "grad_norm": "grad_norms", "gradient_norms": "grad_norms"}


def _panels(metrics: str) -> list[str]:
    """The names of --metrics, each once; none at all (--metrics , or "") is a usage error
    rather than drawn as no panel (an internal error) or silently as the defaults."""
    names = (name.strip() for name in metrics.split(",") if name.strip())
    panels = list(dict.fromkeys(PANEL_ALIASES.get(name, name) for name in names))
    if not panels:
        raise click.BadParameter(f"{metrics!r} names no metric; give e.g. loss,accuracy")
    return panels
