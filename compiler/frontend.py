"""From a spec file to a checked, compiled model: load, validate, lower, check budgets.

Every problem becomes a Diagnostic at a YAML position (DESIGN.md section 5).
"""

from __future__ import annotations

import decimal
import functools
import itertools
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path

import pydantic
import yaml

from .builder import CompileError, CompileWarning
from .checks import (metrics_of_the_targets, monitor_names, pruning_errors,
                     setting_range_errors, shapeless_errors, split_errors,
                     targets_decide_metrics, tracked_metrics, training_errors,
                     training_warnings, unknown_monitor)
from .datasets import (CSV_ENCODING, HELD_OUT_SPLITS, USER_FILE_DATASETS, csv_columns,
                       csv_header_line, feature_layout_problem, header_row_problem, held_out,
                       held_out_pairs, kernel_file, labels_dtype_problem, labels_name,
                       labels_named_twice, lower_batch_fix, misnamed_split_arrays,
                       npz_arrays_problem, objects_problem, paths_relative_to,
                       planned_training_samples, sample_count_problem, unpaired_array_problem,
                       unread_arrays, unreadable_csv, user_path, why_absent, why_not_looked_at)
from .diagnostics import (Diagnostic, SpecError, after_overrides,
                          diagnostics_from_validation_error, errors_behind_misspelt_types,
                          format_path, problem_paths)
from .initial_values import (given_list_errors, npz_dtypes, npz_shapes_or_none,
                             npz_shapes_or_reason, resolve_initial_values)
from .ir import Origin
from .loader import (Loaded, apply_overrides, beyond_decimal_text, decimal_digits,
                     load_yaml_file, load_yaml_text, override_list, surrogate_problem)
from .recovery import repaired_spec_data
from .lower import Lowered, lower
from .schema import (Spec, default_layer_names, layer_inputs, layers_read_by,
                     run_name_problem)
from .shapes import CHANNEL_LIKE, looks_channel_last
from .step import TrainStep, build_train_step
from .summary import Summary, summarize


