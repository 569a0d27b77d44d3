"""The `nnrun` command line (DESIGN.md section 6).

Exit codes: 0 success; 1 invalid spec, bad data, damaged files, failed training, a file that
cannot be written or read (disk full, permissions), not enough memory; 2 usage; 70 internal error
(a bug); 130 and 143 when SIGINT or SIGTERM stopped training (128 + the signal number).
Bad input prints one line per problem and never a traceback (unless --debug).
"""

from __future__ import annotations

import errno
import importlib
import io
import json
import math
import os
import re
import sys
import traceback
from contextlib import contextmanager, suppress
from dataclasses import replace
from functools import wraps
from pathlib import Path

import click

from nnrun.compiler.diagnostics import FORMATS, Diagnostic, SpecError, format_diagnostics
from nnrun.notices import one_line, positioned, shell_word
from nnrun.runtime.interrupts import Interrupted, noted_signal
from nnrun.runtime.launcher import launched_rank, launched_size, wait_for_rank_0

INTERNAL_ERROR = 70

class _PathNotLookedAt(click.ClickException):
    """A path given that cannot even be looked at (permission denied on a directory above it,
    a name too long, a loop of links): a file that cannot be read, exit 1, one line, where
    click said it does not exist or Python's stat raised (a traceback)."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(one_line(f"error: {self.format_message()}"), err=True)


def _look_at(value) -> None:
    """Raises _PathNotLookedAt where `value` cannot be looked at; a missing path is left to
    the caller to say."""
    from nnrun.compiler.datasets import why_not_looked_at

    reason = why_not_looked_at(Path(value))
    if reason:
        raise _PathNotLookedAt(f"{value}: {reason}")


class ExistingPath(click.Path):
    """An input path that must exist (click.Path's checks), said as _PathNotLookedAt where it
    cannot be looked at."""

    def __init__(self, **options):
        super().__init__(exists=True, path_type=Path, **options)

    def convert(self, value, param, ctx):
        self.refuse_empty(value, param, ctx)
        _look_at(value)
        _refuse_unreadable(value)
        return super().convert(value, param, ctx)

    def refuse_empty(self, value, param, ctx) -> None:
        """'' is '.' to Path, and to os.access no file (it was said as permission denied)."""
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path (an unset shell variable?); give the path", param, ctx)


def _refuse_unreadable(value) -> None:
    """click's test of the permission, said as a file that cannot be read (exit 1), not as a
    usage error."""
    if Path(value).exists() and not os.access(value, os.R_OK):
        from nnrun.compiler.datasets import why_unreadable

        denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        raise _PathNotLookedAt(f"{value}: {why_unreadable(denied)}")


spec_argument = click.argument("spec", type=ExistingPath(dir_okay=False))


def tolerance_option(default: float, help_text: str):
    """--tolerance: a finite number >= 0 (nan would accept every difference, a negative one
    none)."""
    def finite(ctx, param, value: float) -> float:
        if not 0 <= value < float("inf"):
            raise click.BadParameter(f"{value:g} is not a finite number >= 0 (e.g. {default:g})")
        return value

    return click.option("--tolerance", type=float, default=default, show_default=True,
                        callback=finite, help=help_text)


def _positive_seconds(ctx, param, value: float | None) -> float | None:
    """A number of seconds > 0 (click's FloatRange lets nan through); inf waits for good."""
    if value is not None and not value > 0:
        raise click.BadParameter(f"{value:g} is not a number of seconds > 0 (e.g. 300)")
    return value


set_option = click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
                          help="Override a spec value before validation, e.g. optimizer.lr=0.01 "
                               "(repeatable; VALUE is parsed as YAML).")
backend_option = click.option("--backend", type=click.Choice(["numpy", "cupy"]), default="numpy",
                              show_default=True, help="Array backend.")
no_graph_option = click.option(
    "--no-graph", is_flag=True, help="On a GPU, run each step uncaptured (the planned executor) "
                                     "instead of replaying it as one CUDA graph.")


class OutPath(click.Path):
    """--out: an empty value (an unset shell variable) was the current directory, or a file
    named '' that no rename can create; `-`, standard output to many tools, was a file named
    '-' (the commands write files of binary formats, not to a terminal or a pipe)."""

    def convert(self, value, param, ctx):
        kind = "directory" if not self.file_okay else "file" if not self.dir_okay else \
            "file or directory"
        if isinstance(value, str) and not value.strip():
            self.fail(f"an empty path; give a {kind} name", param, ctx)
        if str(value) == "-":
            writes = "a run directory" if kind == "directory" else "a file"
            self.fail(f"'-': this command writes {writes}, not to standard output; give a "
                      f"{kind} name (one named '-' is ./-)", param, ctx)
        return super().convert(value, param, ctx)


class RunDirPath(ExistingPath):
    """A run directory `nnrun train` wrote: a spec file or a missing path given instead is told
    what the command takes (click said only "is a file" or "does not exist")."""

    def __init__(self, hint: str = ""):
        super().__init__(file_okay=False)
        self.hint = hint

    def convert(self, value, param, ctx):
        self.refuse_empty(value, param, ctx)
        _look_at(value)
        path, wanted = Path(value), "a run directory, as `nnrun train` writes (runs/<name>/<time>)"
        if path.is_file() and path.suffix in (".yaml", ".yml"):
            from nnrun.runtime.run_dir import is_run_directory

            if path.name == "spec.yaml" and is_run_directory(path.parent):  # the run's own
                self.fail(f"'{value}' is the spec of the run {path.parent}; give the run "
                          f"directory itself, {path.parent}", param, ctx)
            self.fail(f"'{value}' is a spec; give {wanted}, or train it first: nnrun train "
                      f"{shell_word(str(value))}", param, ctx)
        if not path.exists():
            self.fail(f"'{value}' does not exist; give {wanted}{self.hint}", param, ctx)
        _refuse_unreadable(value)
        return click.Path.convert(self, value, param, ctx)  # looked at above


def _usable_threads(ctx, param, value: int | None) -> int | None:
    if value is not None:
        from nnrun.runtime.threads import MAX_THREADS
        if value > MAX_THREADS:
            raise click.BadParameter(f"{value} is more threads than nnrun runs ({MAX_THREADS} at "
                                     "most); give at most the machine's cores", ctx, param)
    return value


threads_option = click.option("--threads", type=click.IntRange(min=1), callback=_usable_threads,
                              help="CPU threads for the NumPy kernels (default: OMP_NUM_THREADS, "
                                   "else every core).")


NPY_MAGIC = b"\x93NUMPY"  # how every .npy file begins


class UserError(Exception):
    """A problem with the user's input: one line, exit 1."""


def refuse_an_input_as_out(out_path: Path, *inputs: Path) -> None:
    """--out naming a file the command reads (its spec, its npz, a run directory's own files)
    would replace that file with the output."""
    from nnrun.runtime.run_dir import LOCK, OWNED

    if not out_path.exists():  # a new file replaces nothing
        return
    for given in inputs:
        read = [given] if given.is_file() else \
            [given / name for name in (*OWNED, LOCK)] if given.is_dir() else []
        if any(_same_file(out_path, path) for path in read):
            raise UserError(f"{out_path}: is a file this command reads (from {given}); "
                            "choose another --out")


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:  # not there, or a loop of symbolic links: not the file written
        return False


def wrote(out_path: Path, what: str) -> str:
    """The line that says what a command wrote where, the path's control characters escaped
    as in every error line (a --out holding ESC would set the terminal's title)."""
    return one_line(f"wrote {out_path}: {what}")


def refuse_an_unwritable_out(out_path: Path) -> None:
    """--out that cannot be written (a missing or read-only directory, a file on the way, a
    device) or that is one of a run's own files, said before any work is done."""
    from nnrun.runtime.files import is_writable_directory, refuse_a_target_that_is_no_file
    from nnrun.runtime.run_dir import refuse_a_run_file_as_out

    with suppress(FileNotFoundError, PermissionError):
        out_path.stat()  # keep.npz/x.npy with keep.npz a file: NotADirectoryError, as train says
    if not out_path.parent.is_dir():
        raise UserError(f"{out_path}: directory {out_path.parent} does not exist; create it "
                        f"(mkdir -p {shell_word(str(out_path.parent))}), or choose another --out")
    if not is_writable_directory(out_path.parent):
        raise UserError(f"{out_path}: directory {out_path.parent} is not writable; "
                        "choose another --out")
    refuse_a_target_that_is_no_file(out_path)
    refuse_a_run_file_as_out(out_path)


def refuse_another_suffix(out_path: Path, suffix: str, kind: str) -> None:
    """An --out whose suffix names another format (preds.csv, model.png) would hold this
    command's format under that name: refused; a name without a suffix is taken as it is."""
    if out_path.suffix and out_path.suffix.lower() != suffix:
        raise UserError(f"{out_path}: this command writes {kind}, not what the suffix "
                        f"{out_path.suffix!r} names; choose another --out, e.g. "
                        f"{out_path.with_suffix(suffix).name}")


def refuse_to_replace_another_kind(out_path: Path, is_kind, kind: str) -> None:
    """An existing --out that is not this command's output (a spec, a dataset: a slip of the
    shell or of tab completion) is kept; one that is, or an empty one, is replaced, so that a
    command run again refreshes its output. `is_kind(handle)`: whether the file open in
    `handle` is such an output. Called after refuse_an_unwritable_out, which refuses FIFOs and
    devices before this opens the file."""
    try:
        with open(out_path, "rb") as handle:
            empty = not handle.read(1)
            handle.seek(0)
            replaced = empty or is_kind(handle)
    except OSError:  # absent (a new file), or unreadable: the write says what is wrong
        return
    if not replaced:
        raise UserError(f"{out_path}: exists and is no {kind}; choose another --out (or delete "
                        "the file first to replace it)")


def in_own_caches(command):
    """A command that imports matplotlib or onnxruntime: their files under nnrun's cache."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        from nnrun.runtime.data.locations import library_caches_in_ours

        with library_caches_in_ours():
            return command(*args, **kwargs)

    return wrapper


def _expected_errors() -> tuple[type[Exception], ...]:
    from nnrun.backends import BackendUnavailable
    from nnrun.compiler.export_onnx import ExportError
    from nnrun.runtime.checkpoint import CheckpointError
    from nnrun.runtime.data import DataError
    from nnrun.runtime.distributed import DistributedError
    from nnrun.runtime.memory import MemoryLimitError
    from nnrun.runtime.plot import PlotError
    from nnrun.runtime.run_dir import RunDirectoryError
    from nnrun.runtime.spec_changes import SpecChangeError
    from nnrun.runtime.train import TrainingError

    return (UserError, DataError, TrainingError, CheckpointError, RunDirectoryError,
            SpecChangeError, MemoryLimitError, BackendUnavailable, ExportError,
            DistributedError, PlotError)


def handle_errors(command):
    """Spec errors print as diagnostics, other user errors as one line; anything else is a bug."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        debug = click.get_current_context().find_root().params.get("debug", False)
        try:
            try:
                return command(*args, **kwargs)
            finally:  # a signal a library swallowed, or wrapped in its own error, still stops
                if noted_signal() is not None:  # the command, whatever it did after it
                    raise Interrupted(noted_signal())
        # The signals first: a second one must not land in the imports _expected_errors makes
        except Interrupted as interrupt:
            click.echo(one_line(f"interrupted: {interrupt}"), err=True)
            sys.exit(interrupt.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: stopped by SIGINT", err=True)
            sys.exit(130)
        except MemoryError as error:  # before the clauses below, whose imports need memory
            traceback.clear_frames(error.__traceback__)  # what the command held is let go
            _fail(error, f"error: out of memory; {_memory_fix(click.get_current_context())} "
                         "(`nnrun summary` shows the estimate)")
        except SpecError as error:
            _fail(error, format_diagnostics(error.diagnostics))
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise  # click's own exits and usage errors (exit 2) keep their meaning
        except _expected_errors() as error:
            placed = getattr(error, "diagnostic", None)  # data said where the spec names it
            _fail(error, format_diagnostics([placed]) if placed else one_line(f"error: {error}"))
        except BrokenPipeError:  # the reader left (`nnrun schema | head`): nothing to say
            _discard_standard_output()
            sys.exit(1)
        except OSError as error:  # disk full, permissions, read-only: the user's to fix
            from nnrun.runtime.files import describe_os_error

            if error.filename is None:  # standard output's: `nnrun summary > /dev/full`
                _discard_standard_output()
            _fail(error, one_line(f"error: {describe_os_error(error)}"))
        except Exception as error:  # noqa: BLE001 - the last line of defence
            if debug:
                traceback.print_exc()
            _fail(error, one_line(f"nnrun: internal error: {type(error).__name__}: {error} "
                                  "(rerun as `nnrun --debug COMMAND ...` for the traceback, and "
                                  "please report it)"), INTERNAL_ERROR)

    return wrapper


def _discard_standard_output() -> None:
    """What standard output still buffers goes to /dev/null: its write failed (a full disk,
    the reader left), and the flush at exit would fail again (exit 120, and a traceback)."""
    with suppress(OSError, ValueError, AttributeError):  # closed, or no descriptor at all
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _fail(error: Exception, said: str, code: int = 1):
    """Says the error and exits; with the rank of a data-parallel job that met it where rank 0
    did not (distributed.MpiRanks.together): the error's own line does not tell which node."""
    click.echo(said, err=True)
    met_on = getattr(error, "met_on", None)
    if met_on:
        click.echo(one_line(f"nnrun: {met_on} met the error above; rank 0 did not"), err=True)
    sys.exit(code)


def _memory_fix(context: click.Context) -> str:
    """What frees memory for the command: a smaller batch where it takes one; eval and predict
    take as few samples at a time as fit already."""
    smaller = "lower the batch size or the model size"
    if context.info_name == "trace" and (context.params.get("steps") or 1) > 1:
        return f"trace fewer --steps (it keeps every step's values), or {smaller}"
    if context.info_name in ("train", "bench", "gradcheck", "trace", "check-backends"):
        return smaller
    return ("free memory, or run it where more is available (an address-space limit, ulimit "
            "-v, also counts what threads and libraries reserve)")


def _escape_what_the_streams_cannot_encode() -> None:
    """A name the terminal's encoding cannot hold (a CJK name under a latin-1 locale) is
    written as an escape (\\u6570), not an internal error (click repairs an ASCII stream
    only); the commands in messages quote such names in bash's $'...' form (shell_word)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", None) in ("strict",
                                                                            "surrogateescape"):
            with suppress(ValueError, OSError):  # a stream that cannot change (detached)
                reconfigure(errors="backslashreplace")


class _WholeWrites(io.BufferedIOBase):
    """Standard output's buffer, written whole or not at all: io.BufferedWriter (and FileIO,
    unbuffered) returns a short count, without an error, for a write the disk or the file size
    limit (`ulimit -f`) cut short, and TextIOWrapper drops the count: `nnrun schema > f` then
    ended at 0 with f cut off. Writing the rest again raises the reason (ENOSPC, EFBIG),
    which the commands say, exit 1."""

    def __init__(self, buffer):
        super().__init__()
        self._buffer = buffer

    def write(self, data) -> int:
        rest = memoryview(data).cast("B")
        while rest:
            written = self._buffer.write(rest)
            if not written:  # nothing taken and no error: never seen, but not a loop
                raise OSError(errno.EIO, "the output took no more", "standard output")
            rest = rest[written:]
        return len(data)

    def flush(self) -> None:
        self._buffer.flush()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._buffer.fileno()

    def isatty(self) -> bool:
        return self._buffer.isatty()


def _no_short_writes_to_standard_output() -> None:
    """Standard output on a file descriptor, through _WholeWrites (a test's captured output,
    in memory, is written whole already)."""
    stream = sys.stdout
    buffer = getattr(stream, "buffer", None)
    if not isinstance(stream, io.TextIOWrapper) \
            or not isinstance(buffer, (io.BufferedWriter, io.FileIO)):  # FileIO: python -u
        return
    sys.stdout = io.TextIOWrapper(_WholeWrites(buffer), encoding=stream.encoding,
                                  errors=stream.errors, line_buffering=stream.line_buffering)


class _ClosedOutput(io.TextIOBase):
    """Standard output closed before the command began (`>&-`): Python leaves sys.stdout None,
    and click drops what is written to None without a word, exit 0 with the output lost.
    Writing here fails as a full disk does: the commands whose output it is say so and exit 1;
    train's progress goes (its run directory holds it all)."""

    encoding, errors = "utf-8", "strict"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "it is closed; give the command an output (a file, a pipe, "
                      "/dev/null)", "standard output")


