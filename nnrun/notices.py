"""Lines on stderr besides a command's own output: warnings ("nnrun: warning: ...", a path or
kernel that fell back, said once) and notes ("nnrun: ...", a dataset being downloaded).
`train --quiet` silences them, as do the ranks of a data-parallel run other than rank 0,
which would otherwise say each one N times (runtime/train.py).

The one module of nnrun's that every layer imports (compiler, runtime, backends, the command
line): it imports nothing of nnrun's, so the layers still import one way (docs/architecture.md)."""

from __future__ import annotations

import codecs
import os
import re
import shlex
import sys
from contextlib import contextmanager, suppress

_SILENCED = {"depth": 0}
# collected(): the innermost takes the lines of its kinds, (lines, kinds)
_COLLECTORS: list[tuple[list[tuple[str, str]], tuple[str, ...]]] = []


def warn(message: str) -> None:
    _say("warning", message, f"nnrun: warning: {message}")


_SAID_ONCE: set[str] = set()


def warn_once(message: str) -> None:
    """A warning said once a process (of a setting read again at each call); a quiet run's
    silence does not count as saying it."""
    if message not in _SAID_ONCE and not _SILENCED["depth"]:
        _SAID_ONCE.add(message)
        warn(message)


def positioned(line: str) -> None:
    """A spec's diagnostic line (file:line:col: warning: ...), as `validate` prints it."""
    _say("positioned", line, line, escaped=False)


def inform(message: str) -> None:
    _say("note", message, f"nnrun: {message}")


def _say(kind: str, message: str, line: str, escaped: bool = True) -> None:
    if _SILENCED["depth"]:
        return
    if _COLLECTORS and kind in _COLLECTORS[-1][1]:
        _COLLECTORS[-1][0].append((kind, message))
    else:
        print(one_line(line) if escaped else line, file=sys.stderr, flush=True)


# What must not reach a terminal as it is: control characters (a line break, ESC, which starts
# a sequence that can set the title), line and paragraph separators, and the bidirectional
# overrides that reorder what is shown. Spaces of other scripts and joiners print as they are.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


# A line longer than this echoes what a file holds (a 15 MB name, a whole environment read
# as a csv header): its middle is left out, keeping what is wrong and what to do.
LONGEST_LINE = 2000


def one_line(text: str) -> str:
    """`text` as one line a terminal shows as it is: _UNSAFE characters written as escapes
    (`\\n`, `\\x1b`), so that a path holding one names the file and runs nothing, and at most
    about LONGEST_LINE characters."""
    # escaped first: a control character becomes up to 6 characters of its escape
    text = _UNSAFE.sub(lambda found: repr(found.group())[1:-1], text)
    # a file name's byte that is no UTF-8, which Python holds as a lone surrogate: as the byte
    text = _NOT_UTF8.sub(lambda found: f"\\x{ord(found.group()) - 0xDC00:02x}", text)
    if len(text) > LONGEST_LINE:
        head, tail = LONGEST_LINE * 2 // 3, LONGEST_LINE // 4
        text = (f"{text[:head]} ... [{len(text) - head - tail:,} characters left out] ... "
                f"{text[-tail:]}")
    return text


def shell_word(text: str) -> str:
    """`text` as one word a shell reads back as it is, for the commands messages give: shlex's
    quoting, or where it holds what one_line would escape (a line break in a directory's name,
    a byte that is no UTF-8), or a character the messages' stream writes otherwise than the
    file system names it (a latin-1 terminal), bash's $'...' form with those escaped, so that
    the command stays one line that can be pasted."""
    literal = _written_as_named()
    if not (_UNSAFE.search(text) or _NOT_UTF8.search(text)) and (literal or text.isascii()):
        return shlex.quote(text)
    return "$'" + "".join(_escaped_in_dollar_quotes(char, literal) for char in text) + "'"


def _escaped_in_dollar_quotes(char: str, literal: bool) -> str:
    if char in "\\'":
        return "\\" + char
    if _NOT_UTF8.fullmatch(char):
        return f"\\x{ord(char) - 0xDC00:02x}"  # the byte itself
    if _UNSAFE.fullmatch(char):
        return f"\\x{ord(char):02x}" if ord(char) < 0x80 else f"\\u{ord(char):04x}"
    if not literal and not char.isascii():  # the bytes the file system holds for it
        try:
            named = os.fsencode(char)
        except UnicodeEncodeError:  # no name of that file system holds it
            named = char.encode("utf-8", "surrogatepass")
        return "".join(f"\\x{byte:02x}" for byte in named)
    return char


def _written_as_named() -> bool:
    """Whether the messages' stream (stderr) writes text in the file system's encoding, so
    that a name shown as it is reads back, pasted, as the file's own bytes."""
    try:
        return (codecs.lookup(getattr(sys.stderr, "encoding", None) or "utf-8").name
                == codecs.lookup(sys.getfilesystemencoding()).name)
    except LookupError:
        return False


@contextmanager
def collected(kinds: tuple[str, ...] = ("warning", "note", "positioned")):
    """Runs the block with its lines of `kinds` kept, not printed (the others are): the list
    it gives holds (kind, message), kind "warning", "note" or "positioned" (a spec's
    diagnostic line)."""
    lines: list[tuple[str, str]] = []
    _COLLECTORS.append((lines, kinds))
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


class _Unfailing:
    """A stream whose writes cannot fail: after the first that does, the rest are dropped."""

    def __init__(self, stream):
        self._stream, self.failed = stream, False

    def write(self, text: str) -> int:
        self._attempt(lambda: self._stream.write(text))
        return len(text)

    def flush(self) -> None:
        self._attempt(self._stream.flush)

    def _attempt(self, action) -> None:
        if self.failed:
            return
        try:
            action()
        except BlockingIOError:  # a non-blocking reader that is slow: this line is dropped
            pass
        except (OSError, ValueError):  # ValueError: the stream was closed
            self.failed = True
            # what the stream still buffers goes nowhere, not to a flush at exit that fails
            # again (Python would then end the process with status 120)
            with suppress(OSError, ValueError, AttributeError):
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, self._stream.fileno())
                os.close(null)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextmanager
def unfailing_output():
    """Runs the block with stdout and stderr that cannot fail: `nnrun train`'s progress, notes
    and final table going to a log on a disk that fills up, or to a reader that left
    (`| head`), must not stop it and lose the epoch it trained but had not yet saved. The run
    directory holds what they would have said. The command's own: a program calling
    nnrun.train keeps its streams as they are."""
    saved = sys.stdout, sys.stderr
    wrapped = tuple(None if stream is None else _Unfailing(stream) for stream in saved)
    sys.stdout, sys.stderr = wrapped
    try:
        yield
    finally:  # the process's streams, unless something else has set them meanwhile
        if sys.stdout is wrapped[0]:
            sys.stdout = saved[0]
        if sys.stderr is wrapped[1]:
            sys.stderr = saved[1]
