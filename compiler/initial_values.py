"""Initial values given in a spec: a layer's `weights:`/`bias:` lists, a layer's `init_from:`
file, and `model.init_from`. Their shapes are checked against the lowered parameters when the
spec is compiled (so `nnrun validate` reports them at their YAML positions); each parameter
they give gets a `GivenValues` initializer, which runtime/init.py reads.

Only the .npz headers are read here (names, shapes); the arrays are read when a model is
initialised, by runtime/archives.py, which checks them again.
"""

from __future__ import annotations

import dataclasses
import functools
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from .datasets import (paths_relative_to, unreadable_npz, why_absent, why_not_looked_at,
                       why_unreadable)
from .diagnostics import suggest
from .ir import Origin
from .schema import default_layer_names


@dataclass(frozen=True)
class GivenValues:
    """An initializer whose values are written out: `values` (nested lists) or array `key` of
    the .npz `file` (an absolute path)."""

    type: str = "given"
    values: Any = None
    file: Path | None = None
    key: str | None = None
    origin: Origin | None = dataclasses.field(default=None, compare=False)  # of init_from


class _Unreadable(Exception):
    """`damage`: why an npz's bytes do not read as one (of NPZ_DAMAGE), where that is why."""

    def __init__(self, message: str, damage: str | None = None):
        super().__init__(message)
        self.damage = damage


def resolve_initial_values(spec, lowered, directory: Path,
                           files: bool = True) -> list[tuple[Origin, str]]:
    """Gives the parameters of `lowered` the values the spec writes out; returns the errors.
    A layer's own values take precedence over model.init_from's. files=False: the init_from
    files are not read (a run's checkpoint gives every value)."""
    errors: list[tuple[Origin, str]] = []
    relative_to = paths_relative_to(directory)
    if spec.model.init_from and files:  # first: a layer's own values take precedence
        origin = Origin("model.init_from", keys=("model", "init_from"))
        errors += _give_model_file(lowered, directory / spec.model.init_from, origin,
                                   relative_to)
    errors += _initializer_range_errors(spec)
    names = default_layer_names(spec.model.layers)
    for index, (layer, name) in enumerate(zip(spec.model.layers, names)):
        origin = Origin.of_layer(index, name)
        for suffix, values in _lists_of(layer):
            error = _list_error(lowered, layer, name, suffix, values, origin, spec.dtype)
            if error is None:
                _give(lowered, f"{name}.{suffix}", GivenValues(values=values))
            errors += [error] if error else []
        if getattr(layer, "init_from", None) and files:
            errors += _give_layer_file(lowered, name, directory / layer.init_from,
                                       origin.at_field("init_from"), relative_to)
    return errors


def given_list_errors(spec, lowered) -> list[tuple[Origin, str]]:
    """The errors of the `weights:`/`bias:` lists of the layers `lowered` holds: a lowering
    that stopped at a later layer's shape error still reports these with it."""
    lowered_layers = {info.name for info in lowered.layers}  # a failed one's inputs were wrong
    return [error for layer, name, suffix, values, origin in _given_lists(spec)
            if f"{name}.{suffix}" in lowered.params and name in lowered_layers
            for error in [_list_error(lowered, layer, name, suffix, values, origin, spec.dtype)]
            if error]


def _given_lists(spec):
    """(layer, its name, "weight" or "bias", the list, the layer's origin) for each list."""
    names = default_layer_names(spec.model.layers)
    for index, (layer, name) in enumerate(zip(spec.model.layers, names)):
        origin = Origin.of_layer(index, name)
        for suffix, values in _lists_of(layer):
            yield layer, name, suffix, values, origin


def _lists_of(layer):
    """("weight", the list) and ("bias", the list), for those the layer writes out."""
    return [(suffix, values) for suffix, values in (("weight", getattr(layer, "weights", None)),
                                                    ("bias", getattr(layer, "bias", None)))
            if values is not None]


def _list_error(lowered, layer, name: str, suffix: str, values, origin: Origin,
                dtype: str) -> tuple[Origin, str] | None:
    info = lowered.params[f"{name}.{suffix}"]
    field = "weights" if suffix == "weight" else "bias"
    got = tuple(np.shape(values))
    if got != info.shape:
        return origin.at_field(field), _shape_message(layer, field, got, info.shape)
    array = np.asarray(values, dtype=np.float64)
    beyond = np.argwhere(np.abs(array) > _largest(dtype))
    if len(beyond):
        index = tuple(int(i) for i in beyond[0])
        return origin.at_field(field, *index), _range_message(array[index], dtype)
    return None