def _debug_first(group: click.Group, words: list[str]) -> list[str]:
    """`nnrun train SPEC --debug`, where a command's other options go: the group's flag, as
    `nnrun --debug train SPEC` gives it; not after `--`, which ends the options, nor as the
    value of an option that takes one (`--out --debug` names a directory)."""
    end = words.index("--") if "--" in words else len(words)
    valued = _options_taking_values(group, words)
    moved = [at for at in range(1, end) if words[at] == "--debug"
             and words[at - 1] not in valued]
    if not moved:
        return words
    return ["--debug", *(word for at, word in enumerate(words) if at not in moved)]


def _options_taking_values(group: click.Group, words: list[str]) -> set[str]:
    """The names of the options that take a value, of the command (or subcommand) `words`
    name."""
    command, names = group, set()
    for word in words:
        if not isinstance(command, click.Group) or word.startswith("-"):
            continue
        command = command.commands.get(word)
        if command is None:
            break
        names |= {name for param in command.params if isinstance(param, click.Option)
                  and not param.is_flag for name in param.opts}
    return names


class _Commands(click.Group):
    """nnrun's commands. Under an MPI launcher, every rank of `train --distributed` checks the
    command line and the spec before the ranks meet: when they all fail alike, rank 0 alone
    says what is wrong (said_by_rank_0)."""

    def main(self, args=None, **kwargs):
        if sys.stdout is None:
            sys.stdout = _ClosedOutput()
        _no_short_writes_to_standard_output()
        _escape_what_the_streams_cannot_encode()
        try:
            return self._main(args, **kwargs)
        except OSError as error:  # the commands say theirs: --help or --version to a full disk
            from nnrun.runtime.files import describe_os_error

            _discard_standard_output()
            click.echo(one_line(f"error: {describe_os_error(error)}"), err=True)
            sys.exit(1)

    def _main(self, args=None, **kwargs):
        words = _debug_first(self, sys.argv[1:] if args is None else list(args))
        if "--distributed" not in words or not _a_further_rank():
            return super().main(words, **kwargs)
        try:
            super().main(words, **{**kwargs, "standalone_mode": False})
        except click.ClickException as error:
            wait_for_rank_0()
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:
            sys.exit(1)
        sys.exit(0)

    def parse_args(self, ctx, args):
        ctx.meta["nnrun.words"] = list(args)  # for _command_path
        with _usage_errors_in_one_line(self._command_path(ctx)):
            _refuse_a_spaced_override(ctx, args)
            _refuse_a_negative_seed(ctx, args)
        return super().parse_args(ctx, args)

    def make_context(self, info_name, args, parent=None, **extra):
        with _usage_errors_in_one_line(info_name or "nnrun"):
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx):
        # a command's own options, parsed here (an option without its value has no context)
        with _usage_errors_in_one_line(self._command_path(ctx)):
            return super().invoke(ctx)

    def _command_path(self, ctx) -> str:
        """`nnrun data preview`: the command the words name, whose --help a usage error
        points to."""
        path, command = ctx.command_path, self
        for word in ctx.meta.get("nnrun.words", []):
            if word.startswith("-"):
                continue
            if not isinstance(command, click.Group) or word not in command.list_commands(ctx):
                break
            path, command = f"{path} {word}", command.get_command(ctx, word)
        return path

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *_COMMAND_MODULES})

    def get_command(self, ctx, name):
        """A command of its own module, imported when named: that module imports this one,
        so importing it at this one's import would make importing it first a cycle."""
        if name not in self.commands and name in _COMMAND_MODULES:
            module, attribute = _COMMAND_MODULES[name]
            command = getattr(importlib.import_module(module), attribute)
            if name not in self.commands:  # check-backends registers itself
                self.add_command(command, name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter) -> None:
        """The list of `nnrun --help`, with the commands of their own modules not imported."""
        listed = click.Group(commands={
            name: self.commands.get(name) or click.Command(name, help=_COMMAND_SUMMARIES[name])
            for name in self.list_commands(ctx)})
        listed.format_commands(ctx, formatter)


