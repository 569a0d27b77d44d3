"""`nnrun eval` and `nnrun predict`: a run directory's checkpoint applied to data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnrun.compiler.frontend import load_spec

from . import checkpoint as ckpt
from .files import write_atomically
from .data import DataError, load_dataset
from .model import Model
from .train import TrainingError, evaluate


def load_run(run_dir: Path, which: str = "best", backend: str = "numpy"):
    """The run's spec compiled, and the checkpoint's state checked against it."""
    run_dir = Path(run_dir)
    spec_path = run_dir / "spec.yaml"
    if not spec_path.exists():
        raise TrainingError(f"{run_dir}: not a run directory (no spec.yaml)")
    model = Model(load_spec(spec_path), backend)
    path = run_dir / f"{which}.npz"
    if not path.exists():
        fallback = run_dir / "last.npz"
        if which == "best" and fallback.exists():
            path = fallback
        else:
            raise TrainingError(f"{path}: no such checkpoint")
    state, meta = ckpt.load_checkpoint(path)
    expected = {name: info.shape for name, info in model.param_infos.items()}
    ckpt.check_compatible(path, meta, state, model.spec, expected)
    params = {name: state[name] for name in expected}
    return model, params, meta


def evaluate_run(run_dir: Path, split: str = "test", which: str = "best",
                 backend: str = "numpy") -> dict:
    model, params, meta = load_run(run_dir, which, backend)
    spec = model.spec
    data = load_dataset(spec.data, spec_dir=Path(run_dir), seed=spec.seed, dtype=spec.dtype)
    chosen = getattr(data, split)
    if chosen is None:
        where = spec.data.path or spec.data.dataset
        hints = {"val": "; set data.validation_split",
                 "test": "; add x_test and y_test to the file" if spec.data.path else ""}
        raise DataError(f"{where}: has no {split} split{hints.get(split, '')}")
    state = {name: model.backend.from_host(value) for name, value in params.items()}
    result = evaluate(model, state, chosen, split)
    return {"epoch": meta.get("epoch"), "split": split, "samples": len(chosen.x), **result}


def predict_run(run_dir: Path, input_path: Path, out_path: Path, which: str = "best",
                backend: str = "numpy") -> np.ndarray:
    model, params, _ = load_run(run_dir, which, backend)
    x = _read_inputs(Path(input_path), model)
    outputs = np.concatenate([model.forward(params, x[i:i + 1000]) for i in range(0, len(x), 1000)])
    write_atomically(Path(out_path), lambda stream: np.save(stream, outputs))
    return outputs


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
    return x.astype(model.spec.dtype)