@dataclass
class SourceSpec:
    """A validated spec and where it came from (for positions and relative data paths).
    `from_checkpoint`: the spec of a run whose checkpoint gives every parameter (eval,
    predict, a resume): its init_from files are not read, and may be gone."""

    spec: Spec
    loaded: Loaded
    path: Path | None = None
    from_checkpoint: bool = False

    @property
    def directory(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def __getattr__(self, name: str):
        # the spec's own fields through its source: nnrun.load_spec(path).model.layers
        if name.startswith("_") or name in ("spec", "loaded", "path", "from_checkpoint"):
            raise AttributeError(name)
        return getattr(self.spec, name)

    def set_by(self, keys: tuple) -> str:
        """" (after --batch-size 15)": the command line's settings of the value at `keys`, for
        a message that names it outside the diagnostics; "" for the file's own value."""
        return after_overrides(self.loaded.overrides_within(keys))

    def diagnostic(self, origin: Origin | None, message: str, severity="error",
                   of_shapes: bool = False) -> Diagnostic:
        """`of_shapes`: a shape rule's error, whose input the layers before it shaped (the
        overrides of their shapes are named too)."""
        keys = origin.keys if origin else ()
        position = self.loaded.location(keys)
        where = position.origin or (origin.where() if origin else "")
        upstream = self._overrides_shaping(keys) if of_shapes else []
        overrides = sorted({*self.loaded.overrides_within(keys), *upstream,
                            *self._overrides_named(message)} - {position.origin})
        # the file's lines (or the --set it is at) show not all of them
        message += after_overrides(overrides)
        return Diagnostic(position.file, position.line, position.col, severity, where, message)

    def _overrides_shaping(self, keys) -> list[str]:
        """The overrides that shaped the input or the window of the layer at `keys`: of the
        layers whose outputs reach it, not of every layer listed before it."""
        names, reads = self._layer_graph
        if tuple(keys[:2]) != ("model", "layers") or len(keys) < 3 \
                or not isinstance(keys[2], int) or keys[2] >= len(names):
            return []
        feeding = layers_read_by(reads, names[keys[2]]) - {names[keys[2]]}
        return self.loaded.overrides_shaping(
            {index for index, name in enumerate(names) if name in feeding}, keys[2])

    @functools.cached_property
    def _layer_graph(self) -> tuple[list[str], dict[str, list[str]]]:
        """The layers' names and the names each reads: asked by every shape error (a model of
        thousands of broken branches has as many)."""
        names = default_layer_names(self.spec.model.layers)
        return names, dict(zip(names, layer_inputs(self.spec.model.layers)))

    def _overrides_named(self, message: str) -> list[str]:
        """The overrides of settings the message names (`val_* metrics need
        data.validation_split > 0` at train.metrics' line, of a split set from the command
        line)."""
        return [origin for path, origin in self.loaded.overridden
                if len(path) > 1 and format_path(path) in message]


@dataclass
class Checked:
    source: SourceSpec
    summary: Summary | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    over_budget: list[Diagnostic] = field(default_factory=list)  # of diagnostics: limits:

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


def load_spec(path: str | Path, overrides: list[str] | tuple = ()) -> SourceSpec:
    if not isinstance(path, (str, PathLike)):
        raise TypeError(f"load_spec reads a spec file: give its path, got "
                        f"{type(path).__name__} (nnrun.load_spec_data takes a dict)")
    if yaml_text_not_a_path(path):
        raise TypeError("load_spec reads a file; this is YAML text: give "
                        "nnrun.load_spec_text(text)")
    return _load(lambda: load_yaml_file(path), overrides, Path(path))


SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def yaml_text_not_a_path(value) -> bool:
    """A string with a line break, or one that is no file and looks like a YAML mapping
    (`{model: ...}`, `model: ...`): text given where a path was asked. A missing path that
    ends as a spec file's name (`my dir: v2/spec.yaml`, `{name}.yaml`) stays a path, for the
    file-not-found error."""
    if not isinstance(value, str):
        return False
    if "\n" in value:
        return True
    mapping = value.lstrip().startswith("{") or ": " in value
    return (mapping and not value.rstrip().lower().endswith(SPEC_SUFFIXES)
            and not _exists(value))


def _exists(path: str) -> bool:
    """Path.exists, False for what cannot name a file (too long, a NUL byte)."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def load_spec_text(text: str, filename: str = "<spec>", overrides=()) -> SourceSpec:
    if not isinstance(text, str):
        raise TypeError(f"load_spec_text reads YAML text (a str), got {type(text).__name__}; "
                        "nnrun.load_spec reads a file")
    if not isinstance(filename, str):
        raise TypeError(f"filename is the name errors give the text (a str), got "
                        f"{type(filename).__name__}; overrides go as overrides=[...]")
    if re.fullmatch(r"[\w.\[\]-]+=.*", filename, flags=re.DOTALL):  # load_spec's 2nd argument
        raise TypeError(f"filename {filename!r} is an override (PATH=VALUE), not the name errors "
                        f"give the text; give it as overrides={filename!r}")
    return _load(lambda: load_yaml_text(text, filename), overrides, None)


def load_spec_data(data: Mapping, overrides=()) -> SourceSpec:
    """A spec given as Python data (what YAML would load), validated as a file is."""
    if not isinstance(data, Mapping):
        raise TypeError(f"load_spec_data takes a spec as a dict (what YAML loads), got "
                        f"{type(data).__name__}")
    try:
        plain = _plain_copy(data)
        return _load(lambda: Loaded("<spec>", plain, {}), overrides, None)
    except RecursionError:  # copying or checking it, as a file nested this deeply is refused
        raise SpecError([Diagnostic("<spec>", 1, 1, "error", "",
                                    "the spec is nested too deeply")]) from None


_PLAIN = (str, int, float, bool, type(None))


def _plain_copy(data: Mapping) -> dict:
    """The spec's mappings and lists copied (overrides change the copy), arrays (NumPy's,
    PyTorch's: inline weights) as nested lists, other numbers (NumPy's, Fraction, Decimal) as
    Python's, paths as text; any other object is refused where it stands, as a file cannot hold
    it: copying it (copy.deepcopy, as the checks do) would run its own __reduce__, code that
    loading a spec must not run."""
    refused = []

    def copied(value, where: str):
        if isinstance(value, Mapping):
            kept = {}
            for key, item in value.items():
                if beyond_decimal_text(key):
                    refused.append((where, "a key of an integer far longer than any setting"))
                elif problem := surrogate_problem(key):
                    refused.append((where, f"a key: {problem}"))
                elif not isinstance(key, _PLAIN):
                    refused.append((where, _cannot_hold(f"a key {key!r} ({_kind(key)})")))
                else:
                    kept[key] = copied(item, f"{where}.{key}" if where else str(key))
            return kept
        if isinstance(value, (list, tuple)):
            return [copied(item, f"{where}[{index}]") for index, item in enumerate(value)]
        if beyond_decimal_text(value):  # as a file's: json and messages cannot write it
            refused.append((where, f"an integer of about {decimal_digits(value):,} digits, far "
                                   "more than any setting takes"))
            return None
        # a name from os.fsdecode of bytes that are no UTF-8 (a path's is said as a path's)
        problem = surrogate_problem(value)
        if problem and not where.endswith(_PATH_FIELDS):
            refused.append((where, problem))
            return value
        if isinstance(value, _PLAIN):
            return value
        if isinstance(value, PathLike):
            return str(Path(value))
        listed = _as_list(value)
        if listed is not _NOT_AN_ARRAY:
            return listed
        number = _as_number(value)
        if number is not None:
            return number
        refused.append((where, _unheld(value)))
        return value

    plain = copied(data, "")
    if refused:
        raise SpecError([Diagnostic("<spec>", 1, 1, "error", where, message)
                         for where, message in refused])
    return plain


_PATH_FIELDS = ("path", "init_from")  # the schema's FilePath fields, by their last key


def _unheld(value) -> str:
    """Why a value is refused: complex numbers (NumPy's or PyTorch's arrays, whose real ones
    a spec takes) are told their next step."""
    dtype = getattr(value, "dtype", type(value).__name__)
    if "complex" in str(dtype):
        return (f"complex numbers ({dtype}), which a spec cannot hold; give their real parts "
                "(.real)")
    return _cannot_hold(_kind(value))


def _cannot_hold(what: str) -> str:
    return (f"{what}, which a spec cannot hold; give what YAML loads: text, numbers, "
            "true/false, None, lists and dicts")


_NOT_AN_ARRAY = object()


def _as_list(value):
    """An array of real numbers (NumPy's, PyTorch's: a parameter that requires its gradient,
    bfloat16 too) as nested lists of Python numbers, a NumPy number as a Python one; else
    _NOT_AN_ARRAY (complex numbers, text, dates: refused as one value)."""
    import numpy as np

    if not hasattr(value, "__array__"):
        return _NOT_AN_ARRAY
    if not isinstance(value, (np.ndarray, np.generic)) and callable(getattr(value, "tolist", None)):
        try:
            listed = value.tolist()
        except Exception:  # noqa: BLE001 - the object's own conversion: NumPy's is tried next
            listed = None
        if _real_numbers(listed):
            return listed
    try:
        values = np.asarray(value)
    except Exception:  # noqa: BLE001 - the object's own conversion failed: it is refused
        return _NOT_AN_ARRAY
    if values.dtype.kind in "biu":
        return values.tolist()
    if values.dtype.kind == "f":  # float64 holds what a spec's numbers are (longdouble too)
        return values.astype(np.float64).tolist()
    return _NOT_AN_ARRAY


def _real_numbers(listed) -> bool:
    if isinstance(listed, list):
        return all(_real_numbers(item) for item in listed)
    return isinstance(listed, (int, float))


def _as_number(value) -> int | float | None:
    """A number of another type (Fraction, Decimal) as Python's; None for any other value."""
    if not isinstance(value, (numbers.Real, decimal.Decimal)):
        return None
    try:
        return int(value) if isinstance(value, numbers.Integral) else float(value)
    except (ValueError, OverflowError):  # a signalling NaN, a Fraction beyond float
        return None


