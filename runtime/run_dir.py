"""A run directory (DESIGN.md section 7): who owns it, and the files nnrun keeps in it.

- One process at a time: `nnrun.lock` holds an OS lock (flock) for as long as the process lives,
  so a killed process never leaves the directory locked; the file also names the holder's pid.
  Its presence marks the directory as nnrun's.
- nnrun writes only the files named in OWNED, all through the atomic writer, never through a
  symbolic link, and refuses a directory where a file of those names is not its own.
- A run with no checkpoint yet (killed, interrupted or diverged in its first epoch) starts over
  in the same directory, whether it is given as --out or --resume. A run that trained past its
  first checkpoint but has lost last.npz, or has a checkpoint but no spec.yaml, is refused:
  starting over would overwrite its record, and going on could not check the settings.
- Before anything in the directory changes, every file nnrun writes there must be absent or a
  regular file, and a resume reads and checks every file it reads or appends to.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
import re
import shlex
import time
import zipfile
from contextlib import suppress
from pathlib import Path
from typing import Callable

from nnrun.compiler.datasets import beyond_the_locale
from nnrun.compiler.initial_values import META_KEY
from nnrun.notices import shell_word

from .archives import opens_as_npz
from .files import (append_text_durably, describe_os_error, is_writable_directory,
                    read_json_file, remove_leftovers, what_is_there, write_text_atomically)
from .options import option

LOCK = "nnrun.lock"
SPEC, METRICS, LAST, BEST, SUMMARY, CHANGES, PREPROCESSING = (
    "spec.yaml", "metrics.jsonl", "last.npz", "best.npz", "summary.json", "spec-changes.jsonl",
    "preprocessing.npz")
GRAD_NORMS = "grad-norms.jsonl"  # per-step gradient norms, train.log_grad_norms: {every_steps}
OWNED = (SPEC, METRICS, LAST, BEST, SUMMARY, CHANGES, PREPROCESSING, GRAD_NORMS)
STALE_WITHOUT_CHECKPOINT = (BEST, SUMMARY, CHANGES, GRAD_NORMS)
# Written only once last.npz exists (so is a metrics.jsonl row of epoch 2 or later). best.npz is
# no such sign: a kill between the writes of best.npz and last.npz of epoch 1 leaves it alone.
AFTER_FIRST_CHECKPOINT = (SUMMARY, CHANGES)


def not_a_run_directory(path: Path, missing: str | None = None,
                        wanted: str = "a directory `nnrun train` wrote") -> str:
    """Why `path` is no run directory, pointing into it when it holds runs: `nnrun train`
    without --out writes runs/NAME/TIMESTAMP, and runs/NAME is what a user types next."""
    if missing is None and (Path(path) / LOCK).is_file() and not (Path(path) / SPEC).exists():
        trained = [name for name in (LAST, BEST) if (Path(path) / name).is_file()]
        if trained:  # the spec was lost since: the checkpoints cannot be read without it
            return (f"{path}: the run has checkpoints ({', '.join(trained)}) but no {SPEC}; "
                    f"restore {SPEC} (the spec it was trained with) to use them")
        return (f"{path}: a run stopped before it wrote its {SPEC}; nothing was trained: start "
                f"it again with nnrun train SPEC --out {shell_word(str(path))}")
    if missing is None and not Path(path).is_dir():
        missing = (f"it is {what_is_there(Path(path))}" if Path(path).exists()
                   else "no such directory")
    if missing is None:
        missing = f"its {SPEC} is not a file" if (Path(path) / SPEC).exists() else f"no {SPEC}"
    runs = runs_inside(path)
    if not runs:
        return f"{path}: not a run directory ({missing}); give {wanted}"
    return f"{path}: not a run directory ({missing}); {_pointer(runs)}"


def runs_inside(path: Path) -> list[Path]:
    """The run directories right inside `path`, oldest first: by their last write (of
    spec.yaml or last.npz), then by name (time-stamped); entries that cannot be read are
    passed over."""
    runs = []
    with suppress(OSError), os.scandir(path) as entries:
        for entry in entries:
            with suppress(OSError):
                if entry.is_dir() and (Path(entry.path) / SPEC).is_file():
                    runs.append(Path(path) / entry.name)
    return sorted(runs, key=lambda run: (_last_written(run), run.name))


def _last_written(run: Path) -> float:
    times = []
    for name in (SPEC, LAST):
        with suppress(OSError):
            times.append((run / name).stat().st_mtime)
    return max(times, default=0.0)


def _pointer(runs: list[Path]) -> str:
    if len(runs) == 1:
        return f"it holds one run: give {runs[0]}"
    # the latest that has a checkpoint: one stopped in its first epoch has nothing to read
    trained = [run for run in runs if (run / LAST).is_file()]
    latest = trained[-1] if trained else runs[-1]
    which = "the latest" if latest == runs[-1] else "the latest with a checkpoint"
    others = "the other one" if len(runs) == 2 else f"one of the {len(runs) - 1} others"
    return f"it holds runs: give {latest} ({which}), or {others} in it"


def _current_directory_gone() -> bool:
    """Whether the process's current directory was deleted (its stat still answers)."""
    try:
        os.getcwd()
    except FileNotFoundError:
        return True
    return False


