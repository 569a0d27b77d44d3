"""`nnrun trace SPEC`: the first training steps as the course writes them (runtime/trace.py)."""

from __future__ import annotations

import json

import click

from nnrun.cli import ExistingPath, UserError, handle_errors, set_option, spec_argument


@click.command()
@spec_argument
@click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True,
              help="Training steps to show, each from the weights the previous one updated.")
@click.option("--weights", type=ExistingPath(dir_okay=False),
              help="Start from these parameters (.npz by name, e.g. dense_1.weight, or a run's "
                   "last.npz / best.npz) instead of the spec's initial weights.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Same as --set train.batch_size=N.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@set_option
@handle_errors
def trace(spec, steps, weights, batch_size, fmt, overrides) -> None:
    """Each training step as the course writes it: inputs, z and a of every layer, the cost,
    every delta, every gradient and updated weight, with the course's layer and unit indices."""
    from nnrun.compiler.frontend import load_spec
    from nnrun.runtime.trace import TraceError
    from nnrun.runtime.trace import trace as run_trace
    from nnrun.runtime.trace_format import trace_json, trace_text

    overrides = [*overrides, *([f"train.batch_size={batch_size}"] if batch_size else [])]
    try:
        result = run_trace(load_spec(spec, overrides), steps, weights)
    except TraceError as error:
        raise UserError(str(error)) from None
    if fmt == "json":
        click.echo(json.dumps(trace_json(result), ensure_ascii=False))
    else:
        click.echo(trace_text(result), nl=False)
