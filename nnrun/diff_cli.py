"""`nnrun diff A B`: two specs or run directories compared layer by layer (compiler/diff.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from nnrun.cli import ExistingPath, UserError, handle_errors
from nnrun.compiler.diagnostics import format_diagnostics
from nnrun.compiler.diff import (Side, diff, diff_json, diff_markdown, diff_text,
                                 layer_memory)


def load_side(path: Path) -> Side:
    """A spec's summary; for a run directory, its spec.yaml's and the final metrics of its
    summary.json (none while it trains). A spec over its budgets is still compared: the diff
    is where a reviewer sees by how much."""
    from nnrun.compiler.diff import layer_settings, spec_settings
    from nnrun.compiler.frontend import check, compile_checked, load_spec

    spec_path = path / "spec.yaml" if path.is_dir() else path  # a FIFO: the loader says so
    if path.is_dir() and not spec_path.is_file():
        from nnrun.runtime.run_dir import not_a_run_directory, runs_inside

        raise UserError(not_a_run_directory(path) if runs_inside(path)
                        else f"{path}: neither a spec nor a run directory (no spec.yaml)")
    source = load_spec(spec_path)
    if path.is_dir():  # a run, as trained: its init_from files are not needed, may be gone
        source = replace(source, from_checkpoint=True)
    checked = check(source)  # a spec that does not compile raises SpecError here
    if checked.diagnostics:  # budgets exceeded, what training would refuse: shown, not fatal
        click.echo(format_diagnostics(checked.diagnostics), err=True)
    memory = layer_memory(*compile_checked(source), source.spec.train.batch_size)
    return Side(str(path), checked.summary, _final_metrics(path) if path.is_dir() else None,
                memory, spec_settings(source), source.spec, layer_settings(source))


def _final_metrics(run_dir: Path) -> dict:
    from nnrun.runtime.run_dir import summary_final

    try:
        final = summary_final(run_dir) or {}
    except ValueError as error:
        raise UserError(f"{run_dir / 'summary.json'}: not a readable run summary ({error}); "
                        "compare the specs instead") from None
    return {name: value for name, value in final.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            or name == "checkpoint" and isinstance(value, str)}


@click.command("diff")
@click.argument("a", type=ExistingPath())
@click.argument("b", type=ExistingPath())
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text",
              show_default=True, help="markdown: GitHub-flavoured, to paste in a pull request.")
@handle_errors
def diff_command(a, b, fmt) -> None:
    """Layer by layer, what changes from A to B (specs or run directories): output shapes,
    parameters, FLOPs; the totals with training memory; for runs, the final metrics."""
    result = diff(load_side(a), load_side(b))
    if fmt == "json":
        click.echo(json.dumps(diff_json(result), indent=2))
    elif fmt == "markdown":
        click.echo(diff_markdown(result), nl=False)
    else:
        from nnrun.cli import terminal_width

        click.echo(diff_text(result, terminal_width()), nl=False)