class _OneLineUsageError(click.ClickException):
    """A usage error (a bad option or argument) said in one line, as every other error is,
    with the command's --help to turn to, instead of click's usage block above it."""

    exit_code = 2

    def __init__(self, message: str, command_path: str):
        super().__init__(message)
        self.command_path = command_path

    def show(self, file=None) -> None:
        message = one_line(" ".join(self.format_message().split("\n")))
        click.echo(f"Error: {message} (see '{self.command_path} --help')", err=True)


# click 8.2's; pyproject asks for it, and a machine that cannot install it (the GPU machine
# takes what it has) still runs
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


@contextmanager
def _usage_errors_in_one_line(command_path: str = "nnrun"):
    """`command_path`: whose --help to name where the error has no context of its own."""
    try:
        yield
    except _NO_ARGS_IS_HELP:
        raise  # `nnrun data` alone: its help, as asked
    except click.UsageError as error:
        # the error's own command, unless it is the group's, which names a command's words
        own = error.ctx is not None and error.ctx.command is not main
        path = error.ctx.command_path if own else command_path
        field = _spec_field_set_instead(error)
        message = (f"No such option '{error.option_name}': a spec's fields are set with --set, "
                   f"as --set {field}=VALUE" if field else error.format_message())
        raise _OneLineUsageError(message, path) from None


def _spec_field_set_instead(error: click.UsageError) -> str | None:
    """`train spec.yaml --lr 0.1`: the spec field an unknown option names (optimizer.lr),
    where the command takes --set (click's nearest option was '--help'); None where it is the
    command's own option but for - and _, which click's suggestion names."""
    if not isinstance(error, click.NoSuchOption) or error.ctx is None \
            or not any(param.name == "overrides" for param in error.ctx.command.params) \
            or error.option_name.replace("_", "-") in (error.possibilities or ()):
        return None  # `--batch_size`: the command's own --batch-size, as click says
    from nnrun.compiler.diagnostics import spec_field_path

    return spec_field_path(error.option_name.lstrip("-").replace("-", "_"))


# command -> (its module, the command's name there)
_COMMAND_MODULES = {"check-backends": ("nnrun.check_backends_cli", "check_backends"),
                    "data": ("nnrun.data_cli", "data"), "diff": ("nnrun.diff_cli", "diff_command"),
                    "export": ("nnrun.export_cli", "export"), "plot": ("nnrun.plot_cli", "plot"),
                    "trace": ("nnrun.trace_cli", "trace")}
