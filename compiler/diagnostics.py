"""gcc-style diagnostics, and the translation of pydantic errors into them (DESIGN.md §5).

    specs/bad.yaml:9:7: error: model.layers[1] (conv2d_1): unknown field 'kernal_size'; did you
    mean 'kernel_size'?
"""

from __future__ import annotations

import copy
import datetime
import difflib
import functools
import json
import re
import types
import typing
import unicodedata
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Hashable, Iterable, Literal

import pydantic
import yaml

from nnrun.notices import one_line

from .datasets import DATASETS

if TYPE_CHECKING:
    from nnrun.compiler.loader import Loaded, Position

Severity = Literal["error", "warning"]
FORMATS = ("text", "json", "github")
# The `file` of a diagnostic about a `--set` argument: there is no file to point at.
OVERRIDE_FILE = "--set"
DOCUMENT = "spec"  # the `where` of a problem of the spec as a whole, or of its top level


@dataclass(frozen=True)
class Diagnostic:
    file: str
    line: int
    col: int
    severity: Severity
    where: str  # a path in the spec ("model.layers[1]"); "spec" for the document as a whole
    message: str

    def __post_init__(self):
        # section 5's `where:` field is in every line, for the parsers of the format
        if not self.where:
            object.__setattr__(self, "where", DOCUMENT)

    def format(self) -> str:
        line = f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.where}: {self.message}"
        return one_line(line)  # a key or value holding a line break stays one line


class SpecError(Exception):
    def __init__(self, diagnostics: Iterable[Diagnostic], partial: Loaded | None = None):
        """`partial`: what could still be read around the errors (the loader's duplicate keys,
        refused tags and bad scalars left out, the `--set` arguments that failed not applied),
        so that the schema's errors can be reported with these, all at once."""
        self.diagnostics = distinct(diagnostics)
        self.partial = partial
        super().__init__(format_diagnostics(self.diagnostics, "text"))


# ---------------------------------------------------------------------------------------------
# Output


def format_diagnostics(diagnostics: Iterable[Diagnostic], fmt: str = "text") -> str:
    diagnostics = distinct(diagnostics)
    if fmt == "text":
        return "\n".join(diagnostic.format() for diagnostic in diagnostics)
    if fmt == "json":
        return json.dumps([asdict(diagnostic) for diagnostic in diagnostics], indent=2)
    if fmt == "github":
        return "\n".join(_github_line(diagnostic) for diagnostic in diagnostics)
    raise ValueError(f"unknown diagnostics format {fmt!r}; expected one of {', '.join(FORMATS)}")


def distinct(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """The diagnostics less repeats of an earlier one's place and problem (the message up to
    its advice, which may differ with the layer: "did you mean 'units' (set already)?"): a
    typo in an anchored mapping that two layers merge is one error at the typo, whichever
    layer says it. At 1:1, where a spec without positions (Python data) says everything, and
    in a --set argument, `where` and the whole message tell them apart."""
    said: set[tuple] = set()
    kept = []
    for diagnostic in diagnostics:
        positionless = (diagnostic.line, diagnostic.col) == (1, 1) \
            or diagnostic.file == OVERRIDE_FILE  # a --set argument is one place
        problem = diagnostic.message if positionless else diagnostic.message.split("; ")[0]
        said_as = (diagnostic.file, diagnostic.line, diagnostic.col, diagnostic.severity,
                   problem, diagnostic.where if positionless else None)
        if said_as not in said:
            said.add(said_as)
            kept.append(diagnostic)
    return kept


def _github_line(diagnostic: Diagnostic) -> str:
    message = _github_escape(f"{diagnostic.where}: {diagnostic.message}", False)
    if diagnostic.file == OVERRIDE_FILE:  # no file in the repository; the message names --set
        return f"::{diagnostic.severity}::{message}"
    file = _github_escape(diagnostic.file, True)
    properties = f"file={file},line={diagnostic.line},col={diagnostic.col}"
    return f"::{diagnostic.severity} {properties}::{message}"


def _github_escape(text: str, is_property: bool) -> str:
    # GitHub's workflow-command syntax: these characters would end the value or the command.
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if is_property:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


# Fields one layer type names otherwise, which spelling alone would not suggest: a dense
# layer's `units` are a convolution's `filters`, and so on.
SYNONYMS = {"units": ("filters",), "filters": ("units",), "kernel": ("kernel_size", "pool_size"),
            "size": ("kernel_size", "pool_size"), "pool": ("pool_size",),
            "kernel_size": ("pool_size",), "pool_size": ("kernel_size",),
            "mode": ("padding_mode",),
            "channels": ("filters", "units"), "neurons": ("units",), "outputs": ("units",),
            "activation_function": ("activation",), "rate": ("dropout",), "p": ("rate",),
            "learning_rate": ("lr",),
            # other frameworks' names, which string likeness maps to the wrong one
            # (categorical_crossentropy is nearer binary_cross_entropy than cross_entropy)
            **dict.fromkeys(("categorical_crossentropy", "sparse_categorical_crossentropy",
                             "categorical_cross_entropy", "crossentropy", "nll", "nll_loss",
                             "log_loss", "softmax_cross_entropy"), ("cross_entropy",)),
            **dict.fromkeys(("binary_crossentropy", "bce", "bce_with_logits",
                             "sigmoid_cross_entropy"), ("binary_cross_entropy",)),
            **dict.fromkeys(("mean_squared_error", "l2", "squared_error"), ("mse",)),
            **dict.fromkeys(("mean_absolute_error", "l1", "absolute_error"), ("mae",)),
            "smooth_l1": ("huber",),
            "kaiming_uniform": ("he_uniform",), "kaiming_normal": ("he_normal",),
            "glorot_uniform": ("xavier_uniform",), "glorot_normal": ("xavier_normal",),
            # fields of another optimizer, or of another name
            "momentum": ("beta1",), "beta1": ("momentum",), "beta_1": ("beta1",),
            "beta_2": ("beta2",), "topk": ("k",), "top_k": ("k",),
            # PyTorch's and Keras's names of a layer's fields, and of a dense layer
            "out_channels": ("filters",), "out_features": ("units",),
            "kernel_initializer": ("init",), "bias_initializer": ("bias_init",),
            "linear": ("dense", "identity"), "fully_connected": ("dense",),
            "fc": ("dense",),
            "conv": ("conv2d",), "maxpool": ("maxpool2d",), "avgpool": ("avgpool2d",),
            "betas": ("beta1",), "dim": ("axis",), "rho": ("alpha",), "eta_min": ("min_lr",),
            # Keras's and PyTorch's layer and metric names (looked up in lower case)
            "maxpooling1d": ("maxpool1d",), "maxpooling2d": ("maxpool2d",),
            "averagepooling1d": ("avgpool1d",), "averagepooling2d": ("avgpool2d",),
            "avgpooling2d": ("avgpool2d",),
            **dict.fromkeys(("globalaveragepooling1d", "globalaveragepooling2d",
                             "adaptiveavgpool2d", "global_average_pooling"), ("global_avgpool",)),
            **dict.fromkeys(("globalmaxpooling1d", "globalmaxpooling2d", "adaptivemaxpool2d"),
                            ("global_maxpool",)),
            **dict.fromkeys(("batchnormalization", "batch_normalization", "batchnorm1d",
                             "batchnorm2d", "bn"), ("batchnorm",)),
            "conv2dtranspose": ("conv2d_transpose",), "convtranspose2d": ("conv2d_transpose",),
            "conv1dtranspose": ("conv1d_transpose",), "convtranspose1d": ("conv1d_transpose",),
            "upsampling1d": ("upsample1d",), "upsampling2d": ("upsample2d",),
            "leakyrelu": ("leaky_relu",), "acc": ("accuracy",), "categorical_accuracy":
            ("accuracy",), "sparse_categorical_accuracy": ("accuracy",),
            # PyTorch's loss classes (looked up in lower case)
            **dict.fromkeys(("crossentropyloss", "nllloss"), ("cross_entropy",)),
            **dict.fromkeys(("bceloss", "bcewithlogitsloss"), ("binary_cross_entropy",)),
            "mseloss": ("mse",), "l1loss": ("mae",),
            **dict.fromkeys(("huberloss", "smoothl1loss"), ("huber",)),
            # Keras' and TFDS's `name` of a dataset, an optimizer, a loss
            "name": ("dataset", "type"),
            "max_samples": ("limit",), "num_samples": ("n_samples", "limit"),
            "random_translation": ("random_shift",), "randomtranslation": ("random_shift",),
            "begin_epoch": ("start_epoch",)}


def suggest(word: Any, candidates: Iterable[Any], synonyms: Iterable[Any] = ()) -> str | None:
    """The candidate `word` is closest to; a name in `synonyms` (default: the candidates) that
    means what `word` does comes first."""
    names = [str(c) for c in candidates]
    meant = set(map(str, synonyms)) or set(names)
    listed = SYNONYMS.get(str(word)) or SYNONYMS.get(str(word).lower(), ())
    synonym = next((s for s in listed if s in meant), None)
    if synonym:
        return synonym
    same_but_case = [name for name in names if name.lower() == str(word).lower()]
    if same_but_case:  # `Relu` is relu, though difflib finds elu closer
        return same_but_case[0]
    matches = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _did_you_mean(word: Any, candidates: Iterable[Any], synonyms: Iterable[Any] = ()) -> str:
    return _did_you_mean_among(str(word), tuple(map(str, candidates)), tuple(map(str, synonyms)))


@functools.lru_cache(maxsize=1024)  # 5,000 layers of one typo: one string likeness search
def _did_you_mean_among(word: str, names: tuple[str, ...], synonyms: tuple[str, ...]) -> str:
    match = suggest(word, names, synonyms)
    if not match:
        return ""
    # `convd`: conv1d as near as conv2d, which only the sample's shape tells apart (a synonym
    # or a name but for its case is meant, not merely near)
    by_closeness = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6) == [match]
    tied = [name for name in names if name != match
            and _closeness(word, name) == _closeness(word, match)] if by_closeness else []
    quoted = " or ".join(f"'{name}'" for name in [match, *tied])
    return f"; did you mean {quoted}?"


