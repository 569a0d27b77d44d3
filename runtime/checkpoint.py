"""Checkpoints: one .npz per save, written atomically, read without pickle (DESIGN.md section 7).

Layout: params/<name> for parameters and buffers, opt/<param>.<slot> for optimizer state,
mask/<weight> for pruning masks (booleans, True keeps the weight), and `meta`, a JSON string
(epoch, step, spec hash, seed, the data files' digests, version: CheckpointMeta).

Reading checks every member's header (name, shape, dtype) against what the spec needs before
any array is decompressed, and every field of the meta that resume relies on, so a damaged,
foreign or oversized file is refused in one line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import (BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr,
                      ValidationError, model_validator)
from pydantic_core import to_jsonable_python

from nnrun.compiler.initial_values import META_KEY, OWN_PREFIXES, PARAMS_PREFIX
from nnrun.compiler.schema import default_layer_names

from .archives import (ArrayHeader, DamagedFile, first_not_finite, npz_headers, opens_as_npz,
                       read_npz)
from .files import describe_os_error, write_atomically
from .options import option

META_LIMIT_BYTES = 1 << 20  # the JSON meta entry is a few hundred bytes


class CheckpointError(Exception):
    pass


# No run takes 2**63 steps: a larger epoch or step count is damage. Seeds have no bound (schema.py).
Count = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
Seed = Annotated[StrictInt, Field(ge=0)]
Sparsity = Annotated[StrictFloat, Field(ge=0.0, le=1.0)]


class RngMeta(BaseModel):
    """Epoch e draws from default_rng([seed, e]) (runtime/train.py): the seed and the next
    epoch are the whole RNG state."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: Seed
    next_epoch: Count


class CheckpointMeta(BaseModel):
    """The `meta` entry as train._meta writes it and resume reads it. Fields that an older
    nnrun did not write take the values a new run starts with; fields a newer one adds are
    kept as they are."""
    model_config = ConfigDict(extra="allow", frozen=True)
    epoch: Annotated[Count, Field(ge=1)]  # a checkpoint is written after an epoch
    step: Count
    spec_hash: StrictStr | None = None
    seed: Seed | None = None
    rng: RngMeta | None = None
    best_value: StrictFloat | None = None  # nan when the first epoch's monitor was
    best_epoch: Count = 0
    epochs_since_best: Count = 0
    schedule_start: Count = 0
    version: Literal[1] = 1
    # what the sums' order depends on: a resume with others rounds otherwise (train.py)
    backend: StrictStr | None = None
    threads: Annotated[Count, Field(ge=1)] | None = None  # CPU threads; None on a GPU
    ranks: Annotated[Count, Field(ge=1)] | None = None
    pruning_sparsity: Sparsity | None = None
    best_sparsity: Sparsity | None = None
    # the run's spec.yaml as this checkpoint was trained with it: its digest, and its text
    # where short enough to keep (a resume after spec.yaml was edited by hand compares with it)
    spec_sha256: StrictStr | None = None
    spec_text: StrictStr | None = None
    # the SHA-256 of each data file the run trained on, by its role (data/fingerprint.py); a
    # checkpoint of an older nnrun has none, and its resume compares none
    data_sha256: dict[StrictStr, StrictStr] | None = None
    # of the preprocessing it was trained with (data/preprocessing.preprocessing_digest), to
    # tell the run's preprocessing.npz is that one; an older nnrun's checkpoint has none
    preprocessing_sha256: StrictStr | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CheckpointMeta:
        for name in ("best_epoch", "epochs_since_best", "schedule_start"):
            if getattr(self, name) > self.epoch:
                raise ValueError(f"{name} {getattr(self, name)} is after epoch {self.epoch}")
        if self.step < self.epoch:  # every epoch takes one step at least
            raise ValueError(f"step {self.step} is less than epoch {self.epoch}")
        if self.rng is not None and self.rng.next_epoch != self.epoch + 1:
            raise ValueError(f"rng.next_epoch {self.rng.next_epoch} does not follow "
                             f"epoch {self.epoch}")
        if self.rng is not None and self.seed is not None and self.rng.seed != self.seed:
            raise ValueError(f"rng.seed {self.rng.seed} is not seed {self.seed}")
        return self