# Their help's first paragraph, which `nnrun --help` lists without importing them (the data
# commands' module alone imports the schema and NumPy: 0.6 s); a test keeps it their own.
_COMMAND_SUMMARIES = {
    "check-backends": "One training step on random data through NumPy and BACKEND, op by op: "
                      "names the first op whose output or gradient differs beyond tolerance. "
                      "Exit 1 when one does.",
    "data": "Datasets: where they are, downloading them, and a preview of augmented samples.",
    "diff": "Layer by layer, what changes from A to B (specs or run directories): output "
            "shapes, parameters, FLOPs; the totals with training memory; for runs, the final "
            "metrics.",
    "export": "The inference graph with its weights and the run's input preprocessing, as ONNX.",
    "plot": "Loss, accuracy, learning rate and per-layer gradient norms of RUN_DIRs, overlaid.",
    "trace": "Each training step as the course writes it: inputs, z and a of every layer, the "
             "cost, every delta, every gradient and updated weight, with the course's layer "
             "and unit indices.",
}


def _refuse_a_spaced_override(ctx, args: list[str]) -> None:
    """An override without '=' (or with nothing before it) is a usage error, said before anything
    is read: `--set optimizer.lr 0.01` left 0.01 to click, which called it an extra argument or a
    missing spec file; the fix is one '=' (unless the next word is the spec or a run directory)."""
    for index, word in enumerate(args):
        path = word.removeprefix("--set=") if word.startswith("--set=") else (
            args[index + 1] if word == "--set" and index + 1 < len(args) else None)
        if path is not None and path.partition("=")[0].strip() == "" and "=" in path:
            raise click.UsageError(f"--set takes PATH=VALUE, got '{path}' (no path before '='); "
                                   "e.g. --set optimizer.lr=0.01", ctx)
        if path is None or "=" in path:
            continue
        value = args[index + 2] if word == "--set" and index + 2 < len(args) else None
        if value is not None and not value.startswith("-") and not _names_an_input(value):
            raise click.UsageError(f"--set takes PATH=VALUE as one argument: --set {path}={value}",
                                   ctx)
        raise click.UsageError(f"--set takes PATH=VALUE, got '{path}'; e.g. --set "
                               "optimizer.lr=0.01", ctx)


def _refuse_a_negative_seed(ctx, args: list[str]) -> None:
    """`eval --permute -1`: click takes -1 for an option of that name (--permute's value is
    optional, and a word beginning with '-' is not taken for it), and said "No such option"."""
    if next((word for word in args if not word.startswith("-")), None) != "eval":
        return
    for index, word in enumerate(args):
        value = word.removeprefix("--permute=") if word.startswith("--permute=") else (
            args[index + 1] if word == "--permute" and index + 1 < len(args) else None)
        if value is not None and re.match(r"-\.?\d", value):  # -1, -1.5, -.5, -1e3
            raise click.UsageError(f"--permute: '{value}' is not a seed (an integer >= 0)", ctx)


def _names_an_input(word: str) -> bool:
    """A spec file or a run directory: a command's argument, not an override's value."""
    if word.endswith((".yaml", ".yml")):
        return True
    try:
        return Path(word).is_dir()
    except (OSError, ValueError):  # a name too long for the file system, a NUL: a value
        return False


def _a_further_rank() -> bool:
    return launched_rank() > 0


@contextmanager
def said_by_rank_0(distributed: bool):
    """Errors in the block, which every rank usually meets alike, reported by rank 0 alone."""
    try:
        yield
    except (Exception, Interrupted) as error:
        if distributed and _a_further_rank() and not isinstance(error, click.ClickException):
            wait_for_rank_0()  # (click's own errors wait in _Commands.main)
        raise


_FIRST_STEPS = """\b
Examples:
  nnrun train specs/quickstart.yaml --out runs/q   train on the embedded digits
  nnrun eval runs/q                                 the run's metrics on its test split
  nnrun validate specs/*.yaml                       errors at file:line:col, with the fix
  nnrun summary specs/lenet5.yaml                   layers, shapes, parameters, memory
  nnrun COMMAND --help                              a command's options

The spec language: docs/spec-reference.md; every command: docs/cli.md; the course's
notions in nnrun: docs/course.md."""


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=_FIRST_STEPS)
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.version_option(package_name="nnrun", prog_name="nnrun")
def main(debug: bool) -> None:
    """nnrun: compile a YAML neural-network spec to an op graph and run it."""


# --- validate, summary, graph, schema -------------------------------------------------------


