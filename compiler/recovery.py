"""After schema errors, the shape errors of the layers that those errors leave intact.

pydantic stops at the schema. To check shapes anyway, a copy of the spec is repaired as little
as possible: an unknown key is dropped, or renamed to the field it misspells (the did-you-mean
of its diagnostic, `type` included: a missing field, or a layer's optional one left unset); a
section that decides no shape (optimizer, train, limits...) falls back to its defaults, as does
a data field that decides none (validation_split, limit, augment...); a misspelt loss or
dataset is read as the one its diagnostic suggests, another broken loss becomes mse, with the
outputs no longer checked against the labels; and the layers from the first
broken one on are left out, since every later shape depends on it (and the labels with them:
the layers left do not end the model). A shape error that the repaired copy shows is then one
of the user's spec too.
"""

from __future__ import annotations

import copy
from typing import Any

import pydantic

from .datasets import DATASETS
from .diagnostics import (layer_fields, layers_with_field, misspelt_key, only_fitting_tag,
                          suggest)
from .schema import Data, Layer, Loss, Model, Spec, union_tags

SHAPELESS_SECTIONS = ("version", "name", "seed", "dtype", "optimizer", "train", "limits")
SHAPE_DATA_FIELDS = ("dataset", "path")  # the data fields that decide the input shape


def repaired_spec_data(data: Any, problems: list[tuple[str, tuple]]) -> dict | None:
    """A copy of `data` without the problems, or None when nothing is left to check."""
    if not isinstance(data, dict):
        return None
    data = copy.deepcopy(data)
    missing = {path for kind, path in problems if kind == "missing"}
    missing_in: dict[tuple, list] = {}  # a mapping's path -> its missing fields
    for path in missing:
        missing_in.setdefault(path[:-1], []).append(path[-1])
    for kind, path in problems:
        if kind == "extra_forbidden":
            _drop_or_rename(data, path, missing, missing_in)
    renamed = {path for kind, path in problems
               if kind == "union_tag_not_found" and _rename_misspelt_type(data, path)}
    broken_layers = []
    for kind, path in problems:
        if kind == "extra_forbidden" or (kind == "missing" and path not in missing):
            continue
        if path in renamed:
            continue
        layer = _layer_index(path)
        if layer is not None:
            broken_layers.append(layer)
        elif not _fall_back(data, path, as_suggested=kind != "set_aside"):
            return None
    return _without_layers_from(data, min(broken_layers)) if broken_layers else data


def _drop_or_rename(data: dict, path: tuple, missing: set, missing_in: dict) -> None:
    parent, key = _value_at(data, path[:-1]), path[-1]
    if not isinstance(parent, dict) or key not in parent:
        return
    value = parent.pop(key)
    siblings = missing_in.get(path[:-1], [])
    meant = suggest(key, siblings)
    if meant is not None:
        parent[meant] = value
        missing.discard(path[:-1] + (meant,))
        siblings.remove(meant)
    elif _is_layer_key(path) and not layers_with_field(key, value, parent.get("type")):
        # `padidng: same` read as the padding it misspells (its default would give the later
        # layers wrong shapes); `init` on a pool is another layer's field, no misspelt `inputs`
        unset = [name for name in layer_fields(parent.get("type")) if name not in parent]
        meant = suggest(key, unset)
        if meant is not None and _valid_as(parent, meant, value):
            parent[meant] = value
    elif path[:-1] in _SECTIONS_READ_AS_MEANT:
        # `lsos: mse`: not the default loss; `datset: mnist`: not the default digits;
        # `input_shpe: [4]`: not a missing shape
        section = _SECTIONS_READ_AS_MEANT[path[:-1]]
        meant = suggest(key, [name for name in section.model_fields if name not in parent])
        if meant is not None and _field_takes(section, parent, meant, value):
            parent[meant] = value


# Where misspelt fields are read as the fields they misspell (by the path of their mapping):
# the spec's top and the sections that decide the shapes and labels checked after a schema
# error.
_SECTIONS_READ_AS_MEANT = {(): Spec, ("data",): Data, ("model",): Model}


def _field_takes(section: type[pydantic.BaseModel], mapping: dict, field: str,
                 value: Any) -> bool:
    """Whether `field` of `section` takes `value` (`inti: 5` is no init: read as it, the
    repaired copy would fail, hiding every shape error)."""
    try:
        section.model_validate({**mapping, field: value})
    except pydantic.ValidationError as error:
        return not any(item["loc"][:1] == (field,) for item in error.errors())
    return True


def _is_layer_key(path: tuple) -> bool:
    """A layer's own field (model.layers[i].key), not one inside its mappings."""
    return len(path) == 4 and _layer_index(path) is not None


def _valid_as(layer: dict, field: str, value: Any) -> bool:
    """Whether `value` is one the layer's `field` takes (`padidng: sme` is not: read as the
    padding, it would make the whole repaired copy fail, hiding every shape error)."""
    try:
        _LAYER.validate_python({**layer, field: value})
    except pydantic.ValidationError as error:
        return not any(field in item["loc"] for item in error.errors())
    return True