def _dataset_takes(owner: tuple, present: Any, field: str) -> bool:
    """Whether the data section's dataset takes `field` (n_samples: a generated one), so that
    a near name is not offered a field its dataset refuses (num_samples on mnist: limit)."""
    from .schema import DATASETS_TAKING, Data

    if owner != ("data",) or field not in DATASETS_TAKING or not isinstance(present, dict):
        return True
    return present.get("dataset", Data.model_fields["dataset"].default) in DATASETS_TAKING[field]


def _as_near_unset(word: Any, closest: str, unset: list[str]) -> bool:
    """Whether a field not set yet is as near `word` as `closest`, which is set (`beat` by
    beta2 set: beta1 is meant)."""
    if closest in SYNONYMS.get(str(word), ()):  # meant by its name, not merely near it
        return False
    near = suggest(word, unset)
    return near is not None and _closeness(word, near) >= _closeness(word, closest)


def _closeness(word: Any, name: str) -> float:
    return difflib.SequenceMatcher(None, str(word), name).ratio()


# ---------------------------------------------------------------------------------------------
# Spec paths


def format_path(path: Iterable[Hashable]) -> str:
    """("model", "layers", 3, "kernel_size") -> "model.layers[3].kernel_size"."""
    text = ""
    for component in path:
        if isinstance(component, int) and not isinstance(component, bool):
            text += f"[{component}]"
        else:
            text += f".{component}" if text else str(component)
    return text


_ABSENT = object()


def _is_tag(value: Any, component: Any) -> bool:
    """Whether `component` of an error's location is the tag pydantic puts after a tagged
    union (the layer's type), where `value` is the mapping of that type."""
    return (isinstance(value, dict) and isinstance(component, str)
            and value.get("type") == component)


def _has_child(value: Any, component: Any) -> bool:
    if isinstance(value, dict):
        return _is_hashable(component) and component in value
    if isinstance(value, list) and isinstance(component, int) and not isinstance(component, bool):
        return 0 <= component < len(value)
    return False


def _is_hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _value_at(data: Any, path: tuple) -> Any:
    for component in path:
        if not _has_child(data, component):
            return _ABSENT
        data = data[component]
    return data


# ---------------------------------------------------------------------------------------------
# From pydantic errors


@dataclass(frozen=True)
class _Problem:
    error: dict
    # The loc with pydantic's union labels (like 'conv2d' or 'int') dropped: a path in the data.
    data_path: tuple
    # (index in loc, label) for each dropped component.
    labels: tuple
    # The mapping holding the field at fault was made by an override with its default type.
    typed_by_default: bool = False
    # The field at fault was given by an override (--set), not written in the file.
    overridden: bool = False


def diagnostics_from_validation_error(
    error: pydantic.ValidationError, loaded: Loaded, schema: Any = None
) -> list[Diagnostic]:
    """One diagnostic per problem in `error`. `schema` is the root model class that was validated;
    with it, unknown fields get a did-you-mean and bounds name the expected number type."""
    return _diagnostics_of(error.errors(), loaded, schema)


def _diagnostics_of(items: list[dict], loaded: Loaded, schema: Any) -> list[Diagnostic]:
    problems = [_locate(item, loaded.data) for item in items]
    problems = _without_misspelt_missing(_resolve_alternatives(problems), schema)
    diagnostics = {_diagnostic(problem, loaded, schema): None for problem in problems}
    return sorted(_without_what_a_misplaced_key_explains(list(diagnostics)),
                  key=lambda d: (d.file != loaded.filename, d.file, d.line, d.col))


_MISPLACED = re.compile(r"unknown field '(\w+)'; it belongs in the (\w+) section")