def _kind(value) -> str:
    return f"a value of type {type(value).__name__}"


def with_overrides(source: SourceSpec, overrides) -> SourceSpec:
    """The same spec with `--set`-style overrides applied and validated again."""
    if not isinstance(source, SourceSpec):
        raise TypeError(f"with_overrides takes a spec as load_spec, load_spec_text or "
                        f"load_spec_data give it, got {type(source).__name__}; nnrun.compile and "
                        "nnrun.train take a path, a dict or a Spec with overrides=[...]")
    if not overrides:
        return source
    return replace(_load(lambda: source.loaded, overrides, source.path),
                   from_checkpoint=source.from_checkpoint)


def _load(read, overrides, path: Path | None) -> SourceSpec:
    """Reads, applies the overrides and validates, reporting every error at once: those of the
    YAML and of the `--set` arguments, then the schema's errors in what could still be read."""
    found: list[Diagnostic] = []
    overrides = override_list(overrides)  # one --set argument as a string, or a list of them
    loaded = _read_on(read, found)
    read_errors = len(found)
    loaded = _read_on(lambda: apply_overrides(loaded, overrides), found)
    if not found:
        return _validate(loaded, path)
    # the shapes around the file's errors, not those of a spec some --set arguments left out of
    shapes = len(found) == read_errors
    try:
        _validate(loaded, path, shapes=shapes)
        if shapes:
            found += _errors_of_intact_layers(loaded, None, path)
    except SpecError as error:
        # a value the loader refused (None in its place) is not reported again by the schema
        refused = {(d.file, d.line, d.col) for d in found}
        found += [d for d in error.diagnostics if (d.file, d.line, d.col) not in refused]
    raise SpecError(_in_file_order(found, loaded.filename)) from None


def _read_on(stage, found: list[Diagnostic]) -> Loaded:
    """stage()'s result; when it fails with a partial result, that one, its errors added to
    `found`; when with none, all the errors so far raised."""
    try:
        return stage()
    except SpecError as error:
        found += error.diagnostics
        if error.partial is None:
            raise SpecError(found) from None
        return error.partial


def _in_file_order(diagnostics: list[Diagnostic], filename: str) -> list[Diagnostic]:
    return sorted(diagnostics, key=lambda d: (d.file != filename, d.file, d.line, d.col))


def _validate(loaded: Loaded, path: Path | None, shapes: bool = True) -> SourceSpec:
    """shapes=False: no shape errors of the layers the schema errors leave intact."""
    try:
        spec = Spec.model_validate(loaded.data)
    except pydantic.ValidationError as error:
        diagnostics = (diagnostics_from_validation_error(error, loaded, Spec)
                       + errors_behind_misspelt_types(error, loaded, Spec))
        if shapes:
            diagnostics += _errors_of_intact_layers(loaded, error, path)
        raise SpecError(_in_file_order(diagnostics, loaded.filename)) from None
    if spec.name is None:
        stem = path.stem if path else "spec"
        spec = spec.model_copy(update={"name": "spec" if run_name_problem(stem) else stem})
    return source_spec(spec, loaded, path)


def source_spec(spec: Spec, loaded: Loaded, path: Path | None = None) -> SourceSpec:
    """The SourceSpec of a validated spec, with model.input_shape from its npz or csv file
    where the spec leaves it out (data paths are relative to the spec's directory)."""
    source = SourceSpec(spec, loaded, path)
    if spec.model.input_shape is not None:
        return source
    shape = data_file_sample_shape(spec, source.directory)
    if shape is None:
        return source
    if len(shape) > MAX_SAMPLE_AXES:
        origin = Origin("data.path", keys=("data", "path"))
        raise SpecError([source.diagnostic(origin, _too_many_axes(spec.data.path, shape))])
    model = spec.model.model_copy(update={"input_shape": shape})
    return replace(source, spec=spec.model_copy(update={"model": model}))


def declared_shape_errors(source: SourceSpec) -> list[Diagnostic]:
    """validate's check of a declared model.input_shape against the samples of its npz or csv
    file (training refuses the mismatch once the data loads; a named dataset's shape is the
    compiler's to check)."""
    return declared_shape_check(source)[0]


def declared_shape_check(source: SourceSpec) -> tuple[list[Diagnostic], SourceSpec]:
    """declared_shape_errors, and the source to check the layers with: where the error advises
    the file's shape itself (not a layout of the file's to change), the source with that shape,
    so that the layers' errors are those that stay once the advice is followed, not the wrong
    shape's ("add a flatten")."""
    declared = source.spec.model.input_shape
    shape = data_file_sample_shape(source.spec, source.directory)
    if declared is None or shape is None or list(declared) == shape:
        return [], source
    origin = Origin("model.input_shape", keys=("model", "input_shape"))
    if len(shape) > MAX_SAMPLE_AXES:
        return [source.diagnostic(origin, _too_many_axes(source.spec.data.path, shape))], source
    npz = source.spec.data.dataset == "npz"
    fix = sample_layout_fix(shape, declared) if npz else None
    if fix:
        return [source.diagnostic(origin, (
            f"input_shape {list(declared)} does not match the samples of "
            f"{source.spec.data.path}, {shape}: {fix}"))], source
    if npz and len(shape) == 3 and looks_channel_last(shape):  # [H, W, C] of other channels
        first = [shape[-1], *shape[:-1]]
        return [source.diagnostic(origin, (
            f"input_shape {list(declared)} does not match the samples of "
            f"{source.spec.data.path}, {shape}, which look channels last ({shape[-1]} channels "
            f"of {shape[0]} x {shape[1]}): save numpy.moveaxis(x, -1, 1) (and x_test, x_val), "
            f"and use input_shape {first}, or leave it out"))], source
    model = source.spec.model.model_copy(update={"input_shape": shape})
    return [source.diagnostic(origin, (
        f"input_shape {list(declared)} does not match the samples of {source.spec.data.path}, "
        f"{shape}; use {shape}, or leave input_shape out: it is read from the file"))], \
        replace(source, spec=source.spec.model_copy(update={"model": model}))


