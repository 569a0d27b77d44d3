"""Checkpoints: one .npz per save, written atomically, read without pickle (DESIGN.md section 7).

Layout: params/<name> for parameters and buffers, opt/<param>.<slot> for optimizer state,
mask/<weight> for pruning masks (booleans, True keeps the weight), and `meta`, a JSON string
(epoch, step, spec hash, seed, version).

Reading checks every member's header (name, shape, dtype) against what the spec needs before
any array is decompressed, so a damaged, foreign or oversized file is refused in one line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from nnrun.compiler.schema import default_layer_names

from .archives import ArrayHeader, DamagedFile, npz_headers, read_npz
from .files import write_atomically

META_LIMIT_BYTES = 1 << 20  # the JSON meta entry is a few hundred bytes


class CheckpointError(Exception):
    pass


def spec_hash(spec) -> str:
    """What decides the shapes and meaning of the saved arrays: model, dtype, optimizer kind.
    Fields at their defaults are left out, so that a field a later nnrun adds (with a default
    that keeps the old meaning) does not orphan the checkpoints written before it."""
    relevant = {"model": _model_without_default_names(spec.model), "dtype": spec.dtype,
                "optimizer": spec.optimizer.type, "loss": spec.loss.type}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _model_without_default_names(model) -> dict:
    # The resolved spec.yaml of a run spells out the default layer names; naming a layer by its
    # default name changes nothing, so it must not change the hash either.
    data = _without_defaults(model)
    for layer, name in zip(data["layers"], default_layer_names(model.layers)):
        if layer.get("name") == name:
            layer.pop("name")
    # init_from says where the starting values came from, not what the arrays mean; and the
    # run's spec.yaml holds it made absolute, which would orphan the run's own checkpoints.
    for owner in (data, *data["layers"]):
        owner.pop("init_from", None)
    return data


def _without_defaults(value):
    """A spec model as JSON data without the fields at their defaults; `type`, which tells the
    kinds of a union apart, is always kept."""
    if isinstance(value, BaseModel):
        data = {}
        for name, field in type(value).model_fields.items():
            item = getattr(value, name)
            if name == "type" or item != field.get_default(call_default_factory=True):
                data[name] = _without_defaults(item)
        return data
    if isinstance(value, (list, tuple)):
        return [_without_defaults(item) for item in value]
    if isinstance(value, dict):
        return {key: _without_defaults(item) for key, item in value.items()}
    return to_jsonable_python(value)


def save_checkpoint(path: Path, state: dict[str, np.ndarray], meta: dict) -> None:
    arrays = {_stored_name(name): np.asarray(value) for name, value in state.items()}
    arrays["meta"] = np.array(json.dumps(meta))
    write_atomically(path, lambda stream: np.savez(stream, **arrays))


_OWN_PREFIXES = ("opt/", "mask/")  # stored under their own names; the rest under params/


def _stored_name(name: str) -> str:
    return name if name.startswith(_OWN_PREFIXES) else f"params/{name}"


def _state_name(key: str) -> str:
    return key[len("params/"):] if key.startswith("params/") else key


def load_checkpoint(path: Path, expected: dict[str, tuple] | None = None, dtype: str | None = None,
                    spec=None):
    """The arrays named in `expected` (state name -> shape), of `dtype`, and the meta dict;
    without `expected`, every array as stored (for inspection). With `spec`, the checkpoint
    must also have been written for a spec of the same model."""
    headers = _headers(path)
    meta = _meta(path, headers)
    if spec is not None and meta.get("spec_hash") != spec_hash(spec):
        raise CheckpointError(f"{path}: checkpoint was written for another spec "
                              f"(hash {meta.get('spec_hash')}, this spec {spec_hash(spec)}); "
                              "use the run directory of this spec")
    if expected is None:
        wanted = {key: header for key, header in headers.items() if key != "meta"}
    else:
        wanted = {_stored_name(name): _checked(path, headers, name, shape, dtype)
                  for name, shape in expected.items()}
    arrays = _read(path, wanted)
    return {_state_name(key): value for key, value in arrays.items()}, meta


def load_masks(path: Path, shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """The pruning masks saved for the weights in `shapes` (name -> shape), as booleans; none
    when the checkpoint has none (written before pruning started, or by an older nnrun)."""
    headers = _headers(path)
    wanted = {}
    for name, shape in shapes.items():
        header = headers.get(f"mask/{name}")
        if header is None:
            continue
        if header.shape != tuple(shape) or header.dtype != np.dtype(bool):
            raise CheckpointError(f"{path}: pruning mask of '{name}' is {header.dtype} "
                                  f"{list(header.shape)}, expected bool {list(shape)}; "
                                  "delete it to start the run over")
        wanted[f"mask/{name}"] = header
    return {key[len("mask/"):]: value for key, value in _read(path, wanted).items()}


def _headers(path: Path) -> dict[str, ArrayHeader]:
    try:
        return npz_headers(path)
    except DamagedFile as error:
        raise CheckpointError(_damaged(path, error)) from None


def _read(path: Path, headers: dict[str, ArrayHeader]) -> dict[str, np.ndarray]:
    try:
        return read_npz(path, headers)
    except DamagedFile as error:
        raise CheckpointError(_damaged(path, error)) from None


def _damaged(path: Path, error: DamagedFile) -> str:
    if path.name == "best.npz":
        fix = "delete it (last.npz is then used) or copy last.npz over it"
    else:
        fix = ("delete it to start the run over, or copy best.npz over it to resume from the "
               "best epoch")
    return f"{path}: damaged checkpoint ({error}); {fix}"


def _meta(path: Path, headers: dict[str, ArrayHeader]) -> dict:
    header = headers.get("meta")
    if header is None or header.dtype.kind != "U" or header.size_bytes > META_LIMIT_BYTES:
        raise CheckpointError(f"{path}: not an nnrun checkpoint (no meta entry); "
                              "give the run directory that nnrun wrote")
    try:
        meta = json.loads(str(_read(path, {"meta": header})["meta"]))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: damaged checkpoint (meta is not JSON: {error}); "
                              "delete it to start the run over") from None
    if not isinstance(meta, dict) or not all(isinstance(meta.get(k), int) for k in ("epoch", "step")):
        raise CheckpointError(f"{path}: damaged checkpoint (meta has no epoch and step); "
                              "delete it to start the run over")
    return meta


def _checked(path: Path, headers: dict, name: str, shape: tuple, dtype: str) -> ArrayHeader:
    header = headers.get(_stored_name(name))
    if header is None:
        raise CheckpointError(f"{path}: checkpoint has no '{name}'")
    if header.shape != tuple(shape):
        raise CheckpointError(f"{path}: '{name}' has shape {list(header.shape)}, "
                              f"the spec needs {list(shape)}")
    if header.dtype != np.dtype(dtype):
        raise CheckpointError(f"{path}: '{name}' is {header.dtype}, the spec's dtype is {dtype}; "
                              "resume with the dtype the run was trained with")
    return header