def _without_what_a_misplaced_key_explains(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """A key one level out of its section (`layers:` under an empty `model:`) is the cause of
    its section's errors: the section null, the key missing from it; those go, the key's
    error says the fix."""
    misplaced = [found.groups() for d in diagnostics if (found := _MISPLACED.match(d.message))]

    def explained(d: Diagnostic) -> bool:
        return any(d.where == "spec" and d.message == f"'{section}' must be a mapping, got null"
                   or d.where == section and (d.message == f"missing required field '{key}'"
                                              or f"{section}.{key} " in d.message)
                   for key, section in misplaced)

    return [d for d in diagnostics if not explained(d)]


def errors_behind_misspelt_types(error: pydantic.ValidationError, loaded: Loaded,
                                 schema: Any) -> list[Diagnostic]:
    """`{type: dens, units: -8}`, or `{units: -8}` without its type: the mapping's other errors,
    as the type its error suggests (dense) would have them. pydantic stops at the type, and they
    came one fix later."""
    data, renamed = copy.deepcopy(loaded.data), []
    for item in error.errors():
        path = _locate(item, loaded.data).data_path
        mapping = _value_at(data, path)
        if isinstance(mapping, dict) and _other_lists_kind(
                _kind_of(path), mapping.get(_discriminator(item))):
            continue  # a layer among the augmentations: no augmentation's fields to check
        meant = _meant_tag(item, mapping, schema)
        if meant and isinstance(mapping, dict):
            mapping.pop(misspelt_key(mapping, _discriminator(item),
                                     _annotation_at(schema, item["loc"])), None)
            mapping[_discriminator(item)] = meant
            renamed.append(tuple(path))
    if not renamed:
        return []
    try:
        schema.model_validate(data)
        return []
    except pydantic.ValidationError as again:
        inside = [item for item in again.errors()
                  if any(tuple(_locate(item, data).data_path[:len(p)]) == p for p in renamed)]
        return _diagnostics_of(inside, replace(loaded, data=data), schema)


def _meant_tag(item: dict, mapping: Any, schema: Any) -> str | None:
    """The type a mapping whose type is unknown, misspelt or missing was most likely meant as."""
    if item["type"] not in _ABOUT_MAPPING or not isinstance(mapping, dict):
        return None
    discriminator, union = _discriminator(item), _annotation_at(schema, item["loc"])
    given = item.get("ctx", {}).get("tag")
    misspelt = misspelt_key(mapping, discriminator, union)
    if item["type"] == "union_tag_not_found" and misspelt is not None:
        given = mapping[misspelt]
    if given is not None:
        meant = suggest(given, [tag for tag, _ in _tagged_members(union, discriminator)])
        if meant or not isinstance(given, str):
            return meant
    return only_fitting_tag(mapping, union, discriminator)


def fitting_tags(mapping: dict, union: Any, discriminator: str = "type") -> list[str]:
    """The types of `union` whose fields hold the most of a type-less mapping's keys
    (`{units: 10}`: dense); none when no key is any type's field."""
    keys = {key for key in mapping if key != discriminator}
    counts = {tag: len(keys & set(_field_names(member)))
              for tag, member in _tagged_members(union, discriminator)}
    best = max(counts.values(), default=0)
    return [tag for tag, count in counts.items() if count == best] if best else []


def only_fitting_tag(mapping: Any, union: Any, discriminator: str = "type") -> str | None:
    """The one type a mapping's fields fit, or None (none, or several)."""
    fitting = fitting_tags(mapping, union, discriminator) if isinstance(mapping, dict) else []
    return fitting[0] if len(fitting) == 1 else None


def layer_fields(layer_type: Any) -> list[str]:
    """The fields of the layer type named (none for a type that is not one)."""
    return list(_fields_by_layer_type().get(layer_type, ())) if isinstance(layer_type, str) \
        else []


@functools.cache
def _fields_by_layer_type() -> dict[str, tuple[str, ...]]:
    """Each layer type's fields: asked once per unknown field of a layer (5,000 broken layers
    walked the schema 15,000 times)."""
    from .schema import Layer

    return {tag: tuple(_field_names(member)) for tag, member in _tagged_members(Layer, "type")}


def layers_with_field(name: Any, value: Any, layer_type: Any) -> list[str]:
    """The other layer types that have the field `name`, where the layer type named lacks it:
    a field put on the wrong layer, not a misspelling (`init` on a pool: dense and the
    convolutions). None where a counterpart of the layer's own is meant (`units: 8` on a
    conv2d is its filters, `mode: reflect` its padding_mode; `mode: bilinear` is upsampling's);
    of several, those whose field takes `value`."""
    fields = layer_fields(layer_type)
    if name in fields:
        return []
    counterparts = [synonym for synonym in SYNONYMS.get(str(name), ()) if synonym in fields]
    if counterparts and _takes(layer_type, counterparts[0], value):
        return []
    having = [tag for tag, its_fields in _fields_by_layer_type().items() if name in its_fields]
    taking = [tag for tag in having if _takes(tag, name, value)]
    if counterparts and not taking:  # a value neither takes: the counterpart is likelier
        return []
    return taking or having


def _takes(layer_type: str, field: str, value: Any) -> bool:
    """Whether a layer of `layer_type` takes `value` as its `field`."""
    try:
        _layer_adapter().validate_python({"type": layer_type, field: value})
    except pydantic.ValidationError as error:
        return not any(field in item["loc"] for item in error.errors())
    return True


@functools.cache
def _layer_adapter() -> pydantic.TypeAdapter:
    from .schema import Layer

    return pydantic.TypeAdapter(Layer)


def _tagged_members(union: Any, discriminator: str) -> list[tuple[str, Any]]:
    """(tag, model) of each member of a tagged union."""
    members = [_unwrap(m) for m in _union_members(_unwrap(union))] if union is not None else []
    return [(str(_literal_values(m, discriminator)[0]), m) for m in members
            if _is_model(m) and _literal_values(m, discriminator)]


def _without_misspelt_missing(problems: list[_Problem], schema: Any = None) -> list[_Problem]:
    """`kernal_size: 3` is one mistake: its unknown field says "did you mean 'kernel_size'?",
    so the missing kernel_size beside it is not said again; nor is the first required field
    that a field named as the mapping's type gives (`{type: dense, dense: 10}`: units)."""
    unknown: dict[tuple, set] = {}  # the mapping's path -> its unknown fields
    for problem in problems:
        if problem.error["type"] == "extra_forbidden" and problem.data_path:
            unknown.setdefault(problem.data_path[:-1], set()).add(problem.data_path[-1])

    def misspelt(problem: _Problem) -> bool:
        parent, name = problem.data_path[:-1], problem.data_path[-1]
        if any(suggest(typo, [name]) == name for typo in unknown.get(parent, ())):
            return True
        tags = {label for _, label in problem.labels}
        return bool(tags.intersection(unknown.get(parent, ()))) and schema is not None \
            and name == _first_required(_annotation_at(schema, problem.error["loc"][:-1]))

    return [problem for problem in problems
            if not (problem.error["type"] == "missing" and problem.data_path
                    and misspelt(problem))]


def problem_paths(error: pydantic.ValidationError, data: Any) -> list[tuple[str, tuple]]:
    """(pydantic's error type, path in the data) of each problem, for a repair to work on."""
    problems = _resolve_alternatives([_locate(item, data) for item in error.errors()])
    return [(problem.error["type"], problem.data_path) for problem in problems]


def _locate(error: dict, data: Any) -> _Problem:
    path, labels, value = [], [], data
    loc = error["loc"]
    tagged = None  # the mapping whose tag the location named last: then come its fields
    for index, component in enumerate(loc):
        # a union's tag comes before the member's field; last, it is a key of a model with a
        # type of its own (pruning: {type: magnitude, magnitude: 0.5})
        if value is not tagged and index < len(loc) - 1 and _is_tag(value, component):
            labels.append((index, component))  # {type: dropout, dropout: 0.2}: not its key
            tagged = value
        elif _has_child(value, component):
            value = value[component]
            path.append(component)
        elif index == len(loc) - 1 and error["type"] == "missing" and isinstance(value,
                                                                                 (dict, str)):
            path.append(component)  # a field of the mapping, or of a layer given by name
        else:
            labels.append((index, component))
    return _Problem(error, tuple(path), tuple(labels))


# -- plain (undiscriminated) unions report one error per member; keep the one that fits best ------


def _resolve_alternatives(problems: list[_Problem]) -> list[_Problem]:
    """At each point where a union's members reported (outermost first), the problems of the
    member that fits best. Each point looks only at the problems that branch there (an index
    by point: a scan of every problem at every point took minutes for 5,000 broken layers)."""
    problems = list(problems)
    alive = set(range(len(problems)))
    at: dict[tuple, list[int]] = {}

    def enter(number: int) -> None:
        problem = problems[number]
        for index, label in problem.labels:
            at.setdefault(problem.error["loc"][:index], []).append(number)

    for number in range(len(problems)):
        enter(number)
    for point in sorted(at, key=len):
        members = {id(problems[n]): n for n in at[point] if n in alive}
        kept = _choose_branch([problems[n] for n in members.values()], point)
        alive.difference_update(members.values())
        for problem in kept:
            number = members.get(id(problem))
            if number is None:  # the alternatives combined into one problem
                problems.append(problem)
                number = len(problems) - 1
                enter(number)
            alive.add(number)
    return [problems[number] for number in sorted(alive)]


def _choose_branch(problems: list[_Problem], point: tuple) -> list[_Problem]:
    """`problems` all branch at `point`: grouped by the member's label there."""
    branches: dict[str, list[_Problem]] = {}
    for problem in problems:
        label = next(label for index, label in problem.labels if index == len(point))
        branches.setdefault(str(label), []).append(problem)
    if len(branches) < 2:
        return problems
    return _best_branch(list(branches.values()))


def _best_branch(branches: list[list[_Problem]]) -> list[_Problem]:
    # A custom validator's message beats a type mismatch; otherwise the member that got furthest
    # into the value is the one the user meant. If none got past the value itself, list them all.
    def score(branch):
        custom = any(problem.error["type"] in _CUSTOM_TYPES for problem in branch)
        return custom, max(len(problem.data_path) for problem in branch)

    best = max(branches, key=score)
    if score(best)[0] or any(score(branch) < score(best) for branch in branches):
        return best
    return [_combine(branches)]


def _combine(branches: list[list[_Problem]]) -> _Problem:
    first = branches[0][0]
    alternatives = [problem.error for branch in branches for problem in branch]
    error = dict(first.error, type="union_alternatives", alternatives=alternatives)
    return _Problem(error, first.data_path, first.labels)


# -- one problem, one diagnostic ----------------------------------------------------------------

_CUSTOM_TYPES = {"value_error", "assertion_error"}
_ABOUT_MAPPING = {"union_tag_invalid", "union_tag_not_found"}


def _diagnostic(problem: _Problem, loaded: Loaded, schema: Any) -> Diagnostic:
    location = _error_location(problem, loaded, schema)
    owner, field = _split_field(problem, loaded.data)
    # As DESIGN.md section 5 writes a schema error: the path alone (`model.layers[1]`); the
    # lowering's errors, which only a valid layer reaches, add its name.
    where = location.origin or format_path(owner)
    if owner and loaded.typed_by_default(owner):
        problem = replace(problem, typed_by_default=True)
    if location.origin:
        problem = replace(problem, overridden=True)
    message = _message(problem, field, loaded.data, schema)
    if not location.origin:  # the file's line shows the values before the overrides
        message += _after_overrides(loaded, problem.data_path, owner)
    return Diagnostic(location.file, location.line, location.col, "error", where, message)


def _after_overrides(loaded: Loaded, path: tuple, owner: tuple) -> str:
    """The --set arguments behind an error placed in the file: those that set the value (or
    values inside it), and a type set on its mapping, which decides the fields it takes."""
    overrides = set(loaded.overrides_within(path))
    if owner:
        overrides.update(loaded.overrides_within((*owner, "type")))
    return after_overrides(sorted(overrides))


def after_overrides(overrides: list[str]) -> str:
    """What a message adds where the command line set what it names: " (after --set x=1,
    --epochs 2)"; "" for none."""
    return f" (after {', '.join(overrides)})" if overrides else ""


def _error_location(problem: _Problem, loaded: Loaded, schema: Any) -> Position:
    kind = problem.error["type"]
    if kind == "extra_forbidden":
        return loaded.location(problem.data_path, key=True)
    if kind == "union_tag_invalid":
        return loaded.location(problem.data_path + (_discriminator(problem.error),))
    misspelled = _misspelled_tag(problem, loaded.data, schema)
    if misspelled is not None:
        return loaded.location(problem.data_path + (misspelled,), key=True)
    inside = getattr(problem.error.get("ctx", {}).get("error"), "at", ())  # schema.ValueErrorAt
    return loaded.location(problem.data_path + tuple(inside))


def _split_field(problem: _Problem, data: Any) -> tuple[tuple, str | None]:
    """The mapping a problem belongs to, and the field inside it (None: the mapping itself)."""
    path = problem.data_path
    about_mapping = problem.error["type"] in _ABOUT_MAPPING or (
        problem.error["type"] in _CUSTOM_TYPES and isinstance(_value_at(data, path), dict)
    )
    # A layer is its own owner even when it is not a mapping: `- 5` is "model.layers[2]: ...";
    # so are an augmentation and a metric (`- bogus` is "data.augment[0]: ...").
    length = len(path) if about_mapping or _is_item_path(path) else len(path) - 1
    while length > 0 and not isinstance(_value_at(data, path[:length]), dict):
        if _is_item_path(path[:length]):
            break
        length -= 1
    if length <= 0 and about_mapping and path:  # `loss: cross_entropi`: a section by its name
        return path, None
    length = max(length, 0)
    field = format_path(path[length:]) if length < len(path) else None
    return path[:length], field


def _is_layer_path(path: tuple) -> bool:
    return len(path) == 3 and path[:2] == ("model", "layers") and isinstance(path[2], int)


# The lists whose every item is a type of its own, by name or as a mapping.
_TYPED_LISTS = (("model", "layers"), ("data", "augment"), ("train", "metrics"))


def _is_item_path(path: tuple) -> bool:
    return len(path) == 3 and path[:2] in _TYPED_LISTS and isinstance(path[2], int)


def _discriminator(error: dict) -> str:
    return str(error.get("ctx", {}).get("discriminator", "type")).strip("'\"")


_KIND_BY_FIELD = {
    "layers": "layer type",
    "activation": "activation",
    "optimizer": "optimizer",
    "loss": "loss",
    "schedule": "schedule",
    "dataset": "dataset",
    "init": "initializer",
    "bias_init": "initializer",
    "metrics": "metric",
    "augment": "augmentation",
    "pruning": "pruning method",
}


def _kind_of(path: tuple) -> str | None:
    keys = [component for component in path if isinstance(component, str)]
    return _KIND_BY_FIELD.get(keys[-1]) if keys else None


def _message(problem: _Problem, field: str | None, data: Any, schema: Any) -> str:
    error = problem.error
    handler = _MESSAGE_HANDLERS.get(error["type"])
    if handler is not None:
        return handler(problem, field, data, schema)
    annotation = _annotation_at(schema, error["loc"])
    expectation = _expectation(error, annotation)
    if expectation == "a mapping" and _accepts_a_name(annotation):
        expectation = "a name or a mapping with 'type'"
    got = _show(error["input"])
    if expectation is None:
        return f"{_subject(field)} is invalid: {error['msg']} (got {got})"
    if field is None:
        return f"expected {expectation}, got {got}"
    layer_name = "layers" in problem.data_path  # `name: 12` in quotes breaks the name rule
    hint = ((_colon_hint(error["input"]) if "mapping" in expectation else "")
            or ("" if layer_name else _quote_hint(expectation, error["input"]))
            or _batch_axis_hint(field, error, data)
            or _nesting_hint(expectation, error["input"], field, annotation)
            or _number_text_hint(expectation, error["input"])
            or _percent_hint(expectation, error["input"]))
    return f"'{field}' must be {expectation}, got {got}{hint}"


def _number_text_hint(expectation: str, value: Any) -> str:
    """`lr: 0,01` (a decimal comma), `validation_split: 10%` and `epochs: 1,000` (a thousands
    separator): the number to write. A comma before three digits is either; both are said.
    `units: '10'`, `shuffle: 'true'`: the value without its quotes."""
    if not isinstance(value, str):
        return ""
    text = value.strip()
    if expectation.startswith("true or false") and text.lower() in ("true", "false"):
        return f"; write it without quotes: {text.lower()}"
    # '10' in quotes is text (010 unquoted: octal, refused); "an integer or a list": a kernel
    if expectation.startswith(("an integer", "a number")) and re.fullmatch(r"[-+]?\d+", text):
        if re.fullmatch(r"[-+]?0\d*[89]\d*", text):  # no octal digits: text unquoted too
            return f"; write {int(text)}: with a leading 0, YAML reads {text} as text or octal"
        return f"; write it without quotes: {int(text)}"
    if expectation not in ("a number", "an integer"):
        return ""
    grouped = re.fullmatch(r"[-+]?[1-9]\d{0,2}(,\d{3})+", text)  # 0,001 is a decimal comma
    if grouped and expectation == "an integer":
        return f"; write it without the thousands separator: {text.replace(',', '')}"
    if expectation != "a number":
        return ""
    if grouped:
        return (f"; YAML numbers have no separators: write {text.replace(',', '')}, or "
                f"{text.replace(',', '.')} if the comma is a decimal one")
    if re.fullmatch(r"[-+]?\d+,\d+", text):
        return f"; YAML numbers take a decimal point: write {text.replace(',', '.')}"
    if re.fullmatch(r"[-+]?\d+(\.\d+)?\s*%", text):
        return f"; write the fraction: {float(text.rstrip('% ')) / 100:g}"
    return ""


def _fits(annotation: Any, text: str) -> bool:
    """Whether the YAML `text` is a value `annotation` takes (any value where it is unknown)."""
    if annotation is None:
        return True
    try:
        pydantic.TypeAdapter(annotation).validate_python(yaml.safe_load(text))
    except (pydantic.ValidationError, yaml.YAMLError, TypeError):
        return False
    return True


def _nesting_hint(expectation: str, value: Any, field: str | None = None,
                  annotation: Any = None) -> str:
    """A list where a mapping goes and the reverse, as YAML's dashes and indents make them:
    `metrics: accuracy` for [accuracy], `- dataset: digits` for one mapping; a tuple's
    parentheses, or a list in quotes, for a list's brackets."""
    if expectation == "a list" and field == "bias" and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        return (f"; write one value per unit (filter) in a list, or bias_init: {{type: "
                f"constant, value: {value}}} for {value} in every one")
    if "a list" in expectation and isinstance(value, str) and value.strip().startswith("(") \
            and ")" not in value:  # `{shape: (1, 8, 8)}`: the flow mapping's ',' ended it
        return "; YAML has no tuples: write a list in square brackets, [ ], not ( )"
    if expectation == "a list" and isinstance(value, str) and not value.strip():
        return "; write its entries as a list, in [ ]"  # not `write []`: a list needs entries
    if expectation == "a list" and isinstance(value, (str, int, float)) \
            and not isinstance(value, bool) and _fits(annotation, _as_list_text(value)):
        return f"; write {_as_list_text(value)}"  # not `write [cuda]` for a list of numbers
    if expectation.endswith("or a list") and isinstance(value, str) \
            and re.fullmatch(r"\s*[(\[].*[)\]]\s*|.*,.*|\s*\d+\s*[x×]\s*\d+\s*", value):
        return f"; write {_as_list_text(value)}"  # kernel_size: (3, 3)
    if expectation == "a list" and isinstance(value, dict):
        return "; a list's entries each begin with '- '"
    if "mapping" in expectation and isinstance(value, list) and len(value) == 1 \
            and isinstance(value[0], dict):
        return "; remove the '- ' before its fields: they make a list of one mapping"
    if expectation == "a mapping" and value is True:
        return "; write its fields under it"
    return ""


def _percent_hint(expectation: str, value: Any) -> str:
    """`validation_split: 20` or `rate: 50`: a percentage, where a fraction below 1 goes (not
    1.5 or a momentum of 1.01, more likely a slip of the decimal point than 1.5%)."""
    if expectation in ("a number < 1", "a number ≤ 1") and isinstance(value, (int, float)) \
            and not isinstance(value, bool) and 2 <= value < 100:
        return f"; a fraction: write {value / 100:g} for {value:g}%"
    return ""


def _as_list_text(value: Any) -> str:
    """A value as the YAML list it was meant as: `(1, 8, 8)`, `"[1, 8, 8]"`, `1x8x8` and
    `1, 8, 8` as [1, 8, 8], `accuracy` as [accuracy]."""
    text = str(value).strip()
    if text[:1] + text[-1:] in ("()", "[]"):
        text = text[1:-1].strip()
    if re.fullmatch(r"\d+(\s*[x×]\s*\d+)+", text):  # 1x8x8, as shapes are written
        parts = re.split(r"\s*[x×]\s*", text)
    else:
        parts = [part.strip() for part in text.split(",")]
    return f"[{', '.join(parts)}]"


def _batch_axis_hint(field: str, error: dict, data: Any) -> str:
    """`input_shape: [32, 1, 28, 28]`: a batch's shape, where one sample's is meant (a named
    dataset's, where the spec names one)."""
    value = error["input"]
    if field != "input_shape" or error["type"] != "too_long" or not isinstance(value, list):
        return ""
    named = _value_at(data, ("data", "dataset"))
    known = DATASETS[named].input_shape if isinstance(named, str) and named in DATASETS else None
    if known is not None:
        return (f"; input_shape is one sample's shape, and {named}'s samples are "
                f"{_show(list(known))}: write that, or leave input_shape out")
    return (f"; input_shape is one sample's shape, without the batch axis "
            f"(train.batch_size sets that): {_show(value[1:])}")


def _quote_hint(expectation: str, value: Any) -> str:
    """`name: true` is a yes/no value to YAML, `name: 1.5` a number: text that looks like either
    goes in quotes."""
    if expectation != "a string" or not isinstance(value, (bool, int, float)):
        return ""
    return "; write it in quotes for the text"


def _glued_value(key: Any, fields: list[str]) -> str:
    """`{units:10}` in a flow mapping is the key 'units:10', without a value: YAML needs a
    space after a key's colon. The fix, where the key begins with a field's name."""
    glued = re.fullmatch(r"([A-Za-z_]\w*):([^ \t\n].*)", key) if isinstance(key, str) \
        else None
    if glued is None or glued.group(1) not in fields:
        return ""
    field, rest = glued.groups()
    slipped = re.match(f"[{LOOKALIKE_SPACES}{SLIPPED_IN}]+", rest)
    if slipped:  # a no-break space, or a dash, where the space goes
        name = _invisible_character(slipped.group()) or character_name(slipped.group()[0])
        return (f"; YAML reads {quoted(key)} as one key: {name} follows the colon where YAML "
                f"needs a space: write a plain space ({field}: {rest[slipped.end():]})")
    return (f"; YAML reads '{key}' as one key: write a space after the colon "
            f"({field}: {rest})")


# Characters that look like a space (a no-break space, an ideographic space) but are none to
# YAML, and those that slip in where a space or a list item's '-' goes: dash look-alikes (an en
# dash, a minus sign) and invisible ones (a zero-width space, a byte order mark). Regex classes.
LOOKALIKE_SPACES = "\u00a0\u3000"
SLIPPED_IN = "\u2010-\u2015\u2212\u200b-\u200d\u2060\ufeff"


def _invisible_character(name: Any) -> str | None:
    """A character of `name` that does not show (U+200B) or shows as a space (U+00A0), named."""
    if not isinstance(name, str):
        return None
    found = next((c for c in name if unicodedata.category(c) == "Cf"
                  or c in LOOKALIKE_SPACES), None)
    return None if found is None else character_name(found)


def character_name(character: str) -> str:
    """`an en dash (U+2013)`."""
    words = unicodedata.name(character, "character").lower()
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words} (U+{ord(character):04X})"


