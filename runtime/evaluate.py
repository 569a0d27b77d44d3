"""`nnrun eval`, `nnrun predict` and `nnrun.load_run`: a run directory's checkpoint applied to
data, after the preprocessing that training fitted (normalisation, feature permutation)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnrun.compiler.frontend import load_spec

from . import checkpoint as ckpt
from .data import DataError, load_dataset
from .data.preprocessing import IDENTITY, Preprocessing, load_preprocessing
from .files import write_atomically
from .model import Model
from .train import TrainingError, evaluate

BATCH = 1000


@dataclass
class Run:
    """A trained model as a run directory holds it: the compiled spec, one checkpoint's
    parameters and the input preprocessing fitted in training."""

    model: Model
    params: dict[str, np.ndarray]
    preprocessing: Preprocessing
    checkpoint: Path
    epoch: int | None

    def predict(self, x, preprocess: bool = True) -> np.ndarray:
        """Outputs for raw inputs `x` (as the dataset gives them), after the final activation."""
        x = np.asarray(x)
        if preprocess:
            x = self.preprocessing.apply(x, self.model.spec.dtype)
        batches = [x[start:start + BATCH] for start in range(0, len(x), BATCH)]
        return np.concatenate([self.model.forward(self.params, batch) for batch in batches])


def final_checkpoint(run_dir: Path) -> str:
    """The checkpoint whose numbers `train` reported (summary.json), else best."""
    try:
        final = json.loads((Path(run_dir) / "summary.json").read_text())["final"]
        return Path(final["checkpoint"]).stem
    except (OSError, ValueError, KeyError, TypeError):
        return "best"


def load_run(run_dir: Path, which: str | None = None, backend: str = "numpy",
             preprocess: bool = True) -> Run:
    """The run's spec compiled, and the checkpoint's state checked against it; `which` is
    "best", "last", or None for the run's final checkpoint. preprocess=False: no preprocessing."""
    run_dir = Path(run_dir)
    spec_path = run_dir / "spec.yaml"
    if not spec_path.exists():
        raise TrainingError(f"{run_dir}: not a run directory (no spec.yaml)")
    model = Model(load_spec(spec_path), backend)
    path = _checkpoint_path(run_dir, which or final_checkpoint(run_dir))
    state, meta = ckpt.load_checkpoint(path)
    expected = {name: info.shape for name, info in model.param_infos.items()}
    ckpt.check_compatible(path, meta, state, model.spec, expected)
    params = {name: state[name] for name in expected}
    preprocessing = run_preprocessing(run_dir, model) if preprocess else IDENTITY
    return Run(model, params, preprocessing, path, meta.get("epoch"))


def _checkpoint_path(run_dir: Path, which: str) -> Path:
    path = run_dir / f"{which}.npz"
    fallback = run_dir / "last.npz"
    if not path.exists() and which == "best" and fallback.exists():
        return fallback
    if not path.exists():
        raise TrainingError(f"{path}: no such checkpoint")
    return path


def run_preprocessing(run_dir: Path, model: Model) -> Preprocessing:
    stored = load_preprocessing(run_dir)
    if stored is not None:
        return stored
    spec = model.spec
    if spec.data is None:
        return IDENTITY
    # A run trained before nnrun stored preprocessing.npz: fit it again as training did.
    try:
        data = load_dataset(spec.data, spec_dir=run_dir, seed=spec.seed, dtype=spec.dtype)
    except DataError as error:
        raise DataError(f"{run_dir}: has no preprocessing.npz (trained by an older nnrun), and "
                        f"its data cannot be loaded to fit it again ({error}); pass "
                        "--no-preprocessing to feed inputs as they are") from None
    return data.preprocessing


def evaluate_run(run_dir: Path, split: str = "test", which: str | None = None,
                 backend: str = "numpy", preprocess: bool = True) -> dict:
    run = load_run(run_dir, which, backend, preprocess)
    spec = run.model.spec
    data = load_dataset(spec.data, spec_dir=Path(run_dir), seed=spec.seed, dtype=spec.dtype,
                        preprocessing=run.preprocessing)
    chosen = getattr(data, split)
    if chosen is None:
        where = spec.data.path or spec.data.dataset
        hints = {"val": "; set data.validation_split",
                 "test": "; add x_test and y_test to the file" if spec.data.path else ""}
        raise DataError(f"{where}: has no {split} split{hints.get(split, '')}")
    state = {name: run.model.backend.from_host(value) for name, value in run.params.items()}
    result = evaluate(run.model, state, chosen, split)
    return {"checkpoint": run.checkpoint.name, "epoch": run.epoch, "split": split,
            "samples": len(chosen.x), **result}


def predict_run(run_dir: Path, input_path: Path, out_path: Path, which: str | None = None,
                backend: str = "numpy", preprocess: bool = True) -> tuple[np.ndarray, Run]:
    run = load_run(run_dir, which, backend, preprocess)
    outputs = run.predict(_read_inputs(Path(input_path), run.model))
    write_atomically(Path(out_path), lambda stream: np.save(stream, outputs))
    return outputs, run


def _read_inputs(path: Path, model) -> np.ndarray:
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: is a single array, not an .npz archive; "
                            "save the inputs with numpy.savez(path, x=inputs)")
        with archive:
            if "x" not in archive.files:
                raise DataError(f"{path}: has no array 'x' (found: {', '.join(archive.files) or 'none'})")
            x = archive["x"]
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from None
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{path}: x holds no samples")
    expected = list(model.lowered.graph.inputs[0].type.shape[1:])
    if list(x.shape[1:]) != expected:
        raise DataError(f"{path}: x has samples of shape {list(x.shape[1:])}, the model expects "
                        f"{expected} (x must be [N, {', '.join(map(str, expected))}])")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise DataError(f"{path}: x must hold finite numbers")
    return x