@main.command()
@click.argument("specs", nargs=-1, required=True,
                type=ExistingPath(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--warn-memory", metavar="SIZE",
              help="Warn when training needs more memory than SIZE (e.g. 16GB, 512MiB) "
                   "[default: the memory available on this machine].")
@click.option("--data", "read_data", is_flag=True,
              help="Also load each spec's own data file (an npz or csv) and check it against "
                   "the model as train does before its first step. Named datasets are never "
                   "loaded.")
@set_option
@handle_errors
def validate(specs, fmt, strict, warn_memory, read_data, overrides) -> None:
    """Check specs: schema, shapes, dataset compatibility, budgets. Loads no data but with
    --data, and then only the spec's own file."""
    from nnrun.compiler.diagnostics import OVERRIDE_FILE
    from nnrun.compiler.frontend import (check, data_file_errors, declared_shape_check,
                                         load_spec, unnameable_file_errors)

    limit, named = _memory_warning_limit(warn_memory)
    all_diagnostics: list[Diagnostic] = []
    failed = 0
    for path in specs:
        mismatch, source = [], None  # said first: the layers' shape errors may follow from it
        try:
            source = load_spec(path, overrides)
            # with input_shape known (given, or read from the file) compiling does not read
            # the file, and says nothing of it; without, it says these errors itself
            known = source.spec.model.input_shape is not None
            mismatch, shaped = (data_file_errors(source) if known else []), source
            if not mismatch:  # the layers checked with the shape the error advises
                mismatch, shaped = declared_shape_check(source)
            checked = check(shaped)
            diagnostics = (mismatch + checked.diagnostics + unnameable_file_errors(source)
                           + _memory_warning(checked, limit, named)
                           + _data_memory_warning(checked, limit, named)
                           + _missing_generator_warning(checked)
                           + _unusable_data_file(checked.source, read_data)
                           + _missing_idx_files(checked.source, read_data))
            if read_data and not any(d.severity == "error" for d in diagnostics):
                diagnostics += _data_file_checks(source) + _init_from_errors(source)
            summary = checked.summary
        except SpecError as error:
            diagnostics, summary = mismatch + error.diagnostics, None
            if source is not None:
                diagnostics = _with_the_files_own_reason(source, diagnostics, read_data)
        if strict:  # a warning that fails the check is an error, and says so
            diagnostics = [replace(d, severity="error") for d in diagnostics]
        if len(specs) > 1:  # a --set argument's error: with which of the files
            diagnostics = [replace(d, where=f"{d.where} (on {path})") if d.file == OVERRIDE_FILE
                           else d for d in diagnostics]
        bad = any(d.severity == "error" for d in diagnostics)
        failed += bad
        all_diagnostics += diagnostics
        if fmt == "text":
            _print_validation(path, diagnostics, summary, bad)
    if fmt == "github":
        all_diagnostics = [replace(d, file=_in_workspace(d.file)) for d in all_diagnostics]
    if fmt == "json" or fmt == "github" and all_diagnostics:  # an annotation a line, or none
        click.echo(format_diagnostics(all_diagnostics, fmt))
    elif len(specs) > 1:
        click.echo(f"{len(specs) - failed} of {len(specs)} specs valid", err=bool(failed))
    sys.exit(1 if failed else 0)


def _in_workspace(file: str) -> str:
    """A path as GitHub places annotations: relative to the checkout ($GITHUB_WORKSPACE), so
    that a step run from a subdirectory (working-directory:) still marks the PR's files."""
    workspace = os.environ.get("GITHUB_WORKSPACE")
    path = Path(file)
    if not workspace or not path.exists():  # "--set", or not a file
        return file
    try:
        return path.resolve().relative_to(Path(workspace).resolve()).as_posix()
    except ValueError:  # outside the checkout
        return file


def _memory_warning_limit(size: str | None) -> tuple[int, str]:
    """The limit, and its name in the warnings."""
    from nnrun.runtime.memory import available_memory, parse_size

    if size is None:
        limit, source = available_memory()
        return limit, f"{source}; --warn-memory sets another"
    try:
        return parse_size(size), f"--warn-memory {size}"
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--warn-memory") from None


def _missing_generator_warning(checked) -> list[Diagnostic]:
    """A dataset whose generator is not installed: train refuses it before loading."""
    from nnrun.compiler.datasets import generator_hint
    from nnrun.compiler.ir import Origin
    from nnrun.runtime.data.locations import generator_needed

    data = checked.source.spec.data
    package = generator_needed(data.dataset) if data is not None else None
    if package is None:
        return []
    message = f"{generator_hint(package)} (not installed here: train refuses it)"
    origin = Origin("data.dataset", keys=("data", "dataset"))
    return [checked.source.diagnostic(origin, message, "warning")]


def _missing_idx_files(source, required: bool = False) -> list[Diagnostic]:
    """mnist's or fashion_mnist's IDX files missing from the directory data.path names, which
    train never downloads into (the user's own): said as train says it, as a warning, since
    they may be put there later; an error where they are `required` (validate --data)."""
    from nnrun.compiler.ir import Origin
    from nnrun.runtime.data.errors import DataError
    from nnrun.runtime.data.sources import idx_directory

    data = source.spec.data
    if data is None or data.dataset not in ("mnist", "fashion_mnist") or not data.path:
        return []
    try:
        idx_directory(data.dataset, data, source.directory)
    except DataError as error:
        return [source.diagnostic(Origin("data.path", keys=("data", "path")),
                                  str(error) if required else f"{error} (train needs them)",
                                  "error" if required else "warning")]
    return []


def _unusable_data_file(source, required: bool = False) -> list[Diagnostic]:
    """An npz or csv file that is not there, cannot be looked at, or is no file (a directory;
    with input_shape given, nothing else reads it before train): said, as a warning, since
    the file may be made or fetched later; an error where it is `required` (validate --data,
    or where the file was to give input_shape)."""
    from nnrun.compiler.frontend import data_file, unusable_file_message, unusable_file_reason
    from nnrun.compiler.ir import Origin

    file = data_file(source.spec, source.directory)
    reason = unusable_file_reason(file) if file is not None else None
    if reason is None:
        return []
    return [source.diagnostic(Origin("data.path", keys=("data", "path")),
                              unusable_file_message(file, reason, source.directory),
                              "error" if required else "warning")]


def _with_the_files_own_reason(source, diagnostics: list[Diagnostic],
                               read_data: bool) -> list[Diagnostic]:
    """validate --data of a spec whose data file could not give input_shape: train's reason
    instead, read as train reads the file (not an npz, not UTF-8, no features too). A file
    that is missing or cannot be looked at is said so by every command (data_file_errors)."""
    from nnrun.compiler.lower import SHAPE_NOT_READ

    unread = [d for d in diagnostics if d.message.startswith(SHAPE_NOT_READ)]
    if not unread or source.spec.data is None or not read_data:
        return diagnostics
    reason = [d for d in _data_file_checks(source, missing_said=False) if d.severity == "error"]
    if not reason:
        return diagnostics
    at = diagnostics.index(unread[0])  # where the request was, in the file's order
    return [d for d in diagnostics[:at] if d not in unread] + reason + [
        d for d in diagnostics[at:] if d not in unread]


def _data_file_checks(source, missing_said: bool = True) -> list[Diagnostic]:
    """validate --data: train's checks before its first step, on the spec's own data file
    (labels against the outputs, targets' shapes, values that are not finite, ...). What train
    would refuse is an error at data.path, its warnings of the data warnings there.
    `missing_said`: a file that is not there has been said so already."""
    from nnrun.compiler.datasets import DATASETS
    from nnrun.compiler.frontend import data_file
    from nnrun.compiler.ir import Origin
    from nnrun.runtime.train import check_before_training

    file = data_file(source.spec, source.directory)
    if file is None or not DATASETS[source.spec.data.dataset].user_file \
            or (missing_said and not file.exists()):
        return []  # a named dataset, or a file said to be missing already
    at_path = Origin("data.path", keys=("data", "path"))
    try:
        warnings = check_before_training(source)
    except SpecError as error:
        return error.diagnostics
    except _expected_errors() as error:  # train's data errors carry their place already
        return [getattr(error, "diagnostic", None) or source.diagnostic(at_path, str(error))]
    except MemoryError:
        return [source.diagnostic(at_path, f"{file}: out of memory while loading it to check "
                                           "it; train needs more memory than is free here")]
    except OSError as error:  # unreadable: said there, and the other specs are checked
        from nnrun.runtime.files import describe_os_error

        return [source.diagnostic(at_path, describe_os_error(error))]
    return [source.diagnostic(at_path, message, "warning") for message in warnings]


def _init_from_errors(source) -> list[Diagnostic]:
    """validate --data: the arrays init_from names, read as train reads them (values beyond
    the model's dtype, nan), said at the init_from that names each."""
    from nnrun.compiler.frontend import compile_checked
    from nnrun.runtime.checkpoint import CheckpointError
    from nnrun.runtime.init import initial_value
    from nnrun.runtime.train import placed_at_init_from

    lowered, _ = compile_checked(source)
    errors = []
    for info in [*lowered.params.values(), *lowered.state.values()]:
        if getattr(info.init, "file", None) is not None:
            try:
                with placed_at_init_from(source):
                    initial_value(info, None, source.spec.dtype)
            except CheckpointError as error:
                errors.append(error.diagnostic)
    return errors


def _data_memory_warning(checked, limit: int, named: str) -> list[Diagnostic]:
    """A generated dataset too large to hold: train refuses it before generating it."""
    from nnrun.compiler.datasets import generated_bytes
    from nnrun.compiler.ir import Origin
    from nnrun.compiler.tables import byte_size

    data = checked.source.spec.data
    if data is None or data.n_samples is None:
        return []
    needed, arithmetic = generated_bytes(data.dataset, data.n_samples)
    if needed <= limit:
        return []
    message = (f"needs about {byte_size(needed)} ({arithmetic}), over {byte_size(limit)} "
               f"({named}); train refuses a dataset over the memory available")
    origin = Origin("data.n_samples", keys=("data", "n_samples"))
    return [checked.source.diagnostic(origin, message, "warning")]


def _memory_warning(checked, limit: int, named: str) -> list[Diagnostic]:
    from nnrun.compiler.ir import Origin
    from nnrun.compiler.tables import byte_size

    needed = checked.summary.train_memory_bytes
    if needed <= limit:
        return []
    batch = checked.summary.batch_size
    message = (f"training needs about {byte_size(needed)} at batch size {batch}, over "
               f"{byte_size(limit)} ({named}); train and bench refuse a model over the memory "
               "available")
    origin = Origin("train.batch_size", keys=("train", "batch_size"))
    return [checked.source.diagnostic(origin, message, "warning")]


def _print_validation(path, diagnostics, summary, bad: bool) -> None:
    if diagnostics:
        click.echo(format_diagnostics(diagnostics), err=True)
    if not bad and summary is not None:
        click.echo(f"{path}: ok ({summary.total_params:,} parameters, "
                   f"{summary.flops_per_sample:,} FLOPs per sample)")


@main.command()
@click.argument("spec", metavar="SPEC|RUN_DIR", type=ExistingPath())
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--resolved", is_flag=True,
              help="Print the spec with every default filled in (YAML; the form a run's "
                   "spec.yaml holds) instead of the table.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]),
              help="With RUN_DIR: the checkpoint whose sparsity is shown (default: the run's "
                   "final one).")