# The spec fields spec_hash reads, as dotted paths of the spec (under model: all but the
# layers' default names and init_from, which say nothing of what the arrays mean).
SPEC_HASH_FIELDS = ("model", "dtype", "optimizer.type", "loss.type")


def spec_hash(spec) -> str:
    """What decides the shapes and meaning of the saved arrays: model, dtype, optimizer kind.
    Fields at their defaults are left out, so that a field a later nnrun adds (with a default
    that keeps the old meaning) does not orphan the checkpoints written before it."""
    relevant = {"model": _model_without_default_names(spec.model), "dtype": spec.dtype,
                "optimizer": spec.optimizer.type, "loss": spec.loss.type}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


SPEC_TEXT_KEPT_BYTES = 64 * 1024  # a spec with inline weights may be longer: its digest only


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def spec_text_meta(text: str) -> dict:
    """The meta fields that keep the spec.yaml text a checkpoint was trained with."""
    kept = text if len(text.encode("utf-8")) <= SPEC_TEXT_KEPT_BYTES else None
    return {"spec_sha256": text_digest(text), "spec_text": kept}


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
    arrays[META_KEY] = np.array(json.dumps(meta))
    write_atomically(path, lambda stream: np.savez(stream, **arrays))


def _stored_name(name: str) -> str:
    # optimizer state and masks under their own names; parameters and buffers under params/
    return name if name.startswith(OWN_PREFIXES) else f"{PARAMS_PREFIX}{name}"


def _state_name(key: str) -> str:
    return key.removeprefix(PARAMS_PREFIX)


def best_left_behind(last: dict, best: dict | None) -> bool:
    """Whether last.npz (meta `last`) records its own epoch as the run's best while best.npz
    (meta `best`, None where missing) holds another: the run stopped between the epoch's two
    writes (last.npz first), or an older nnrun wrote best.npz first."""
    recorded = last.get("best_epoch")
    return isinstance(recorded, int) and recorded == last.get("epoch") and \
        (best or {}).get("epoch") != recorded


def checkpoint_meta(path: Path) -> dict:
    """A checkpoint's meta entry, checked as a resume checks it, without reading its arrays."""
    return _meta(path, _headers(path))


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
                              "use the run directory of this spec, or undo an edit of the "
                              "run's spec.yaml made since")
    if expected is None:
        wanted = {key: header for key, header in headers.items() if key != META_KEY}
    else:
        _refuse_unknown_parameters(path, headers, expected)
        wanted = {_stored_name(name): _checked(path, headers, name, shape, dtype,
                                               same_model=spec is not None)
                  for name, shape in expected.items()}
    arrays = {_state_name(key): value for key, value in _read(path, wanted).items()}
    if expected is not None:
        _check_finite(path, arrays)
    return arrays, meta


def _refuse_unknown_parameters(path: Path, headers: dict, expected: dict) -> None:
    """A parameter the model does not have: the file was changed, or is another model's
    (its spec hash aside); reading on would hide it."""
    unknown = [key for key in headers if key.startswith(PARAMS_PREFIX)
               and _state_name(key) not in expected]
    if unknown:
        raise CheckpointError(_damaged(path, f"it holds '{unknown[0]}', which is no parameter of "
                                             "this model"))


