"""Lines on stderr besides a command's own output: warnings ("nnrun: warning: ...", a path or
kernel that fell back, said once) and notes ("nnrun: ...", a dataset being downloaded).
`train --quiet` silences them, as do the ranks of a data-parallel run other than rank 0,
which would otherwise say each one N times (runtime/train.py).

The one module of nnrun's that every layer imports (compiler, runtime, backends, the command
line): it imports nothing of nnrun's, so the layers still import one way (docs/architecture.md)."""

from __future__ import annotations

import re
import sys
from contextlib import contextmanager

_SILENCED = {"depth": 0}
_COLLECTORS: list[list[tuple[str, str]]] = []  # collected(): the innermost takes the lines


def warn(message: str) -> None:
    _say("warning", message, f"nnrun: warning: {message}")


def positioned(line: str) -> None:
    """A spec's diagnostic line (file:line:col: warning: ...), as `validate` prints it."""
    _say("positioned", line, line, escaped=False)


def inform(message: str) -> None:
    _say("note", message, f"nnrun: {message}")


def _say(kind: str, message: str, line: str, escaped: bool = True) -> None:
    if _SILENCED["depth"]:
        return
    if _COLLECTORS:
        _COLLECTORS[-1].append((kind, message))
    else:
        print(one_line(line) if escaped else line, file=sys.stderr, flush=True)


# What must not reach a terminal as it is: control characters (a line break, ESC, which starts
# a sequence that can set the title), line and paragraph separators, and the bidirectional
# overrides that reorder what is shown. Spaces of other scripts and joiners print as they are.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


# A line longer than this echoes what a file holds (a 15 MB name, a whole environment read
# as a csv header): its middle is left out, keeping what is wrong and what to do.
LONGEST_LINE = 2000


def one_line(text: str) -> str:
    """`text` as one line a terminal shows as it is: _UNSAFE characters written as escapes
    (`\\n`, `\\x1b`), so that a path holding one names the file and runs nothing, and at most
    about LONGEST_LINE characters."""
    # escaped first: a control character becomes up to 6 characters of its escape
    text = _UNSAFE.sub(lambda found: repr(found.group())[1:-1], text)
    if len(text) > LONGEST_LINE:
        head, tail = LONGEST_LINE * 2 // 3, LONGEST_LINE // 4
        text = (f"{text[:head]} ... [{len(text) - head - tail:,} characters left out] ... "
                f"{text[-tail:]}")
    return text


@contextmanager
def collected():
    """Runs the block with its lines kept, not printed: the list it gives holds (kind,
    message), kind "warning", "note" or "positioned" (a spec's diagnostic line)."""
    lines: list[tuple[str, str]] = []
    _COLLECTORS.append(lines)
    try:
        yield lines
    finally:
        _COLLECTORS.pop()


@contextmanager
def silenced(silent: bool = True):
    """Runs the block without warning lines when `silent`."""
    _SILENCED["depth"] += bool(silent)
    try:
        yield
    finally:
        _SILENCED["depth"] -= bool(silent)