@click.option("--details", is_flag=True,
              help="With --format json: each layer's inputs, kernel, trainable params and "
                   "mult-adds too (the text table always shows them).")
@set_option
@handle_errors
def summary(spec, fmt, resolved, checkpoint, details, overrides) -> None:
    """Per layer: inputs, output shape, kernel shape, parameters, mult-adds; totals; training
    memory. Of a run directory, also each layer's sparsity in its checkpoint. --resolved
    prints the resolved spec instead."""
    from nnrun.compiler.frontend import check, load_spec, resolved_spec_data, spec_yaml
    from nnrun.compiler.summary import summary_text

    run_dir = spec if spec.is_dir() else None
    if checkpoint and not run_dir:
        raise click.UsageError(f"{spec}: --checkpoint applies to a run directory, not a spec")
    if overrides and run_dir:
        raise click.UsageError(f"{spec}: --set applies to a spec; a run is shown as it was "
                               f"trained (summary {spec / 'spec.yaml'} --set ... shows the "
                               "changed model without the checkpoint)")
    source = load_spec(_run_spec(run_dir) if run_dir else spec, overrides)
    # a run is shown as trained: its init_from files are not needed, and may be gone
    checked = check(replace(source, from_checkpoint=True) if run_dir else source)
    errors = [d for d in checked.diagnostics if d.severity == "error"]
    if any(error not in checked.over_budget for error in errors):
        raise SpecError(errors)
    for warning in checked.diagnostics:  # validate's: a stride that skips rows, equal weights
        if warning.severity == "warning":
            positioned(warning.format())
    if run_dir and not resolved:
        from nnrun.runtime.pruning import run_sparsity

        run_sparsity(checked.summary, run_dir, checkpoint)
    if resolved:
        data = resolved_spec_data(checked.source)
        click.echo(json.dumps(data, indent=2) if fmt == "json" else spec_yaml(data), nl=False)
    elif fmt == "json":
        click.echo(json.dumps(checked.summary.as_json(details), indent=2))
    else:
        click.echo(summary_text(checked.summary, terminal_width()), nl=False)
    if errors:  # over its budget: the table shows what to cut, then the budget fails
        raise SpecError(errors)


def _run_spec(run_dir: Path) -> Path:
    if not (run_dir / "spec.yaml").is_file():
        from nnrun.runtime.run_dir import not_a_run_directory

        raise UserError(not_a_run_directory(
            run_dir, wanted="a spec file or a directory `nnrun train` wrote"))
    return run_dir / "spec.yaml"


def terminal_width() -> int | None:
    """The terminal's columns when stdout is one (tables wrap to fit), else None (no limit)."""
    from rich.console import Console

    console = Console()
    return console.width if console.is_terminal else None


@main.command()
@spec_argument
@click.option("--format", "fmt", type=click.Choice(["text", "dot"]), default="text",
              show_default=True)
@click.option("--backward", is_flag=True, help="Show the whole training step (forward, "
                                                "backward, optimizer update).")
@click.option("--optimized", is_flag=True, help="Show the graph after the optimizing passes "
                                                 "(what the executor runs), with its memory plan.")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Batch size of the memory plan shown with --optimized (default: "
                   "train.batch_size).")
@set_option
@handle_errors
def graph(spec, fmt, backward, optimized, batch_size, overrides) -> None:
    """The lowered op graph; every value with its shape."""
    from nnrun.compiler.frontend import compile_checked, load_spec
    from nnrun.compiler.passes import optimize
    from nnrun.compiler.passes.dead_code import eliminate_dead_code
    from nnrun.compiler.passes.memory_plan import plan_memory
    from nnrun.compiler.printer import graph_dot, graph_text, segments_text

    if batch_size and not (optimized and fmt == "text"):
        fix = " and ".join(([] if optimized else ["add --optimized"])
                           + (["drop --format dot"] if fmt != "text" else []))
        raise click.UsageError("--batch-size sizes the memory plan that --optimized shows as "
                               f"text; {fix}, or leave --batch-size out")
    source = load_spec(spec, overrides)
    lowered, step = compile_checked(source)
    shown = step.graph if backward else lowered.graph
    shown = optimize(shown) if optimized else eliminate_dead_code(shown) if backward else shown
    click.echo(graph_dot(shown) if fmt == "dot" else graph_text(shown), nl=False)
    if optimized and fmt == "text":
        plan = plan_memory(shown, batch_size or source.spec.train.batch_size)
        if plan.segments:
            click.echo(f"# batch segments (run by slices of the batch, one per thread): "
                       f"{segments_text(shown, plan.segments)}")
        click.echo(f"# memory plan: {plan.describe()}")


@main.command()
@handle_errors
def schema() -> None:
    """The JSON Schema of the spec language, for editors (see docs/spec-reference.md)."""
    from nnrun.compiler.schema import spec_json_schema

    click.echo(json.dumps(spec_json_schema(), indent=2))


# --- train, eval, predict -------------------------------------------------------------------


@main.command()
@spec_argument
@backend_option
@click.option("--out", "out_dir", type=OutPath(file_okay=False, path_type=Path),
              help="Run directory (default runs/<name>/<timestamp>); nnrun writes only its own "
                   "files there and refuses a directory where they would replace yours.")
@click.option("--epochs", type=click.IntRange(min=1), help="Same as --set train.epochs=N.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Same as --set train.batch_size=N.")
@click.option("--seed", type=click.IntRange(min=0), help="Same as --set seed=N.")
@set_option
@click.option("--resume", type=RunDirPath("; to start a new run, leave out --resume"),
              help="Continue the run in this directory from its last.npz (from epoch 1 when it "
                   "has no checkpoint yet); the spec must train as the run did, e.g. "
                   "RUN_DIR/spec.yaml.")
@click.option("--allow-changes", is_flag=True,
              help="With --resume: continue with settings that differ from the run's (the "
                   "change is recorded in the run directory's spec-changes.jsonl).")
@click.option("--quiet", is_flag=True, help="Print nothing but errors.")
@threads_option
@no_graph_option
@click.option("--max-steps", type=click.IntRange(min=1), hidden=True,
              help="Cap the batches per epoch (quick checks).")
@click.option("--distributed", is_flag=True,
              help="Run as one rank of a data-parallel job: mpiexec -n N nnrun train SPEC "
                   "--distributed (docs/distributed.md).")
@click.option("--distributed-timeout", type=float, callback=_positive_seconds,
              metavar="SECONDS", help="With --distributed: how long a rank waits for the others "
                                      "before it stops, taking one for dead (default 300; > 0).")
@handle_errors
def train(spec, backend, out_dir, epochs, batch_size, seed, overrides, resume, allow_changes,
          quiet, threads, no_graph, max_steps, distributed, distributed_timeout) -> None:
    """Train a spec; writes a run directory (spec.yaml, metrics.jsonl, checkpoints, summary)."""
    from nnrun.notices import silenced, unfailing_output
    from nnrun.runtime.distributed import ALONE, DEFAULT_TIMEOUT_S, connect
    from nnrun.runtime.threads import thread_limit
    from nnrun.runtime.train import train as run_training

    with said_by_rank_0(distributed):  # CuPy or mpi4py missing, too: every rank meets it
        source = _training_spec(spec, overrides, epochs, batch_size, seed, resume, out_dir,
                                allow_changes, distributed, distributed_timeout)
        ranks = connect(backend, distributed_timeout or DEFAULT_TIMEOUT_S) if distributed \
            else ALONE
    with silenced(quiet), thread_limit(threads), unfailing_output():  # quiet: the threads' too
        run_training(source, backend=backend, out_dir=out_dir,
                     resume=resume, quiet=quiet, max_steps=max_steps, allow_changes=allow_changes,
                     ranks=ranks, graph=not no_graph)


