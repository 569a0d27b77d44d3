"""`nnrun data list` and `nnrun data fetch NAME`; attached to the main CLI as the `data` group."""

from __future__ import annotations

from pathlib import Path

import click

from nnrun.cli import handle_errors
from nnrun.compiler.datasets import DATASETS, generator_hint
from nnrun.compiler.tables import table_text
from nnrun.notices import one_line
from nnrun.preview import preview
from nnrun.runtime.data.errors import DataError
from nnrun.runtime.data.fetch import fetch_dataset
from nnrun.runtime.data.locations import generator_needed, where_stored

COLUMNS = ("name", "sample shape", "classes", "location", "status")


@click.group()
def data() -> None:
    """Datasets: where they are, downloading them, and a preview of augmented samples."""


@data.command("list")
@handle_errors
def list_datasets() -> None:
    """Every dataset a spec can name, with its shape and where its files are (or would be)."""
    rows = [list(dataset_row(name)) for name in DATASETS]
    click.echo(table_text(list(COLUMNS), rows), nl=False)


def dataset_row(name: str) -> tuple[str, ...]:
    info = DATASETS[name]
    shape = str(list(info.input_shape)) if info.input_shape else "from the file"
    classes = str(info.num_classes) if info.num_classes else "from the file"
    location, status = where_stored(name)
    return name, shape, classes, location, status


def _directory(ctx, param, value: str | None) -> Path | None:
    # An empty --dest (an unset shell variable) would download into the working directory.
    if value is not None and not value.strip():
        raise click.BadParameter("is empty; give a directory, or leave --dest out for the "
                                 "default")
    return None if value is None else Path(value)


@data.command("fetch")
@click.argument("name", metavar="NAME")
@click.option(
    "--dest", type=click.Path(file_okay=False), default=None, callback=_directory,
    help="directory for the files (default: $NNRUN_DATA_DIR/NAME, else ~/.cache/nnrun/NAME)",
)
@click.option(
    "--mirror", "mirrors", multiple=True, metavar="URL",
    help="a server holding the four files (e.g. a local copy, http://127.0.0.1:8000/mnist/), "
         "tried instead of the public mirrors; repeatable, in order",
)
@handle_errors
def fetch(name: str, dest: Path | None, mirrors: tuple[str, ...]) -> None:
    """Download NAME (mnist or fashion_mnist) and check each file's SHA-256; a dataset built
    in or generated has nothing to download."""
    info = DATASETS.get(name)
    if info is not None and not info.needs_files:
        click.echo(one_line(_ready_without_download(name)))
        return
    directory = fetch_dataset(name, dest, mirrors=mirrors or None,
                              report=lambda line: click.echo(one_line(line)))  # a --mirror's URL
    click.echo(one_line(f"{name}: files in {directory}"))


def _ready_without_download(name: str) -> str:
    """What `fetch` says of a dataset built in or generated (a script may fetch whatever its
    spec names); a generator's missing package is an error, as training would be."""
    package = generator_needed(name)
    if package:
        raise DataError(f"{name}: nothing to download; {generator_hint(package)}")
    location, status = where_stored(name)
    return f"{name}: nothing to download ({location}: {status})"


# `data preview`, defined in nnrun/preview.py
data.add_command(preview)
