"""SIGTERM (what a cluster scheduler sends before it kills a job) and SIGINT (Ctrl-C) during
training: stop at a safe point, with every file intact, and say how to go on.

Inside `safe_points()` a signal is only noted; the training loop calls `check()` between batches
and after each checkpoint, so a checkpoint being written is always finished first. Outside
(loading data, compiling) there is nothing to save and the signal stops the run at once. A second
signal never waits. Once a signal has stopped the run, those after it are let go (_STOPPING).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

HANDLED = (signal.SIGTERM, signal.SIGINT)

# A signal has stopped the command (an Interrupted made): the stop is under way, and the line
# that says what is kept is still to come. The signals after it are let go (a double Ctrl-C
# replaced that line with a bare "stopped by SIGINT"); a training that starts clears it.
_STOPPING: list[int] = []


class Interrupted(BaseException):
    """Training stopped on a signal; exit with 128 + the signal number, as a shell does. A
    BaseException, as KeyboardInterrupt is: a library's `except Exception` (pydantic building
    a schema, a guard around an optional path) must not swallow or rewrap it."""

    def __init__(self, signal_number: int, message: str = ""):
        super().__init__(message or f"stopped by {signal.Signals(signal_number).name}")
        self.signal_number = signal_number
        _STOPPING.append(signal_number)

    def __reduce__(self):  # pickled to other MPI ranks: rebuilt from the number, not the words
        return type(self), (self.signal_number, str(self))

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number


_NOTED: list[int] = []  # the signals raise_on_signal raised on, in this process


def raise_on_signal(number: int, frame) -> None:
    """The command line's handler of SIGTERM and SIGINT between its imports and training
    (entry.py): the command stops at once. Noted too: a library may swallow the exception or
    wrap it in its own (pydantic building a validator), and the signal must still stop the
    command. Let go once a stop is under way (_STOPPING)."""
    if _STOPPING:
        return
    _NOTED.append(number)
    raise Interrupted(number)


def forget_signals() -> None:
    _NOTED.clear()
    _STOPPING.clear()
    _BEFORE_MPI.clear()


# A signal to one rank of a data-parallel job before MPI started: noted, as the ranks' start
# notes one (distributed.connect takes it), not raised. A rank that left then, alone, could
# leave Open MPI's launcher waiting for it with no word (seen: a SIGTERM 0.7 s after the start).
_BEFORE_MPI: list[int] = []


def note_until_mpi_starts(number: int, frame) -> None:
    """The command line's handler in a rank of `train --distributed` from its start until MPI
    starts (entry.py). A second signal stops the rank at once."""
    if _BEFORE_MPI:
        raise Interrupted(number)
    _BEFORE_MPI.append(number)


def take_over_from_the_start(guard: InterruptGuard) -> None:
    """MPI's start (distributed.connect): `guard` keeps the signal noted before it, and hands
    back the command line's handler, which stops at once (a rank waiting in MPI_Finalize must
    still stop on a signal), not the one that noted it."""
    guard.received = _BEFORE_MPI[0] if _BEFORE_MPI else None
    guard.previous = {number: raise_on_signal if handler is note_until_mpi_starts else handler
                      for number, handler in guard.previous.items()}


def noted_signal() -> int | None:
    """The first signal raise_on_signal raised on; the command line reports one only by
    exiting, so a command that goes on after it had it swallowed or wrapped."""
    return _NOTED[0] if _NOTED else None


class InterruptGuard:
    def __init__(self, deferring: bool = False):
        self.received: int | None = None
        self.deferring = deferring
        self.previous: dict = {}

    def __enter__(self) -> InterruptGuard:
        if noted_signal() is not None:  # swallowed by the code before: no training after it
            raise Interrupted(noted_signal())
        _STOPPING.clear()
        # Python lets only the main thread set handlers; an API call from a thread keeps its own.
        if threading.current_thread() is threading.main_thread():
            self.previous = {number: signal.signal(number, self._handle) for number in HANDLED}
        return self

    def __exit__(self, *exception) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame) -> None:
        if _STOPPING:
            return
        if not self.deferring or self.received is not None:
            raise Interrupted(number)
        self.received = number

    @contextmanager
    def safe_points(self):
        before, self.deferring = self.deferring, True
        try:
            yield
        finally:
            self.deferring = before
        if not before:  # else the enclosing block's caller looks at `received`
            self.check()  # a signal noted after the last check must not be lost

    @contextmanager
    def deferred(self):
        """Signals in the block are only noted: the caller looks at `received` after it."""
        before, self.deferring = self.deferring, True
        try:
            yield
        finally:
            self.deferring = before

    @contextmanager
    def at_once(self):
        """Signals in the block stop it at once, as does one noted before it."""
        before, self.deferring = self.deferring, False
        try:
            self.check()
            yield
        finally:
            self.deferring = before

    def check(self) -> None:
        if self.received is not None:
            raise Interrupted(self.received)
