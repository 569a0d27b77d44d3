"""Checkpoints: one .npz per save, written atomically, read without pickle (DESIGN.md section 7).

Layout: params/<name> for parameters and buffers, opt/<param>.<slot> for optimizer state, and
`meta`, a JSON string (epoch, step, spec hash, seed, version)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from nnrun.compiler.schema import default_layer_names

from .files import write_atomically


class CheckpointError(Exception):
    pass


def spec_hash(spec) -> str:
    """What decides the shapes and meaning of the saved arrays: model, dtype, optimizer kind."""
    relevant = {"model": _model_without_default_names(spec.model), "dtype": spec.dtype,
                "optimizer": spec.optimizer.type, "loss": spec.loss.type}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _model_without_default_names(model) -> dict:
    # The resolved spec.yaml of a run spells out the default layer names; naming a layer by its
    # default name changes nothing, so it must not change the hash either.
    data = model.model_dump(mode="json")
    for layer, name in zip(data["layers"], default_layer_names(model.layers)):
        if layer["name"] == name:
            layer["name"] = None
    return data


def save_checkpoint(path: Path, state: dict[str, np.ndarray], meta: dict) -> None:
    arrays = {_stored_name(name): np.asarray(value) for name, value in state.items()}
    arrays["meta"] = np.array(json.dumps(meta))
    write_atomically(path, lambda stream: np.savez(stream, **arrays))


def _stored_name(name: str) -> str:
    return name if name.startswith("opt/") else f"params/{name}"


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            state = {_state_name(key): archive[key] for key in archive.files if key != "meta"}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not a readable nnrun checkpoint ({error})") from None
    return state, meta


def _state_name(key: str) -> str:
    return key[len("params/"):] if key.startswith("params/") else key


def check_compatible(path: Path, meta: dict, state: dict, spec, expected: dict) -> None:
    """The checkpoint must come from this spec: same hash, same names and shapes."""
    if meta.get("spec_hash") != spec_hash(spec):
        raise CheckpointError(f"{path}: checkpoint was written for another spec "
                              f"(hash {meta.get('spec_hash')}, this spec {spec_hash(spec)}); "
                              "use the run directory of this spec")
    for name, shape in expected.items():
        if name not in state:
            raise CheckpointError(f"{path}: checkpoint has no '{name}'")
        if tuple(state[name].shape) != tuple(shape):
            raise CheckpointError(f"{path}: '{name}' has shape {list(state[name].shape)}, "
                                  f"the spec needs {list(shape)}")