def _range_message(value: float, dtype: str) -> str:
    # Finite in the YAML (float64), inf once cast to the model's dtype: NaN from the first step.
    return (f"{value:g} is beyond the range of {dtype} (at most {_largest(dtype):.4g} "
            "in size); give a smaller value")


def _largest(dtype: str) -> float:
    return float(np.finfo(dtype).max)


def unheld(value: float, dtype: str, may_be_zero: bool = False) -> str | None:
    """Why the model's dtype cannot hold a number of the spec, or None: inf once cast
    (`1e39` in float32), or 0 (`eps: 1.0e-50` in float32, and Adam's 0/0 is NaN at once),
    unless `may_be_zero`: a field where 0 is a value like any other."""
    if abs(value) > _largest(dtype):
        return _range_message(value, dtype)
    smallest = float(np.finfo(dtype).smallest_subnormal)
    if value and abs(value) < smallest and not may_be_zero:
        return (f"{value:g} rounds to 0 in {dtype} (the smallest it holds is {smallest:.3g}); "
                "give a larger value")
    return None


def _initializer_range_errors(spec) -> list[tuple[Origin, str]]:
    """Initializer numbers (a constant's value, a normal's std, a uniform's limit) that the
    model's dtype cannot hold."""
    owners = [(Origin("model.init", keys=("model", "init")), spec.model.init)]
    for index, layer in enumerate(spec.model.layers):
        keys = ("model", "layers", index)
        owners += [(Origin(f"model.layers[{index}].{field}", keys=(*keys, field)),
                    getattr(layer, field, None)) for field in ("init", "bias_init")]
    errors = []
    for origin, init in owners:
        for field in ("value", "std", "limit"):
            value = getattr(init, field, None)
            problem = None if value is None else unheld(value, spec.dtype)
            if problem:
                errors.append((origin.at_field(field), problem))
    return errors


def _shape_message(layer, field: str, got: tuple, needed: tuple) -> str:
    verb = "has" if field == "bias" else "have"
    message = f"{field} {verb} shape {list(got)}, the layer needs {list(needed)}"
    if field == "bias":
        return f"{message}: one value per {'unit' if layer.type == 'dense' else 'filter'}"
    if layer.type == "dense":
        inputs, units = needed
        message += (f" ([in, out]: {inputs} input{'s' * (inputs != 1)}, {units} "
                    f"unit{'s' * (units != 1)})")
        if got == needed[::-1]:
            message += ("; nnrun stores a dense weight as [in, out], the transpose of the "
                        "course's w_jk: write the transposed lists")
        return message
    return message + " ([filters, in_channels, *kernel])"


def _give_layer_file(lowered, layer: str, path: Path, origin: Origin, relative_to: str) -> list:
    try:
        shapes = npz_shapes(path, relative_to=relative_to)
    except _Unreadable as error:
        return [(origin, str(error))]
    wanted = {suffix: f"{layer}.{suffix}" for suffix in ("weight", "bias")
              if f"{layer}.{suffix}" in lowered.params}
    found, errors = {}, []
    for key in shapes:
        suffix = key.removeprefix(PARAMS_PREFIX).removeprefix(f"{layer}.")
        if suffix in found:  # weight beside dense_1.weight or params/dense_1.weight
            errors.append((origin, f"{path.name}: "
                                   f"{given_twice(found[suffix], key, wanted[suffix])}"))
        elif suffix in wanted:
            found[suffix] = key
        else:
            errors.append((origin, f"{path.name}: array '{key}' is not a parameter of {layer}; "
                                   f"name the arrays {', '.join(wanted)}"))
    if "weight" not in found:
        errors.append((origin, f"{path.name} has no array 'weight' for {layer}"))
    return errors or _give_found(lowered, path, shapes, {wanted[s]: k for s, k in found.items()},
                                 origin)