MAX_SAMPLE_AXES = 3  # [features], [channels, length], [channels, height, width]


def sample_layout_fix(shape, expected, array: str = "x", with_held_out: bool = True
                      ) -> str | None:
    """How samples of `shape` become the model's `expected` [C, ...] where they hold the same
    values in another layout: channels last ([H, W, C], as Keras and images save them; taken
    as they are, H channels of W x C), or without their one channel's axis ([H, W]). `array`:
    the npz array that holds them (x: and the held-out splits' with it, `with_held_out`)."""
    shape, expected = tuple(shape), tuple(expected)
    also = " (and x_test, x_val)" if array == "x" and with_held_out else ""
    # the channels are the short axis ([2, 50] against a declared [50, 2] is 2 channels first;
    # [128, 9] against [9, 128], nine sensors last)
    if len(shape) >= 2 and shape != expected and shape == (*expected[1:], expected[0]) \
            and shape[-1] < min(shape[:-1]):
        return (f"the samples are channels last; save numpy.moveaxis({array}, -1, 1){also}, "
                "the channels first")
    if len(expected) >= 2 and expected[0] == 1 and shape == expected[1:]:
        return (f"the samples have no channel axis; save {array}[:, None]{also}, one channel "
                "first")
    return None


def held_out_samples_problem(where: str, features: str, shape, train_shape) -> str | None:
    """A held-out split (`features`: x_test, x_val) whose samples are not of the training
    samples' shape, as the data loader says it (and validate, from the npz's headers)."""
    if tuple(shape) == tuple(train_shape):
        return None
    fix = (sample_layout_fix(shape, train_shape, features)
           or "its samples must have the shape of the training samples")
    return f"{where}: samples are {list(shape)}, in x {list(train_shape)}; {fix}"


def _too_many_axes(path: str, shape: list[int]) -> str:
    return (f"the samples of {path} are {shape}, {len(shape)} axes; a model takes samples of "
            "1 to 3 ([features], [channels, length] or [channels, height, width]): reshape x "
            f"to [N, {', '.join(map(str, shape[-MAX_SAMPLE_AXES:]))}] or another such shape")


def data_file_sample_shape(spec: Spec, directory: Path) -> list[int] | None:
    """For npz and csv data: the sample shape their file's header gives (x's shape after N;
    the csv's columns but `label`), read without the data. None when the file is missing or
    unreadable (then the data loader, or the compiler's request for input_shape, says what
    is wrong)."""
    file = data_file(spec, directory)
    if file is None:
        return None
    if spec.data.dataset == "npz":
        x = (npz_shapes_or_none(file) or {}).get("x")
        return list(x[1:]) if x and len(x) > 1 and all(x[1:]) else None
    return _csv_features(file)


def data_file_training_samples(spec: Spec, directory: Path) -> int | None:
    """An npz's training samples, from its header before the data loads: x's, as many as
    data.limit keeps, less the validation split; None for other data or an unreadable header
    (the loader says why)."""
    file = data_file(spec, directory, ("npz",))
    x = (npz_shapes_or_none(file) or {}).get("x") if file is not None else None
    return planned_training_samples(spec.data, in_file=x[0]) if x else None


def unusable_file_reason(file: Path) -> str | None:
    """Why a data file cannot be read at all: it is not there, cannot be looked at, or is no
    regular file; None for a file that can be opened."""
    reason = why_not_looked_at(file)
    if reason is None and not file.is_file():
        reason = (why_absent(file) if not file.exists() else "a directory, not a file"
                  if file.is_dir() else "not a regular file (a device, pipe or socket)")
    return reason


def unusable_file_message(file: Path, reason: str, directory: Path,
                          gives_shape: bool = False) -> str:
    """`directory`: the spec's (SourceSpec.directory); `gives_shape`: the model's input shape
    is to be read from the file."""
    needed = ("the model's input shape is read from it; fix data.path, or give "
              "model.input_shape" if gives_shape else "train needs it")
    return (f"{file}: {reason} (data.path is relative to {paths_relative_to(directory)}): "
            f"{needed}")


def data_file(spec: Spec, directory: Path,
              kinds: tuple[str, ...] = USER_FILE_DATASETS) -> Path | None:
    """The file data.path names, for a dataset of one of `kinds` (data paths are relative to
    the spec's directory)."""
    data = spec.data
    if data is None or data.dataset not in kinds or not data.path:
        return None
    return directory / user_path(data.path)


def _csv_features(file: Path) -> list[int] | None:
    try:
        header = _csv_header(file)
    except UnicodeDecodeError:  # csv_header_problem's to say
        return None
    return [len(header) - 1] if header and "label" in header and len(header) > 1 else None


def _csv_header(file: Path) -> list[str] | None:
    """The header row's names; None where the file cannot be read. Raises UnicodeDecodeError
    for bytes that are no UTF-8 text."""
    # is_file first: opening a FIFO would block (and why_not_looked_at before it, which raises)
    if why_not_looked_at(file) or not file.is_file() or kernel_file(file):
        return None
    try:
        with open(file, encoding=CSV_ENCODING) as handle:
            return csv_columns(csv_header_line(handle))
    except OSError:
        return None


def data_file_errors(source: SourceSpec) -> list[Diagnostic]:
    """What the data loader will refuse of a csv header, or of an npz's array names and
    sample count (its headers, read once), where its message belongs: said by every command
    that compiles a spec whose input_shape the file must give, and by validate alone where
    input_shape is declared (predict and export of a run read no data)."""
    spec, at_path = source.spec, Origin("data.path", keys=("data", "path"))
    named = data_file(spec, source.directory)
    unusable = unusable_file_reason(named) if named is not None else None
    if unusable:  # said by validate's warning of the file, where the spec gives the shape
        return [] if spec.model.input_shape else [
            source.diagnostic(at_path, unusable_file_message(named, unusable, source.directory,
                                                        gives_shape=True))]
    if named is not None and kernel_file(named):
        return [source.diagnostic(at_path, f"{named} is a file of the kernel's (/proc, /sys), "
                                  "not a data file; data.path must name the data file")]
    problem = csv_header_problem(spec, source.directory)
    npz = data_file(spec, source.directory, ("npz",))
    shapes, unreadable = npz_shapes_or_reason(npz) if npz is not None else (None, None)
    if shapes is not None:
        problem = _npz_file_problem(spec, npz, shapes)
    elif unreadable and npz.is_file():  # a missing file may be made before training
        problem = unreadable
    if problem:
        return [source.diagnostic(at_path, problem)]
    return _npz_setting_errors(source, shapes) if shapes is not None else []