class RunDirectoryError(Exception):
    """The directory cannot hold this run; the message names it and what to do."""


def summary_final(run_dir: Path) -> dict | None:
    """summary.json's `final` mapping (the numbers train reported, and of which checkpoint);
    None where the run has no summary (it did not finish). A file that is not one nnrun wrote
    raises ValueError, saying how, for the caller to say what to do instead."""
    try:
        summary = read_json_file(Path(run_dir) / SUMMARY)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ValueError(str(error)) from None
    final = summary.get("final") if isinstance(summary, dict) else None
    if not isinstance(final, dict):
        raise ValueError("no mapping 'final'")
    return final


def is_run_directory(path: Path) -> bool:
    # Run directories of earlier versions have no lock file but a checkpoint: an npz with
    # nnrun's meta entry (a last.npz of the user's own is not one)
    return (Path(path) / LOCK).is_file() or _is_a_checkpoint(Path(path) / LAST)


def _is_a_checkpoint(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return f"{META_KEY}.npy" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def refuse_a_run_file_as_out(out_path: Path) -> None:
    """A command's --out named as one of a run's files (`--out runs/other/best.npz`) would
    destroy a checkpoint, or leave a file that a later resume cannot read."""
    out_path = Path(out_path)
    if out_path.name not in (*OWNED, LOCK):
        return
    if is_run_directory(out_path.parent):
        raise RunDirectoryError(f"{out_path}: {out_path.parent} is a run directory, and "
                                f"{out_path.name} one of the files nnrun keeps there; choose "
                                "another --out")
    if out_path.exists():
        raise RunDirectoryError(f"{out_path}: exists, and has the name of a run's own file (a "
                                f"copy of a run's {out_path.name}?); choose another --out")


def _dangling_link(path: Path) -> str:
    """What a link that leads nowhere leads to, and the fix: the directory at its end to
    create, or the loop its links make, which no directory ends."""
    try:
        path.resolve(strict=True)
    except (RuntimeError, OSError) as error:  # RuntimeError: Python's "Symlink loop"
        if isinstance(error, RuntimeError) or error.errno == errno.ELOOP:
            return "is a symbolic link in a loop of links; remove the loop"
    link, end = os.readlink(path), os.path.realpath(path)
    hops = "" if end == os.path.normpath(os.path.join(path.parent, link)) else \
        f", which leads to {end}"
    return f"is a symbolic link to {link}{hops}, which does not exist; create that directory"


def _unlinked(path: Path) -> str:
    """The fix for a run file that is a link: a copy of what it points to keeps its content."""
    target = Path(os.path.realpath(path))
    if target.is_file():
        return (f"replace it with a copy of {target} (cp --remove-destination "
                f"{shlex.quote(str(target))} {shlex.quote(str(path))})")
    return "remove it"


class RunDirectory:
    """An open, locked run directory; use as a context manager (the lock ends with it)."""

    def __init__(self, path: Path, say: Callable[[str], None] = lambda message: None):
        self.path, self.say = Path(path), say
        self.lock_descriptor: int | None = None
        self.created = self.started = False
        self.created_above: list[Path] = []
        self.holder_before: bytes | None = None  # the lock file's pid line before we claimed it
        self.lock_made = False  # whether this process made nnrun.lock (removed if refused)

    # --- opening ------------------------------------------------------------------------------

    def open_new(self) -> RunDirectory:
        """For --out: a fresh directory, or one of ours whose run has no checkpoint yet."""
        self._refuse_a_name_beyond_the_locale()
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"{self.path}: is {what_is_there(self.path)}, not a "
                                    f"directory; choose another {option('--out')}")
        if self.path.is_symlink() and not self.path.exists():
            raise RunDirectoryError(f"{self.path}: {_dangling_link(self.path)}, or choose "
                                    f"another {option('--out')}")
        self.created = not self.path.exists()
        # and the folders above it that did not exist (runs/<name>/): removed with it
        self.created_above = list(itertools.takewhile(lambda folder: not folder.exists(),
                                                      self.path.parents))
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a file above it, no permission: the API's error type too
            if not self.path.is_absolute() and _current_directory_gone():
                raise RunDirectoryError(f"{self.path}: the current directory is gone (deleted "
                                        "since the shell entered it); cd to one that exists, "
                                        f"or give {option('--out')} an absolute path") from None
            raise RunDirectoryError(describe_os_error(error)) from None
        self._check_own_files(for_resume=False)
        self._lock()
        self._refuse_lost_checkpoint()
        if self.has_checkpoint:
            raise RunDirectoryError(f"{self.path}: already holds a run ({LAST}); use "
                                    f"{option('--resume')} to continue it or choose another "
                                    f"{option('--out')}")
        self._claim()
        return self

    def open_existing(self) -> RunDirectory:
        """For --resume: a directory of ours, with or without a checkpoint."""
        self._refuse_a_name_beyond_the_locale()
        if not self.path.is_dir():
            what = (f"is {what_is_there(self.path)}, not a run directory"
                    if self.path.exists() else "no such run directory")
            raise RunDirectoryError(f"{self.path}: {what}; {option('--resume')} takes the "
                                    f"directory of a run (its {option('--out')}), or start a run "
                                    f"with {option('--out')}")
        self._check_own_files(for_resume=True)
        self._lock()
        self._refuse_lost_checkpoint()
        self._refuse_lost_spec()
        self._claim()
        return self

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, error_type, error, trace) -> None:
        if error is not None and not self.started:  # refused before training wrote anything
            if self.created:
                self._remove_unused()
            elif self.lock_made and self.lock_descriptor is not None:
                self.file(LOCK).unlink(missing_ok=True)  # the directory as it was found
            elif self.holder_before is not None:
                self._write_holder(self.holder_before)
        if self.lock_descriptor is not None:
            os.close(self.lock_descriptor)  # closing releases the flock
            self.lock_descriptor = None

    def _refuse_a_name_beyond_the_locale(self) -> None:
        """runs/<the spec's name>/... or --out in a name the locale cannot encode: os.mkdir
        raised UnicodeEncodeError (an internal error, exit 70)."""
        try:
            os.fsencode(self.path)
        except UnicodeEncodeError:
            raise RunDirectoryError(f"{self.path}: {beyond_the_locale()}; or choose an "
                                    f"{option('--out')} (and a spec name) it can") from None

    def _remove_unused(self) -> None:
        if self.lock_descriptor is not None:
            for name in (SPEC, METRICS, LOCK):  # in a directory this run made: its own
                self.file(name).unlink(missing_ok=True)
        # someone else's files appeared in it: leave it (or a name the locale cannot encode)
        with suppress(OSError, UnicodeEncodeError):
            for folder in (self.path, *self.created_above):
                folder.rmdir()

    def _check_own_files(self, for_resume: bool) -> None:
        for name in (*OWNED, LOCK):
            if (self.path / name).is_symlink():
                raise RunDirectoryError(f"{self.path / name}: is a symbolic link; nnrun writes "
                                        "only its own files and never through links; "
                                        f"{_unlinked(self.path / name)}, or choose another "
                                        "directory")
            if (self.path / name).exists() and not (self.path / name).is_file():
                raise RunDirectoryError(f"{self.path / name}: is not a regular file but "
                                        f"{what_is_there(self.path / name)}; nnrun keeps its "
                                        f"{name} there: move it away, or choose another "
                                        "directory")
        self._refuse_a_lock_not_ours()
        if not is_writable_directory(self.path):
            raise RunDirectoryError(f"{self.path}: is not writable; nnrun writes its metrics "
                                    "and checkpoints there: make it writable, or choose another "
                                    "directory")
        if self._is_ours():
            return
        present = [name for name in OWNED if (self.path / name).exists()]
        if for_resume:
            runs = runs_inside(self.path)  # runs/NAME: its runs are what a resume means
            fix = _pointer(runs) if runs else (
                f"its {', '.join(present)} {'is' if len(present) == 1 else 'are'} not nnrun's: "
                f"start a run in another directory with {option('--out')}" if present
                else f"start a run there with {option('--out')}")
            raise RunDirectoryError(f"{self.path}: not an nnrun run directory (no {LOCK}); "
                                    f"{fix}")
        if present:
            raise RunDirectoryError(f"{self.path}: holds {', '.join(present)} that nnrun did not "
                                    f"write and would overwrite; choose another {option('--out')}")

    def _refuse_a_lock_not_ours(self) -> None:
        """nnrun.lock holds a pid line or nothing; one that holds anything else is a file of
        the user's that the lock would overwrite (and would make the directory look like a
        run). A lock file with other names (a hard link) would carry the pid into a file
        elsewhere."""
        path = self.file(LOCK)
        if not path.is_file():
            return
        with open(path, "rb") as handle:
            head = handle.read(65)
        if not re.fullmatch(rb"\d{0,20}\n?", head):
            raise RunDirectoryError(f"{path}: is not nnrun's (it holds no process id); nnrun "
                                    "keeps its lock there: move it away, or choose another "
                                    "directory")
        if os.stat(path).st_nlink > 1:
            raise RunDirectoryError(f"{path}: has other names (a hard link); nnrun writes its "
                                    "process id into it: remove it, or choose another directory")

    def _refuse_lost_checkpoint(self) -> None:
        """A run past its first checkpoint without last.npz (deleted by hand) would start over
        and overwrite best.npz and the metrics of its epochs: refused, saying how to go on."""
        if self.has_checkpoint:
            return
        signs = self.signs_of_trained_epochs()
        if not signs:
            return
        way = (f"copy {BEST} to {LAST} and resume to continue from its best epoch, or "
               if opens_as_npz(self.file(BEST)) else "")
        raise RunDirectoryError(f"{self.path}: the run there has trained epochs "
                                f"({', '.join(signs)}) but has no {LAST} to continue from; "
                                f"{way}start a new run with another {option('--out')}")

    def signs_of_trained_epochs(self) -> list[str]:
        """The files that show the run trained past its first checkpoint."""
        signs = [name for name in AFTER_FIRST_CHECKPOINT if self.file(name).exists()]
        if self._last_epoch_in_metrics() >= 2:
            signs.insert(0, METRICS)
        return signs

    def _refuse_lost_spec(self) -> None:
        """Without spec.yaml, a resume could neither check nor record changed settings."""
        if self.has_checkpoint and not self.file(SPEC).exists():
            raise RunDirectoryError(f"{self.path}: the run has a checkpoint ({LAST}) but no "
                                    f"{SPEC}; restore {SPEC} (the spec it was trained with) to "
                                    f"resume it, or start a new run with another {option('--out')}")

    def _last_epoch_in_metrics(self) -> int:
        return max((row["epoch"] for row in self._metrics_rows()), default=0)

    def diverged_at(self) -> str | None:
        """Where the run's training diverged, from its metrics' rows ("epoch 1, step 4"; a
        state that overflowed under a finite loss: "epoch 1"), or None."""
        for row in self._metrics_rows():
            if "diverged_at_batch" in row:
                return f"epoch {row['epoch']}, step {row['diverged_at_batch']}"
            if "overflowed" in row:
                return f"epoch {row['epoch']}"
        return None

    def _metrics_rows(self) -> list[dict]:
        path = self.file(METRICS)
        if not path.is_file():
            return []
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return [row for row in map(_metrics_row, lines) if row]

    def _is_ours(self) -> bool:
        return is_run_directory(self.path)

    def _lock(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        self.lock_made = not self.file(LOCK).exists()
        try:
            descriptor = os.open(self.path / LOCK, flags, 0o666)
        except PermissionError:
            if self.lock_made:  # no file to open: the place refused it (describe_os_error)
                raise
            raise RunDirectoryError(f"{self.file(LOCK)}: is not writable, and nnrun locks the "
                                    "run on it; make it writable (chmod u+w), or remove it "
                                    "where no nnrun process uses the run") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_pid(descriptor)
            os.close(descriptor)
            raise RunDirectoryError(f"{self.path}: in use by another nnrun process (pid "
                                    f"{holder}); wait for it to finish or stop it") from None
        self.lock_descriptor = descriptor

    def _claim(self) -> None:
        """Once the directory is not refused: our pid in the lock file, and what a killed
        write left removed."""
        self.holder_before = os.pread(self.lock_descriptor, 64, 0)
        self._write_holder(f"{os.getpid()}\n".encode())
        for leftover in remove_leftovers(self.path, OWNED):
            self.say(f"{self.path}: removed {leftover.name}, left by a write that was killed")

    def _write_holder(self, line: bytes) -> None:
        # In place, not atomically: the lock lives on this very file.
        os.ftruncate(self.lock_descriptor, 0)
        os.pwrite(self.lock_descriptor, line, 0)

    # --- the files ----------------------------------------------------------------------------

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def has_checkpoint(self) -> bool:
        return self.file(LAST).is_file()

    def start_over(self, spec_text: str) -> None:
        """A new run, or one that never reached its first checkpoint. A directory this run
        made is still removed if the run stops before both files are written (a signal)."""
        self.started = not self.created
        if self.file(METRICS).exists() or self.file(SPEC).exists():
            self.say(f"{self.path}: the run there has no checkpoint yet; starting it from epoch 1")
        for name in STALE_WITHOUT_CHECKPOINT:
            self.file(name).unlink(missing_ok=True)
        self.write_spec(spec_text)
        self.write_metrics([])
        self.started = True

    def spec_text(self) -> str:
        return self.file(SPEC).read_text(encoding="utf-8")

    def continue_run(self) -> None:
        """A resumed run whose checkpoint has been read and checked: from here on it writes."""
        self.started = True

    def write_spec(self, text: str) -> None:
        write_text_atomically(self.file(SPEC), text)

    def write_metrics(self, rows: list[dict], name: str = METRICS) -> None:
        """The whole file, replaced: a crash leaves the old file or the new one."""
        write_text_atomically(self.file(name), _json_lines(rows))

    def append_metrics(self, rows: list[dict], name: str = METRICS) -> None:
        """Rows after those of the file, appended and synced: each epoch writes its own rows,
        not the whole history again (rewriting the file made a run's bookkeeping grow with the
        square of its epochs, and grad-norms.jsonl's with its steps). A crash in the append
        leaves a torn last line, of an epoch after the checkpoint's, which a resume drops."""
        if rows:
            append_text_durably(self.file(name), _json_lines(rows))

    def read_metrics(self, through_epoch: int, name: str = METRICS,
                     complete: bool = False, rows_through: int = 0) -> list[dict]:
        """Rows up to the checkpoint's epoch; a torn last line (a full disk, a crash of an
        earlier version) is dropped, as are rows written after the checkpoint. `complete`: a
        row of each epoch up to it is required. `rows_through`: the last epoch that must have
        rows before a torn line (grad-norms.jsonl's, whose epochs may have none)."""
        path = self.file(name)
        rows, torn = _read_rows(path)
        reached = max((row["epoch"] for row in rows), default=0)
        if torn and reached < rows_through:
            # a torn line is of an epoch after the checkpoint's, whose rows came before it
            after = f" after step {rows[-1]['step']} (epoch {reached})" if rows else ""
            raise RunDirectoryError(f"{path}: its last line is torn, and it lacks the rows"
                                    f"{after} through epoch {rows_through}, which {LAST} has "
                                    f"trained; {_remedy(path)}")
        rows = [row for row in rows if row["epoch"] <= through_epoch]
        if complete:
            _refuse_missing_epochs(path, rows, through_epoch, torn)
            _refuse_repeated_epochs(path, rows)
            _refuse_incomplete_rows(path, rows, EPOCH_ROW_NUMBERS if name == METRICS else ())
        if torn:
            self.say(f"{path}: dropped its torn last line (the checkpoint is intact)")
        return rows

    def read_spec_changes(self, dropping_after: int | None = None) -> str:
        """spec-changes.jsonl, checked before a resume appends to it, without the records of
        resumes after epoch `dropping_after` (spec_changes_after)."""
        path = self.file(CHANGES)
        if not path.exists():
            return ""
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise RunDirectoryError(f"{path}: is damaged (not UTF-8 text); restore it, or move "
                                    "it away to keep no record of earlier changes, then "
                                    "resume") from None
        kept = []
        for number, line in enumerate(text.splitlines(), start=1):
            row = _json_or_none(line)
            if line.strip() and not isinstance(row, dict):
                raise RunDirectoryError(f"{path}: line {number} is damaged (not a JSON object); "
                                        "restore the file or delete that line, then resume")
            if line.strip() and not (dropping_after is not None and _after(row, dropping_after)):
                kept.append(line + "\n")
        return "".join(kept)

    def write_spec_changes(self, text: str) -> None:
        """spec-changes.jsonl as `text`; none when it holds no record."""
        if text:
            write_text_atomically(self.file(CHANGES), text)
        else:
            self.file(CHANGES).unlink(missing_ok=True)

    def record_spec_change(self, epoch: int, changes: dict, previous_spec: str,
                           earlier: str, spec_sha256: str) -> None:
        """Keeps the spec each part of the run was trained with (spec.yaml holds the latest,
        whose digest is `spec_sha256`); `earlier`: read_spec_changes(), read before the run
        directory was written to."""
        entry = {"resumed_after_epoch": epoch, "changes": changes, "previous_spec": previous_spec,
                 "spec_sha256": spec_sha256}
        write_text_atomically(self.file(CHANGES), earlier + json.dumps(entry) + "\n")

    def spec_changes_after(self, epoch: int) -> list[dict]:
        """The records of resumes after `epoch`'s checkpoint, whose training was not kept:
        stopped before a checkpoint of their own (a signal, a diverged loss), or their
        checkpoints replaced since (best.npz copied over last.npz)."""
        path = self.file(CHANGES)  # a damaged file is named later, where the resume reads it
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        rows = [_json_or_none(line) for line in text.splitlines()]
        return [row for row in rows if isinstance(row, dict) and _after(row, epoch)]

    def write_summary(self, summary: dict) -> None:
        write_text_atomically(self.file(SUMMARY), json.dumps(summary, indent=2) + "\n")


def _json_lines(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def _read_rows(path: Path) -> tuple[list[dict], bool]:
    """The rows of a metrics file, and whether a torn last line was dropped; a damaged line
    elsewhere is an error."""
    if not path.exists():
        return [], False
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows, torn = [], False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row = _json_or_none(line, otherwise=_NOT_JSON)
        if _is_row(row):
            rows.append(row)
            continue
        long_number = _LONG_NUMBER.search(line)  # complete JSON Python will not read
        if row is _NOT_JSON and number == len(lines) and not long_number:
            torn = True  # what a crash in the append leaves; a complete line is never torn
        else:
            problem = (f"holds a number of {len(long_number.group()):,} digits, which nnrun "
                       "never writes (an edited or damaged file)" if long_number
                       else _row_problem(row))
            raise RunDirectoryError(f"{path}: line {number} {problem}; {_remedy(path)}")
    return rows, torn


def _row_problem(row) -> str:
    if not isinstance(row, dict):
        return "is damaged (not a JSON row with an epoch)"
    if "epoch" not in row:
        return "lacks the epoch that nnrun writes in every row (an edited or damaged file)"
    shown = json.dumps(row["epoch"])
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return (f"holds the epoch {shown}, not the whole number (1, 2, ...) that nnrun writes in "
            "every row (an edited or damaged file)")


def _remedy(path: Path) -> str:
    """Not "delete that line": resuming needs a row for every epoch trained. The per-step
    gradient norms are a log of their own, which the run can do without."""
    if path.name == GRAD_NORMS:
        return ("restore it from a backup, or move it away to resume without the per-step "
                "norms logged so far")
    return ("restore the file from a backup, then resume, or start a new run with another "
            f"{option('--out')}")


def _refuse_missing_epochs(path: Path, rows: list[dict], through_epoch: int,
                           torn: bool) -> None:
    """Going on without them would leave a history of the later epochs only."""
    missing = _missing_ranges(sorted({row["epoch"] for row in rows}), through_epoch)
    if missing:
        how = " (its last line is torn)" if torn else ""
        raise RunDirectoryError(f"{path}: lacks the rows of {_epochs(missing)}{how}, which "
                                f"{LAST} has trained; restore it from a backup, or start a new "
                                f"run with another {option('--out')}")


def _missing_ranges(present: list[int], through_epoch: int) -> list[tuple[int, int]]:
    """The runs of epochs 1..through_epoch not in `present` (sorted), as (first, last): by
    ranges, since a damaged checkpoint may claim an epoch far past any run (10^15)."""
    missing, expected = [], 1
    for epoch in [*present, through_epoch + 1]:
        if epoch > through_epoch + 1:
            break
        if epoch > expected:
            missing.append((expected, epoch - 1))
        expected = max(expected, epoch + 1)
    return missing


def _refuse_repeated_epochs(path: Path, rows: list[dict]) -> None:
    """A file joined to itself, or rows moved by hand: the history would go on twice."""
    for before, row in zip(rows, rows[1:]):
        if row["epoch"] <= before["epoch"]:
            raise RunDirectoryError(f"{path}: the row of epoch {row['epoch']} comes after the "
                                    f"row of epoch {before['epoch']} (an edited or damaged file: "
                                    "each epoch has one row, in order); restore it from a "
                                    f"backup, or start a new run with another {option('--out')}")


# What every epoch's row of metrics.jsonl holds, and a resumed run reads (the summary's rate).
EPOCH_ROW_NUMBERS = ("epoch_s", "samples_per_s")


def _refuse_incomplete_rows(path: Path, rows: list[dict], keys) -> None:
    """A row edited by hand or damaged: found before the run directory changes, not when the
    resumed run writes its summary."""
    for row in rows:
        lacking = [key for key in keys if not _is_number(row.get(key))]
        if lacking:
            raise RunDirectoryError(f"{path}: the row of epoch {row['epoch']} lacks the number "
                                    f"{lacking[0]} that nnrun writes in every row (an edited or "
                                    "damaged file); restore the file from a backup, or start a "
                                    f"new run with another {option('--out')}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _epochs(ranges: list[tuple[int, int]]) -> str:
    first, last = ranges[0]
    if len(ranges) == 1 and first == last:
        return f"epoch {first}"
    return "epochs " + ", ".join(f"{first}-{last}" if last > first else f"{first}"
                                 for first, last in ranges)


_NOT_JSON = object()  # a line's value where it is no JSON, when `null` must be told apart
_LONG_NUMBER = re.compile(r"\d{1000,}")  # past any count nnrun writes; Python reads 4,300 digits


def _json_or_none(line: str, otherwise=None):
    try:
        return json.loads(line)
    # JSONDecodeError, an integer past Python's digit limit, or nested past its recursion limit
    except (ValueError, RecursionError):
        return otherwise


HOLDER_WAITS, HOLDER_WAIT_S = 20, 0.025


def _after(row: dict, epoch: int) -> bool:
    """Whether a spec-changes.jsonl record is of a resume after `epoch`."""
    after = row.get("resumed_after_epoch")
    return isinstance(after, int) and not isinstance(after, bool) and after >= epoch


def _holder_pid(descriptor: int) -> str:
    """The pid of the process that holds a lock file. It writes it once its checks pass
    (RunDirectory._claim), a moment after taking the lock; until then the file holds nothing,
    or the pid of the run before, which has ended: waited for a little."""
    for _ in range(HOLDER_WAITS):
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
        if holder.isdigit() and _running(int(holder)):
            return holder
        time.sleep(HOLDER_WAIT_S)
    return "unknown: it is starting, or was refused"


def _running(pid: int) -> bool:
    if not 0 < pid < 2**31:  # os.kill(0, ...) would reach the whole process group
        return False
    try:
        os.kill(pid, 0)  # PermissionError: another user's, running
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _metrics_row(line: str) -> dict | None:
    row = _json_or_none(line)
    return row if _is_row(row) else None


def _is_row(row) -> bool:
    """A row as nnrun writes it: a JSON object whose epoch is a whole number from 1 on."""
    epoch = row.get("epoch") if isinstance(row, dict) else None
    return isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1
