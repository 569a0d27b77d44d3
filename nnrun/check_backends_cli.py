"""`nnrun check-backends SPEC`: one batch through NumPy and another backend, op by op."""

from __future__ import annotations

import json
import sys

import click

from .cli import handle_errors, main, set_option, spec_argument, tolerance_option


@main.command(name="check-backends")
@spec_argument
@click.option("--backend", type=click.Choice(["cupy", "numpy"]), default="cupy",
              show_default=True, help="The backend checked against NumPy's reference executor.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@tolerance_option(1e-4, "Largest relative difference accepted: max |a - b| / max |reference|.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the initial weights and the random batch.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@set_option
@handle_errors
def check_backends(spec, backend, batch_size, tolerance, seed, fmt, overrides) -> None:
    """One training step on random data through NumPy and BACKEND, op by op: names the first
    op whose output or gradient differs beyond tolerance. Exit 1 when one does."""
    import nnrun
    from nnrun.backends import OR_USE_NUMPY, BackendUnavailable
    from nnrun.runtime.check_backends import check_backends as run_check
    from nnrun.runtime.memory import check_memory

    model = nnrun.compile(spec, overrides=overrides)
    check_memory(model, batch_size, "check-backends")
    try:
        report = run_check(model.source, backend, batch_size, tolerance, seed)
    except BackendUnavailable as error:  # NumPy checked against itself would answer nothing
        raise BackendUnavailable(str(error).removesuffix(OR_USE_NUMPY)) from None
    if fmt == "json":
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        _print_report(spec, report)
    sys.exit(0 if report.agree else 1)


def _print_report(spec, report) -> None:
    click.echo(f"{spec}: {report.candidate} against {report.reference}, one training step, "
               f"batch {report.batch_size}, {report.dtype}, tolerance {report.tolerance:g}")
    for graph in report.graphs:
        failures = graph.failures(report.tolerance)
        largest = graph.largest()
        worst = (f"; largest difference {largest.difference:.1e}: {largest.op}"
                 f"{' of ' + largest.layer if largest.layer else ''}" if largest else "")
        click.echo(f"  {graph.name + ', op by op:':<28} {len(graph.ops) - len(failures)} of "
                   f"{len(graph.ops)} outputs agree{worst}")
    whole = report.whole_step
    worst_name = max(whole, key=whole.get) if whole else ""
    click.echo(f"  {'whole training step:':<28} "
               f"{len(whole) - len(report.whole_step_failures)} of {len(whole)} arrays agree on "
               f"the {report.executor} executor"
               + (f"; largest difference {whole[worst_name]:.1e}: {worst_name}" if whole else ""))
    if report.rounding_sensitive:
        skipped = ", ".join(f"{count} of {name}" for name, count in
                            report.rounding_sensitive.items())
        click.echo(f"  {'entries not compared:':<28} {skipped} (a nudge of the batch at "
                   "rounding level moves them beyond tolerance on NumPy alone)")
    for fallback in report.fallbacks:
        click.echo(f"  {'fell back:':<28} {fallback}")
    first = report.first_failure
    if first is not None:
        graph, difference = first
        click.echo(f"first difference: {graph.name}, {difference.describe()} "
                   f"(tolerance {report.tolerance:g})")
    elif report.whole_step_failures:
        names = ", ".join(report.whole_step_failures)
        click.echo(f"every op agrees alone, but the whole step differs in: {names} (the "
                   f"{report.executor} executor's own buffers or order)")
    elif report.fallbacks:
        click.echo(f"every result agrees, but through the slower code that took over: "
                   f"{report.fallbacks[0]}")
    else:
        click.echo(f"ok: {report.candidate} agrees with {report.reference}")
