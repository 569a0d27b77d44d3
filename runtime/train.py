"""The training loop: batches through the compiled training-step graph, per-epoch evaluation,
checkpoints, early stopping, resume, and the run's summary.json. The run directory's files and
lock live in run_dir.py, signals in interrupts.py, resume's spec comparison in spec_changes.py.

Randomness: epoch e draws from default_rng([seed, e]) (shuffling, then per batch augmentation
and dropout), so a run resumed at an epoch boundary repeats exactly what an uninterrupted run
does (at a fixed thread count: BLAS sums in another order on other thread counts); the
checkpoint records the epoch, which is the whole RNG state.

Extending a run (resuming with more train.epochs): a cosine schedule, the one schedule that
depends on the run's length, restarts at the resumed epoch from optimizer.lr down to min_lr over
the remaining epochs, without warm-up, and the run says so; the checkpoint records the epoch it
restarted at. The other schedules go on as they would have.

The data path (docs/architecture.md): batches come from splits held on the backend when they
fit (batches.py); the loss and metric sums accumulate there, and are read once per epoch and
per progress-bar refresh, where a diverged loss is found with its step (StepLosses). Runs that
want per-step values (gradient-norm logging, several ranks) read every step.

Data-parallel (`ranks`, runtime/distributed.py): every rank draws the same batches (and the
same augmentation) from the seed and trains on its share of each; the step averages the
gradients. Rank 0 alone writes the run directory and prints; what it reads or decides is
broadcast, and the metrics are sums over the ranks.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from nnrun.backends.base import workers
from nnrun.compiler.checks import (default_mode, metric_name, monitor_names, pruned_weights,
                                   pruning_errors, tracked_metrics, unknown_monitor)
from nnrun.compiler.datasets import (DATASETS, largest_step_batch, lower_batch_fix,
                                     planned_training_samples)
from nnrun.compiler.diagnostics import SpecError, and_joined, format_path
from nnrun.compiler.frontend import (data_file_training_samples, data_origin, load_spec,
                                     load_spec_text, refuse_data_errors, resolved_spec_data,
                                     spec_warnings, spec_yaml)
from nnrun.compiler.ir import Origin
from nnrun.compiler.step import optimizer_slots
from nnrun.compiler.lower import ONE_VALUE_EFFECT, one_value_per_channel
from nnrun.notices import collected, positioned, shell_word, silenced, warn

from . import checkpoint as ckpt
from .archives import largest_magnitude
from .batches import copied_batch, device_data_budget, resident_splits
from .data import DataError, augment_batch, load_dataset
from .data.fingerprint import data_files, data_fingerprint
from .data.preprocessing import preprocessing_digest, save_preprocessing
from .data.sources import missing_files_fetched, user_file
from .data_fit import (check_augmentations, check_data_fits, input_shape_known,
                       targets_for_model, task_for_model)
from .distributed import ALONE, DEFAULT_TIMEOUT_S, check_batch
from .files import describe_os_error, write_atomically
from .grad_norms import LAYER_PREFIX
from .grad_norms import PREFIX as GRAD_NORM_PREFIX
from .grad_norms import GradNormLog
from .interrupts import InterruptGuard, Interrupted
from .options import option
from .memory import check_memory, estimate_bytes, evaluation_batch
from .metrics import EVALUATION_BATCH, Totals, evaluate
from .model import Model
from .progress import EpochProgress, overall_rate, print_final_table
from .pruning import MagnitudePruner
from .regularisation import regularisation_lines
from .run_dir import BEST, GRAD_NORMS, LAST, PREPROCESSING, SPEC, RunDirectory
from .schedules import depends_on_length, learning_rate
from .spec_changes import (bracketed, data_file_changes, evaluated_changes, from_its_weights,
                           is_data_file_change, model_changes, refuse_data_changes,
                           refuse_training_changes, spec_changes, unfit_arrays)
from .step_scalars import StepScalars
from .threads import default_threads


class TrainingError(Exception):
    """Training cannot go on (no data section, a diverged loss, a bad monitor)."""


@dataclass
class History:
    rows: list[dict] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int = 0
    epochs_since_best: int = 0
    schedule_start: int = 0  # the epoch a restarted cosine schedule counts from
    best_sparsity: float | None = None  # the pruning level of the best epoch, when pruning


def train(source, backend: str = "numpy", out_dir=None, resume=None, quiet: bool = False,
          max_steps: int | None = None, allow_changes: bool = False, ranks=ALONE,
          graph: bool = True) -> dict:
    """Trains `source` (a SourceSpec) and returns the run summary. `max_steps` caps the
    batches per epoch (for quick checks); `allow_changes` lets a resumed run continue with
    settings that differ from the ones it was trained with; `ranks`: the ranks of a
    data-parallel run (runtime/distributed.py connect); graph=False: on a GPU, the step
    runs uncaptured."""
    quiet = quiet or not ranks.is_root
    say = (lambda message: None) if quiet else (lambda message: print(message, file=sys.stderr))
    run = RunDirectory(_run_path(source, out_dir, resume), say) if ranks.is_root else None

    def prepare():
        resumption = Resumption()
        if run is not None:
            if resume is not None:
                run.open_existing()
            else:
                run.open_new()
            resumption = _resumption(run, source, allow_changes)
        # A resumed checkpoint gives every parameter: the init_from files the run began from
        # are not read, and may be gone (the ranks but 0 take rank 0's state in any case).
        resumed = resume is not None and (run is None or run.has_checkpoint)
        return resumption, Trainer(replace(source, from_checkpoint=resumed), backend,
                                   quiet=quiet, max_steps=max_steps, ranks=ranks, graph=graph)

    summary = None
    try:
        with ranks.signal_guard() as guard, run or nullcontext(), silenced(quiet):

            def prepare_at_once():  # loading and compiling stop at once; `together` tells all
                with guard.at_once():
                    return prepare()

            try:
                ranks.first_meeting(_training_digest(source), guard.received)
                resumption, trainer = ranks.together(prepare_at_once)
                ranks.same_data(trainer.data_shapes(), guard.received, trainer.data_digests())
                ranks.ready(trainer.backend)
            except Interrupted as interrupt:
                raise _stopped_while_preparing(interrupt, run, source, resume,
                                               Launch(ranks, backend, graph),
                                               allow_changes) from None
            summary = trainer.run(run, guard, resumption)
            trainer.check_signals(guard)
            # noted while waiting in that last meeting (rank 0 writing the summary): said by
            # this rank alone, none waiting for another any more
            guard.check()
        return summary
    except Interrupted as interrupt:
        if summary is None:
            ranks.failed()
            raise
        # the lock being let go: the run had ended, with its summary written and said
        raise Interrupted(interrupt.signal_number, f"{interrupt} as the run ended; it is "
                          f"complete in {summary['run_dir']} (nothing to resume)") from None
    except BaseException:
        ranks.failed()
        raise


def placed_at_the_data(source):
    """Data that cannot be read, or cannot train this model, is said at the place the spec
    names it (data.path, or data.dataset): the error keeps its type (the API's DataError or
    DataFitError) and carries that place as its `diagnostic`, which the command prints; an
    error of one setting of the data's (an augmentation's entry) at that setting, its `origin`."""
    return _placed(source, DataError,
                   lambda error: getattr(error, "origin", None) or data_origin(source.spec))


def placed_at_init_from(source):
    """An init_from array that cannot begin the model (values beyond the dtype, nan) is said
    at the spec's init_from that names it (the error's `origin`), as the data's errors are at
    data.path."""
    return _placed(source, ckpt.CheckpointError, lambda error: getattr(error, "origin", None))


@contextmanager
def _placed(source, kinds, origin_of):
    try:
        yield
    except kinds as error:
        origin = origin_of(error)
        if origin is not None and getattr(error, "diagnostic", None) is None:
            error.diagnostic = source.diagnostic(origin, str(error))
        raise


def check_before_training(source) -> list[str]:
    """What `train` checks before its first step, without training or writing anything
    (`nnrun validate --data`): the spec's data loaded and fitted to the model. Raises what
    train would refuse; returns the warnings train would print of the data and the run (the
    spec's own positioned ones are validate's already)."""
    with collected() as lines:
        Trainer(source, "numpy", memory_checked=False)
    return [message for kind, message in lines if kind == "warning"]


def _training_digest(source) -> str:
    """What must be the same on every rank: the spec, but for the paths of its files, data.path
    and every init_from (ranks on other machines may find them at other places), and for a
    model.input_shape read from the data file, which a rank that cannot read it lacks (that
    rank's data error is then said, not another spec)."""
    data = _without_init_from(source.spec.model_dump(mode="json"))
    data["data"] = {key: value for key, value in (data.get("data") or {}).items()
                    if key != "path"}
    written = source.loaded.data.get("model")
    if not (isinstance(written, dict) and "input_shape" in written):
        data["model"]["input_shape"] = None
    return ckpt.text_digest(json.dumps(data, sort_keys=True))


def _without_init_from(value):
    if isinstance(value, dict):
        return {key: _without_init_from(item) for key, item in value.items()
                if key != "init_from"}
    if isinstance(value, list):
        return [_without_init_from(item) for item in value]
    return value


def _stopped_while_preparing(interrupt: Interrupted, run, source, resume, launch: Launch,
                             allow_changes: bool) -> Interrupted:
    """A signal while the run directory is opened and checked, the data loaded and the model
    compiled: nothing was written yet; the command to run to do what was asked."""
    if run is None:
        return interrupt
    if resume is not None:
        command = _resume_with_settings(source, run.path, launch, allow_changes)
        advice = f"the run directory is as it was; resume with: {command}"
    else:
        command = _start_command(source, run.path, launch)
        advice = f"nothing was trained; start again with: {command}"
    return Interrupted(interrupt.signal_number, f"{interrupt}; {advice}")


def _arithmetic_words(arithmetic: dict, keys: list[str]) -> str:
    words = {"backend": lambda value: f"the {value} backend",
             "threads": lambda value: f"{value} CPU thread{'s' if value != 1 else ''}",
             "ranks": lambda value: f"{value} rank{'s' if value != 1 else ''}"}
    return ", ".join(words[key](arithmetic[key]) for key in keys)


def _resume_with_settings(source, run_dir: Path, launch: Launch, allow_changes: bool) -> str:
    """The command that resumes `run_dir` as this one was asked to: its spec, its --set
    settings and --allow-changes (the run's spec.yaml does not hold them yet). A spec given
    as data (the API's) has no file to name: SPEC stands for it."""
    spec = shell_word(str(source.path)) if source.path else "SPEC"
    return launch.command(" ".join([f"nnrun train {spec} --resume {shell_word(str(run_dir))}",
                                    *_overrides(source),
                                    *(["--allow-changes"] if allow_changes else [])]))


# What a write meets where the storage is full or read-only: the run's files are as they were.
_STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def _failed_run_write(error: OSError, directory: Path) -> bool:
    """Whether `error` is a write of a file in the run `directory` that found the storage
    full or read-only (a read error of a checkpoint is not, nor the caller's streams')."""
    if error.errno not in _STORAGE_ERRORS:
        return False
    try:
        return Path(os.fsdecode(error.filename)).resolve().parent == directory.resolve()
    except (TypeError, ValueError, OSError, RuntimeError):  # none, a descriptor, a loop
        return False


def _overrides(source) -> list[str]:
    """The command's --set settings (and the options that stand for them), shell-quoted."""
    return [" ".join(map(shell_word, setting.split(" ", 1)))
            for setting in source.loaded.overrides_in_order()]


def _start_command(source, run_dir: Path, launch: Launch) -> str:
    """The command that starts the run in `run_dir` again, with its settings."""
    spec = shell_word(str(source.path or "SPEC"))
    return launch.command(" ".join([f"nnrun train {spec} --out {shell_word(str(run_dir))}",
                                    *_overrides(source)]))


def resume_command(run_dir: Path, launch: Launch) -> str:
    """The command that resumes `run_dir`: its own spec.yaml holds every override, so it always
    fits the run."""
    return launch.command(f"nnrun train {shell_word(str(run_dir / SPEC))} --resume "
                          f"{shell_word(str(run_dir))}")


@dataclass(frozen=True)
class Launch:
    """How this training was launched, as far as a command that runs it again must repeat it:
    the backend, the CPU threads (results are the same run to run at a given count only), the
    uncaptured GPU step, and the ranks of a data-parallel job."""
    ranks: object
    backend: str
    graph: bool

    def command(self, command: str) -> str:
        """`command` with this launch's options; on N ranks, under mpiexec, with the job's own
        --distributed-timeout."""
        if self.backend != "numpy":
            command += f" --backend {self.backend}" + ("" if self.graph else " --no-graph")
        elif workers() != default_threads():
            command += f" --threads {workers()}"
        if self.ranks.size == 1:
            return command
        timeout = getattr(getattr(self.ranks, "watchdog", None), "timeout", DEFAULT_TIMEOUT_S)
        chosen = f" --distributed-timeout {timeout:g}" if timeout != DEFAULT_TIMEOUT_S else ""
        return f"mpiexec -n {self.ranks.size} {command} --distributed{chosen}"


def _run_path(source, out_dir, resume) -> Path:
    if resume is not None:
        return Path(resume)
    if out_dir is not None:
        return Path(out_dir)
    stamped = Path("runs") / source.spec.name / datetime.now().strftime("%Y%m%d-%H%M%S")
    candidates = [stamped, *(Path(f"{stamped}-{n}") for n in range(2, 1000))]
    return next(path for path in candidates if not path.exists())  # two runs in one second


@dataclass
class Resumption:
    """A resume's spec against the one its checkpoint was trained with (a new run: none)."""

    changes: dict = field(default_factory=dict)
    previous_spec: str = ""  # the spec text the checkpoint was trained with
    # spec.yaml is not that spec: edited by hand since, or written by a resume after the
    # checkpoint that trained nothing kept (stopped before a checkpoint of its own, or its
    # checkpoints replaced by best.npz)
    stale: bool = False
    # spec-changes.jsonl holds records of such resumes, which go
    dropped: bool = False
    allow_changes: bool = False  # the resume was asked with --allow-changes
    # what such resumes were allowed: field (or data file) -> the new value
    allowed: dict = field(default_factory=dict)
    moved_data: bool = False  # data.path names the same bytes elsewhere: no change, but a new path

    @functools.cached_property
    def previous(self):
        """The Spec the checkpoint was trained with (None for a new run)."""
        return load_spec_text(self.previous_spec).spec if self.previous_spec else None


def _resumption(run: RunDirectory, source, allow_changes: bool) -> Resumption:
    """Before any data loads: a resumed run must train as it was trained, or say it won't."""
    if not run.has_checkpoint:  # one with a checkpoint has a spec.yaml (open_existing)
        return Resumption()
    if not input_shape_known(source.spec):
        # Its data file gives model.input_shape: a missing one is that, not a changed spec.
        user_file(source.spec.data.dataset, source.spec.data, source.directory)
    meta = ckpt.checkpoint_meta(run.file(LAST))
    run_spec = load_spec(run.file(SPEC)).spec  # a damaged spec.yaml is named, in one line
    text = run.spec_text()
    later = run.spec_changes_after(meta["epoch"])
    trained = _trained_text(run, meta, text, run_spec, later)
    digest = ckpt.text_digest(text)
    written = any(row.get("spec_sha256") == digest for row in later)
    edited = trained != text and not written
    if edited:
        run.say(f"{run.file(SPEC)}: edited since its checkpoint was written; what the resume "
                "changes is counted from the spec the run trained with")
    overridden = tuple(format_path(path) for path, _ in source.loaded.overridden)
    found = spec_changes(run.file(SPEC), resolved_spec_text(source), trained, overridden)
    changes = _without_a_moved_data_file(found, source, meta)
    # a field that a resume after the checkpoint set, with --allow-changes, to the same value
    # stays allowed
    allowed = {bracketed(name): change.get("new") for row in later
               if isinstance(row.get("changes"), dict)
               for name, change in row["changes"].items() if isinstance(change, dict)}
    if not allow_changes:
        refuse_training_changes(run.path, _not_allowed(changes, allowed), edited, overridden)
    return Resumption(changes, trained, trained != text, bool(later), allow_changes, allowed,
                      moved_data=len(changes) < len(found))


def _without_a_moved_data_file(changes: dict, source, meta: dict) -> dict:
    """A data.path that names the bytes the checkpoint trained on (the file moved, and the spec
    follows it) is no change of the data."""
    recorded = meta.get("data_sha256")
    if "data.path" not in changes or "data.dataset" in changes or not recorded:
        return changes
    try:
        digests = data_fingerprint(data_files(source.spec.data, source.directory))
    except (OSError, DataError):
        return changes  # the loader says what is wrong with it
    if digests != recorded:
        return changes
    return {name: change for name, change in changes.items() if name != "data.path"}


def _not_allowed(changes: dict, allowed: dict) -> dict:
    return {name: change for name, change in changes.items()
            if name not in allowed or allowed[name] != change["new"]}


def _choose_best_again(run: RunDirectory, history: History, evaluated: list[str],
                       epoch: int, normalized: bool) -> None:
    """The best checkpoint so far was measured, and is evaluated, on inputs of the settings
    before the change (its preprocessing.npz replaced): the next epoch is the best one again.
    `normalized`: the data's preprocessing has normalisation statistics, which the new data
    (anything changed but the loss) refits."""
    if not evaluated:
        return
    history.best_value, history.epochs_since_best = None, 0
    refitted = normalized and any(not name.startswith("loss") for name in evaluated)
    run.say(f"{run.path}: {', '.join(evaluated)} changed, so the best epoch is chosen again "
            f"from epoch {epoch + 1} on (the earlier ones were measured on other inputs)"
            + ("; the normalisation statistics are fitted again on the new training split "
               f"({PREPROCESSING})" if refitted else ""))


def monitor_of(spec, validated: bool):
    """(the value the best epoch is chosen by, min or max, the early stopping setting)."""
    stopping = spec.train.early_stopping
    default = "val_loss" if validated else "train_loss"
    monitor = stopping.monitor if stopping else default
    mode = stopping.mode if stopping and stopping.mode != "auto" else default_mode(monitor)
    return monitor, mode, stopping


def _refuse_a_stop_of_the_changes(run_dir: Path, previous, spec, history: History,
                                  epoch: int) -> None:
    """Early stopping that only the resume's changes make stop the run (a lower patience, or
    early stopping added to a run that trained all its epochs): no epoch trains, so nothing
    records them, and the summary would call the run stopped early under a spec.yaml that
    does not stop it. `previous`: the spec the checkpoint was trained with."""
    before = previous.train.early_stopping
    if before and history.epochs_since_best >= before.patience:
        return  # stopped by its own settings too
    since = history.epochs_since_best
    raise TrainingError(
        f"{run_dir}: this resume trains no epoch: with train.early_stopping.patience "
        f"{spec.train.early_stopping.patience}, early stopping stops the run at epoch {epoch}, "
        f"{since} epoch(s) after its best (epoch {history.best_epoch}), and nothing would record "
        f"the change; give a patience above {since} to train on with early stopping, or leave "
        "the change out")


def _best_of_its_epoch(run: RunDirectory, meta: dict, best_meta: dict | None) -> None:
    """best.npz is the checkpoint of the best epoch last.npz records. A run stopped between an
    epoch's two writes (last.npz, then best.npz) left the earlier best's: last.npz holds the
    best epoch's state, copied. An older nnrun wrote best.npz first: one of an epoch past
    last.npz's is of no epoch the run kept, and goes (the final model is then last.npz until
    an epoch betters the best)."""
    best, held = meta.get("best_epoch"), best_meta.get("epoch") if best_meta else None
    if ckpt.best_left_behind(meta, best_meta):
        write_atomically(run.file(BEST), lambda stream: stream.write(run.file(LAST).read_bytes()))
        why = (f"it held epoch {held}, past {LAST}'s, which the run did not keep (an older nnrun "
               f"wrote {BEST} first)" if isinstance(held, int) and held > best
               else f"the run stopped before it wrote {BEST}")
        run.say(f"{run.file(BEST)}: written again from {LAST}, whose epoch {best} is the run's "
                f"best ({why})")
    elif isinstance(best, int) and isinstance(held, int) and held > meta["epoch"]:
        run.file(BEST).unlink()
        run.say(f"{run.file(BEST)}: removed; it held epoch {held}, after {LAST}'s epoch "
                f"{meta['epoch']} (the run stopped between the two), not the best epoch {best}, "
                f"whose weights are lost: the final model is {LAST} until an epoch betters it")


def _refuse_changes_no_epoch_takes(run_dir: Path, changes: dict, epoch: int,
                                   stopped_early: bool) -> None:
    """A resume that trains no epoch keeps spec.yaml the run's: a change of what its final
    numbers and stored preprocessing depend on would leave them at odds with it."""
    evaluated = evaluated_changes(changes)
    if not evaluated:
        return
    why, go_on = ((f"early stopping keeps the run stopped at epoch {epoch}",
                   "raise train.early_stopping.patience") if stopped_early else
                  (f"its {epoch} epoch(s) are trained", f"give {option('--epochs')} above {epoch}"))
    undo = ("put back the data it was trained on" if all(map(is_data_file_change, evaluated))
            else "leave them out" if not any(map(is_data_file_change, evaluated))
            else "leave them out and put back the data it was trained on")
    raise TrainingError(
        f"{run_dir}: this resume trains no epoch ({why}), so {', '.join(evaluated)} would "
        "change only the run's final numbers and stored preprocessing, not what it was "
        f"trained with; {undo}, or {go_on} to train with them")


def _trained_text(run: RunDirectory, meta: dict, text: str, run_spec, later: list) -> str:
    """The spec text the checkpoint was trained with, found by its digest: spec.yaml's own
    (`text`), the one the checkpoint kept (up to 64 KiB), or the previous spec of a resume
    after it (`later`, their records). A checkpoint of an older nnrun keeps no digest: the
    first such record's previous spec, else spec.yaml as it is."""
    previous = [row.get("previous_spec") for row in later
                if isinstance(row.get("previous_spec"), str)]
    digest = meta.get("spec_sha256")
    if meta.get("spec_hash") != ckpt.spec_hash(run_spec):
        _refuse_another_model(run, meta, text, run_spec, previous)
    if digest is None:  # the first record's previous spec: the spec until that resume
        first = previous[0] if previous else None
        return first if first is not None and _spec_hash_of(first) == meta["spec_hash"] \
            else text
    trained = next((candidate for candidate in (text, meta.get("spec_text"), *previous)
                    if isinstance(candidate, str) and ckpt.text_digest(candidate) == digest),
                   None)
    if trained is None:
        raise TrainingError(
            f"{run.file(SPEC)}: is not the spec its checkpoint ({LAST}, epoch {meta['epoch']}) "
            "was trained with (edited since?); restore it, and give what the resume changes on "
            f"the command line ({option('--epochs')}, or --set with {option('--allow-changes')}), "
            "where it is checked and recorded")
    return trained


def _refuse_another_model(run: RunDirectory, meta: dict, text: str, run_spec,
                          previous: list) -> None:
    """The checkpoint was trained as another model than spec.yaml says: spec.yaml edited by
    hand since, or another run's checkpoint put here; which, the files cannot tell (copies
    keep their times), so both are said, with the fields where the checkpoint kept its spec."""
    digest = meta.get("spec_sha256")
    if digest is not None and ckpt.text_digest(text) == digest:
        return  # spec.yaml is the checkpoint's own: the load names the mismatch
    kept = next((candidate for candidate in (meta.get("spec_text"), *previous)
                 if isinstance(candidate, str) and digest
                 and ckpt.text_digest(candidate) == digest), None)
    differing, unfit = "", None
    if kept is not None:
        kept_spec = load_spec_text(kept).spec
        changes = model_changes(kept_spec, run_spec)
        differing = " (" + "; ".join(f"{name}: {change['old']!r} there, {change['new']!r} "
                                     "here" for name, change in changes.items()) + ")"
        unfit = unfit_arrays(kept_spec, run_spec)
    raise ckpt.CheckpointError(
        f"{run.file(LAST)}: checkpoint was written for another spec than {run.file(SPEC)}"
        f"{differing}: if {run.file(SPEC)} was edited since, undo the edit (or, for a new model "
        f"from these weights, start a new run with another {option('--out')}"
        f"{from_its_weights(run.file(LAST), unfit)}); if the checkpoint is another run's, "
        "resume that run's own directory")


def _spec_hash_of(text: str) -> str | None:
    """checkpoint.spec_hash of a spec's text, None where it is no spec (a damaged record)."""
    try:
        return ckpt.spec_hash(load_spec_text(text).spec)
    except SpecError:
        return None


@dataclass
class Begun:
    """What a run trains from: the host state (parameters and optimizer state), the history
    and global step so far, the first epoch to train, and the pruning masks and level of a
    resumed pruned run (None otherwise)."""
    state: dict
    history: History
    step: int
    first_epoch: int
    pruning: tuple | None


class Trainer:
    def __init__(self, source, backend: str, quiet: bool = False, max_steps: int | None = None,
                 ranks=ALONE, graph: bool = True, command: str = "train",
                 memory_checked: bool = True):
        """memory_checked=False: the model is not refused for the memory this machine has
        (validate --data, whose own warning says it, against --warn-memory)."""
        self.source, self.spec, self.graph = source, source.spec, graph
        self.command = command  # what a refusal names: train, or trace
        self.spec_text = resolved_spec_text(source)  # the run's spec.yaml
        self.spec_meta = ckpt.spec_text_meta(self.spec_text)  # what checkpoints keep of it
        self.data_sha256 = None  # and of the data files: rank 0's, once the run begins
        self.preprocessing_unsaved = False  # a resume's, until its first checkpoint
        self.checkpoint_preprocessing = None  # the digest the resumed checkpoint keeps
        self.preprocessing_sha256 = None  # of the run's, once it begins (what checkpoints keep)
        self.quiet, self.max_steps, self.ranks = quiet, max_steps, ranks
        self.launch = Launch(ranks, backend, graph)  # what commands in messages repeat
        self.memory_checked = memory_checked
        if self.spec.data is None:
            raise no_data_section(source, "training needs")
        refuse_data_errors(source)
        check_batch(self.spec.train.batch_size, ranks.size,
                    self.source.set_by(("train", "batch_size")))
        with placed_at_the_data(source):
            self._load_data_and_model(backend)
        self.backend = self.model.backend
        # what fits, up to 1000; every rank of a data-parallel run cuts the same batches
        self.evaluation_batch = (evaluation_batch(self.model, held=self.step_bytes)
                                 if ranks.size == 1 else EVALUATION_BATCH)
        self.metrics = tracked_metrics(self.spec, self.data.task)
        self.augment_background = self.data.background()  # the fill of moved pixels
        self._check_monitor()
        self._check_a_share_per_rank()
        self._warn_if_a_share_is_one_value_per_channel()
        self._warn_if_one_batch_holds_the_data()
        self.pruner = self._pruner()
        self.grad_norms = self._grad_norm_log()
        self.resident = self._resident_splits()
        # Per-step values wanted on the host: every step is read (a step's loss, its norms).
        self.read_every_step = self.grad_norms is not None or ranks.size > 1
        self.first_loss = None  # the loss of the run's first step here (_warn_if_loss_rose)
        self.said_loss_rose = False
        self.said_not_finite: set[str] = set()  # the splits (_warn_if_not_finite)
        self.trained_spec = None  # a resume's that trained nothing: the run's own (_finish)

    def _check_a_share_per_rank(self) -> None:
        """Each rank takes an equal share of every batch (ranks.even_batches): fewer samples
        than ranks leave no batch at all."""
        samples, size = len(self.data.train.x), self.ranks.size
        if samples < size:
            raise TrainingError(f"the training split has {samples} sample"
                                f"{'s' if samples > 1 else ''}, fewer than the {size} ranks, "
                                "each of which takes a share of every batch; start at most "
                                f"{samples} rank{'s' if samples > 1 else ''}, or train on "
                                "more data")

    def _warn_if_a_share_is_one_value_per_channel(self) -> None:
        """A batchnorm normalising with its rank's share of one sample (the spec's batch_size
        of 1 is validate's warning)."""
        size, batch = self.ranks.size, min(self.spec.train.batch_size, len(self.data.train.x))
        if size == 1 or batch // size != 1 or self.spec.train.sync_batchnorm:
            return
        names = [layer.name for layer in self.model.lowered.layers
                 if layer.type == "batchnorm" and one_value_per_channel(layer.output.type)]
        if names:
            warn(f"each of the {size} ranks takes 1 sample of every batch of {batch}, and "
                 f"{and_joined(names)} normalise{'s' if len(names) == 1 else ''} each channel "
                 f"over its one value: {ONE_VALUE_EFFECT}; set train.sync_batchnorm: true, or "
                 f"a batch_size of {2 * size} or more")

    def _warn_if_one_batch_holds_the_data(self) -> None:
        """Where the data decides the training samples (validate's warning, which train
        prints, says it where the spec does)."""
        samples, batch = len(self.data.train.x), self.spec.train.batch_size
        if batch > samples and planned_training_samples(self.spec.data) is None:
            plural = "s" if samples > 1 else ""
            left = samples % self.ranks.size  # the ranks divide each batch evenly
            taken = (f"{samples - left} of them, a multiple of the {self.ranks.size} ranks"
                     if left else "all of them")
            warn(f"train.batch_size {batch}{self.source.set_by(('train', 'batch_size'))} is "
                 f"more than the {samples} training sample{plural}: each epoch is one step on "
                 f"{taken}")

    def _model(self, backend: str, samples: int | None = None) -> Model:
        """`samples`: the training split's, where the data loaded first."""
        model = Model(self.source, backend, data_parallel=self.ranks.size > 1, graph=self.graph)
        for warning in spec_warnings(self.source, model.lowered):  # validate's: likely mistakes
            positioned(warning.format())
        self.ranks.attach(model.backend)
        # a batch size past the training samples: each epoch is one step on all of them
        asked = self.spec.train.batch_size
        planned = min(largest_step_batch(self.spec), samples or asked)
        batch = planned // self.ranks.size
        self.step_bytes = estimate_bytes(model, batch)  # evaluation is planned beside it
        if self.memory_checked:
            check_memory(model, batch, self.command, needed=self.step_bytes,
                         fix=lower_batch_fix(planned, asked, "the batch size"))
        return model

    def _load_data_and_model(self, backend: str) -> None:
        """The data, and the model, fitted to each other."""
        # Refuse a model too big for memory before the data loads, when its shape allows.
        if input_shape_known(self.spec):
            self.model = self._model(backend, data_file_training_samples(
                self.spec, self.source.directory))
            check_augmentations(self.source, self.model.lowered.graph.inputs[0].type.shape[1:])
            self.data = self._load_data()
        else:
            self.data = self._load_data()
            check_augmentations(self.source, self.data.input_shape)
            self.model = self._model(backend, len(self.data.train.x))
        self.data = targets_for_model(self.spec, self.model, self.data)
        check_data_fits(self.spec, self.model, self.data)
        self.data = replace(self.data, task=task_for_model(self.spec, self.model, self.data))

    def _load_data(self):
        with missing_files_fetched():  # the first `train` downloads mnist (DESIGN.md 8)
            return load_dataset(self.spec.data, spec_dir=self.source.directory,
                                seed=self.spec.seed, dtype=self.spec.dtype,
                                loss=self.spec.loss)

    def _pruner(self) -> MagnitudePruner | None:
        pruning = self.spec.train.pruning
        if pruning is None:
            return None
        weights = pruned_weights(self.model.lowered.params)
        refused = pruning_errors(self.spec, weights)  # also a resume's --set
        if refused:
            raise SpecError([self.source.diagnostic(origin, message)
                             for origin, message in refused])
        return MagnitudePruner(pruning, weights, self.spec.train.epochs, self.backend.xp)

    def _resident_splits(self) -> dict:
        """The splits held on the backend for the whole run (batches.py); the training split
        stays on the host when augmented, as augmentation works there."""
        budget, _ = device_data_budget(self.model, self.spec.train.batch_size // self.ranks.size)
        data = self.data
        splits = {"train": None if self.spec.data.augment else data.train,
                  "val": data.val, "test": data.test}
        return resident_splits(self.model, splits, budget)

    def _grad_norm_log(self) -> GradNormLog | None:
        if not self.spec.train.log_grad_norms:
            return None
        layers = {name: info.layer for name, info in self.model.lowered.params.items()}
        return GradNormLog(self.spec.train.log_grad_norms, layers)

    # --- state ----------------------------------------------------------------------------

    def host_state(self) -> dict:
        return {name: self.backend.to_host(value) for name, value in self.state.items()}

    def checkpoint_state(self) -> dict:
        """What a checkpoint holds: the state, and the pruning masks when pruning."""
        masks = self.pruner.saved_masks(self.backend.to_host) if self.pruner else {}
        return {**self.host_state(), **masks}

    def data_shapes(self) -> dict:
        """Each split's samples' shape, the batch axis first (the ranks compare them)."""
        splits = {split: getattr(self.data, split) for split in ("train", "val", "test")}
        return {split: tuple(data.x.shape) for split, data in splits.items() if data is not None}

    def data_digests(self) -> dict:
        """Each data file's SHA-256, by its role (the ranks compare them; the checkpoints keep
        rank 0's)."""
        if self.ranks.size == 1:
            return {}
        return data_fingerprint(data_files(self.spec.data, self.source.directory))

    def expected_shapes(self) -> dict:
        shapes = {name: info.shape for name, info in self.model.param_infos.items()}
        optimizer_state = self.model.train_step.optimizer_state
        shapes.update({name: shapes[param] for name, param in optimizer_state.items()})
        return shapes

    # --- the run --------------------------------------------------------------------------

    def run(self, run: RunDirectory | None, guard: InterruptGuard | None = None,
            resumption: Resumption | None = None) -> dict:
        """`run` is None on the ranks other than 0: they write nothing."""
        self.run_directory, self.resumption = run, resumption or Resumption()
        self.say = run.say if run else (lambda message: None)
        started = time.perf_counter()
        # A signal while the run begins (its files written or read) is answered as later ones
        self.run_dir, self.saved_epoch = (run.path if run else None), None
        try:
            self.run_dir, begun = self.ranks.from_root(
                lambda: (run.path, self._begin(run, self.resumption)))
            self.history, self.global_step = begun.history, begun.step
            self.state = {name: self.backend.from_host(value)
                          for name, value in begun.state.items()}
            if begun.pruning is not None:
                self.pruner.restore(*begun.pruning, self.backend.from_host, self.spec.dtype)
            first_epoch = begun.first_epoch
            del begun  # its state is not held through the run beside the step's own copy
            self.saved_epoch, self.first_epoch = first_epoch - 1, first_epoch
            stopped_early = self._train_epochs(run, first_epoch, guard)
            return self._finish(run, started, stopped_early, guard)
        except Interrupted as interrupt:
            if self.run_dir is None:
                raise
            raise Interrupted(interrupt.signal_number, self._resume_advice(str(interrupt))) \
                from None
        except OSError as error:  # a write of the run directory's: the disk full, say
            if self.run_dir is None or not _failed_run_write(error, self.run_dir):
                raise  # the caller's streams, say: theirs to catch as they are
            raise TrainingError(self._resume_advice(describe_os_error(error))) from error

    def _train_epochs(self, run: RunDirectory, first_epoch: int, guard) -> bool:
        """Epochs from `first_epoch` on; True when early stopping ended them."""
        if self._should_stop():
            self.say(f"{self.run_dir}: the run stopped early at epoch {first_epoch - 1}; "
                     "nothing to train (raise train.early_stopping.patience with "
                     f"{option('--allow-changes')} to go on)")
            return True
        done, epochs = first_epoch - 1, self.spec.train.epochs
        if done >= epochs:
            self.say(f"{self.run_dir}: {done} epoch(s) trained already, train.epochs is {epochs}; "
                     f"nothing to train (give {option('--epochs')} above {done} to go on)")
        else:
            for line in regularisation_lines(self.spec, self.pruner.level if self.pruner else 0):
                self.say(line)
        with guard.safe_points() if guard else nullcontext():
            for epoch in range(first_epoch, self.spec.train.epochs + 1):
                self._train_and_save(run, epoch, guard)
                if self._should_stop():
                    return True
        return False

    def _train_and_save(self, run: RunDirectory | None, epoch: int, guard) -> None:
        row = self.train_epoch(epoch, guard)
        self.history = self.ranks.from_root(lambda: self._save_epoch(run, epoch, row))
        if self.grad_norms:  # rank 0 wrote its per-step rows; the other ranks' go unwritten
            self.grad_norms.take_step_rows()
        self.saved_epoch = epoch
        self.check_signals(guard)

    def _save_epoch(self, run: RunDirectory, epoch: int, row: dict) -> History:
        self.history.rows.append(row)
        run.append_metrics([row])
        self._write_step_norms(run)
        self._after_epoch(run, epoch, row)
        return self.history

    def _begin(self, run: RunDirectory, resumption: Resumption) -> Begun:
        """What the run trains from, a new run's or the checkpoint's, with the run directory
        written for it and the data's preprocessing saved."""
        files = data_files(self.spec.data, self.source.directory)
        self.data_sha256 = data_fingerprint(files)  # what the checkpoints keep (_meta)
        resumed = run.has_checkpoint
        begun = self._resumed(run, resumption, files) if resumed else self._new(run)
        # a resume that fits other preprocessing than its checkpoint was trained with (its
        # changes change the data) writes it with its first checkpoint: one stopped before
        # keeps the checkpoints' own. The checkpoint's own is written now (again, where the
        # run stopped between a checkpoint and its preprocessing.npz).
        self.preprocessing_sha256 = preprocessing_digest(self.data.preprocessing)
        self.preprocessing_unsaved = resumed and run.file(PREPROCESSING).exists() and \
            self.checkpoint_preprocessing != self.preprocessing_sha256
        if not self.preprocessing_unsaved:
            save_preprocessing(run.path, self.data.preprocessing)
        return begun

    def _new(self, run: RunDirectory) -> Begun:
        # First the state: init_from files are read (and may be refused) before the run
        # directory is written to.
        with placed_at_init_from(self.source):
            state = self.model.host_train_state(self.spec.seed)
        run.start_over(self.spec_text)
        return Begun(state, History(), step=0, first_epoch=1, pruning=None)

    def _resumed(self, run: RunDirectory, resumption: Resumption, files: dict) -> Begun:
        """The checkpoint's state, and the run directory brought back to its epoch. Every file
        it needs is read and checked before one is written, so a damaged file leaves the run
        directory as it was. `files`: the data's (data/fingerprint.py)."""
        new_state = self._new_optimizer_state(resumption.previous)
        state, meta, pruning = self._read_checkpoint(run, new_state)
        self.checkpoint_preprocessing = meta.get("preprocessing_sha256")
        best_meta = None
        if run.file(BEST).exists():  # read at the end: found damaged now, not after training
            _, best_meta = ckpt.load_checkpoint(run.file(BEST), self._saved_shapes(new_state),
                                                self.spec.dtype, self.spec)
        epoch = meta["epoch"]
        history = History(best_value=meta["best_value"], best_epoch=meta["best_epoch"],
                          epochs_since_best=meta["epochs_since_best"],
                          schedule_start=meta["schedule_start"],
                          best_sparsity=meta["best_sparsity"])
        history.rows = run.read_metrics(epoch, complete=True)
        logged_steps = run.file(GRAD_NORMS).exists()  # by this run, or by it before a resume
        step_rows = run.read_metrics(epoch, GRAD_NORMS, rows_through=self._step_rows_through(
            history.rows, resumption.previous)) if logged_steps else []
        changes = {**resumption.changes,
                   **self._changed_data_files(run, meta, resumption, files)}
        level = pruning[1] if pruning and pruning[0] and pruning[1] is not None else 0.0
        rechosen = self._chosen_by_another(resumption, changes, epoch)
        if rechosen:  # its count of epochs since the best is the other monitor's too
            history.best_value, history.epochs_since_best = None, 0
        stopped = self._should_stop(history, level)
        trains = not stopped and epoch < self.spec.train.epochs
        if changes and not trains:
            _refuse_changes_no_epoch_takes(run.path, changes, epoch, stopped)
        if changes and stopped:
            _refuse_a_stop_of_the_changes(run.path, resumption.previous, self.spec, history,
                                          epoch)
        if trains:
            self._say_if_rounding_differs(run, meta)
        # the records of resumes after the checkpoint, which trained nothing kept, go
        earlier = (run.read_spec_changes(dropping_after=epoch)
                   if changes or resumption.dropped else "")
        run.continue_run()
        _best_of_its_epoch(run, meta, best_meta)
        run.write_metrics(history.rows)  # the rows after the checkpoint's epoch go
        if logged_steps:  # as its per-step rows; the epochs from here on append theirs
            run.write_metrics(step_rows, GRAD_NORMS)
        # a record, and spec.yaml, for a resume that trains with its changes; one that trains
        # nothing (early stopping keeps the run stopped, no epoch is left) records none, and
        # spec.yaml says what the run was trained with
        if changes and trains:
            self._record_changes(run, epoch, changes, history, resumption.previous_spec, earlier)
            evaluated = evaluated_changes(changes)
            _choose_best_again(run, history, evaluated, epoch,
                               self.data.preprocessing.normalizer is not None)
            if rechosen and not evaluated:  # (said already)
                run.say(f"{run.path}: the best epoch was chosen by the {rechosen[0][1]}imum of "
                        f"{rechosen[0][0]}, now by the {rechosen[1][1]}imum of {rechosen[1][0]}: "
                        f"it is chosen again from epoch {epoch + 1} on")
        else:
            if resumption.dropped:
                run.write_spec_changes(earlier)
            if resumption.moved_data and trains:
                # the data file moved, data.path following it: spec.yaml names where it is
                # now, as the checkpoints this resume writes do (no record: the same data)
                run.write_spec(self.spec_text)
            else:
                if resumption.stale:
                    run.write_spec(resumption.previous_spec)
                # spec.yaml keeps its text, which the checkpoints name by its digest: resolved
                # again, by a later nnrun, the same spec may read otherwise (an escape, a field)
                self.spec_text = resumption.previous_spec
                self.spec_meta = ckpt.spec_text_meta(self.spec_text)
            if not trains:  # the run's numbers stay those of the spec it trained with
                self.trained_spec = resumption.previous
        return Begun(state, history, step=meta["step"], first_epoch=epoch + 1, pruning=pruning)

    def _chosen_by_another(self, resumption: Resumption, changes: dict, epoch: int):
        """(before, now) where a resume with epochs to train changes what the best epoch is
        chosen by (train.early_stopping's monitor or mode: the best value so far is another
        metric's, or better the other way), else None."""
        if not changes or epoch >= self.spec.train.epochs:
            return None
        before = monitor_of(resumption.previous, self.data.val is not None)[:2]
        now = self._monitor()[:2]
        return (before, now) if before != now else None

    def _step_rows_through(self, rows: list[dict], trained) -> int:
        """The last epoch up to the checkpoint's that logged per-step gradient norms (its
        metrics row has the layers' means), where every epoch logs rows (every_steps no more
        than its steps); 0 where rows may skip epochs."""
        logged = [row["epoch"] for row in rows if any(key.startswith(LAYER_PREFIX) for key in row)]
        setting = trained.train.log_grad_norms if trained is not None else None
        every = getattr(setting, "every_steps", None)
        # the epochs' steps, at the batch size they were trained with (a resume may change it)
        batch = max(self.spec.train.batch_size, trained.train.batch_size if trained else 0)
        steps = math.ceil(len(self.data.train.x) / batch)
        return max(logged, default=0) if every and every <= steps else 0

    def _changed_data_files(self, run: RunDirectory, meta: dict, resumption: Resumption,
                            files: dict) -> dict:
        """The data files changed in place since the checkpoint's epoch, as changes: refused
        as a change of the spec's data is, without --allow-changes (or a resume after the
        checkpoint that was allowed the same)."""
        changes = data_file_changes(meta["data_sha256"], files, self.data_sha256,
                                    resumption.changes)
        if not resumption.allow_changes:
            refuse_data_changes(run.path, _not_allowed(changes, resumption.allowed))
        return changes

    def _new_optimizer_state(self, previous) -> set[str]:
        """The optimizer state the checkpoint's optimizer did not keep (momentum added by a
        resume with --allow-changes): it starts at 0, as a new run's does."""
        if previous is None:
            return set()
        kept = optimizer_slots(previous.optimizer)
        return {name for name in self.model.train_step.optimizer_state
                if name.rsplit(".", 1)[1] not in kept}

    def _saved_shapes(self, new_state: set[str]) -> dict:
        return {name: shape for name, shape in self.expected_shapes().items()
                if name not in new_state}

    def _read_checkpoint(self, run: RunDirectory, new_state: set[str]):
        """last.npz's state (and `new_state`, zeros), meta (checked: checkpoint.CheckpointMeta)
        and pruning masks."""
        saved, meta = ckpt.load_checkpoint(run.file(LAST), self._saved_shapes(new_state),
                                           self.spec.dtype, self.spec)
        state = {name: saved[name] if name not in new_state else np.zeros(shape, self.spec.dtype)
                 for name, shape in self.expected_shapes().items()}
        pruning = None  # (masks, level), restored on every rank
        if self.pruner:
            shapes = {name: self.model.param_infos[name].shape for name in self.pruner.weight_names}
            pruning = ckpt.load_masks(run.file(LAST), shapes), meta["pruning_sparsity"]
        return state, meta, pruning

    def _record_changes(self, run: RunDirectory, epoch: int, changes: dict, history,
                        previous_spec: str, earlier_changes: str) -> None:
        if ("train.epochs" in changes and depends_on_length(self.spec.optimizer.schedule)
                and epoch < self.spec.train.epochs):  # else nothing is left to train
            history.schedule_start = epoch
            run.say(f"{run.path}: train.epochs changed from {changes['train.epochs']['old']} to "
                    f"{self.spec.train.epochs}: the cosine schedule restarts at epoch {epoch + 1}")
        run.record_spec_change(epoch, changes, previous_spec, earlier_changes,
                               self.spec_meta["spec_sha256"])
        run.write_spec(self.spec_text)

    def train_epoch(self, epoch: int, guard: InterruptGuard | None = None) -> dict:
        rng, batches = epoch_batches(self.spec, len(self.data.train.x), epoch)
        batches = self._rank_batches(batches)
        if self.pruner:
            self.pruner.start_epoch(epoch, self.state)
        with EpochProgress(epoch, self.spec.train.epochs, len(batches),
                           disabled=self.quiet) as progress:
            row = self._epoch_row(epoch, batches, rng, progress, guard)
            progress.close(row)
        return row

    def _epoch_row(self, epoch: int, batches: list[np.ndarray], rng, progress: EpochProgress,
                   guard) -> dict:
        """The epoch's steps, and its row of metrics.jsonl."""
        totals = self.totals = Totals(self.metrics, self.spec.loss.type,
                                      getattr(self.spec.loss, "ignore_index", None), self.backend)
        losses = StepLosses(self.backend.xp, len(batches))
        started = time.perf_counter()
        # Augmentation draws from `rng` between the steps' dropout keys: its runs take their
        # steps' scalars one by one (their batches come from the host anyway)
        epoch_scalars = (None if self.spec.data.augment
                         else self._step_scalars(epoch, batches, rng, 0, len(batches)))
        for index, batch in enumerate(self._epoch_batches(batches, rng)):
            scalars = epoch_scalars or self._step_scalars(epoch, batches, rng, index, index + 1)
            lr = scalars.lr(index)
            feeds = scalars.feeds(index)
            outputs = self.train_step(batch, feeds)
            losses.record(outputs["loss"])
            with np.errstate(all="ignore"):  # a diverged step's outputs; reported when read
                totals.add(outputs, batch, counts=losses.finite,
                           loss_share=feeds.get("loss_share"))
            read = self.read_every_step or progress.refresh_due()
            self._check_steps(epoch, len(batches), losses if read else None, guard, outputs)
            progress.update(totals.running_loss() if read and totals.count else None)
        self._check_steps(epoch, len(batches), losses, guard)
        totals.add_over_ranks(self.ranks)
        seconds = time.perf_counter() - started
        row = {"epoch": epoch, **totals.means("train_"), "lr": lr}
        self._warn_if_loss_rose(row["train_loss"], losses, epoch, lr)
        self._average_running_statistics()
        self._check_state_is_finite(epoch, row, lr)
        row.update(self.evaluate_split("val") or self.no_split("val"))
        row.update({"epoch_s": round(seconds, 4), "samples_per_s": round(totals.count / seconds, 1)})
        row.update(totals.grad_norms())
        if self.grad_norms:
            row.update(self.grad_norms.epoch_columns())
        if self.pruner:
            row["sparsity"] = round(self.pruner.sparsity(self.state, self.backend.to_host), 6)
        return row

    def _warn_if_loss_rose(self, loss: float, losses, epoch: int, lr: float) -> None:
        """A loss ten times its first step's, still finite: the updates overshoot (a learning
        rate too high), which otherwise shows only as huge numbers. Said once. Not of the
        perceptron's criterion, which grows with the weights' scale whatever the rate (a
        perceptron from zeros learns the same boundary at any rate), nor from a first loss of
        0, ten times which is no measure."""
        if self.first_loss is None:  # the whole batch's: the mean of the ranks' losses
            mine = float(self.backend.to_host(losses.values[0]))
            self.first_loss = float(np.mean(self.ranks.gather(mine)))
        if self.spec.loss.type == "perceptron" or self.first_loss <= 0:
            return
        if not self.said_loss_rose and loss > 10 * self.first_loss and loss > self.first_loss + 1:
            warn(f"train_loss rose from {self.first_loss:.4g} at the first step to {loss:.4g} "
                 f"in epoch {epoch}: {self._overshoot_causes(lr)}")
            self.said_loss_rose = True

    def _overshoot_causes(self, lr: float) -> str:
        """Why a finite loss rose: the learning rate; first, where a new run's first loss was
        already huge, the scale of the initial weights or data (lowering the rate alone then
        leaves layers dead, as the divergence's message says too)."""
        causes = [f"the updates overshoot; lower optimizer.lr ({lr:g} now)"]
        scale = self._scale_cause(self.first_loss if self.first_epoch == 1 else None)
        if scale:
            causes.insert(0, scale)
        if not self.spec.optimizer.clip_grad_norm:
            causes.append("or set optimizer.clip_grad_norm (e.g. 1.0)")
        return "; ".join(causes)

    def _rank_batches(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """The epoch's batches as this run takes them: --max-steps of them, split evenly over
        the ranks."""
        if self.max_steps:
            batches = batches[: self.max_steps]
        return self.ranks.even_batches(batches)

    def _epoch_batches(self, batches: list[np.ndarray], rng):
        """This rank's share of each batch on the backend: gathered there when the training
        split is, else copied batch by batch (augmented on the host when asked)."""
        resident = self.resident.get("train")
        if resident is not None:
            return resident.gather([batch[self.ranks.shard(len(batch))] for batch in batches])
        return (copied_batch(self.model, *self._rank_share(self.data.train, batch, rng))
                for batch in batches)

    def learning_rate(self, epoch: int, index: int, steps: int) -> float:
        return learning_rate(self.spec.optimizer, epoch - 1, index, steps, self.spec.train.epochs,
                             restarted_at=self.history.schedule_start)

    def _rank_share(self, train, batch: np.ndarray, rng):
        """This rank's share of a batch (all of it in one process), augmented as the whole
        batch is: every rank draws the same numbers, so N ranks see the samples one sees."""
        share = self.ranks.shard(len(batch))
        if not self.spec.data.augment:
            return train.x[batch[share]], train.y[batch[share]]
        augmented = augment_batch(train.x[batch], self.spec.data.augment, rng,
                                  self.augment_background)
        return augmented[share], train.y[batch[share]]

    def _step_scalars(self, epoch: int, batches: list[np.ndarray], rng, start: int,
                      stop: int) -> StepScalars:
        """The scalars of the epoch's steps `start` to `stop` on the backend, their dropout keys
        drawn from `rng` in the steps' order. Every rank draws the same keys; a rank's share of
        an evenly split batch starts at rank * share, so the ranks' masks are together one
        process's mask of the batch."""
        indices = range(start, stop)
        steps = [batches[index] for index in indices]
        share_sizes = [len(batch[self.ranks.shard(len(batch))]) for batch in steps]
        return self.model.step_scalars(
            start, [self.learning_rate(epoch, index, len(batches)) for index in indices],
            self.global_step + 1, rng.integers(2**63, size=len(steps)),
            [self.ranks.rank * size for size in share_sizes],
            [self._loss_share(batch) for batch in steps])

    def _loss_share(self, indices: np.ndarray) -> float:
        """What this rank's loss on its share of the batch of `indices` is scaled by."""
        if not self.model.reads_loss_share:
            return 1.0
        return self.ranks.loss_share(self.data.train.y[indices], self.spec.loss.ignore_index)

    def train_step(self, batch, scalars: dict) -> dict:
        """One step on a batch (batches.Batch) with its scalars (StepScalars.feeds); its loss
        is checked when read (_check_steps)."""
        self.global_step += 1
        feeds = self.model.batch_feeds(self.state, batch.x, batch.targets, scalars)
        # A diverging loss is reported when read, in one line; NumPy's warnings would only add
        # noise (the steps after it, until the read, run on non-finite numbers).
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
                self.ranks.waiting("during a training step"):
            outputs, updates = self.model.step_executor.run(feeds)
            self.state.update(updates)
            if self.pruner:
                self.pruner.apply(self.state)
        return outputs

    def _check_steps(self, epoch: int, steps: int, losses, guard, outputs=None) -> None:
        """After a step: when `losses` is given, reads them (and the totals) in one transfer
        and stops at the first non-finite one, with its step; stops on a signal any rank
        received. The ranks of a data-parallel run read every step and agree on its loss."""
        # On GPUs the step's NCCL all-reduce runs behind the host: a rank whose peer has died
        # blocks here, in the read, which the watchdog must cover as it covers MPI's waits.
        with self.ranks.waiting("reading a step's loss"):
            index, loss = losses.read(self.totals) if losses is not None else (None, 0.0)
        loss, signal_number = self.ranks.agree(loss, guard.received if guard else None)
        if self.grad_norms and outputs is not None:
            self.grad_norms.add(self._host_grad_norms(outputs), self.global_step, epoch,
                                index + 1, loss, steps)
        if not math.isfinite(loss):
            lr = self.learning_rate(epoch, index, steps)
            self._keep_diverged_epoch(epoch, index + 1, steps, lr)
            what = f"loss became {loss} at epoch {epoch}, step {index + 1}"
            # a new run's first step: its initial weights' loss (a resumed checkpoint's
            # weights came of the updates)
            if epoch == self.first_epoch == 1 and index == 0:
                message = f"{what}, before any update: {self._start_not_finite()}; {self._kept()}"
            else:
                message = self._diverged_message(what, lr, self._initial_loss(epoch, losses))
            self.ranks.raise_together(TrainingError(message))
        if signal_number:
            self.ranks.raise_together(Interrupted(signal_number))

    def _host_grad_norms(self, outputs: dict) -> dict:
        """The step's grad_norm/<param> outputs, read in one transfer."""
        names = [name for name in outputs if name.startswith(GRAD_NORM_PREFIX)]
        if not names:
            return {}
        xp = self.backend.xp
        return dict(zip(names, self.backend.to_host(xp.stack([outputs[n] for n in names]))))

    def _keep_diverged_epoch(self, epoch: int, batch: int, batches: int, lr: float) -> None:
        """metrics.jsonl keeps what the diverged epoch measured before its loss did (a resume
        drops that row with the epoch), with its place among the epoch's `batches` for a plot;
        grad-norms.jsonl the step that diverged."""
        totals = self.totals
        if self.ranks.size > 1:
            # The ranks read every step: this rank's last read holds the diverged step when
            # its own share of it was finite; the row is of the steps before it.
            totals.forget_last_read()
        totals.add_over_ranks(self.ranks)
        if self.run_directory is None:
            return  # rank 0 writes
        row = {"epoch": epoch, "diverged_at_batch": batch, "batches": batches}
        if totals.count:
            row.update({**totals.means("train_"), **totals.grad_norms()})
        row["lr"] = lr
        self._keep_stopped_epoch(row)

    def _keep_stopped_epoch(self, row: dict) -> None:
        """metrics.jsonl with the row of the epoch a diverged or overflowed run stopped in,
        and grad-norms.jsonl with its steps, which show why (rank 0's; a resume drops them
        with the epoch)."""
        if self.grad_norms:
            row.update(self.grad_norms.epoch_columns())
            self._write_step_norms(self.run_directory)
        self.run_directory.append_metrics([row])

    def _write_step_norms(self, run: RunDirectory) -> None:
        """With log_grad_norms' every_steps: the per-step rows logged since the last write."""
        if self.grad_norms and self.grad_norms.every:
            run.append_metrics(self.grad_norms.take_step_rows(), GRAD_NORMS)

    def check_signals(self, guard) -> None:
        """Between epochs and after the final evaluation: a signal any rank received stops
        them all."""
        _, signal_number = self.ranks.agree(0.0, guard.received if guard else None)
        if signal_number:
            self.ranks.raise_together(Interrupted(signal_number))

    def _average_running_statistics(self) -> None:
        """Batchnorm's running statistics are each rank's own during the epoch; the model's
        are their mean over the ranks (nothing changes in one process)."""
        with self.ranks.waiting("averaging the running statistics"):
            for name in self.model.lowered.state:
                self.backend.allreduce_mean(self.state[name])

    def _check_state_is_finite(self, epoch: int, row: dict, lr: float) -> None:
        """The loss can stay finite while the state overflows: Adam's squared gradients
        reach inf and its update is then 0. Checked once an epoch, before the checkpoint,
        which resume, eval and predict would refuse. `row`: the epoch's training numbers."""
        xp, names = self.backend.xp, list(self.state)
        if not names:  # a model of no parameters (pooling alone): nothing to overflow
            return
        finite = self.backend.to_host(xp.stack([xp.isfinite(self.state[n]).all() for n in names]))
        if finite.all():
            return
        name = names[int(np.argmin(finite))]
        if self.run_directory is not None:  # rank 0 writes the row, marked with what overflowed
            self._keep_stopped_epoch({**row, "overflowed": name, **self.totals.grad_norms()})
        what = (f"'{name}' overflowed ({self.spec.dtype}) in epoch {epoch} while the loss "
                f"stayed finite ({row['train_loss']:.4g})")
        if name in self.model.train_step.optimizer_state:
            message = f"{what}; {self._gradients_too_large(lr)}; {self._kept()}"
        else:
            message = self._diverged_message(what, lr)
        self.ranks.raise_together(TrainingError(message))

    def _gradients_too_large(self, lr: float) -> str:
        """An optimizer's state holds gradients (momentum) or their squares (Adam, RMSprop,
        Adagrad), which the learning rate does not scale: the gradients' size is the cause,
        from the data or weights' scale first, the updates that grew the weights after."""
        causes = ("the optimizer's state keeps the gradients or their squares, which the "
                  "learning rate does not scale: gradients this large come from inputs, "
                  "targets or initial weights of a large scale: scale them down, or from "
                  f"updates that grew the weights: lower optimizer.lr ({lr:g} now)")
        if not self.spec.optimizer.clip_grad_norm:
            causes += "; set optimizer.clip_grad_norm (e.g. 1.0), which bounds them"
        return self._loss_scale_cause() + causes

    def _loss_scale_cause(self) -> str:
        """A loss.scale large enough to be the cause, said first (it multiplies every
        gradient), else ""."""
        scale = getattr(self.spec.loss, "scale", 1.0)
        if scale < LOSS_SCALE_SUSPECT:
            return ""
        return (f"loss.scale ({scale:g}) multiplies the loss and every gradient by as much: "
                "lower it; else ")

    def _initial_loss(self, epoch: int, losses) -> float | None:
        """A new run's first loss (its initial weights', the batch's mean over the ranks),
        when its loss stopped being finite in its first epoch; else None."""
        if not (epoch == self.first_epoch == 1 and losses is not None):
            return None
        own = float(self.backend.to_host(losses.values[:1])[0])
        return self.ranks.agree(own, None)[0]  # every rank is here: the loss was agreed on

    def _diverged_message(self, what: str, lr: float, initial_loss: float | None = None) -> str:
        optimizer = self.spec.optimizer
        causes = [f"the learning rate ({lr:g}) may be too high: lower optimizer.lr"]
        scale = self._scale_cause(initial_loss)
        if scale:
            causes.insert(0, scale)
        decay = getattr(optimizer, "weight_decay", 0.0)
        # SGD's decay, and AdamW's decoupled one, scale the weights by 1 - lr * decay each
        # step; Adam's, RMSprop's and Adagrad's pass through the normalized gradient
        if decay and lr * decay >= 1 and optimizer.type in ("sgd", "adamw"):
            causes.insert(0, f"weight_decay ({decay:g}) times the learning rate is "
                             f"{lr * decay:g}, 1 or more: each step flips or "
                             "grows the weights; lower optimizer.weight_decay")
        if not optimizer.clip_grad_norm:
            causes.append("gradients may be exploding: set optimizer.clip_grad_norm (e.g. 1.0)")
        return f"{what}; {self._loss_scale_cause()}{'; '.join(causes)}; {self._kept()}"

    def _scale_cause(self, initial_loss: float | None) -> str | None:
        """A cause of a loss that grew, before the learning rate: training inputs far beyond
        a scale of 1, else a new run's first loss (`initial_loss`) already huge."""
        inputs = self._inputs_scale_cause()
        scale = getattr(self.spec.loss, "scale", 1.0)  # large through loss.scale alone: not
        if inputs or initial_loss is None or initial_loss / scale <= INITIAL_LOSS_TOO_LARGE:
            return inputs
        return (f"the loss of the initial weights was already {initial_loss:.3g}: "
                f"{INITIAL_WEIGHTS} or the data (targets or inputs) are of too large a scale; "
                "scale them down")

    def _inputs_scale_cause(self) -> str | None:
        """Training inputs far beyond a scale of 1 once preprocessed (an outlier, or
        `normalize: none` on raw values): any step on them overshoots, whatever the rate."""
        largest, sample = largest_input(self.data.train.x)
        if not largest > INPUTS_TOO_LARGE:
            return None
        fix = ("set data.normalize: standard, or " if self.spec.data.normalize == "none"
               else "")
        return (f"the training inputs reach {largest:.3g} (at sample {sample}) once "
                f"preprocessed: {fix}scale them down or remove the outliers")

    def _start_not_finite(self) -> str:
        """Why the loss of the initial weights, before any update, is not finite: inputs far
        beyond a scale of 1, named first where they are (a wider dtype alone then only moves
        the overflow to the first steps)."""
        inputs = self._inputs_scale_cause()
        if inputs:
            return f"{inputs} (the learning rate is not the cause)"
        wider = "" if self.spec.dtype == "float64" else ", or train in float64 (dtype: float64)"
        return (f"{INITIAL_WEIGHTS} or the data (targets or inputs too large for "
                f"{self.spec.dtype}) make it so, not the learning rate; scale them down{wider}")

    def _kept(self) -> str:
        kept = self.run_dir / LAST
        if kept.exists():
            return (f"last good checkpoint: {kept} (resume from it with "
                    f"{option('--resume', str(self.run_dir))} and {option('--allow-changes')} "
                    "once the spec is changed)")
        return f"no checkpoint was written yet ({option('--out', str(self.run_dir))} starts over)"

    def _resume_advice(self, what: str) -> str:
        """`what` stopped the run (a signal, a failed write), then what is kept and the command
        that goes on from it."""
        run = self.run_directory
        removed = run is not None and run.created and not run.started  # RunDirectory.__exit__
        if removed or not (self.run_dir / SPEC).is_file():  # stopped before it wrote its spec
            command = _start_command(self.source, self.run_dir, self.launch)
            return f"{what}; nothing was trained; start again with: {command}"
        if self.saved_epoch is None and (self.run_dir / LAST).is_file():  # while resuming
            saved = f"the checkpoint in {self.run_dir / LAST} is intact"
        elif self.saved_epoch:
            saved = f"the checkpoint of epoch {self.saved_epoch} is intact in {self.run_dir / LAST}"
        else:
            saved = "no checkpoint was written yet (resuming starts from epoch 1)"
        if self._spec_written():
            command = resume_command(self.run_dir, self.launch)
        else:  # stopped while a resume began, before its spec.yaml: the settings again
            command = _resume_with_settings(self.source, self.run_dir, self.launch,
                                            self.resumption.allow_changes)
        return f"{what}; {saved}; resume with: {command}"

    def _spec_written(self) -> bool:
        """Whether the run's spec.yaml holds the spec this command trains (a resume writes
        its changed spec only once it has read and checked what it resumes)."""
        try:
            return (self.run_dir / SPEC).read_text(encoding="utf-8") == self.spec_text
        except (OSError, ValueError):
            return False

    # --- evaluation -----------------------------------------------------------------------

    def evaluate_split(self, split: str, state=None) -> dict:
        data = getattr(self.data, split)
        if data is None:
            return {}
        state = state or self.state
        result = evaluate(self.model, state, data, split, self.metrics,
                          batch_size=self.evaluation_batch, ranks=self.ranks,
                          resident=self.resident.get(split))
        self._warn_if_not_finite(split, result.get(f"{split}_loss"), data, state)
        return result

    def _warn_if_not_finite(self, split: str, loss: float | None, data, state: dict) -> None:
        """A held-out loss of inf or NaN for finite inputs (the data was checked on load): the
        model overflows its dtype on some samples. Said once a split, with what the best
        checkpoint and early stopping make of it."""
        if loss is None or math.isfinite(loss) or split in self.said_not_finite:
            return
        self.said_not_finite.add(split)
        value, sample = largest_input(data.x)
        largest = largest_magnitude({name: self.backend.to_host(state[name])
                                     for name in self.model.param_infos})
        monitor, _, stopping = self._monitor()
        follows = "early stopping and best.npz follow" if stopping else "best.npz follows"
        follows = (f"; {follows} {monitor}, where a NaN is never an improvement (the best "
                   f"epoch stays one of a finite {monitor}, or the first)"
                   if monitor == f"{split}_loss" else "")
        warn(f"{split}_loss is {loss}: the model's outputs are inf or NaN on some of the "
             f"{split} split's samples, beyond {self.spec.dtype} (the split's largest input "
             f"value is {value:.3g}, at its sample {sample}; the largest weight "
             f"{largest:.3g}){follows}")

    # --- after each epoch -----------------------------------------------------------------

    def _after_epoch(self, run: RunDirectory, epoch: int, row: dict) -> None:
        """The best value so far, and the checkpoints."""
        monitor, mode, stopping = self._monitor()
        value = row.get(monitor)
        history = self.history
        improved = value is not None and (
            self._first_at_target() or history.best_value is None
            # a NaN or infinite best (a validation loss that overflowed) is beaten by any
            # finite value; a NaN is never an improvement, so early stopping still counts
            or (math.isfinite(value) and not math.isfinite(history.best_value))
            or _better(value, history.best_value, mode, stopping.min_delta if stopping else 0.0))
        if improved:
            history.best_value, history.best_epoch, history.epochs_since_best = value, epoch, 0
            history.best_sparsity = self.pruner.level if self.pruner else None
        else:
            history.epochs_since_best += 1
        meta = self._meta(epoch)
        state = self.checkpoint_state()
        # last.npz first: a run stopped before best.npz follows has the best epoch's state in
        # last.npz, which its resume copies (_best_of_its_epoch)
        ckpt.save_checkpoint(run.file(LAST), state, meta)
        self.saved_epoch = epoch
        if improved:
            ckpt.save_checkpoint(run.file(BEST), state, meta)
        if self.preprocessing_unsaved:
            save_preprocessing(run.path, self.data.preprocessing)
            self.preprocessing_unsaved = False

    def _first_at_target(self) -> bool:
        """The first epoch at the pruning target: the best is chosen among the epochs at the
        final sparsity, so the ramp's less sparse (and often better) epochs stop counting."""
        pruner, best = self.pruner, self.history.best_sparsity
        return bool(pruner and pruner.at_target() and (best is None or best < pruner.level))

    def _should_stop(self, history: History | None = None,
                     pruning_level: float | None = None) -> bool:
        """Whether early stopping ends the run now; `history` and `pruning_level`: a
        checkpoint's, before the run and its pruner are restored from it."""
        stopping = self.spec.train.early_stopping
        history = self.history if history is None else history
        if self.pruner and not self.pruner.reaches_target(
                self.pruner.level if pruning_level is None else pruning_level):
            return False  # a pruning ramp makes the loss worse on purpose: let it finish
        return bool(stopping and history.epochs_since_best >= stopping.patience)

    def metric_names(self) -> list[str]:
        """The keys of metrics.jsonl an early-stopping monitor may name."""
        return monitor_names(self.spec, self.data.val is not None, self.data.task)

    def _check_monitor(self) -> None:
        stopping = self.spec.train.early_stopping
        if stopping and stopping.monitor not in self.metric_names():
            origin = Origin("train.early_stopping.monitor",
                            keys=("train", "early_stopping", "monitor"))
            raise SpecError([self.source.diagnostic(origin, unknown_monitor(
                stopping.monitor, self.metric_names(), self.data.val is not None,
                task=self.data.task))])

    def _monitor(self):
        return monitor_of(self.spec, self.data.val is not None)

    def _meta(self, epoch: int) -> dict:
        history = self.history
        return {"epoch": epoch, "step": self.global_step, "spec_hash": ckpt.spec_hash(self.spec),
                "seed": self.spec.seed, "rng": {"seed": self.spec.seed, "next_epoch": epoch + 1},
                "best_value": history.best_value, "best_epoch": history.best_epoch,
                "epochs_since_best": history.epochs_since_best,
                "schedule_start": history.schedule_start, "version": 1,
                "data_sha256": self.data_sha256,
                "preprocessing_sha256": self.preprocessing_sha256,
                **self._arithmetic(), **self._pruning_meta(), **self.spec_meta}

    def _arithmetic(self) -> dict:
        """What the order of the step's sums depends on: the backend, the CPU threads (BLAS's
        products and nnrun's splits: docs/architecture.md) and the ranks."""
        threads = workers() if self.backend.host_threads else None
        return {"backend": self.backend.name, "threads": threads, "ranks": self.ranks.size}

    def _say_if_rounding_differs(self, run: RunDirectory, meta: dict) -> None:
        """A resume that sums in another order than the checkpoint's epoch did is not the
        uninterrupted run to the last digit: said, with what differs."""
        now = self._arithmetic()
        before = {key: meta.get(key) for key in now}
        if before["backend"] != now["backend"]:  # threads are the CPU's; ranks still count
            before["threads"] = now["threads"] = None
        differ = [key for key, value in before.items() if value is not None and value != now[key]]
        if not differ:
            return
        # the checkpoint keeps its own epoch's settings (an earlier resume may have changed them)
        match = f" (--threads {before['threads']} resumes as it trained)" if differ == [
            "threads"] else ""
        ranks = (before["ranks"], now["ranks"]) if "ranks" in differ else (1, 1)
        last = len(self.data.train.x) % self.spec.train.batch_size  # 0: every batch is whole
        left_out = [last % count for count in ranks]  # cut to a multiple of the ranks
        how_far = ("may differ in the last digits from an uninterrupted run's"
                   if left_out[0] == left_out[1] else
                   f"will differ from an uninterrupted run's: each epoch's last batch of {last} "
                   f"sample{'s' if last > 1 else ''} leaves out {left_out[1]} of "
                   f"{'them' if last > 1 else 'it'}, against {left_out[0]} before (a batch is "
                   "cut to a multiple of the ranks)")
        why = f"sums may round otherwise, so its numbers {how_far}"
        if ranks[0] != ranks[1] and self._batchnorm_per_rank():
            why = ("batchnorm normalises with each rank's share of a batch (train.sync_batchnorm "
                   "is false), a share of another size now, so its numbers will differ from an "
                   "uninterrupted run's")
        run.say(f"{run.path}: the checkpoint's epoch {meta['epoch']} trained on "
                f"{_arithmetic_words(before, differ)}, this resume runs on "
                f"{_arithmetic_words(now, differ)}: {why}{match}")

    def _batchnorm_per_rank(self) -> bool:
        """Whether a batchnorm layer normalises with each rank's own share of a batch."""
        return not self.spec.train.sync_batchnorm and any(
            layer.type == "batchnorm" for layer in self.model.lowered.layers)

    def _pruning_meta(self) -> dict:
        if not self.pruner:
            return {}
        return {"pruning_sparsity": self.pruner.level, "best_sparsity": self.history.best_sparsity}

    def _finish(self, run: RunDirectory | None, started: float, stopped_early: bool,
                guard=None) -> dict:
        if self.trained_spec is not None:  # a resume that trained nothing: its final model
            # and numbers are the run's, of the spec.yaml it keeps (restore_best, metrics)
            self.spec = self.trained_spec
            self.metrics = tracked_metrics(self.spec, self.data.task)
        # Training is over: its state and the step's buffers go before the final checkpoint is
        # read and evaluated beside them.
        self.state, step_path = {}, self.model.release_training_step()
        # The ranks evaluate together: a signal on one of them waits for them all to hear of
        # it (MpiRanks.signal_guard; alone, it stops the evaluation at once, as before).
        final = self._final_metrics(self.ranks.from_root(lambda: self._final_checkpoint(run)))
        self.check_signals(guard)
        rows = self.history.rows
        wall = time.perf_counter() - started
        summary = {
            "backend": self.backend.name, "step_path": step_path,
            "epochs_run": len(rows), "stopped_early": stopped_early,
            "best_epoch": self.history.best_epoch, "final": final,
            "samples_per_s": overall_rate(rows),
            "wall_s": round(wall, 3), "run_dir": str(self.run_dir),
        }
        if self.ranks.size > 1:
            summary["ranks"] = self.ranks.size  # samples_per_s is then the ranks' together
        if run is not None:
            run.write_summary(summary)
        if not self.quiet:
            print_final_table(summary, rows, range(self.first_epoch, self.saved_epoch + 1))
        return summary

    def _final_checkpoint(self, run: RunDirectory) -> Path:
        """The run's model, whose numbers `train` reports and `eval`/`predict` use by default:
        best.npz (the best epoch by the monitor), or last.npz with restore_best: false."""
        stopping = self.spec.train.early_stopping
        keep_last = stopping is not None and not stopping.restore_best
        return run.file(LAST) if keep_last or not run.file(BEST).exists() else run.file(BEST)

    def _final_metrics(self, checkpoint: Path) -> dict:
        """Every number from one checkpoint: train_loss is its epoch's line of metrics.jsonl,
        the val and test numbers are evaluated on its weights."""
        model_shapes = {name: info.shape for name, info in self.model.param_infos.items()}
        saved, meta = self.ranks.from_root(  # the model's arrays: not its optimizer state
            lambda: ckpt.load_checkpoint(checkpoint, model_shapes, self.spec.dtype))
        state = {name: self.backend.from_host(value) for name, value in saved.items()}
        del saved
        epoch = meta["epoch"]
        row = next((row for row in self.history.rows if row["epoch"] == epoch), {})
        final = {"checkpoint": checkpoint.name, "epoch": epoch, "train_loss": row.get("train_loss")}
        if self.pruner:
            final["sparsity"] = round(self.pruner.sparsity(state, self.backend.to_host), 6)
            self._say_if_less_sparse(checkpoint, epoch, meta.get("pruning_sparsity") or 0.0,
                                     final["sparsity"])
        for split in ("val", "test"):  # the same keys with or without a split
            final.update(self.evaluate_split(split, state) or self.no_split(split))
        return final

    def no_split(self, split: str) -> dict:
        """A split's keys, null: a run without that split writes them all the same."""
        return {f"{split}_{name}": None for name in ("loss", *map(metric_name, self.metrics))}

    def _say_if_less_sparse(self, checkpoint: Path, epoch: int, level: float,
                            sparsity: float) -> None:
        """`level`: the ramp's at that epoch; `sparsity`: the zeros counted (as the sparsity
        column and summary.json say; each tensor's count is rounded)."""
        if self.pruner.reaches_target(level):
            return
        start, last = self.pruner.pruning.start_epoch, self.spec.train.epochs
        why = (f"the ramp starts at epoch {start}, after the run's last ({last})" if start > last
               else f"the run ended before the ramp did (end_epoch {self.pruner.end_epoch})")
        self.say(f"{self.run_dir}: {checkpoint.name} (epoch {epoch}) is pruned to "
                 f"{sparsity:.1%}, less than train.pruning.target_sparsity "
                 f"{self.pruner.target:.1%}: {why}; train more epochs ({option('--resume')} with "
                 f"{option('--epochs')}) to reach the target")


# --- helpers --------------------------------------------------------------------------------


def no_data_section(source, needs: str) -> SpecError:
    """The spec's error for a command that needs data of a spec without any, at the top of the
    file (or the --set that removed it)."""
    origin = Origin("data", keys=("data",))
    return SpecError([source.diagnostic(origin, f"{needs} a data section, where the samples "
                                                f"come from; add one, e.g. {_data_example(source)}"
                                                " (docs/spec-reference.md, data)")])


def _data_example(source) -> str:
    """A data section for the model's input: a named dataset of its samples' shape (digits
    where none is declared), else a file's."""
    shape = source.spec.model.input_shape
    named = "digits" if shape is None else next(
        (name for name, info in DATASETS.items() if list(info.input_shape or ()) == shape), None)
    return (f"data: {{dataset: {named}}}" if named else
            "data: {dataset: npz, path: data.npz} (a file of arrays x and y)")


def largest_input(x: np.ndarray) -> tuple[float, int]:
    """The largest |value| of a split's inputs, and the sample that holds it (no |x| copy of
    the data: each sample's largest and smallest)."""
    rows = x.reshape(len(x), -1)
    largest = np.maximum(rows.max(axis=1), -rows.min(axis=1))
    sample = int(largest.argmax())
    return float(largest[sample]), sample


# A first loss above this (cross-entropy over K classes starts near ln K, a mean squared error
# of standardized targets near 1) tells of weights or data of too large a scale
INITIAL_LOSS_TOO_LARGE = 1e4
# Inputs past this once preprocessed (standardized ones lie within a few units; raw 8-bit
# pixels reach 255) tell of an outlier or of data left unscaled
INPUTS_TOO_LARGE = 1e4
LOSS_SCALE_SUSPECT = 1e3  # a loss.scale from which a divergence names it first
INITIAL_WEIGHTS = "the initial weights (the initializers' std or limit, init_from values)"


class StepLosses:
    """The losses of an epoch's steps, on the backend until read, and whether every one so
    far was finite (a backend bool: the totals stop counting at the first that is not)."""

    def __init__(self, xp, steps: int):
        self.xp = xp
        self.values = xp.zeros(max(steps, 1), dtype=xp.float64)
        self.finite = xp.ones((), dtype=bool)
        self.recorded = self.unread = 0

    def record(self, loss) -> None:
        self.values[self.recorded] = loss
        self.xp.logical_and(self.finite, self.xp.isfinite(loss), out=self.finite)
        self.recorded += 1

    def read(self, totals) -> tuple[int | None, float]:
        """Reads the losses since the last read with the totals, in one transfer: (index in
        the epoch, loss) of the first that is not finite, else of the last; (None, 0.0) when
        none is new."""
        first, self.unread = self.unread, self.recorded
        values = totals.read(self.values[first:self.recorded])
        if not len(values):
            return None, 0.0
        bad = np.flatnonzero(~np.isfinite(values))
        at = int(bad[0]) if len(bad) else len(values) - 1
        return first + at, float(values[at])


def epoch_batches(spec, count: int, epoch: int) -> tuple[np.random.Generator, list[np.ndarray]]:
    """Epoch `epoch`'s generator, default_rng([seed, epoch]), and the batches of sample indices
    it shuffles first (then each batch's augmentation and dropout key draw from it): training
    and `nnrun trace` both draw them here."""
    rng = np.random.default_rng([spec.seed, epoch])
    order = rng.permutation(count) if spec.train.shuffle else np.arange(count)
    size = spec.train.batch_size
    return rng, [order[i:i + size] for i in range(0, count, size)]


def _better(value: float, best: float, mode: str, min_delta: float) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta


def resolved_spec_text(source) -> str:
    """The spec as run, every default filled in: overrides applied, file paths absolute."""
    return spec_yaml(resolved_spec_data(source, absolute_paths=True))


__all__ = ["train", "Trainer", "TrainingError", "evaluate"]
