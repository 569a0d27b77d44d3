"""The `nnrun` command's entry point. Importing the command line takes about half a second
(pydantic, NumPy, click), seconds on a loaded machine; a Ctrl-C or a scheduler's SIGTERM then is
answered as the commands answer it, in one line, not with a traceback of whatever module was
loading or a silent death by the signal."""

from __future__ import annotations

import signal
import sys
import threading

from nnrun.runtime.interrupts import (HANDLED, Interrupted, forget_signals,
                                      note_until_mpi_starts, raise_on_signal)


def main() -> None:
    forget_signals()  # a stop an earlier command in this process made (a caller in Python)
    received = _load_with_signals_noted()
    if _a_rank_of_a_distributed_run():  # its signals wait for the ranks' first meeting
        if received is not None:  # during the imports: noted as the ones after
            note_until_mpi_starts(received, None)
        for number in HANDLED:
            signal.signal(number, note_until_mpi_starts)
    elif received is not None:
        print(f"interrupted: stopped by {signal.Signals(received).name} before the command "
              "began; nothing was written", file=sys.stderr)
        sys.exit(128 + received)
    from nnrun.cli import main as command

    try:
        command()
    except Interrupted as interrupt:  # outside a command's own handling: click parsing it
        print(f"interrupted: {interrupt}", file=sys.stderr)
        sys.exit(interrupt.exit_code)
    finally:
        forget_signals()  # the process ends here; a caller in Python (tests) goes on
        _ignore_signals_from_here()


def _a_rank_of_a_distributed_run() -> bool:
    """One of several processes an MPI launcher started, for `train --distributed`: a rank
    that leaves before MPI starts can leave the launcher waiting for it."""
    from nnrun.runtime.launcher import launched_size  # environment only: no NumPy here

    return (threading.current_thread() is threading.main_thread() and launched_size() > 1
            and "--distributed" in sys.argv[1:])


def _ignore_signals_from_here() -> None:
    """The command has answered: a signal in the exit that follows (Python restores the default
    handlers as it shuts down) would kill a finished run by the signal, its status -15. Not
    under an MPI launcher: a rank waiting in MPI_Finalize for another must still stop on it."""
    from nnrun.runtime.launcher import launched_size  # environment only: no NumPy here

    if threading.current_thread() is threading.main_thread() and launched_size() == 1:
        for number in HANDLED:
            signal.signal(number, signal.SIG_IGN)


def _load_with_signals_noted() -> int | None:
    """Imports nnrun.cli with SIGINT and SIGTERM only noted: raised inside an import, pydantic
    would wrap them in its own error. A second signal stops at once. Afterwards, until training
    installs its own handling (InterruptGuard, which puts this back after), both raise and are
    noted (raise_on_signal), so that the commands' error handling says them in one line even
    where a library swallowed or wrapped the exception (a Ctrl-C in pydantic's schema
    building was an internal error, exit 70)."""
    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        import nnrun.cli  # noqa: F401
        return None
    received: list[int] = []

    def note(number: int, frame) -> None:
        if received:
            raise Interrupted(number)
        received.append(number)

    for number in HANDLED:
        signal.signal(number, note)
    try:
        import nnrun.cli  # noqa: F401
    except (KeyboardInterrupt, Interrupted) as interrupt:  # a second signal
        received.append(getattr(interrupt, "signal_number", signal.SIGINT))
    finally:
        for number in HANDLED:
            signal.signal(number, raise_on_signal)
    return received[0] if received else None