def _training_spec(spec, overrides, epochs, batch_size, seed, resume, out_dir, allow_changes,
                   distributed, distributed_timeout):
    """train's spec with its options applied, after the checks of the options together."""
    from nnrun.compiler.frontend import load_spec
    from nnrun.compiler.loader import training_overrides
    from nnrun.notices import warn

    overrides = training_overrides(overrides, epochs, batch_size, seed, typed=True)
    if resume and out_dir:
        raise click.UsageError("--resume continues a run in its own directory; drop --out")
    if allow_changes and not resume:
        raise click.UsageError("--allow-changes applies to --resume only")
    if distributed_timeout and not distributed:
        raise click.UsageError("--distributed-timeout applies to --distributed only")
    if not distributed and launched_size() > 1 and launched_rank() == 0:
        warn(f"started as one of {launched_size()} MPI processes without --distributed: each "
             "trains a model of its own; add --distributed to train one model over them")
    return load_spec(spec, overrides)


RUN_SEED = "the run's seed"  # what --permute without a value stands for
run_dir_argument = click.argument("run_dir", type=RunDirPath())
checkpoint_option = click.option(
    "--checkpoint", type=click.Choice(["best", "last"]),
    help="Default: the checkpoint whose numbers `train` reported (summary.json's final: "
         "best.npz, or last.npz under early_stopping.restore_best: false).")
preprocessing_option = click.option(
    "--no-preprocessing", "raw", is_flag=True,
    help="Feed the inputs as they are, skipping what training fitted and stored in the run "
         "directory (preprocessing.npz: data.normalize statistics, data.permute_features).")


@main.command(name="eval")
@run_dir_argument
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test",
              show_default=True)
@checkpoint_option
@preprocessing_option
@backend_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@threads_option
@click.option("--shift", metavar="PIXELS", callback=lambda c, p, v: _pixels(v),
              help="Move every input by PIXELS along its last axis (right; negative: left), or "
                   "DY,DX along both (down, right); vacated pixels hold 0. Tests invariance.")
@click.option("--permute", metavar="[SEED]", is_flag=False, flag_value=RUN_SEED,
              callback=lambda c, p, v: _permutation_seed(v),
              help="Shuffle every input's pixels by one fixed permutation, drawn from SEED (a "
                   "permutation of its own, even where SEED is the run's seed), or without it "
                   "from the run's seed as data.permute_features: true draws it.")
@click.option("--permute-seed", type=click.IntRange(min=0), help="Same as --permute SEED.")
@no_graph_option
@handle_errors
def eval_command(run_dir, split, checkpoint, raw, backend, fmt, threads, shift, permute,
                 permute_seed, no_graph) -> None:
    """Metrics of a run's checkpoint on a data split, preprocessed as in training; with
    --shift or --permute, on inputs moved or shuffled first."""
    from nnrun.runtime.evaluate import evaluate_run
    from nnrun.runtime.invariance import InputTransform
    from nnrun.runtime.threads import thread_limit

    if permute is not None and permute_seed is not None:
        raise click.UsageError("--permute and --permute-seed both give the permutation; use one")
    permutation = permute_seed if permute_seed is not None else permute
    transform = InputTransform(shift, permutation) if shift or permutation is not None else None
    with thread_limit(threads):
        result = evaluate_run(run_dir, split, checkpoint, backend, preprocess=not raw,
                              transform=transform, graph=not no_graph)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    from nnrun.compiler.tables import metric_text, table_text

    inputs = f"; inputs: {result['transform']}" if transform else ""
    as_given = "; inputs as given (--no-preprocessing)" if raw else ""
    click.echo(f"{run_dir} ({result['checkpoint']}, epoch {result['epoch']}), {split} split, "
               f"{result['samples']} sample{'s' if result['samples'] != 1 else ''}{inputs}"
               f"{as_given}")
    rows = [[name, metric_text(value)] for name, value in result.items()
            if name.startswith(f"{split}_")]
    click.echo(table_text(["metric", "value"], rows, right=(1,)), nl=False)


def _permutation_seed(value: str | None) -> int | bool | None:
    """--permute alone: True (the run's seed); --permute SEED: that seed."""
    if value is None or value == RUN_SEED:
        return None if value is None else True
    if not value.isdigit():
        # a run directory taken as the seed (`eval --permute runs/q`), or a seed mistyped
        fix = ("give RUN_DIR before --permute" if "/" in value or Path(value).is_dir()
               else "give --permute alone for the run's seed, or --permute N")
        raise click.BadParameter(f"'{value}' is not a seed (an integer >= 0); {fix}",
                                 param_hint="--permute")
    return int(value)


def _pixels(value: str | None) -> tuple[int, ...]:
    if value is not None and not value.strip():  # an unset shell variable: not "no shift"
        raise click.BadParameter("is empty; give PIXELS or DY,DX (e.g. 2 or -1,2), or leave "
                                 "--shift out", param_hint="--shift")
    try:
        pixels = tuple(int(part) for part in value.split(",")) if value else ()
    except ValueError:
        pixels = None
    if pixels is None or len(pixels) > 2:
        raise click.BadParameter(f"'{value}' is not PIXELS or DY,DX (integers, e.g. 2 or "
                                 "-1,2)", param_hint="--shift")
    return pixels


@main.command()
@run_dir_argument
@click.argument("input_file", type=ExistingPath(dir_okay=False))
@click.option("--out", "out_path", type=OutPath(dir_okay=False, path_type=Path),
              required=True, help="Where to write the outputs (a .npy file).")
@checkpoint_option
@preprocessing_option
@backend_option
@threads_option
@no_graph_option
@handle_errors
def predict(run_dir, input_file, out_path, checkpoint, raw, backend, threads, no_graph) -> None:
    """Model outputs for array `x` of INPUT_FILE (.npz, or a .npy's array), written to --out
    as .npy.

    x holds raw samples, as the dataset gives them: the run's preprocessing is applied first.
    The outputs are the last layer's after its activation: probabilities when the spec ends
    in softmax or sigmoid, else raw scores (logits)."""
    from nnrun.runtime.evaluate import predict_run
    from nnrun.runtime.threads import thread_limit

    refuse_an_input_as_out(out_path, run_dir, input_file)
    refuse_an_unwritable_out(out_path)
    refuse_another_suffix(out_path, ".npy", "a NumPy .npy file")  # first: no "delete it" then
    refuse_to_replace_another_kind(
        out_path, lambda handle: handle.read(len(NPY_MAGIC)) == NPY_MAGIC, "NumPy .npy file")
    with thread_limit(threads):
        outputs, run = predict_run(run_dir, input_file, out_path, checkpoint, backend,
                                   preprocess=not raw, graph=not no_graph)
    as_given = ", inputs as given (--no-preprocessing)" if raw else ""
    click.echo(wrote(out_path, f"{list(outputs.shape)} outputs of {run.checkpoint.name} "
                               f"(epoch {run.epoch}){as_given}"))
    note = run.overflow_note(outputs)
    if note:
        click.echo(f"warning: {note}", err=True)


# --- bench, gradcheck -----------------------------------------------------------------------


@main.command()
@spec_argument
@backend_option
@click.option("--batch-size", type=click.IntRange(min=1), help="Default: train.batch_size.")
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True)
@threads_option
@click.option("--reference", is_flag=True, help="Time the plain graph on the reference "
                                                 "executor (no passes, no memory plan).")