def _visible(name: str) -> str:
    return "".join(c for c in name if c not in LOOKALIKE_SPACES
                   and unicodedata.category(c) != "Cf").strip()


def _colon_hint(value: Any) -> str:
    """`dataset:mnist` is one string to YAML: a key needs a space after its colon."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_]\w*:(?!//)\S.*", value):
        key, rest = value.split(":", 1)
        return f"; write a space after the colon ({key}: {rest}), or YAML reads one string"
    return ""


def _subject(field: str | None) -> str:
    return f"'{field}'" if field else "the value"


def _missing(problem: _Problem, field: str | None, data: Any, schema: Any) -> str:
    # the loc's last key: a shorthand (`layers: [dense]`) has no mapping in the data to name it
    name = problem.error["loc"][-1]
    example = _layer_example(name, data, problem.data_path[:3]) \
        if _is_layer_path(problem.data_path[:3]) else None
    return f"missing required field '{name}'" + (f" (e.g. {name}: {example})" if example else "")


def _layer_example(name: str, data: Any, path: tuple) -> Any:
    """A value for a layer's missing field: what the spec already says (the rows of its own
    weights; a named dataset's classes for the last layer of units under cross_entropy), else
    what the field is, at a glance."""
    layers = _value_at(data, path[:2])
    layer = layers[path[2]] if isinstance(layers, list) and path[2] < len(layers) else None
    weights = layer.get("weights") if isinstance(layer, dict) else None
    if isinstance(weights, list) and weights and name in ("units", "filters"):
        columns = weights[0] if name == "units" else weights  # dense [in, out], conv [out, ...]
        if isinstance(columns, list) and columns:
            return len(columns)
    later = layers[path[2] + 1:] if isinstance(layers, list) else []
    classes = _named_classes(data)
    if name == "units" and classes and not any(
            isinstance(other, dict) and "units" in other for other in later):
        return classes
    return _EXAMPLES.get(name)


def _named_classes(data: Any) -> int | None:
    """The classes of a named dataset that a cross_entropy model scores (data-less specs,
    files and other losses: None)."""
    dataset = _value_at(data, ("data", "dataset"))
    loss = _value_at(data, ("loss",))
    loss = loss.get("type") if isinstance(loss, dict) else loss
    info = DATASETS.get(dataset) if isinstance(dataset, str) else None
    if info is None or loss not in (_ABSENT, None, "cross_entropy") or info.label_shape:
        return None
    return info.num_classes


# A value to show with a layer's missing required field: what it is, at a glance.
_EXAMPLES = {"units": 10, "filters": 8, "kernel_size": 3, "rate": 0.5, "pool_size": 2,
             "shape": "[16, -1]"}


def _extra(problem: _Problem, field: str | None, data: Any, schema: Any) -> str:
    name = problem.data_path[-1]
    present = _value_at(data, problem.data_path[:-1])
    model = _annotation_at(schema, problem.error["loc"][:-1])
    fields = _field_names(model)
    glued = _glued_value(name, [*fields, "type"])
    if glued:
        return f"unknown field {quoted(name)}{glued}"
    invisible = _invisible_character(name)
    if invisible and _visible(name) not in (present if isinstance(present, dict) else {}):
        # a zero-width space pasted before a key: a key of its own to YAML
        return (f"unknown field {quoted(name)}; it holds {invisible}, which YAML reads as a "
                "character of the key: remove it")
    owner = problem.data_path[:-1]  # at the top, the section hint below says where to indent
    taken = [known for known in fields if _dataset_takes(owner, present, known)]
    candidates = [known for known in taken if not _has_child(present, known)]
    # a synonym may be set already: `--set model.layers[0].units=8` on a conv2d means filters
    in_a_list = any(isinstance(key, int) for key in owner)  # a layer's, an augmentation's
    elsewhere = _only_place_of(schema, name, beside_layers=not in_a_list) \
        if owner and not _section_naming(model, name) else None
    if elsewhere and elsewhere != format_path(owner):
        # `sync_batchnorm: true` on a batchnorm layer, `lr` under train: the one section that
        # has the field says more than a near name here (optimizer.epochs is not eps)
        place = tuple(elsewhere.split("."))
        lacking = _type_lacking(schema, place, _value_at(data, place), name)
        if lacking is None:
            return (f"unknown field {quoted(name)}; it is a field of {elsewhere}: set "
                    f"{elsewhere}.{name}")
        kind, types = lacking  # momentum under train, where the optimizer is adam
        return (f"unknown field {quoted(name)}; it is a field of {elsewhere} of type "
                f"{_join_or(types)}, and this spec's is {kind}: remove it")
    main = _named_as_its_type(name, owner, present, model)
    if main:  # Keras' Dropout(0.2), Dense(10): the value given under the layer's type
        return (f"unknown field {quoted(name)}; {name} takes its value as {main}: write "
                f"{main}: {_show(present[name])}")
    framework = _framework_field_fix(name, owner, present)
    if framework:
        return f"unknown field {quoted(name)}; {framework}"
    if _is_layer_path(owner) and isinstance(present, dict):
        elsewhere = _other_layers_field_fix(name, present)
        if elsewhere:
            return f"unknown field {quoted(name)}; {elsewhere}"
    # a layer's fields of other layers are _other_layers_field_fix's, above
    lacking = _type_lacking(schema, owner, present, name, problem.typed_by_default) \
        if owner and not _is_layer_path(owner) else None
    others = lacking[1] if lacking else []
    if others and problem.typed_by_default:  # `--set optimizer.beta1=0.9`, no optimizer given
        return (f"unknown field {quoted(name)}; {lacking[0]} has no {name}, a field of "
                f"{and_joined(others)}: set {format_path(owner)}.type to {_join_or(others)} too")
    if others:  # beta1 on sgd: a field of adam and adamw (an adam spec's, --set type=sgd)
        kind, owners = present["type"], and_joined(others)
        counterpart = next((s for s in SYNONYMS.get(str(name), ()) if s in fields), None)
        if counterpart:  # momentum, sgd's own for beta1, is likely meant; a near name is not
            return (f"unknown field {quoted(name)}; did you mean '{counterpart}'? ({name} is a "
                    f"field of {owners})")
        return f"unknown field {quoted(name)}; {kind} has no {name}, a field of {owners}: remove it"
    if owner and name in SECTIONS:  # `loss:` indented under train
        if isinstance(data, dict) and name in data:
            return (f"unknown field {quoted(name)}; {name} is a section of its own, given at "
                    "the top already: remove this one")
        return (f"unknown field {quoted(name)}; {name} is a section of its own: write it at the "
                f"start of a line, not under {format_path(owner)}")
    meant = next((s for s in SYNONYMS.get(str(name), ()) if s in candidates), None)
    if meant and name in _field_names(schema):  # data: {name: mnist}, TFDS' dataset name
        return f"unknown field {quoted(name)}; did you mean '{meant}'?"
    if owner and not _is_layer_path(owner) and name in _field_names(schema):
        if isinstance(data, dict) and name in data:
            return (f"unknown field {quoted(name)}; {name} is a field of the spec's top level, "
                    "given there already: remove this one")
        return (f"unknown field {quoted(name)}; {name} is a field of the spec's top level: "
                f"write it at the start of a line, not under {format_path(owner)}")
    closest = suggest(name, taken)
    # at the top, a field of one section (`init`, model's) is meant, not a near name (limits):
    # the section hint below says so
    of_one_section = _only_place_of(schema, name, beside_layers=True) if not owner else None
    if of_one_section and "." not in of_one_section:
        suggestion = ""
    elif closest and _has_child(present, closest) and not _as_near_unset(name, closest,
                                                                          candidates):
        # `--set optimiser.lr=...` sets lr again; in a file, renaming it makes a duplicate key
        suggestion = (f"; did you mean '{closest}' (set already)?" if problem.overridden else
                      f"; did you mean '{closest}'? It is set already: remove "
                      f"{quoted(name)}, or give its value to {closest}")
    else:  # not `init` for `unitz` where units is set: the closest field, set or not, first
        suggestion = _did_you_mean(name, candidates, taken)
    section = None if suggestion else _section_naming(model, name)
    if section:  # `layers:` at the top: indented one level too little
        suggestion = f"; it belongs in the {section} section: indent it under {section}:"
    return f"unknown field {quoted(name)}{suggestion}"


# The spec's sections: a mapping each, at the top (its scalars, seed or dtype, are not).
SECTIONS = ("data", "model", "loss", "optimizer", "train", "limits")


def _type_lacking(schema: Any, path: tuple, mapping: Any, name: Any, by_default: bool = False
                  ) -> tuple[str, list[str]] | None:
    """(its type, the types that have it) where the typed mapping at `path` (an optimizer, a
    loss, an initializer) is of a type without the field `name`; None where it has it, or is
    not given. `by_default`: the mapping holds its default's type, the spec gives none."""
    left_out = mapping is None or mapping is _ABSENT  # left out: its default's type (sgd)
    if left_out:
        mapping = _default_mapping(schema, path)
    by_default = by_default or left_out
    if schema is None or not isinstance(mapping, dict) or not isinstance(mapping.get("type"),
                                                                          str):
        return None
    members = _tagged_members(_annotation_at(schema, path), "type")
    own = dict(members).get(mapping["type"])
    if own is None or name in _field_names(own):
        return None
    kind = f"{mapping['type']} (by default)" if by_default else mapping["type"]
    return kind, [tag for tag, member in members if name in _field_names(member)]


