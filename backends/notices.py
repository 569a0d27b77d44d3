"""Lines on stderr besides a command's own output: warnings ("nnrun: warning: ...", a path or
kernel that fell back, said once) and notes ("nnrun: ...", a dataset being downloaded).
`train --quiet` silences them, as do the ranks of a data-parallel run other than rank 0,
which would otherwise say each one N times (runtime/train.py)."""

from __future__ import annotations

import sys
from contextlib import contextmanager

_SILENCED = {"depth": 0}


def warn(message: str) -> None:
    inform(f"warning: {message}")


def positioned(line: str) -> None:
    """A spec's diagnostic line (file:line:col: warning: ...), as `validate` prints it."""
    if not _SILENCED["depth"]:
        print(line, file=sys.stderr, flush=True)


def inform(message: str) -> None:
    if not message.isprintable():  # a path holding a line break or ESC: one line, no escapes
        message = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in message)
    if not _SILENCED["depth"]:
        print(f"nnrun: {message}", file=sys.stderr, flush=True)


@contextmanager
def silenced(silent: bool = True):
    """Runs the block without warning lines when `silent`."""
    _SILENCED["depth"] += bool(silent)
    try:
        yield
    finally:
        _SILENCED["depth"] -= bool(silent)