@no_graph_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@set_option
@handle_errors
def bench(spec, backend, batch_size, steps, threads, reference, no_graph, fmt, overrides) -> None:
    """Train-step and inference time on random data of the spec's shape (medians)."""
    from nnrun.compiler.frontend import load_spec
    from nnrun.compiler.tables import byte_size
    from nnrun.runtime.bench import bench as run_bench
    from nnrun.runtime.memory import check_memory
    from nnrun.runtime.model import Model

    # not nnrun.compile, whose errors name its parameters (backend='numpy'), not the options
    model = Model(load_spec(spec, overrides=overrides), backend, graph=not no_graph)
    if reference:
        model = Model(model.source, backend, optimized=False)
    batch_size = batch_size or model.spec.train.batch_size
    check_memory(model, batch_size, "bench")
    result = run_bench(model, batch_size, steps, threads=threads)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    threads = result["threads"]
    threads_text = f", {threads} thread{'s' if threads > 1 else ''}" if threads else ""
    click.echo(f"{spec} on {result['backend']} ({result['executor']} executor{threads_text}), "
               f"batch {result['batch_size']}, median of {steps} steps")
    click.echo(f"  step path   {result['step_path']}")
    click.echo(f"  train step  {result['train_step_ms']:>10.3f} ms  "
               f"{result['train_samples_per_s']:>12,.0f} samples/s")
    click.echo(f"  inference   {result['inference_ms']:>10.3f} ms  "
               f"{result['inference_samples_per_s']:>12,.0f} samples/s")
    peak = byte_size(round(result["peak_memory_mb"] * 2**20))
    click.echo(f"  peak memory {peak:>13} during a training step")


@main.command()
@spec_argument
@backend_option
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--samples", type=click.IntRange(min=1), default=8, show_default=True,
              help="Distinct entries checked per parameter.")
@tolerance_option(1e-5, "Largest relative error accepted between the compiled gradient and "
                       "the finite difference.")
@set_option
@handle_errors
def gradcheck(spec, backend, batch_size, samples, tolerance, overrides) -> None:
    """Compiled gradients vs central finite differences, in float64."""
    from nnrun.compiler.frontend import load_spec
    from nnrun.runtime.gradcheck import (gradcheck as run_gradcheck, training_mode_layers,
                                         working_set_bytes)
    from nnrun.runtime.memory import check_memory
    from nnrun.runtime.model import Model

    model = Model(load_spec(spec, overrides=[*overrides, "dtype=float64"]), backend)
    if not model.lowered.params:
        raise UserError("the model has no parameters (its layers are activations, pooling or "
                        "reshapes): gradcheck checks parameters' gradients, and there are none "
                        "to check")
    check_memory(model, batch_size, "gradcheck", needed=working_set_bytes(model, batch_size))
    largest = max(math.prod(info.shape) for info in model.lowered.params.values())
    if samples > largest:
        click.echo(f"--samples {samples:,} is more than the largest parameter's {largest:,} "
                   "entries: every entry is checked once")
    results = run_gradcheck(model, batch=batch_size, samples=samples, tolerance=tolerance)
    passed = _print_gradcheck_report(results, tolerance)
    training_mode = training_mode_layers(model.spec)
    if training_mode:
        verb = "behaves" if len(training_mode) == 1 else "behave"
        click.echo(f"{', '.join(training_mode)} {verb} differently in training: checked in "
                   "inference mode (no dropout, running batchnorm statistics)")
    kinked = sorted({op for result in results if result.kinks for op in result.kinked_ops})
    for attribute, text in _GRADCHECK_NOTES:
        count = sum(getattr(result, attribute) for result in results)
        if count:
            click.echo(f"{count} {text.format(ops=', '.join(kinked))}")
    sys.exit(0 if passed else 1)


def _print_gradcheck_report(results, tolerance: float) -> bool:
    """A line per parameter, then the verdict; True where it passed."""
    worst = max((r.worst_relative_error for r in results), default=0.0)
    width = max((len(result.name) for result in results), default=0)  # long layer names too
    for result in results:
        click.echo(f"  {result.name:<{width}}  {_gradcheck_line(result, tolerance)}")
    checked = sum(result.checked for result in results)
    passed = worst <= tolerance and checked > 0
    if checked:
        click.echo(f"{'passed' if passed else 'failed'}: worst {worst:.2e} (tolerance "
                   f"{tolerance:g})")
    else:  # every entry left out, none wrong: not a wrong gradient, as `failed` says
        click.echo(f"unchecked: {_why_unchecked(results, tolerance)}")
    return passed


def _why_unchecked(results, tolerance: float) -> str:
    """Why no entry could be checked, where each was left out (at a kink, or within what its
    differences resolve), and what to do."""
    if tolerance == 0:
        return ("no entry could be checked: differences carry the loss's rounding, which a "
                "tolerance of 0 leaves no room for; give --tolerance above 0 (1e-5 by default)")
    if not any(r.rounding or r.unresolved for r in results):
        return ("every entry lies at a kink within the step, where differences can check no "
                "gradient (init: zeros puts every sample on the same one); try another init, "
                "or --batch-size 1")
    kinks = " or at a kink" if any(r.kinks for r in results) else ""
    return ("no entry could be checked: each lies within what its differences resolve (their "
            f"rounding or the loss's curvature is more than the tolerance allows){kinks}, as "
            "a tiny --tolerance or weights of a very large scale make it; raise --tolerance, "
            "or use smaller initial weights")


# What gradcheck says of the entries it could not judge as the others, after the verdict:
# (GradcheckResult's count, the line's text after the count; {ops}: the ops with a kink that
# the parameters with entries at a kink feed).
_GRADCHECK_NOTES = (
    ("larger_step", "entries agree only at a larger step (1e-5 or 1e-4): at 1e-6 the loss's "
                    "rounding, divided by the step, took them past the tolerance"),
    ("smaller_step", "entries agree only at a smaller step (1e-7 to 1e-9): with no op with a "
                     "kink on their path, what took them past the tolerance at 1e-6 is the "
                     "loss's curvature, whose error in the central difference shrinks with the "
                     "step squared"),
    ("unresolved", "entries lie within what their differences resolve at steps down to 1e-9 "
                   "(the loss's curvature against its rounding, which no step brings under the "
                   "tolerance): not checkable by differences at this tolerance; left out of the "
                   "verdict"),
    ("rounding", "entries agree within the loss's rounding at every step (1e-6, 1e-5, 1e-4), "
                 "which is more than the tolerance allows their small gradient: not checkable "
                 "by differences at this tolerance; left out of the verdict"),
    ("nearby", "entries were judged at a point nearby (every parameter moved by about 1e-4): "
               "their one-sided differences disagreed around a gradient outside them, as where "
               "several units sit on their kinks at once"),
    ("kinks", "entries lie at a kink ({ops}) within the step: their one-sided "
              "differences disagree and the gradient lies between them, so no gradient could "
              "match their central difference; they are left out of the verdict"),
)


def _gradcheck_line(result, tolerance: float) -> str:
    total = result.checked + result.kinks + result.rounding + result.unresolved
    notes = [f"{result.nearby} of {total} at a point nearby" if result.nearby else "",
             f"{result.larger_step} of {total} at a larger step" if result.larger_step else "",
             f"{result.smaller_step} of {total} at a smaller step" if result.smaller_step else "",
             f"{result.rounding} of {total} within rounding, left out" if result.rounding else "",
             f"{result.unresolved} of {total} unresolved, left out" if result.unresolved else "",
             f"{result.kinks} of {total} at a kink, left out: central error "
             f"{result.worst_kink_error:.1e}" if result.kinks else ""]
    notes = "".join(f"  ({note})" for note in notes if note)
    if not result.checked:
        return f"no entry checkable{notes}"
    mark = "ok" if result.worst_relative_error <= tolerance else "FAIL"
    return f"worst relative error {result.worst_relative_error:.2e}  {mark}{notes}"