def and_joined(names: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


def _default_mapping(schema: Any, path: tuple) -> dict | None:
    """{"type": ...} of the default of the section at `path` a spec leaves out, None where it
    has none of a type."""
    owner = _annotation_at(schema, path[:-1]) if path else None
    member = _unwrap(owner) if owner is not None else None
    field = member.model_fields.get(path[-1]) if _is_model(member) else None
    default = field.get_default(call_default_factory=True) if field is not None else None
    kind = getattr(default, "type", None)
    return {"type": kind} if isinstance(kind, str) else None


def _other_layers_field_fix(name: str, layer: dict) -> str:
    """A field of other layer types on one without it (`init` on a pool), said as such: a
    near name of its own (`inputs`) is not what was meant."""
    from .schema import ACTIVATION_TYPES

    kind = layer.get("type")
    others = layers_with_field(name, layer[name], kind)
    if not layer_fields(kind) or not others:
        return ""
    if name == "activation":
        value = layer[name]
        activation = value if isinstance(value, dict) else {"type": value}
        if activation.get("type") in set(ACTIVATION_TYPES) - {"identity"}:
            return (f"{kind} has no activation: remove it, and add {_show(activation)} as a "
                    "layer after it")
        return f"{kind} has no activation: remove it"
    return f"{kind} has no {name}, a field of {and_joined(others)}: remove it"


def _named_as_its_type(name: Any, owner: tuple, present: Any, model: Any) -> str | None:
    """The first required field of a mapping of a type (a layer's units, filters, rate; a
    constant initializer's value) where a field named as its type (`{type: dropout, dropout:
    0.2}`) stands in its place."""
    if not (isinstance(present, dict) and present.get("type") == name):
        return None
    first = _first_required(model)
    return first if first is not None and not _has_child(present, first) else None


def _first_required(model: Any) -> str | None:
    """The first field `model` requires but its type, None for none (or no model)."""
    member = _unwrap(model) if model is not None else None
    if not _is_model(member):
        return None
    return next((field.alias or key for key, field in member.model_fields.items()
                 if field.is_required() and key != "type"), None)


def _framework_field_fix(name: str, owner: tuple, present: Any) -> str:
    """PyTorch's and Keras's fields that nnrun has no use for, and what to do instead."""
    layer = _is_layer_path(owner)
    kind = present.get("type") if isinstance(present, dict) else None
    if layer and name in ("in_channels", "in_features", "input_dim", "input_size"):
        return ("nnrun infers a layer's inputs from the layer before it: remove it (the "
                "model's input is model.input_shape)")
    if layer and name == "dropout" and kind != "dropout":
        rate = present.get(name)
        kept = isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 <= rate < 1
        rate = rate if kept else 0.5
        return (f"nnrun's dropout is a layer of its own: remove it and add - {{type: dropout, "
                f"rate: {rate}}} after this layer")
    betas = present.get(name) if isinstance(present, dict) else None
    if name == "betas" and isinstance(betas, list) and len(betas) == 2 \
            and kind in ("adam", "adamw") and not {"beta1", "beta2"} & set(present):
        return (f"nnrun names them apart: write beta1: {_show(betas[0])} and beta2: "
                f"{_show(betas[1])}")
    if owner == ("optimizer",) and name in _PYTORCH_OPTIMIZER_OPTIONS and isinstance(present,
                                                                                   dict):
        return _pytorch_option_fix(name, present[name], kind)
    if layer and name in _PYTORCH_LAYER_OPTIONS and isinstance(kind, str) \
            and kind.startswith(_PYTORCH_LAYER_OPTIONS[name][0]):
        return _pytorch_layer_option_fix(name, present[name], kind)
    if owner == ("loss",) and name == "from_logits":
        return ("nnrun's losses read the last layer's outputs as scores (a final softmax or "
                "sigmoid before cross-entropy is fused into the loss): remove it")
    return ""


# PyTorch optimizers' options that nnrun's optimizers have no field for, by their default:
# the update nnrun computes (None: how PyTorch runs the update, not what it computes).
_PYTORCH_OPTIMIZER_OPTIONS = {"amsgrad": False, "dampening": 0, "centered": False,
                              "maximize": False, "foreach": None, "fused": None,
                              "capturable": None, "differentiable": None}


# PyTorch layers' options that nnrun's layers have no field for: (the prefixes of the layer
# types they apply to; PyTorch's default, which nnrun computes; what a spec cannot say).
_PYTORCH_LAYER_OPTIONS = {
    "ceil_mode": (("maxpool", "avgpool"), False, "pools take the floor"),
    "count_include_pad": (("avgpool",), True, "average pools count the padding"),
    "groups": (("conv",), 1, "grouped and depthwise convolutions have no spec form"),
    "align_corners": (("upsample",), False, "linear and bilinear upsampling have no other form"),
    "affine": (("batchnorm",), True, "batchnorm always learns gamma and beta"),
    "track_running_stats": (("batchnorm",), True, "batchnorm always keeps running statistics"),
}


def _pytorch_layer_option_fix(name: str, value: Any, kind: str) -> str:
    _, default, limit = _PYTORCH_LAYER_OPTIONS[name]
    # None: PyTorch's own default for align_corners, or a value the loader refused (`yes`)
    if value is None or value == default and isinstance(value, bool) == isinstance(default,
                                                                                  bool):
        return (f"nnrun's {kind} computes PyTorch's default ({name}={default}) and has no "
                "field for it: remove it")
    return (f"nnrun's {kind} has no {name}: it computes PyTorch's {name}={default} ({limit}), "
            f"not {name}={value!r}; remove it")


def _pytorch_option_fix(name: str, value: Any, kind: Any) -> str:
    default = _PYTORCH_OPTIMIZER_OPTIONS[name]
    if default is None:
        return f"{name} is how PyTorch runs its update, not what it computes: remove it"
    optimizer = kind if isinstance(kind, str) else "optimizer"
    if value == default and isinstance(value, bool) == isinstance(default, bool):  # not 1 for True
        return (f"nnrun's {optimizer} computes PyTorch's default ({name}={default}) and has "
                "no field for it: remove it")
    return (f"nnrun's {optimizer} has no {name}: it computes PyTorch's {name}={default}, not "
            f"{name}={value!r}; remove it")


def spec_field_path(name: str) -> str | None:
    """The dotted path of the one spec field named `name` (`lr`: optimizer.lr), for a command
    line that gave it as an option (`--lr 0.1`); None where no field or several have it."""
    from nnrun.compiler.schema import Spec

    place = _only_place_of(Spec, name)
    if place is None:
        return None
    return f"{place}.{name}" if place else name


@functools.lru_cache(maxsize=1024)  # a walk of the whole schema: 12 ms, once per name
def _only_place_of(schema: Any, name: str, beside_layers: bool = False) -> str | None:
    """The section (dotted path) holding a field `name`, when exactly one does and no layer
    has such a field (`beside_layers`: whether layers have it too): `type`, `mode` or `scale`
    are fields of many, and no hint."""
    if schema is None:
        return None
    places = set(_places_of(schema, name))
    if beside_layers:  # `init`, model's and a layer's: outside a layer, model's is meant
        places = {place for place in places if "[]" not in place}
    if len(places) != 1:
        return None
    (place,) = places
    return None if "[]" in place else place


def _places_of(annotation: Any, name: str, prefix: str = "", depth: int = 4):
    """Each dotted path of a mapping with a field `name` (`[]` marks a list's items)."""
    for member in _union_members(_unwrap(annotation)):
        member = _unwrap(member)
        if typing.get_origin(member) in (list, tuple):
            for item in typing.get_args(member):
                yield from _places_of(item, name, f"{prefix}[]", depth)
            continue
        if not _is_model(member):
            continue
        if name in _field_names(member):
            yield prefix
        if depth:
            for field_name, field in member.model_fields.items():
                key = field.alias or field_name
                yield from _places_of(field.annotation, name,
                                      f"{prefix}.{key}" if prefix else key, depth - 1)


def _section_naming(annotation: Any, name: str) -> str | None:
    """The field of `annotation` (a model) whose own model has a field `name`."""
    for member in _union_members(_unwrap(annotation)) if annotation is not None else []:
        member = _unwrap(member)
        for field_name, field in (member.model_fields.items() if _is_model(member) else ()):
            if name in _field_names(field.annotation):
                return field.alias or field_name
    return None


def _unknown_tag(problem: _Problem, field: str | None, data: Any, schema: Any) -> str:
    context = problem.error.get("ctx", {})
    tag, expected = context.get("tag"), _literal_items(context.get("expected_tags", ""))
    kind = _kind_of(problem.data_path)
    discriminator = _discriminator(problem.error)
    mapping = _value_at(data, problem.data_path)
    if not isinstance(mapping, dict):  # `activation: None`, where `none` is a choice
        expected = _with_none(kind, expected)
    fitting = only_fitting_tag(mapping, _annotation_at(schema, problem.error["loc"]),
                               discriminator)
    given = mapping.get(discriminator) if isinstance(mapping, dict) else tag
    if not isinstance(given, str):  # `type: null`: not a name to read as 'None' and correct
        fix = (f"its fields are those of '{fitting}': set {discriminator}: {fitting}" if fitting
               else f"expected one of {', '.join(expected)}")
        return f"'{discriminator}' must be a name, got {_show(given)}; {fix}"
    if kind:
        subject = f"{kind} '{tag}'"
    else:
        subject = f"{discriminator} '{tag}' for {_subject(field)}"
    elsewhere = _other_lists_kind(kind, tag)
    if elsewhere:  # an augmentation and a layer swapped (lines moved between the lists)
        return f"unknown {subject}; {elsewhere}"
    if fitting and not suggest(tag, _unquoted(expected)):
        return (f"unknown {subject}; its fields are those of '{fitting}': set "
                f"{discriminator}: {fitting}")
    if kind == "schedule" and tag.lower() in ("none", "fixed", "off") and "'constant'" in expected:
        return f"unknown {subject}; for a learning rate that does not change, write 'constant'"
    fix = _call_form_fix(tag, expected, kind) or _suggestion_or_choices(tag, expected)
    return f"unknown {subject}{fix}"


def _other_lists_kind(kind: str | None, tag: str) -> str | None:
    """Where a layer's type is given as an augmentation, or an augmentation's as a layer."""
    from .schema import AUGMENTATION_TYPES, LAYER_TYPES

    if not isinstance(tag, str):
        return None
    if kind == "augmentation" and tag in LAYER_TYPES:
        return f"{tag} is a layer: it belongs in model.layers"
    if kind == "layer type" and tag in AUGMENTATION_TYPES:
        return f"{tag} is an augmentation: it belongs in data.augment"
    return None


def _with_none(kind: str | None, choices: list[str]) -> list[str]:
    """An activation's choices with `none`, which leaves it out (the union's names omit it)."""
    return [*choices, "'none'"] if kind == "activation" else choices


# A Keras or PyTorch call's first argument, as the field it sets: `Dense(64)` is units: 64.
_FIRST_ARGUMENTS = {"dense": "units", "dropout": "rate", "conv1d": "filters", "conv2d": "filters",
                    "maxpool1d": "pool_size", "maxpool2d": "pool_size", "avgpool1d": "pool_size",
                    "avgpool2d": "pool_size", "reshape": "shape"}


def _call_form_fix(word: str, choices: list[str], kind: str | None) -> str:
    """`Dense(64)`, `Dropout(0.5)`, `relu()`, `Adam(0.001)`: a framework's call. The mapping
    it means, with a layer's one argument as the field it sets where that is known."""
    call = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*\((.*)\)\s*", word)
    meant = suggest(call.group(1).lower(), _unquoted(choices)) if call else None
    if meant is None:
        return ""
    noun = "a layer" if kind in (None, "layer type") else f"an {kind}" \
        if kind[0] in "aeiou" else f"a {kind}"
    argument = call.group(2).strip()
    field = _FIRST_ARGUMENTS.get(meant) if noun == "a layer" else None
    if not argument:
        return f"; {noun} is a name or a mapping, not a call: write {meant}"
    if field and re.fullmatch(r"[\w.+-]+", argument):
        return (f"; {noun} is a mapping, not a call: write {{type: {meant}, {field}: "
                f"{argument}}}")
    return f"; {noun} is a mapping, not a call: write {{type: {meant}, ...}} with its fields"


def _tag_not_found(problem: _Problem, field: str | None, data: Any, schema: Any) -> str:
    discriminator = _discriminator(problem.error)
    value = _value_at(data, problem.data_path)
    keys = value if isinstance(value, dict) else ()
    glued = next(filter(None, (_glued_value(key, [discriminator]) for key in keys)), "")
    if glued:  # `{type:dense}`: the key 'type:dense', said where it is too
        return f"missing required field '{discriminator}'{glued}"
    keyed = _type_as_key(value, _annotation_at(schema, problem.error["loc"]), discriminator)
    if keyed:
        return f"missing required field '{discriminator}'{keyed}"
    misspelled = _misspelled_tag(problem, data, schema)
    if misspelled is not None:
        return f"unknown field '{misspelled}'; did you mean '{discriminator}'?"
    if isinstance(value, dict):
        return f"missing required field '{discriminator}'" + _fit_hint(
            fitting_tags(value, _annotation_at(schema, problem.error["loc"]), discriminator),
            discriminator)
    if value is _ABSENT:
        return f"missing required field '{discriminator}'"
    expected = f"a name or a mapping with '{discriminator}'"
    return f"{_subject(field)} must be {expected}, got {_show(problem.error['input'])}"


def _type_as_key(value: Any, union: Any, discriminator: str) -> str:
    """`- random_shift: {max_shift: 2}`, `- dense: {units: 10}`: the type written as the key of
    its fields (as Hydra's or Keras' configs nest them); the mapping meant, in flow style."""
    if not isinstance(value, dict) or len(value) != 1:
        return ""
    ((key, fields),) = value.items()
    tags = [tag for tag, _ in _tagged_members(union, discriminator)]
    if not isinstance(key, str) or key.lower() not in tags:
        return ""
    if not isinstance(fields, dict) and fields is not None:  # `- dense: 64`: its first argument
        first = _FIRST_ARGUMENTS.get(key.lower())
        if first is None or isinstance(fields, list):
            return ""
        fields = {first: fields}
    fields = dict(fields or {})
    if fields.pop(discriminator, key.lower()) != key.lower():  # two types: which is meant?
        return ""
    inner = "".join(f", {field}: {_flow(setting)}" for field, setting in fields.items())
    return (f"; the {discriminator} is written as a key of its fields: write "
            f"{{{discriminator}: {key.lower()}{inner}}}")


def _flow(value: Any) -> str:
    """A value as YAML's flow style writes it (`[3, 3]`, `{type: zeros}`, `relu`)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix(
        "\n...").strip()


def _fit_hint(tags: list[str], discriminator: str) -> str:
    if len(tags) == 1:
        return f"; its fields are those of '{tags[0]}': add {discriminator}: {tags[0]}"
    if 1 < len(tags) <= 4:
        return f"; its fields fit {_join_or([repr(tag) for tag in tags])}: add the one meant"
    return ""


def _misspelled_tag(problem: _Problem, data: Any, schema: Any) -> str | None:
    """The key of a mapping without its discriminator that misspells it (`tyep: dense`)."""
    if problem.error["type"] != "union_tag_not_found":
        return None
    return misspelt_key(_value_at(data, problem.data_path), _discriminator(problem.error),
                        _annotation_at(schema, problem.error["loc"]))


def misspelt_key(mapping: Any, field: str, union: Any = None) -> str | None:
    """A key of `mapping` that misspells `field` (`tyep` for `type`), or None. A field every
    type of `union` has is no misspelling: a layer's `name` (which Keras' optimizers and
    datasets call their type) is its name."""
    if not isinstance(mapping, dict):
        return None
    common = _common_fields(union, field)
    return next((key for key in mapping if isinstance(key, str) and key not in common
                 and suggest(key, [field]) == field), None)


def _common_fields(union: Any, discriminator: str) -> set[str]:
    members = [set(_field_names(member)) for _, member in _tagged_members(union, discriminator)]
    return set.intersection(*members) if members else set()


def _literal(problem: _Problem, field: str | None, data: Any, schema: Any) -> str:
    value = problem.error["input"]
    expected = _literal_items(problem.error.get("ctx", {}).get("expected", ""))
    kind = _kind_of(problem.data_path)
    expected = _with_none(kind, expected)
    if kind and isinstance(value, str):
        return f"unknown {kind} '{value}'{_suggestion_or_choices(value, expected)}"
    if isinstance(value, str) and value in expected:  # `version: "1"`: a number in quotes
        return (f"{_subject(field)} must be {_join_or(expected)}, got the string {_show(value)};"
                " write it without quotes")
    suggestion = _did_you_mean(value, _unquoted(expected)) if isinstance(value, str) else ""
    return f"{_subject(field)} must be {_join_or(expected)}, got {_show(value)}{suggestion}"


def _custom(problem: _Problem, field: str | None, data: Any, schema: Any) -> str:
    message = re.sub(r"^(Value error|Assertion failed), ", "", problem.error["msg"])
    if field and field not in message:
        return f"'{field}': {message}"
    return message


def _alternatives(problem: _Problem, field: str | None, data: Any, schema: Any) -> str:
    expectations, literals = [], []
    for error in problem.error["alternatives"]:
        if error["type"] == "literal_error":
            items = _literal_items(error.get("ctx", {}).get("expected", ""))
            literals += items
            expectations += items
        else:
            expectations.append(_expectation(error, None) or error["msg"])
    value = problem.error["input"]
    suggestion = _did_you_mean(value, _unquoted(literals)) if isinstance(value, str) else ""
    if field == "padding" and value in ("same", "valid") and not literals:
        suggestion = (f"; '{value}' is a convolution's padding, this layer's is a count of "
                      "positions on each side (0 for no padding)")
    unique = list(dict.fromkeys(expectations))
    expected = _join_or(unique)
    suggestion = (suggestion or _number_text_hint(expected, value)  # kernel_size: '3'
                  or _nesting_hint(expected, value, field))  # kernel_size: (3, 3)
    return f"{_subject(field)} must be {expected}, got {_show(value)}{suggestion}"


_MESSAGE_HANDLERS = {
    "missing": _missing,
    "extra_forbidden": _extra,
    "union_tag_invalid": _unknown_tag,
    "union_tag_not_found": _tag_not_found,
    "literal_error": _literal,
    "value_error": _custom,
    "assertion_error": _custom,
    "union_alternatives": _alternatives,
}


def _suggestion_or_choices(word: Any, choices: list[str]) -> str:
    suggestion = _did_you_mean(word, _unquoted(choices))
    if suggestion or not choices:
        return suggestion
    return f"; expected one of {', '.join(choices)}"


# -- what a value should have been ----------------------------------------------------------------

_TYPE_PHRASES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "iterable_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dataclass_type": "a mapping",
    "none_required": "null",
}
_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", "≥"),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "≤"),
}


def _expectation(error: dict, annotation: Any) -> str | None:
    kind, context = error["type"], error.get("ctx", {})
    if kind in _TYPE_PHRASES:
        return _TYPE_PHRASES[kind]
    if kind in _BOUNDS:
        return _bound_expectation(kind, context, _number_noun(annotation, error["input"]))
    if kind == "multiple_of":
        return f"a multiple of {context.get('multiple_of')}"
    if kind in ("too_short", "too_long"):
        return _length_expectation(kind, context, error["input"])
    return None


def _bound_expectation(kind: str, context: dict, noun: str) -> str:
    key, symbol = _BOUNDS[kind]
    bound = context.get(key)
    # PositiveInt says "> 0"; for whole numbers "≥ 1" is what a reader expects.
    if noun == "an integer" and isinstance(bound, int) and kind in ("greater_than", "less_than"):
        key, symbol = ("ge", "≥") if kind == "greater_than" else ("le", "≤")
        bound = bound + 1 if kind == "greater_than" else bound - 1
    if isinstance(bound, float) and bound.is_integer():
        bound = int(bound)
    return f"{noun} {symbol} {bound}"


def _length_expectation(kind: str, context: dict, value: Any) -> str:
    count = context.get("min_length") if kind == "too_short" else context.get("max_length")
    bound = "at least" if kind == "too_short" else "at most"
    if isinstance(value, str):
        return f"a string of {bound} {count} character{'s' if count != 1 else ''}"
    return f"a list of {bound} {count} entr{'ies' if count != 1 else 'y'}"


def _number_noun(annotation: Any, value: Any) -> str:
    candidates = _union_members(_unwrap(annotation)) if annotation is not None else []
    if any(member is int for member in candidates):
        return "an integer"
    if any(member is float for member in candidates):
        return "a number"
    return "an integer" if isinstance(value, int) and not isinstance(value, bool) else "a number"


def _literal_items(text: str) -> list[str]:
    """pydantic's "'a', 'b' or 'c'" (or "1 or 2") as a list, keeping the quotes of strings."""
    return [item for item in re.split(r", | or ", text) if item]