def npz_setting_errors(source: SourceSpec) -> list[Diagnostic]:
    """The spec's settings that its npz file's header refuses (data_file_errors' but for the
    file's own problems, which its loader says)."""
    npz = data_file(source.spec, source.directory, ("npz",))
    shapes, _ = npz_shapes_or_reason(npz) if npz is not None else (None, None)
    if shapes is None or _npz_file_problem(source.spec, npz, shapes):
        return []
    return _npz_setting_errors(source, shapes)


def _npz_setting_errors(source: SourceSpec, shapes: dict) -> list[Diagnostic]:
    """A validation split that leaves no training sample, a val_* monitor without x_val."""
    found = []
    too_few = _npz_split_problem(source.spec, shapes)
    if too_few:
        found.append(source.diagnostic(Origin("data.validation_split",
                                              keys=("data", "validation_split")), too_few))
    no_val = _npz_val_monitor_problem(source.spec, shapes)
    if no_val:
        found.append(source.diagnostic(Origin("train.early_stopping.monitor",
                                              keys=("train", "early_stopping", "monitor")),
                                       no_val))
    return found


def _npz_val_monitor_problem(spec: Spec, shapes: dict) -> str | None:
    """A val_* early-stopping monitor on an npz without x_val, where no validation_split
    holds samples out: the names checks.py leaves to the file, which its header tells (an
    unknown name is checks.py's to say)."""
    stopping = spec.train.early_stopping
    if stopping is None or spec.data.validation_split or "x_val" in shapes \
            or stopping.monitor not in monitor_names(spec, True) \
            or stopping.monitor in monitor_names(spec, False):
        return None
    misnamed = {name: meant for name, meant in misnamed_split_arrays(
        shapes, labels_name(shapes)).items() if meant.endswith("_val")}
    saved = (f"; its {', '.join(misnamed)} are not read: save them as "
             f"{', '.join(misnamed.values())}" if misnamed else "")
    return unknown_monitor(stopping.monitor, monitor_names(spec, False), False, "will not be",
                           f" ({spec.data.path} holds no x_val and y_val{saved})"
                           + metrics_of_the_targets(spec))


def _npz_split_problem(spec: Spec, shapes: dict) -> str | None:
    """A validation split that leaves an npz's training samples none (its header's count),
    as training would refuse it."""
    fraction = spec.data.validation_split
    if not fraction or not shapes.get("x"):
        return None
    count = shapes["x"][0]
    if spec.data.limit is not None and spec.data.limit <= count:
        return None  # what data.limit keeps decides: checks.py says it
    if not count or held_out(count, fraction) < count:
        return None
    fix = "lower data.validation_split" if count > 1 else "remove data.validation_split"
    samples = "sample" if count == 1 else "samples"
    return (f"validation_split {fraction} of the {count} training {samples} of {spec.data.path} "
            f"leaves none to train on; {fix}, or use more samples")


def _npz_file_problem(spec: Spec, file: Path, shapes: dict) -> str | None:
    """The data loader's message for what an npz data file's headers show wrong, of the
    arrays it reads (no x_val where data.validation_split holds out the validation samples
    from x), in the order it says them."""
    unread = unread_arrays(("test",) if spec.data.validation_split else HELD_OUT_SPLITS)
    read = {name: shape for name, shape in shapes.items() if name not in unread}
    dtypes = npz_dtypes(file)  # of every member: the loader reads every header
    return (objects_problem(file, dtypes) or npz_header_problem(file, read, dtypes)
            or npz_samples_problem(file, read))


# What the headers (`shapes` and `dtypes`, by array name) of the arrays the data loader reads
# from an npz show wrong, in its words and order: validate and the loader both ask here, the
# loader checking between the two that the arrays fit the memory.

def npz_header_problem(file: Path, shapes: dict, dtypes: dict) -> str | None:
    """Labels named both y and masks, no x or labels, a held-out split's array alone; then
    features not [N, ...] of numbers (x's, then x_test's, x_val's), labels that are no
    numbers."""
    names = (labels_named_twice(file, shapes) or npz_arrays_problem(file, shapes)
             or unpaired_array_problem(file, shapes, labels_name(shapes)))
    if names:
        return names
    pairs = _npz_pairs(file, shapes)

    def one_sample(features: str, targets: str) -> bool:  # x_test [4], y_test [1], x [N, 4]
        return (features != "x" and tuple(shapes[targets][:1]) == (1,)
                and tuple(shapes[features]) == tuple(shapes.get("x", ())[1:]))

    problems = itertools.chain(
        (feature_layout_problem(shapes[features], dtypes.get(features), where, features,
                                one_sample(features, targets),
                                (tuple(shapes[targets]) or (None,))[0])
         for features, targets, where in pairs),
        (labels_dtype_problem(dtypes.get(targets), shapes[targets], where, targets)
         for _, targets, where in pairs))
    return next(filter(None, problems), None)


def npz_samples_problem(file: Path, shapes: dict) -> str | None:
    """Of an npz whose names and layouts are right: a pair of arrays that hold other numbers
    of samples, a held-out split whose samples are not x's shape."""
    pairs = _npz_pairs(file, shapes)
    problems = itertools.chain(
        (sample_count_problem(where, shapes[features], shapes[targets])
         for features, targets, where in pairs),
        [_x_at_odds_problem(pairs, shapes)],
        (held_out_samples_problem(where, features, shapes[features][1:], shapes["x"][1:])
         for features, _, where in pairs[1:]))
    return next(filter(None, problems), None)