def _check_finite(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # Computed from, NaN weights give a NaN loss with exit 0, NaN predictions, and an export
    # whose check blames the ONNX lowering.
    name = first_not_finite(arrays)
    if name is not None:
        raise CheckpointError(f"{path}: '{name}' holds NaN or inf (the run diverged before this "
                              f"checkpoint, or the file was changed); {_fix(path)}")


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
            raise CheckpointError(_damaged(path, f"pruning mask of '{name}' is {header.dtype} "
                                                 f"{list(header.shape)}, expected bool "
                                                 f"{list(shape)}"))
        wanted[f"mask/{name}"] = header
    return {key[len("mask/"):]: value for key, value in _read(path, wanted).items()}


def _headers(path: Path) -> dict[str, ArrayHeader]:
    try:
        return npz_headers(path)
    except DamagedFile as error:
        raise CheckpointError(_damaged(path, error)) from None
    except OSError as error:  # a dangling link, a loop of links, no permission: the API's type
        raise CheckpointError(describe_os_error(error)) from None


def _read(path: Path, headers: dict[str, ArrayHeader]) -> dict[str, np.ndarray]:
    try:
        return read_npz(path, headers)
    except DamagedFile as error:
        raise CheckpointError(_damaged(path, error)) from None


def _damaged(path: Path, problem: DamagedFile | str) -> str:
    return f"{path}: damaged checkpoint ({problem}); {_fix(path)}"


def _fix(path: Path) -> str:
    other = path.with_name("last.npz" if path.name == "best.npz" else "best.npz")
    new_run = f"start a new run with another {option('--out')}"
    # in a run directory, the other's fix would need this one (the hostile-input audit)
    if path.name in ("best.npz", "last.npz") and not opens_as_npz(other):
        return f"{other.name} is {'damaged' if other.exists() else 'missing'} too: {new_run}"
    if path.name == "best.npz":
        # not "copy last.npz over it": its weights would then pass for the best epoch's
        return "delete it (last.npz is then used)"
    # Deleting last.npz is no way out: a run that has trained epochs refuses to start over.
    return f"copy best.npz over it to resume from the best epoch, or {new_run}"


def _meta(path: Path, headers: dict[str, ArrayHeader]) -> dict:
    header = headers.get(META_KEY)
    if header is None:
        raise CheckpointError(f"{path}: not an nnrun checkpoint (no meta entry); "
                              "give the run directory that nnrun wrote")
    if header.dtype.kind != "U":
        held = "bytes" if header.dtype.kind == "S" else header.dtype.name
        raise CheckpointError(_damaged(path, f"meta holds {held}, not a JSON string"))
    if header.size_bytes > META_LIMIT_BYTES:
        raise CheckpointError(_damaged(path, f"meta declares {header.size_bytes:,} bytes, more "
                                             f"than the {META_LIMIT_BYTES:,} nnrun reads"))
    try:
        meta = json.loads(str(_read(path, {META_KEY: header})[META_KEY]))
    except (ValueError, RecursionError) as error:  # not JSON, or past Python's own limits
        raise CheckpointError(_damaged(path, f"meta is not JSON: {error}")) from None
    try:
        return CheckpointMeta.model_validate(meta).model_dump()
    except ValidationError as error:
        raise CheckpointError(_damaged(path, _meta_problem(error))) from None


def _meta_problem(error: ValidationError) -> str:
    """The first problem of the meta, in words: the field, its value and what it should be."""
    item = error.errors(include_url=False)[0]
    if item["type"] == "value_error":  # a rule across fields (_consistent)
        return f"meta {item['msg'].removeprefix('Value error, ')}"
    where = "meta" + "".join(f".{part}" for part in item["loc"])
    if item["type"] == "missing":
        return f"{where} is missing"
    shown = repr(item["input"])
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    # pydantic's own words, but for a mapping, which they call by nnrun's class names
    rule = "should be a JSON object" if item["type"] == "model_type" else item["msg"]
    rule = rule.removeprefix("Input ")
    return f"{where} is {shown}: {rule[0].lower()}{rule[1:]}"


def _checked(path: Path, headers: dict, name: str, shape: tuple, dtype: str,
             same_model: bool) -> ArrayHeader:
    """`same_model`: the meta's spec hash says the file was written for this model and dtype,
    so an array of another shape or dtype was changed since (the spec is not to blame)."""
    header = headers.get(_stored_name(name))
    if header is None:  # in a file of this model (its spec hash, where read, says so)
        raise CheckpointError(_damaged(path, f"it has no '{name}', a parameter of this model"))
    problem = None
    if header.shape != tuple(shape):
        problem = f"'{name}' has shape {list(header.shape)}, the spec needs {list(shape)}"
    elif header.dtype != np.dtype(dtype):
        problem = f"'{name}' is {header.dtype}, the spec's dtype is {dtype}"
    if problem is None:
        return header
    if same_model:
        raise CheckpointError(_damaged(path, f"{problem}, though it was written for this spec"))
    advice = "" if header.shape != tuple(shape) else \
        "; resume with the dtype the run was trained with"
    raise CheckpointError(f"{path}: {problem}{advice}")