def _unquoted(items: list[str]) -> list[str]:
    return [item[1:-1] if len(item) >= 2 and item[0] == item[-1] == "'" else item for item in items]


def _join_or(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} or {items[-1]}"


def quoted(key: Any) -> str:
    """A key in quotes, escaped where it holds what would not show (a zero-width space
    before `units` looks like `units`)."""
    text = str(key)
    return f"'{text}'" if text.isprintable() and "'" not in text else repr(text)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, (list, dict)):
        text = yaml.safe_dump(value, default_flow_style=True, width=1000,
                              sort_keys=False).strip()
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, (datetime.date, datetime.datetime)):
        return f"the date {value.isoformat()}"
    return repr(value)


# -- walking the schema along a pydantic loc ------------------------------------------------------


def field_defaults_of_type(path: tuple, tag: Any) -> dict[str, Any] | None:
    """The fields (by their names in a spec) of the type `tag` of the tagged mapping at the
    spec's `path` (an optimizer, a loss, a layer), with their defaults (required ones and
    factories' values absent); None where `path` holds no such type."""
    from .schema import Spec

    if not isinstance(tag, str):
        return None
    members = dict(_tagged_members(_annotation_at(Spec, path), "type"))
    member = members.get(tag)
    if member is None:
        return None
    fields = {}
    for name, field in member.model_fields.items():
        default = field.default if not field.is_required() and field.default_factory is None \
            else None
        fields[field.alias or name] = default
    return fields