def _x_at_odds_problem(pairs: list, shapes: dict) -> str | None:
    """x, not the held-out splits, at fault: they agree with each other (x_test and x_val) and
    x does not, or x's samples have more axes than a model takes. (With one held-out split of a
    shape a model takes, which is meant cannot be told: held_out_samples_problem blames it.)"""
    held = {features: tuple(shapes[features][1:]) for features, _, _ in pairs[1:]}
    if not held or len(set(held.values())) != 1 or "x" not in shapes:
        return None
    (sample,) = set(held.values())
    train = tuple(shapes["x"][1:])
    if train == sample or not (len(held) > 1 or len(train) > MAX_SAMPLE_AXES >= len(sample)):
        return None
    fix = (sample_layout_fix(train, sample, "x", with_held_out=False)
           or (f"save x.reshape(-1, {', '.join(map(str, sample))})"
               if math.prod(train) == math.prod(sample) else
               "its samples must have the shape of the held-out splits'"))
    return (f"{pairs[0][2]}: samples are {list(train)}, in {' and '.join(held)} "
            f"{list(sample)}; {fix}")


def _npz_pairs(file: Path, shapes: dict) -> list[tuple[str, str, str]]:
    """(features, labels, how messages name the pair) of x and of each held-out split."""
    labels = labels_name(shapes)
    return [(features, targets, f"{file} ({features}, {targets})") for features, targets
            in [("x", labels), *held_out_pairs(labels)] if features in shapes]


def csv_header_problem(spec: Spec, directory: Path) -> str | None:
    """The data loader's message for a csv data file's header row (no `label` column, a
    column without a name or a name twice), for validate to say it rather than ask for
    input_shape or count the columns as features."""
    file = data_file(spec, directory, ("csv",))
    try:
        header = _csv_header(file) if file is not None else None
    except UnicodeDecodeError as error:  # as train says it, not "input_shape is needed"
        return unreadable_csv(file, str(error))
    return header_row_problem(file, header) if header is not None else None