def _give_model_file(lowered, path: Path, origin: Origin, relative_to: str) -> list:
    try:
        shapes = npz_shapes(path, relative_to=relative_to)
    except _Unreadable as error:
        return [(origin, str(error))]
    known = {**lowered.params, **lowered.state}
    found, errors = {}, []
    for key in shapes:
        name = key.removeprefix(PARAMS_PREFIX)
        if name in found:  # dense_1.weight beside params/dense_1.weight
            errors.append((origin, f"{path.name}: {given_twice(found[name], key, name)}"))
        elif name in known:
            found[name] = key
        else:
            close = suggest(name, list(known))
            hint = f"did you mean '{close}'?" if close else f"parameters: {', '.join(known)}"
            errors.append((origin, f"{path.name}: array '{key}' is not a parameter of this "
                                   f"model; {hint} (every array must name one, so that a "
                                   "misspelt name cannot leave a layer at its initializer: to "
                                   "begin from some layers of another model, save their arrays "
                                   "alone)"))
    if not found and not errors:
        errors.append((origin, f"{path.name} names none of the parameters "
                               f"({', '.join(known)})"))
    return errors or _give_found(lowered, path, shapes, found, origin)


def given_twice(first: str, second: str, name: str) -> str:
    return f"arrays '{first}' and '{second}' both give {name}; keep one"


def _give_found(lowered, path: Path, shapes: dict, found: dict, origin: Origin) -> list:
    """found: parameter name -> array name in the file."""
    errors = []
    for name, key in found.items():
        info = lowered.params.get(name) or lowered.state[name]
        if shapes[key] != info.shape:
            transposed = (len(info.shape) == 2 and name.endswith(".weight")
                          and tuple(shapes[key]) == tuple(info.shape)[::-1])
            whole_model = origin.keys == ("model", "init_from")
            layout = ("; nnrun stores a dense weight as [in, out], the transpose of PyTorch's "
                      "Linear.weight [out, in]: save its .T" if transposed else
                      "; init_from sets every parameter it names: to begin the others from "
                      "it, save a file without this layer's arrays" if whole_model else "")
            errors.append((origin, f"{path.name}: array '{key}' has shape {list(shapes[key])}, "
                                   f"{name} needs {list(info.shape)}{layout}"))
        else:
            _give(lowered, name, GivenValues(file=path.resolve(), key=key, origin=origin))
    return errors


def _give(lowered, name: str, given: GivenValues) -> None:
    table = lowered.params if name in lowered.params else lowered.state
    table[name] = replace(table[name], init=given)


# A checkpoint's layout (runtime/checkpoint.py writes it): parameters and buffers under
# params/, optimizer state and pruning masks under their own prefixes, a JSON `meta` entry.
PARAMS_PREFIX = "params/"
OWN_PREFIXES = ("opt/", "mask/")
META_KEY = "meta"
# A checkpoint's members that are no initial values: optimizer state, pruning masks, metadata.
_NOT_VALUES = (*OWN_PREFIXES, f"{META_KEY}.npy")


def npz_shapes_or_none(path: Path) -> dict[str, tuple[int, ...]] | None:
    """The shapes of a data file's arrays, whatever they hold (the data loader judges that),
    or None when the file is missing or unreadable (its reader says why)."""
    return npz_shapes_or_reason(path)[0]


def npz_dtypes(path: Path) -> dict[str, np.dtype]:
    """Each array's dtype, from the headers of a file npz_shapes read (empty if it can no
    longer be read: its reader says why)."""
    try:
        headers = _member_headers(path)
        return {member.removesuffix(".npy"): _known(headers[member])[1]
                for member in headers if member.endswith(".npy")}
    except (OSError, *NPZ_DAMAGE):
        return {}


def _member_headers(path: Path) -> dict[str, tuple | Exception]:
    """Each member's (shape, dtype), or the error its header raised, in the archive's order;
    read once for the file as it is now (validate and train ask several times: an npz of
    100,000 members took a minute)."""
    status = Path(path).stat()  # ctime: a copy that kept the old mtime (cp -p) changes it
    return _read_member_headers(str(path), (status.st_ino, status.st_size, status.st_mtime_ns,
                                            status.st_ctime_ns))


@functools.lru_cache(maxsize=4)
def _read_member_headers(path: str, signature: tuple) -> dict[str, tuple | Exception]:
    headers: dict[str, tuple | Exception] = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            try:
                headers[member] = npy_header(archive, member)
            except NPZ_DAMAGE as error:
                headers[member] = error
    return headers