def _annotation_at(schema: Any, loc: tuple) -> Any:
    annotation = schema
    for component in loc:
        if annotation is None:
            return None
        annotation = _step(annotation, component)
    return annotation


def _step(annotation: Any, component: Any) -> Any:
    annotation = _unwrap(annotation)
    if _is_model(annotation):
        return _field_annotation(annotation, component)
    members = _union_members(annotation)
    if len(members) > 1:
        return _union_step(members, component)
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, set, frozenset) and isinstance(component, int) and arguments:
        return arguments[0]
    if origin is tuple and isinstance(component, int) and arguments:
        return _tuple_item(arguments, component)
    if origin is dict and len(arguments) == 2:
        return arguments[1]
    return None


def _tuple_item(arguments: tuple, index: int) -> Any:
    if len(arguments) == 2 and arguments[1] is Ellipsis:
        return arguments[0]
    return arguments[index] if index < len(arguments) else None


def _union_step(members: list, component: Any) -> Any:
    for member in members:
        if _member_matches(member, component):
            return member
    # Not a union label: a key or index inside whichever member has it.
    for member in members:
        found = _step(member, component)
        if found is not None:
            return found
    return None


def _member_matches(member: Any, component: Any) -> bool:
    if any(isinstance(item, pydantic.Tag) and item.tag == component for item in _metadata(member)):
        return True
    member = _unwrap(member)
    if component == getattr(member, "__name__", None) or component == str(member):
        return True
    return _is_model(member) and component in _literal_values(member, "type")


