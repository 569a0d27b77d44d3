"""Aligned text tables, laid out by rich: columns grow with long layer names and extra metrics.

Rendered to a string, so that the caller decides where it goes (stdout, stderr, a test).
"""

from __future__ import annotations

import io
import math

from rich.box import Box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

# rich's SIMPLE_HEAD with an ASCII rule: copied into issues and CI logs, it stays readable.
ASCII_HEAD_RULE = Box("    \n    \n -- \n    \n    \n    \n    \n    \n")
UNLIMITED_WIDTH = 10_000


def table_text(headers: list[str], rows: list[list[str]], right: tuple[int, ...] = (),
               width: int | None = None, whole: tuple[int, ...] = ()) -> str:
    """The table as text; columns in `right` are right-aligned (numbers). Without a width (not
    a terminal) it keeps its natural width; with one, long cells wrap inside their column,
    except in the columns `right` and `whole` (shapes), which the other columns make room for,
    down to FOLDED_WIDTH. A terminal narrower than that gets the table as narrow as it gets
    without folding a word (the terminal wraps its lines), never cropped numbers or names."""
    table = Table(box=ASCII_HEAD_RULE, show_edge=False, pad_edge=False, collapse_padding=True,
                  header_style=None)
    least = []
    for index, header in enumerate(headers):
        whole_cells = index in right or index in whole
        natural = max(cell_len(line) for text in [header, *(row[index] for row in rows)]
                      for line in text.splitlines() or [""])
        least.append(natural if whole_cells else min(natural, FOLDED_WIDTH))
        table.add_column(header, justify="right" if index in right else "left", overflow="fold",
                         no_wrap=whole_cells, min_width=least[-1])
    for row in rows:
        table.add_row(*row)
    if width is not None and width < sum(least) + COLUMN_GAP * (len(headers) - 1):
        width = _unfolded_width(table)  # folded names would not make it fit
    return render(table, width)


def _unfolded_width(table: Table) -> int:
    """The narrowest the table gets with no word folded (the terminal wraps its lines)."""
    console = Console(file=io.StringIO(), width=UNLIMITED_WIDTH, color_system=None)
    return console.measure(table).minimum


FOLDED_WIDTH = 5  # a wrapping column is never narrower: names folded finer are unreadable
COLUMN_GAP = 2  # the spaces between two columns (ASCII_HEAD_RULE, padding 1 on each side)


def render(renderable, width: int | None = None) -> str:
    console = Console(file=io.StringIO(), width=width or UNLIMITED_WIDTH, markup=False,
                      highlight=False, emoji=False, color_system=None)
    if width is None:
        console.width = console.measure(renderable).maximum
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines()) + "\n"


def metric_text(value: float, signed: bool = False) -> str:
    """A metric to four decimals, as tables and epoch lines show them; one those would show as
    0.0000 (a loss of 1.5e-05, not 0) or with more than ten digits (a diverged 3.8e+18) in
    exponent form. `signed`: a + before a value that is not negative (a change)."""
    sign = "+" if signed else ""
    if value != 0 and math.isfinite(value) and not 5e-5 <= abs(value) < 1e6:
        return f"{value:{sign}.2e}"
    return f"{value:{sign}.4f}"


def byte_size(value: int, signed: bool = False) -> str:
    """Bytes in the unit that keeps them readable, in units of 1024: 24 B, 3.5 KB, 1.25 MB.
    `signed`: a + before a size that is not negative (a change)."""
    sign = "-" if value < 0 else "+" if signed else ""
    size = abs(value)
    if size < 1024:
        return f"{sign}{size} B"
    for unit, power, digits in (("KB", 1, 1), ("MB", 2, 2), ("GB", 3, 2), ("TB", 4, 2)):
        shown = round(size / 1024**power, digits)
        if shown < 1024 or unit == "TB":  # 1048575 B rounds to 1024.0 KB: 1.00 MB then
            return f"{sign}{shown:.{digits}f} {unit}"