def _errors_of_intact_layers(loaded: Loaded, error: pydantic.ValidationError | None,
                             path: Path | None) -> list[Diagnostic]:
    """Shape errors that the schema's errors (`error`) and the loader's (`loaded.set_aside`:
    a refused value is None, which can mean a default; a duplicate key's first value is kept)
    do not hide (see recovery.py); with every layer intact, the checks against the dataset and
    of the training settings too, but those that name a value the repair set aside (a
    monitor's val_* of a validation_split refused)."""
    problems = problem_paths(error, loaded.data) if error is not None else []
    problems += [("set_aside", place) for place in loaded.set_aside]
    data = repaired_spec_data(loaded.data, problems)
    if data is None:
        return []
    try:
        spec = Spec.model_validate(data)
    except pydantic.ValidationError:
        return []  # the repair was not enough: the schema errors say it all
    repaired = [format_path(path) for _, path in problems]

    def unrepaired(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
        return [d for d in diagnostics if d.severity == "error" and not any(
            name in d.message or d.where.startswith(name) for name in repaired)]

    source = source_spec(spec, replace(loaded, data=data), path)
    found, source = declared_shape_check(source)
    mismatch = unrepaired(found)  # first, as validate says it
    try:
        lowered, _ = compile_checked(source)
    except SpecError as found:
        return mismatch + unrepaired(found.diagnostics)
    if len(spec.model.layers) != len(_listed_layers(loaded.data)):  # a model cut short
        return mismatch
    sample_shape = list(lowered.graph.inputs[0].type.shape[1:])
    return mismatch + unrepaired([source.diagnostic(origin, message) for origin, message
                                  in training_errors(spec, sample_shape)
                                  + pruning_errors(spec, lowered.params)])


def _listed_layers(data: object) -> list:
    model = data.get("model") if isinstance(data, dict) else None
    layers = model.get("layers") if isinstance(model, dict) else None
    return layers if isinstance(layers, list) else []


def resolved_spec_data(source: SourceSpec, absolute_paths: bool = False) -> dict:
    """The spec with every default filled in, layer names included (as Lightning's
    --print_config): what a run really runs. Loading it gives the same model. With
    `absolute_paths`, as a run's spec.yaml holds it: the data file and the initial values'
    files resolved from the spec's directory, so the spec.yaml works from anywhere."""
    spec = source.spec
    if spec.train.metrics is None and not targets_decide_metrics(spec):
        train = spec.train.model_copy(update={"metrics": tracked_metrics(spec, None)})
        spec = spec.model_copy(update={"train": train})
    data = spec.model_dump(mode="json", exclude_none=True)
    names = default_layer_names(spec.model.layers)
    for layer, name in zip(data["model"]["layers"], names):
        layer["name"] = name
    if absolute_paths:
        _make_paths_absolute(data, source)
    return _type_and_name_first(data)


def _make_paths_absolute(data: dict, source: SourceSpec) -> None:
    for owner, key, origin in _file_fields(data):
        owner[key] = _resolved(source, _named_file(source, key, owner[key]), origin)


def _named_file(source: SourceSpec, key: str, text: str) -> Path:
    """A file the spec names, as its loader finds it: from the spec's directory, data.path's
    `~` expanded (init_from's is a directory's name, as its loader reads it)."""
    return source.directory / (user_path(text) if key == "path" else Path(text))


def _file_fields(data: dict) -> list[tuple[dict, str, Origin]]:
    """(owner, key, origin) of every file the spec's data names: data.path, and the initial
    values' init_from files of the model and its layers."""
    owners = [(data.get("data") or {}, "path", Origin("data.path", keys=("data", "path"))),
              (data["model"], "init_from", Origin("model.init_from",
                                                  keys=("model", "init_from")))]
    owners += [(layer, "init_from", Origin.of_layer(index, layer["name"]).at_field("init_from"))
               for index, layer in enumerate(data["model"]["layers"])]
    return [(owner, key, origin) for owner, key, origin in owners if owner.get(key)]


def unnameable_file_errors(source: SourceSpec) -> list[Diagnostic]:
    """Files the spec names whose absolute path a run's spec.yaml could not hold (what train
    refuses before the run: validate says it without reading the files)."""
    found = []
    for owner, key, origin in _file_fields(resolved_spec_data(source)):
        resolved, problem = _resolved_or_problem(_named_file(source, key, owner[key]))
        if resolved is not None and problem:  # one not looked at is said by what reads it
            found.append(source.diagnostic(origin, problem))
    return found


def _not_utf8(path: str) -> str | None:
    """Why a run's spec.yaml, a YAML text, cannot name `path`: a byte of a name that is no
    UTF-8 (Python holds it as a lone surrogate); None where it can."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as error:
        byte = f"\\x{ord(path[error.start]) - 0xDC00:02x}"
        return (f"{path}: a name on the path holds the byte {byte}, which is not UTF-8: the "
                "run's spec.yaml, a YAML text, could not name the file, and the run could not "
                "be read back (eval, predict, resume); rename the directory, or give a path "
                "whose names are UTF-8")
    return None


def _resolved(source: SourceSpec, path: Path, origin: Origin) -> str:
    """The absolute path; one that cannot be looked at (a loop of symbolic links, a directory
    on its way this user cannot search) is an error at the field (a file or a link target
    that is missing is said by what reads it), as is a path spec.yaml cannot hold."""
    resolved, problem = _resolved_or_problem(path)
    if problem:
        raise SpecError([source.diagnostic(origin, problem)])
    return resolved


def _resolved_or_problem(path: Path) -> tuple[str | None, str | None]:
    """(the absolute path a run's spec.yaml would hold, why it cannot): None for the path
    where it cannot be looked at, and why."""
    unseen = why_not_looked_at(path)
    if unseen:
        return None, f"{path}: {unseen}"
    resolved = str(path.resolve())
    return resolved, _not_utf8(resolved)


def _type_and_name_first(value):
    """{type, name, ...} in every mapping, as the docs write them."""
    if isinstance(value, list):
        return [_type_and_name_first(item) for item in value]
    if not isinstance(value, dict):
        return value
    first = {key: value[key] for key in ("type", "name") if key in value}
    rest = {key: item for key, item in value.items() if key not in first}
    return {key: _type_and_name_first(item) for key, item in {**first, **rest}.items()}


class _SpecDumper(yaml.SafeDumper):
    """Quotes the text that YAML 1.2 readers (editors checking the schema) take for a number:
    `08`, `0o17`, `1e3`, which PyYAML writes bare, as YAML 1.1 reads them as text."""


# YAML 1.2's core schema's integers and floats (1.1's are quoted by PyYAML already)
_YAML_12_NUMBER = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"
                             r"|[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "'" if _YAML_12_NUMBER.fullmatch(text) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_SpecDumper.add_representer(str, _represent_text)


def spec_yaml(data: dict) -> str:
    """`name: réseau` as written, not "r\\xE9seau"; with escapes where PyYAML would write a
    character bare that reads back as something else (U+0085, a line break to YAML 1.1, in a
    single-quoted path came back as a space)."""
    def dumped(allow_unicode: bool) -> str:
        return yaml.dump(data, Dumper=_SpecDumper, sort_keys=False, default_flow_style=None,
                         width=100, allow_unicode=allow_unicode)

    text = dumped(allow_unicode=True)
    return text if yaml.safe_load(text) == data else dumped(allow_unicode=False)


def compile_checked(source: SourceSpec, data_parallel: bool = False) -> tuple[Lowered, TrainStep]:
    """Lowers the spec for inference and for training; a CompileError becomes a SpecError."""
    unreadable = data_file_errors(source) if source.spec.model.input_shape is None else []
    if unreadable:  # the shape a data file gives: from its `x`, its columns but `label`
        raise SpecError(unreadable)
    lowered = None
    try:
        lowered = lower(source.spec, mode="eval", directory=source.directory)
        step = build_train_step(source.spec, data_parallel=data_parallel)
    except CompileError as error:
        warnings = layout_warnings(source) + [warning_diagnostic(source, w)
                                              for w in error.warnings]
        given = lowered or error.lowered  # the layers before the error: their lists' errors
        others = [source.diagnostic(origin, message) for origin, message
                  in setting_range_errors(source.spec) + shapeless_errors(source.spec)
                  + (given_list_errors(source.spec, given) if given else [])]
        raise SpecError(_in_file_order(
            [*warnings, *(source.diagnostic(each.origin, each.message, of_shapes=each.of_shapes)
                          for each in [error, *error.more]), *others],
            source.loaded.filename)) from None
    errors = (resolve_initial_values(source.spec, lowered, source.directory,
                                     files=not source.from_checkpoint)
              + setting_range_errors(source.spec))
    if errors:
        raise SpecError(_in_file_order([source.diagnostic(origin, message)
                                        for origin, message in errors], source.loaded.filename))
    return lowered, step


def check(source: SourceSpec) -> Checked:
    """Shapes, dataset compatibility, warnings and budgets; never loads data."""
    lowered, step = compile_checked(source)
    summary = summarize(source.spec, lowered, step)
    diagnostics = spec_warnings(source, lowered)
    diagnostics += [source.diagnostic(origin, message) for origin, message
                    in training_errors(source.spec, summary.input_shape)
                    + pruning_errors(source.spec, lowered.params)]
    over_budget = _budget_errors(source, summary)
    diagnostics = _in_file_order(diagnostics + over_budget, source.loaded.filename)
    return Checked(source, summary, diagnostics, over_budget)


def refuse_data_errors(source: SourceSpec) -> None:
    """What validate says of the spec's settings against the data without loading it (too few
    samples for the splits, an npz or csv file's samples against input_shape), raised at the
    same positions before train loads any data: its loader would refuse them, but not where.
    Problems of the file itself stay the loader's (a DataError, at data.path)."""
    errors = [source.diagnostic(origin, message)
              for origin, message in split_errors(source.spec.data)]
    # a file with a problem of its own (a column the header leaves unnamed, pandas' index, is
    # no feature whose count input_shape should take) is the loader's to refuse, as validate
    # says it first
    declared = source.spec.model.input_shape is not None
    errors += npz_setting_errors(source) + (
        [] if declared and data_file_errors(source) else declared_shape_errors(source))
    errors = [diagnostic for diagnostic in errors if diagnostic.severity == "error"]
    if errors:
        raise SpecError(_in_file_order(errors, source.loaded.filename))


def data_origin(spec) -> Origin:
    """Where the spec names its data: the file (data.path) where it gives one, else the
    dataset."""
    key = "path" if spec.data is not None and spec.data.path else "dataset"
    return Origin(f"data.{key}", keys=("data", key))


def warning_diagnostic(source: SourceSpec, warning: CompileWarning) -> Diagnostic:
    return source.diagnostic(warning.origin, warning.message, "warning",
                             of_shapes=warning.of_shapes)


def spec_warnings(source: SourceSpec, lowered) -> list[Diagnostic]:
    """The warnings validate gives and train prints before its first epoch: the model's
    (lowering) and the training settings' (checks.training_warnings), in file order."""
    model = [warning_diagnostic(source, warning) for warning in lowered.warnings]
    settings = [source.diagnostic(origin, message, "warning") for origin, message
                in training_warnings(source.spec, tuple(lowered.logits.type.shape[1:]))]
    return _in_file_order(layout_warnings(source) + model + settings, source.loaded.filename)


ELEMENTWISE = ("dropout", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "softplus",
               "identity", "step")  # layers that read no axis: the layout passes through them


def _first_layout_reader(layers) -> str | None:
    """The type of the first layer that reads the sample's axes (a flatten, a reshape to one
    axis or a dense layer makes the layout not matter: "flatten" for them)."""
    layer = next((layer for layer in layers if layer.type not in ELEMENTWISE), None)
    if layer is None:
        return None
    flattens = layer.type == "dense" or layer.type == "reshape" and len(layer.shape) == 1
    return "flatten" if flattens else layer.type


def layout_warnings(source: SourceSpec) -> list[Diagnostic]:
    """Samples that look channel-last ([H, W, C], as Keras and image libraries lay them out):
    read channels first they still train, wrongly, so it is said. Of an npz's samples, where
    the spec leaves their shape to the file (giving input_shape says the layout is meant); of
    a declared input_shape, where it is an image's, [H, W, C] of 1 to 4 channels, that a 2-D
    layer reads first (no one means 28 channels of 28 x 1)."""
    spec = source.spec
    shape = spec.model.input_shape
    model = source.loaded.data.get("model") if isinstance(source.loaded.data, dict) else None
    if shape is None or not isinstance(model, dict) or len(shape) < 2 \
            or not looks_channel_last(shape) \
            or _first_layout_reader(spec.model.layers) in ("flatten", None):
        return []
    channels, *rest = shape
    read = " x ".join(map(str, rest)) if len(rest) > 1 else f"length {rest[0]}"
    image = _image_channel_last(shape, spec.model.layers)
    if "input_shape" in model:
        if not image:
            return []
        return [source.diagnostic(Origin("model.input_shape", keys=("model", "input_shape")), (
            f"input_shape {list(shape)} is read channels first: {channels} channels of {read}; "
            f"for {shape[0]} x {shape[1]} images of {shape[2]} channel"
            f"{'s' if shape[2] > 1 else ''} write [{shape[2]}, {shape[0]}, {shape[1]}] (nnrun "
            "lays samples out [C, H, W], as PyTorch does)"
            + ("; save the npz's x so too: numpy.moveaxis(x, -1, 1)"
               if spec.data is not None and spec.data.dataset == "npz" else "")), "warning")]
    if spec.data is None or spec.data.dataset != "npz":
        return []
    meant = "" if image else f"; if the layout is meant, set model.input_shape: {list(shape)}"
    return [source.diagnostic(Origin("data.path", keys=("data", "path")), (
        f"the samples of {spec.data.path} are {list(shape)}, read channels first: {channels} "
        f"channels of {read}. If x is channel-last ([N, ..., C]), save "
        f"numpy.moveaxis(x, -1, 1) instead{meant}"), "warning")]


def _image_channel_last(shape, layers) -> bool:
    """[H, W, C] of 1 to 4 channels after longer axes, that a 2-D layer reads first."""
    return (len(shape) == 3 and shape[2] <= CHANNEL_LIKE < min(shape[:2])
            and "2d" in (_first_layout_reader(layers) or ""))  # conv2d_transpose too


def _budget_errors(source: SourceSpec, summary: Summary) -> list[Diagnostic]:
    limits = source.spec.limits
    if limits is None:
        return []
    batch = summary.batch_size  # the training samples where train.batch_size is more
    checks = [  # key, the model's value, the budget, their unit, what is counted, the fix
        ("max_params", summary.total_params, limits.max_params, "", "parameters",
         "make layers smaller or raise the budget"),
        ("max_flops", summary.flops_per_sample, limits.max_flops, "", "forward FLOPs per sample",
         "reduce filters/units or downsample earlier"),
        ("max_train_memory_mb", summary.train_memory_bytes / 2**20, limits.max_train_memory_mb,
         " MB", f"of training memory at batch size {batch}",
         lower_batch_fix(batch, source.spec.train.batch_size)),
    ]
    errors = []
    for key, actual, limit, unit, what, fix in checks:
        if limit is not None and actual > limit:
            origin = Origin(f"limits.{key}", keys=("limits", key))
            needed, budget = _told_apart(actual, limit)
            errors.append(source.diagnostic(
                origin, f"the model needs {needed}{unit} {what}, over the budget of "
                        f"{budget}{unit}; {fix}"))
    return errors


def _told_apart(actual, limit) -> tuple[str, str]:
    """The two numbers with as many digits as show them different (a budget of 6641.9 FLOPs
    read "6,642" beside the model's 6,642)."""
    for digits in range(4, 18):
        shown = _number(actual, digits), _number(limit, digits)
        if shown[0] != shown[1]:
            break
    return shown


def _number(value, digits: int = 4) -> str:
    """`digits` significant digits, without an exponent (19999.9: "20,000", not "2e+04")."""
    if isinstance(value, float) and not value.is_integer():
        decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
        shown = f"{value:,.{decimals}f}"
        return shown.rstrip("0").rstrip(".") if decimals else shown
    return f"{int(value):,}"