def _literal_values(model: Any, name: str) -> tuple:
    field = model.model_fields.get(name)
    if field is None or typing.get_origin(field.annotation) is not Literal:
        return ()
    return typing.get_args(field.annotation)


def _field_annotation(model: Any, component: Any) -> Any:
    for name, field in model.model_fields.items():
        if component in (name, field.alias):
            return field.annotation
    return None


def _field_names(annotation: Any) -> list[str]:
    names: list[str] = []
    for member in _union_members(_unwrap(annotation)) if annotation is not None else []:
        member = _unwrap(member)
        if _is_model(member):
            names += [field.alias or name for name, field in member.model_fields.items()]
    return list(dict.fromkeys(names))


def list_fields_of(section: str, of_mappings: bool | None = None) -> list[str]:
    """The fields of the spec's top-level `section` that take a list (model's input_shape and
    layers), for the YAML reader's advice on a list whose key is missing; with `of_mappings`,
    only those whose items are (True) or are not (False) mappings."""
    from nnrun.compiler.schema import Spec

    names = []
    for member in _union_members(_unwrap(_annotation_at(Spec, (section,)))):
        member = _unwrap(member)
        if _is_model(member):
            names += [field.alias or name for name, field in member.model_fields.items()
                      if any(typing.get_origin(kind) is list
                             and of_mappings in (None, _items_are_mappings(kind))
                             for kind in _union_members(field.annotation))]
    return list(dict.fromkeys(names))


def _items_are_mappings(list_type: Any) -> bool:
    (item,) = typing.get_args(list_type) or (Any,)
    return any(_is_model(_unwrap(member)) for member in _union_members(_unwrap(item)))


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)


def _metadata(annotation: Any) -> list:
    found = []
    while typing.get_origin(annotation) is typing.Annotated:
        found += list(annotation.__metadata__)
        annotation = typing.get_args(annotation)[0]
    return found


def _unwrap(annotation: Any) -> Any:
    """Strips Annotated and Optional: the type a value of this annotation mostly has."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    members = _union_members(annotation)
    if len(members) == 1 and members[0] is not annotation:
        return _unwrap(members[0])
    return annotation


def _accepts_a_name(annotation: Any) -> bool:
    """A tagged union (schema.tagged_union: every member a model with a `type`), which takes
    `relu` for `{type: relu}`."""
    members = _union_members(_unwrap(annotation))
    return len(members) > 1 and all(_is_model(m) and "type" in m.model_fields for m in members)


def _union_members(annotation: Any) -> list:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [member for member in typing.get_args(annotation) if member is not type(None)]
    return [annotation]