def _known(header: tuple | Exception) -> tuple:
    if isinstance(header, Exception):
        raise header
    return header


def npz_shapes_or_reason(path: Path) -> tuple[dict[str, tuple[int, ...]] | None, str | None]:
    """As npz_shapes_or_none, with why the file could not be read (None when it could), in the
    data loader's words (a csv file named as npz data is told data.dataset: csv)."""
    try:
        return npz_shapes(path, numbers_only=False), None
    except _Unreadable as error:
        return None, unreadable_npz(path, error.damage) if error.damage else str(error)


# What a damaged npz raises inside zipfile, zlib and numpy.lib.format: a header whose dictionary
# does not parse raises tokenize's TokenError or a SyntaxError (NumPy reads it with
# ast.literal_eval: nothing runs), an encrypted member a RuntimeError. runtime/archives.py too.
NPZ_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, NotImplementedError,
              tokenize.TokenError, SyntaxError, RuntimeError)


def npz_shapes(path: Path, numbers_only: bool = True,
               relative_to: str = "the spec file") -> dict[str, tuple[int, ...]]:
    """Each array's name and shape, from the headers alone; a checkpoint's members that are no
    initial values are left out. `numbers_only`: an array of anything but numbers makes the
    file unreadable. `relative_to`: what init_from is read from, in words, for a file not
    there (datasets.paths_relative_to)."""
    unseen = why_not_looked_at(path)
    if unseen:  # Path.exists raises on these (a directory on the way this user cannot search)
        raise _Unreadable(f"{path}: {unseen}")
    if path.exists() and not path.is_file():  # a directory, a device, a FIFO (would block)
        raise _Unreadable(f"{path}: is not a regular file; init_from names an .npz file")
    if not path.is_file():
        raise _Unreadable(f"{path}: {why_absent(path)} (init_from is relative to {relative_to})")
    try:
        headers = _member_headers(path)
        return {member.removesuffix(".npy"): _shape(member, _known(headers[member]),
                                                    numbers_only)
                for member in headers if not member.startswith(_NOT_VALUES)}
    except OSError as error:  # permission, I/O: not the file's content
        raise _Unreadable(f"{path}: {why_unreadable(error)}") from None
    except NPZ_DAMAGE as error:
        raise _Unreadable(f"{path}: not a readable .npz file ({error}); write it with "
                          "numpy.savez", damage=str(error)) from None


def npy_header(archive: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    """A member's declared shape and dtype, from its header alone (a damaged one raises one
    of NPZ_DAMAGE)."""
    if not member.endswith(".npy"):
        raise ValueError(f"member {member!r} is not a .npy array")
    with archive.open(member) as stream:
        return stream_header(stream, f"member {member!r}")


def stream_header(stream, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype of the .npy array `stream` begins with (`what`: it, in a message),
    the stream left at its data."""
    version = npy_format.read_magic(stream)
    if version not in _HEADER_READERS:
        raise ValueError(f"{what} has .npy format version {version}")
    try:
        shape, _, dtype = _HEADER_READERS[version](stream)
    except _HEADER_PARSE_FAILURES as error:
        if isinstance(error, ValueError) and str(error).startswith("EOF: "):
            raise  # NumPy's words: the header is cut short
        raise ValueError(f"{what} has a header that is not a NumPy array header") from None
    if any(size < 0 for size in shape):  # NumPy's header reader lets (-1, 4) through
        raise ValueError(f"{what} declares the shape {list(shape)}")
    return tuple(shape), dtype


_HEADER_READERS = {(1, 0): npy_format.read_array_header_1_0,
                   (2, 0): npy_format.read_array_header_2_0}
# NumPy reads a header's dictionary with ast.literal_eval and, when that fails, says so in
# Python's words: "malformed node or string on line 1: <ast.Call object at 0x...>", a
# tokenizer's tuple, a recursion limit, or the whole header quoted (up to 10,000 characters).
_HEADER_PARSE_FAILURES = (ValueError, SyntaxError, tokenize.TokenError, RecursionError,
                          MemoryError)


def _shape(member: str, header: tuple, numbers_only: bool) -> tuple[int, ...]:
    shape, dtype = header
    if numbers_only and dtype.kind not in "fiu":
        raise ValueError(f"array {member!r} holds {dtype}, not numbers")
    return tuple(shape)