_LAYER = pydantic.TypeAdapter(Layer)


def _rename_misspelt_type(data: dict, path: tuple) -> bool:
    """`{tyep: dense}`: read as the `type` it misspells; a layer `{units: 10}` without one, as
    the only type its fields fit (their diagnostics say so)."""
    mapping = _value_at(data, path)
    key = misspelt_key(mapping, "type", Layer if _layer_index(path) is not None else None)
    if key is not None:
        mapping["type"] = mapping.pop(key)
        return True
    fitting = only_fitting_tag(mapping, Layer) if _layer_index(path) is not None else None
    if fitting is not None:
        mapping["type"] = fitting
        return True
    return False


def _layer_index(path: tuple) -> int | None:
    if len(path) >= 3 and path[:2] == ("model", "layers") and isinstance(path[2], int):
        return path[2]
    return None


def _fall_back(data: dict, path: tuple, as_suggested: bool = True) -> bool:
    """Replaces the section at fault by what decides no shape; False when it cannot.
    `as_suggested`: a misspelt loss or dataset may be read as its diagnostic's suggestion (not
    a value the loader set aside: a duplicate key's first, which may not be the one meant)."""
    section = path[0] if path else None
    if as_suggested and _read_as_suggested(data, path):
        return True
    if section in SHAPELESS_SECTIONS:
        data.pop(section, None)
    elif _a_field_left_to_its_default(data, path):
        data[path[0]].pop(path[1], None)  # label_smoothing: -0.1, normalize: bogus
    elif section == "loss":
        data["loss"] = "mse"  # not the user's loss: the outputs are not checked against labels
        _without_the_labels(data)
    elif path[:2] == ("model", "init"):
        data["model"].pop("init", None)
    elif section == "data" and _value_at(data, ("model", "input_shape")) is not None:
        data.pop("data", None)  # the input shape is declared; data only decides the classes
    else:
        return False
    return True


def _read_as_suggested(data: dict, path: tuple) -> bool:
    """`loss: crossentropy`, `dataset: digts`: read as the name their diagnostic suggests, so
    that the outputs are still checked against that loss's and dataset's labels (a broken
    loss falls back to mse, a dataset to none, and the outputs go unchecked)."""
    if path in (("loss",), ("loss", "type")):  # `loss: name` or `loss: {type: name}`
        holder, key = (data["loss"], "type") if isinstance(data.get("loss"), dict) \
            else (data, "loss")
        names = union_tags(Loss)
    elif path == ("data", "dataset") and isinstance(data.get("data"), dict):
        holder, key, names = data["data"], "dataset", DATASETS
    else:
        return False
    name = holder.get(key)
    meant = suggest(name, names) if isinstance(name, str) else None
    if meant is not None:
        holder[key] = meant
    return meant is not None


def _a_field_left_to_its_default(data: dict, path: tuple) -> bool:
    """A loss's or data's own field (not its type or dataset) whose default decides nothing
    of the shapes: without it the section still is the user's, checked against the rest."""
    section = data.get(path[0]) if path else None
    if not isinstance(section, dict) or len(path) < 2 or path[1] not in section:
        return False
    if path[0] == "loss":
        return path[1] != "type"
    declared = _value_at(data, ("model", "input_shape")) is not None
    return path[0] == "data" and path[1] != "dataset" and (
        declared or path[1] not in SHAPE_DATA_FIELDS)


def _without_layers_from(data: dict, first_broken: int) -> dict | None:
    if first_broken == 0:
        return None
    data["model"]["layers"] = data["model"]["layers"][:first_broken]
    data["loss"] = "mse"  # the last layer left is not the model's end: no output checks
    _without_the_labels(data)
    return data


_DEFAULT_DATASET = Data.model_fields["dataset"].default


def _without_the_labels(data: dict) -> None:
    """A named dataset whose sample shape is known becomes that model.input_shape, so that
    the cut model's outputs are not compared with the dataset's labels. Kept when the shape
    declared differs (that error is reported), or is known only from the file (npz, csv: its
    labels are checked on load, never here)."""
    section = data.get("data")
    # a data section without a dataset names the default, digits
    name = section.get("dataset", _DEFAULT_DATASET) if isinstance(section, dict) else None
    dataset = DATASETS.get(name) if isinstance(name, str) else None
    if dataset is None or dataset.input_shape is None:
        return
    known = list(dataset.input_shape)
    declared = _value_at(data, ("model", "input_shape"))
    if declared is None or declared == known:
        data["model"]["input_shape"] = known
        data.pop("data")


def _value_at(data: Any, path: tuple) -> Any:
    for key in path:
        if isinstance(data, dict) and key in data:
            data = data[key]
        elif isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data):
            data = data[key]
        else:
            return None
    return data
