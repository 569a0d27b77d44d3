"""`nnrun eval`, `nnrun predict` and `nnrun.load_run`: a run directory's checkpoint applied to
data, after the preprocessing that training fitted (normalisation, feature permutation)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from nnrun.compiler.checks import tracked_metrics
from nnrun.compiler.datasets import dataset_of_file
from nnrun.compiler.frontend import data_file, load_spec
from nnrun.compiler.tables import byte_size
from nnrun.notices import collected, shell_word, warn

from . import checkpoint as ckpt
from .archives import (DamagedFile, is_npy_file, largest_magnitude, npz_headers,
                       read_npy_checked, read_npz)
from .data import DataError, load_dataset
from .data_fit import (DataFitError, check_data_fits, moved_with_inputs, targets_for_model,
                       task_for_model)
from .data.preprocessing import IDENTITY, Preprocessing, load_preprocessing
from .data.fingerprint import data_files, data_fingerprint
from .data.splits import not_finite_problem
from .files import write_output
from .memory import MemoryLimitError, available_memory, check_memory, evaluation_batch
from .metrics import evaluate
from .model import Model, batch_shape_problem, check_flags
from .options import option
from .run_dir import RunDirectory, RunDirectoryError, not_a_run_directory, summary_final
from .spec_changes import DATA_FILE, data_file_changes

BATCH = 1000  # samples per forward pass in eval and predict


@dataclass(repr=False)
class Run:
    """A trained model as a run directory holds it: the compiled spec, one checkpoint's
    parameters and the input preprocessing fitted in training."""

    model: Model
    params: dict[str, np.ndarray]
    preprocessing: Preprocessing
    checkpoint: Path
    epoch: int | None
    batch: int = BATCH  # samples per forward pass: up to BATCH, as many as fit (evaluation_batch)
    data_sha256: dict | None = None  # the checkpoint's record of the data files trained on

    def __repr__(self) -> str:  # not every parameter's values, as a dataclass would print
        values = sum(int(np.size(value)) for value in self.params.values())
        return (f"<Run {str(self.checkpoint.parent)!r}: {self.checkpoint.name} of epoch "
                f"{self.epoch}, {values:,} values in {len(self.params)} arrays>")

    def predict(self, x, preprocess: bool = True) -> np.ndarray:
        """Outputs for raw inputs `x` (as the dataset gives them), after the final activation;
        inputs not finite once preprocessed are refused, as `nnrun predict` refuses them."""
        check_flags(preprocess=preprocess)
        x = self.model.checked_x(x, cast=False)
        needed = prediction_bytes(self, len(x), math.prod(x.shape[1:]))
        available, source = available_memory()
        if needed > available:  # a MemoryLimitError, not NumPy's MemoryError
            raise MemoryLimitError(f"Run.predict: {len(x):,} samples need about "
                                   f"{byte_size(needed)} for their outputs, but only "
                                   f"{byte_size(available)} is available ({source}); pass "
                                   "fewer samples at a time")
        outputs = self.outputs(x, preprocess, ValueError)
        note = self.overflow_note(outputs)
        if note:  # as `nnrun predict` says it (NumPy's own warning is silenced in forward)
            warnings.warn(note, RuntimeWarning, stacklevel=2)
        return outputs

    def outputs(self, x: np.ndarray, preprocess: bool, error: type[Exception],
                where: str = "") -> np.ndarray:
        """The outputs for raw samples `x`, prepared one batch at a time as training prepared
        them (preprocessed in their own dtype, float64 at the least, then cast to the model's),
        so that a batch's copies, not the whole input's, are held beside it. A batch not finite
        once prepared raises `error` ("`where`x must hold finite ...")."""
        preprocessing = self.preprocessing if preprocess else IDENTITY
        outputs = None  # filled batch by batch: the batches' outputs are not held twice
        for start in range(0, len(x), self.batch):
            with np.errstate(over="ignore", invalid="ignore"):  # checked below
                batch = preprocessing.apply(x[start:start + self.batch], self.model.spec.dtype)
            problem = not_finite_problem(batch, first=start)
            if problem:
                raise error(f"{where}{problem}")
            # Model.forward leaves NumPy's overflow warnings out: overflow_note says it in a line
            batch_outputs = self.model.forward(self.params, batch)
            if outputs is None:
                outputs = np.empty((len(x), *batch_outputs.shape[1:]), batch_outputs.dtype)
            outputs[start:start + len(batch)] = batch_outputs
        return outputs

    def overflow_note(self, outputs: np.ndarray) -> str | None:
        """What to say of outputs that are inf or NaN for finite inputs: the model overflows
        its dtype on them, through weights far too large (a checkpoint edited or diverged)."""
        bad = ~np.isfinite(outputs).reshape(len(outputs), -1).all(axis=1)
        if not bad.any():
            return None
        largest = largest_magnitude(self.params)
        return (f"the outputs of {int(bad.sum())} of {len(outputs)} samples (the first: sample "
                f"{int(np.argmax(bad))}) are inf or NaN: the model overflows "
                f"{self.model.spec.dtype} on them (its largest weight in "
                f"{self.checkpoint.name} is {largest:.3g})")


def final_checkpoint(run_dir: Path) -> str:
    """The checkpoint whose numbers `train` reported (summary.json), else (no summary: the run
    did not finish) best. A summary that names neither is damaged: taking best then could
    score another model than the one train reported (restore_best: false), without a word."""
    path = Path(run_dir) / "summary.json"
    try:
        final = summary_final(run_dir)
    except ValueError as error:
        raise RunDirectoryError(_unreadable_summary(path, error)) from None
    # no summary, or one written before 2026-12-01, which names no checkpoint: best, as eval
    # then took
    name = "best.npz" if final is None else final.get("checkpoint", "best.npz")
    if name not in ("best.npz", "last.npz"):
        raise RunDirectoryError(_unreadable_summary(path, f"its final checkpoint is {name!r}"))
    return Path(name).stem


def _unreadable_summary(path: Path, why) -> str:
    return (f"{path}: not a readable run summary ({why}), so which checkpoint train reported "
            f"is not known; name one with {option('--checkpoint', 'best', 'last')}, or restore "
            "the file")


def load_run(run_dir: Path, which: str | None = None, backend: str = "numpy",
             preprocess: bool = True, graph: bool = True) -> Run:
    """The run's spec compiled, and the checkpoint's state checked against it; `which` is
    "best", "last", or None for the run's final checkpoint. preprocess=False: no preprocessing.
    graph=False: on a GPU, the forward pass and evaluation run uncaptured."""
    run_dir = Path(run_dir)
    spec_path = run_dir / "spec.yaml"
    if not spec_path.exists():
        raise RunDirectoryError(not_a_run_directory(run_dir))
    model = Model(replace(load_spec(spec_path), from_checkpoint=True), backend, graph=graph)
    batch = evaluation_batch(model, BATCH)
    check_memory(model, batch, str(run_dir), training=False)
    path = _checkpoint_path(run_dir, which or final_checkpoint(run_dir), chosen=which is not None)
    expected = {name: info.shape for name, info in model.param_infos.items()}
    params, meta = ckpt.load_checkpoint(path, expected, model.spec.dtype, model.spec)
    recorded = meta.get("data_sha256")
    own = meta.get("preprocessing_sha256")  # kept since nnrun recorded it
    trained = (path.name, own) if own else None
    preprocessing = run_preprocessing(run_dir, model, recorded, trained) if preprocess \
        else IDENTITY
    return Run(model, params, preprocessing, path, meta.get("epoch"), batch, recorded)


def _checkpoint_path(run_dir: Path, which: str, chosen: bool) -> Path:
    """`chosen`: named by the user, so never replaced by the other checkpoint."""
    if which not in ("best", "last"):
        raise RunDirectoryError(f"{run_dir}: no checkpoint {which!r}; a run has 'best' and "
                                "'last'")
    path = run_dir / f"{which}.npz"
    fallback = run_dir / "last.npz"
    if not _present(path) and which == "best" and _present(fallback):
        if chosen:
            raise RunDirectoryError(f"{path}: no such checkpoint (the run has {fallback.name}: "
                                    f"{option('--checkpoint', 'last')})")
        if (run_dir / "summary.json").exists():  # train reported best's numbers: not these
            warn(f"{path} is missing, though train reported its numbers (summary.json): "
                 f"{fallback.name} is used, whose numbers differ unless the two were the same "
                 "epoch; put best.npz back for the numbers train reported")
        return fallback
    if not _present(run_dir / "best.npz") and not _present(fallback):
        run = RunDirectory(run_dir)
        signs, diverged = run.signs_of_trained_epochs(), run.diverged_at()
        if diverged and not signs:  # resuming would diverge again: the spec must change first
            spec = shell_word(str(run_dir / "spec.yaml"))
            raise RunDirectoryError(
                f"{run_dir}: no checkpoint: the training diverged at {diverged}, before the "
                "first one was written; change the spec as train's message said (its learning "
                "rate, initial weights or clipping) and start the run over with nnrun train "
                f"{spec} --out {shell_word(str(run_dir))}")
        if signs:  # deleted or moved: a resume would refuse to start the run over
            raise RunDirectoryError(
                f"{run_dir}: best.npz and last.npz are missing, though the run has trained "
                f"epochs ({', '.join(signs)}); put the checkpoints back, or train a new run")
        raise RunDirectoryError(
            f"{run_dir}: no checkpoint yet (the run stopped in its first epoch); continue it with "
            f"nnrun train {shell_word(str(run_dir / 'spec.yaml'))} --resume "
            f"{shell_word(str(run_dir))}")
    if not _present(path):
        raise RunDirectoryError(f"{path}: no such checkpoint")
    stale = _best_of_another_epoch(run_dir) if which == "best" else None
    if stale:
        if chosen:
            warn(f"{path}: {stale}; {option('--checkpoint', 'last')} scores that epoch")
            return path
        warn(f"{path}: {stale}: {fallback.name} is used (a resume writes best.npz again)")
        return fallback
    return path


def _best_of_another_epoch(run_dir: Path) -> str | None:
    """Why best.npz is not the run's best: killed between an epoch's writes of last.npz and
    best.npz, last.npz records its own epoch as the best. None where it is, or either
    checkpoint's meta is unreadable (loading it says so)."""
    try:
        last = ckpt.checkpoint_meta(run_dir / "last.npz")
        best = ckpt.checkpoint_meta(run_dir / "best.npz")
    except (OSError, ckpt.CheckpointError):
        return None
    if best.get("spec_hash") != last.get("spec_hash"):  # another run's: loading it says so
        return None
    if not ckpt.best_left_behind(last, best):
        return None
    return (f"it holds epoch {best.get('epoch')}, while last.npz records its own epoch "
            f"{last['best_epoch']} as the best (the run stopped between the two writes)")


def _present(path: Path) -> bool:
    """There, if only as a link that leads nowhere: loading it then says what is wrong, where
    passing it over would use the other checkpoint without a word."""
    return path.exists() or path.is_symlink()


def run_preprocessing(run_dir: Path, model: Model, data_sha256: dict | None = None,
                      checkpoint: tuple[str, str] | None = None) -> Preprocessing:
    """The statistics stored in training, else fitted again from the data (`data_sha256`:
    the checkpoint's record of its files, to say where they changed since; `checkpoint`:
    its name and the digest of the preprocessing it was trained with)."""
    sample_shape = tuple(model.lowered.graph.inputs[0].type.shape[1:])
    stored = load_preprocessing(run_dir, sample_shape, model.spec.dtype, model.spec,
                                checkpoint)
    if stored is not None:
        return stored
    spec = model.spec
    if spec.data is None:
        return IDENTITY
    changed = changed_data_files(run_dir, spec, data_sha256)
    if changed:
        warn(f"{run_dir}: has no preprocessing.npz, so its statistics are fitted again from "
             f"the data, and {changed} changed since training (another SHA-256): the inputs "
             "are not preprocessed as the model's training inputs were")
    # A run trained before nnrun stored preprocessing.npz: fit it again as training did. The
    # data's warnings are eval's load's to say (they were said twice), and not of predict's
    # inputs; a download's note is said.
    try:
        with collected(("warning",)):
            data = load_dataset(spec.data, spec_dir=run_dir, seed=spec.seed, dtype=spec.dtype,
                                loss=spec.loss)
    except DataError as error:
        raise DataError(f"{run_dir}: has no preprocessing.npz (removed, or trained by an older "
                        f"nnrun), and its data cannot be loaded to fit it again ({error}); pass "
                        f"{option('--no-preprocessing')} to feed inputs as they are") from None
    return data.preprocessing


def changed_data_files(run_dir: Path, spec, recorded: dict | None) -> str:
    """The data files (`the data file PATH`) whose bytes are not the ones the checkpoint
    recorded, "" where none changed or none were recorded (an older nnrun's, a generated
    dataset)."""
    if not recorded or spec.data is None:
        return ""
    try:
        files = data_files(spec.data, Path(run_dir))
        changes = data_file_changes(recorded, files, data_fingerprint(files), {})
    except (DataError, OSError):  # missing or unreadable: loading it says so
        return ""
    paths = [name.removeprefix(DATA_FILE) for name in changes]
    return f"the data file{'s' if len(paths) > 1 else ''} {', '.join(paths)}" if paths else ""


def evaluate_run(run_dir: Path, split: str = "test", which: str | None = None,
                 backend: str = "numpy", preprocess: bool = True, transform=None,
                 graph: bool = True) -> dict:
    """`transform`: an invariance.InputTransform of the raw inputs (shift, permutation)."""
    run = load_run(run_dir, which, backend, preprocess, graph)
    spec = run.model.spec
    preprocessing = run.preprocessing
    if transform is not None:
        from .invariance import TransformedPreprocessing

        preprocessing = TransformedPreprocessing(inner=preprocessing, transform=transform,
                                                 run_seed=spec.seed)
    try:
        data = load_dataset(spec.data, spec_dir=Path(run_dir), seed=spec.seed, dtype=spec.dtype,
                            preprocessing=preprocessing,
                            sample_shape=tuple(run.model.lowered.graph.inputs[0].type.shape[1:]),
                            loss=spec.loss,
                            inputs_of=(split,))
    except DataError as error:
        moved = data_file(spec, Path(run_dir))
        if moved is None or moved.exists() or moved.is_symlink():
            raise
        raise DataError(f"{error}: put the file back there, or set data.path in "
                        f"{Path(run_dir) / 'spec.yaml'} to where it is now") from None
    data = targets_for_model(spec, run.model, data)
    chosen = getattr(data, split)
    where = data.where
    if chosen is None:
        others = [name for name in ("test", "val", "train")
                  if name != split and getattr(data, name)]
        other = f"; evaluate with --split {others[0]}" if others else ""
        in_npz = " (or add x_val and y_val to the file)" if spec.data.dataset == "npz" else ""
        hints = {"val": f"; set data.validation_split and train again{in_npz}",
                 "test": {"npz": "; add x_test and y_test to the file",
                          "csv": "; a csv dataset has none (an npz can hold x_test and y_test)"}
                 .get(spec.data.dataset, "")}
        raise DataError(f"{where}: has no {split} split{hints.get(split, '')}{other}")
    moved = moved_with_inputs(spec, run.model, data) if transform is not None else None
    if moved:
        raise DataError(f"{where}: its targets are {moved}, position by position of the "
                        f"outputs; {transform.describe(chosen.x.ndim - 2)} would move the "
                        f"inputs but not the {moved}, which measures misalignment, not "
                        "invariance: evaluate without --shift and --permute")
    try:
        check_data_fits(spec, run.model, data, training=False)
    except DataError as error:  # DataFitError too: the data has changed since training, likely
        raise _unfit_for_the_run(error) from None
    _warn_of_changed_data(run, Path(run_dir), split)  # scored, not refused as unfit above
    state = {name: run.model.backend.from_host(value) for name, value in run.params.items()}
    metrics = tracked_metrics(spec, task_for_model(spec, run.model, data))
    result = evaluate(run.model, state, chosen, split, metrics,
                      batch_size=run.batch)
    loss = result.get(f"{split}_loss")
    if loss is not None and not math.isfinite(loss):  # the data was checked finite on load
        warn(f"{split}_loss is {loss}: the model's outputs are inf or NaN on some samples, "
             f"beyond {spec.dtype} (its largest weight in {run.checkpoint.name} is "
             f"{largest_magnitude(run.params):.3g}); predict says which samples")
    spatial_axes = len(run.model.lowered.graph.inputs[0].type.shape) - 2
    transformed = ({"transform": transform.describe(spatial_axes)} if transform is not None
                   else {})
    return {"checkpoint": run.checkpoint.name, "epoch": run.epoch, "split": split,
            "samples": len(chosen.x), "preprocessing": preprocess, **transformed, **result}


def _unfit_for_the_run(error: DataError) -> DataFitError:
    """Data the run's model cannot take: the spec's fix is for a new run, not this one."""
    fix = getattr(error, "fix", "")
    if fix:
        return DataFitError(f"{error.problem}: the run was trained on other data; evaluate on "
                            f"data like its own, or train a new run on this data: {fix}")
    return DataFitError(f"{error} (the run was trained on other data; evaluate on data like its "
                        "own: a change to the spec applies to a new run, not to this one)")


def _warn_of_changed_data(run: Run, run_dir: Path, split: str) -> None:
    """Scores on a data file changed in place are not train's, and a validation split drawn
    again from other samples may hold samples the model trained on."""
    spec = run.model.spec
    changed = changed_data_files(run_dir, spec, run.data_sha256)
    if not changed:
        return
    drawn = split == "val" and spec.data.validation_split
    warn(f"{changed} changed since {run.checkpoint.name} was written (another SHA-256): these "
         f"are the model's numbers on the new data, not the ones train reported"
         + ("; the validation split is drawn again from the new samples, and may hold samples "
            "the model trained on" if drawn else ""))


def predict_run(run_dir: Path, input_path: Path, out_path: Path, which: str | None = None,
                backend: str = "numpy", preprocess: bool = True,
                graph: bool = True) -> tuple[np.ndarray, Run]:
    run = load_run(run_dir, which, backend, preprocess, graph)
    x = run.model.checked_x(_read_inputs(Path(input_path), run), cast=False)
    outputs = run.outputs(x, preprocess, DataError, where=f"{input_path}: ")
    write_output(Path(out_path), lambda stream: np.save(stream, outputs))
    return outputs, run


def _read_inputs(path: Path, run: Run) -> np.ndarray:
    """Array `x` of the .npz (or the array of a .npy file), checked from its header before it
    is decompressed."""
    expected = list(run.model.lowered.graph.inputs[0].type.shape[1:])
    if is_npy_file(path):  # np.save(path, inputs): the first form a user tries
        try:
            return read_npy_checked(path, lambda header: _check_input_header(
                path, header, expected, run, "the array"))
        except DamagedFile as error:
            raise DataError(f"{path}: not a readable .npy file ({error}); save the inputs with "
                            "numpy.save(path, inputs)") from None
    try:
        headers = npz_headers(path)
        header = headers.get("x")
        if header is None:
            found = ", ".join(headers) or "none"
            raise DataError(f"{path}: has no array 'x' (found: {found}); save the inputs with "
                            "numpy.savez(path, x=inputs)")
        _check_input_header(path, header, expected, run)
        x = read_npz(path, {"x": header})["x"]
    except DamagedFile as error:
        csv = ("it is a csv file, and predict reads an .npz or .npy: save its feature columns "
               "(without the label) with " if dataset_of_file(path) == "csv" else
               "save the inputs with ")
        raise DataError(f"{path}: not a readable .npz file ({error}); {csv}numpy.savez(path, "
                        "x=inputs)") from None
    return x


def _check_input_header(path: Path, header, expected: list, run: Run, name: str = "x") -> None:
    if header.dtype.kind not in "biuf":
        raise DataError(f"{path}: {name} must hold numbers, found dtype {header.dtype}")
    problem = batch_shape_problem(header.shape, expected)
    if problem:
        raise DataError(f"{path}: {problem}")
    more = prediction_bytes(run, header.shape[0], math.prod(header.shape[1:]))
    available, source = available_memory()
    if header.size_bytes + more > available:
        raise DataError(f"{path}: {name} needs {byte_size(header.size_bytes)}, and "
                        f"{byte_size(more)} more for its outputs and a batch prepared at a "
                        f"time, over the {byte_size(available)} available ({source}); "
                        "predict in parts")


def prediction_bytes(run: Run, samples: int, sample_values: int) -> int:
    """What predicting `samples` holds beside their inputs (Run.outputs): the outputs, and
    one batch prepared (preprocessed in float64 at the least, then cast)."""
    itemsize = np.dtype(run.model.spec.dtype).itemsize
    outputs = samples * math.prod(run.model.lowered.logits.type.shape[1:]) * itemsize
    return outputs + min(samples, run.batch) * sample_values * (max(itemsize, 8) + itemsize)
