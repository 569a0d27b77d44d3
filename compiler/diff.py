"""`nnrun diff A B`: what an architecture change does, layer by layer (output shape, parameters,
FLOPs) and in total (parameters, FLOPs, training memory; the final metrics of runs), for code
review. The rows are `summary`'s; this file aligns them and lays out the differences as text,
JSON or GitHub-flavoured markdown.

Layers are aligned by name first (in order: a layer that moved shows as removed and added),
then, between two layers aligned by name, by position among layers of one type (the longest
common run of types, as `diff` aligns lines): a renamed layer stays paired with itself; a
layer whose type changed shows as removed and added.

Training memory: the total is the memory plan's (what a training step allocates). The plan
reuses one buffer for several layers' values, so a layer's row shows what the layer itself
brings, before that sharing: its parameters with their gradients and optimizer state, its
buffers, and its output for a batch of train.batch_size (none for a layer whose output is a view
of its input: flatten, reshape, dropout and identity in inference).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from difflib import SequenceMatcher

import numpy as np

from .checks import metrics_alike, targets_decide_metrics
from .shapes import size_of
from .summary import LayerRow, Summary, layer_json, shape_text
from .tables import byte_size, metric_text, table_text

STATUS_MARK = {"unchanged": "=", "changed": "~", "renamed": "~", "added": "+", "removed": "-"}


@dataclass
class Side:
    """One of the two compared models: a spec, or a run directory (then with final metrics)."""

    label: str  # the path as given
    summary: Summary
    metrics: dict | None = None  # a run's summary.json "final": its checkpoint, numbers
    layer_memory: dict[str, int] = field(default_factory=dict)  # layer name -> bytes
    settings: dict[str, object] = field(default_factory=dict)  # spec_settings
    spec: Any = None  # the Spec, for what its settings mean (checks.metrics_alike)
    layer_settings: dict[str, dict] = field(default_factory=dict)  # layer name -> its fields


def spec_settings(source) -> dict[str, object]:
    """Everything the spec sets outside its layers (data, loss, optimizer, training, ...) with
    its defaults filled in, as dotted paths: a change of learning rate or batch size belongs
    in a review as much as a new layer. Lists stay whole values; file paths are absolute, as
    a run's spec.yaml holds them."""
    from .frontend import resolved_spec_data

    data = resolved_spec_data(source, absolute_paths=True)
    data.pop("name", None)
    if targets_decide_metrics(source.spec):  # npz/csv: the default follows the targets
        data["train"]["metrics"] = DEFAULT_METRICS
    model = data.pop("model")
    data["model"] = {key: value for key, value in model.items()
                     if key not in ("layers", "input_shape")}
    return dict(_flattened(data))


def layer_settings(source) -> dict[str, dict[str, object]]:
    """Each layer's own fields with their defaults filled in (activation, padding, padding
    mode, initializer, dropout rate, ...), by layer name, as dotted paths: a change that leaves
    shapes and parameter counts as they were (sigmoid to ReLU) is a change all the same."""
    from .frontend import resolved_spec_data

    layers = resolved_spec_data(source, absolute_paths=True)["model"]["layers"]
    return {layer["name"]: {path: value for path, value in _flattened(_spelled_alike(layer))
                            if path not in _LAYER_ROW_FIELDS}
            for layer in layers}


_LAYER_ROW_FIELDS = ("type", "name", "inputs")  # compared as the summary's rows show them
_PER_AXIS = ("kernel_size", "pool_size", "stride", "padding", "dilation", "output_padding")


def _spelled_alike(layer: dict) -> dict:
    """A layer's fields in one spelling of each setting, so that spellings of the same model
    are no change: `3` and `[3, 3]` on a 2-D layer, `padding: valid` and `0`, a pool's stride
    left out and its pool_size, `activation: identity` and none."""
    layer = dict(layer)
    rank = 2 if layer["type"].endswith("2d") else 1 if layer["type"].endswith("1d") else 0
    if layer.get("padding") == "valid":
        layer["padding"] = 0
    if "pool_size" in layer and layer.get("stride") is None:
        layer["stride"] = layer["pool_size"]
    for name in _PER_AXIS:
        if rank and isinstance(layer.get(name), int):
            layer[name] = [layer[name]] * rank
    if layer.get("activation") == {"type": "identity"}:
        del layer["activation"]
    return layer


def _flattened(value, prefix: str = ""):
    if not isinstance(value, dict):
        yield prefix, value
        return
    for key, item in value.items():
        yield from _flattened(item, f"{prefix}.{key}" if prefix else key)


def layer_memory(lowered, step, batch: int) -> dict[str, int]:
    """Bytes each layer brings to a training step at batch size `batch`, before the memory
    plan shares buffers (see the module's docstring)."""
    slots = Counter(step.optimizer_state.values())  # optimizer state arrays per parameter
    itemsize = np.dtype(lowered.graph.inputs[0].type.dtype).itemsize
    stored = Counter()
    for name, info in lowered.params.items():  # the values, their gradients, optimizer state
        stored[info.layer] += size_of(info.shape) * (2 + slots[name])
    for info in lowered.state.values():  # batchnorm's running statistics
        stored[info.layer] += size_of(info.shape)
    memory = {}
    for info, is_view in zip(lowered.layers, _views(lowered)):
        output = 0 if is_view else size_of(info.output.type.shape[1:]) * batch
        memory[info.name] = (stored[info.name] + output) * itemsize
    return memory


def _views(lowered) -> list[bool]:
    """For each layer, whether its output shares an earlier value's memory: a reshape of an
    earlier layer's output (flatten), or the layer's input unchanged (dropout and identity in
    inference). A global pool reshapes a pooled value of its own, which is new memory."""
    from .ops import REGISTRY

    viewed = {node.output: node.inputs[0] for node in lowered.graph.nodes
              if REGISTRY[node.op].view}
    seen, views = set(lowered.graph.inputs), []
    for info in lowered.layers:
        value = info.output
        while value in viewed and value not in seen:
            value = viewed[value]
        views.append(value in seen)
        seen.add(info.output)
    return views


@dataclass
class LayerChange:
    a: LayerRow | None
    b: LayerRow | None
    changes: list[str] = field(default_factory=list)  # the fields that differ
    memory: tuple = (None, None)  # the layer's training memory in A and in B (bytes)
    settings: dict[str, tuple] = field(default_factory=dict)  # the layer's own fields that differ

    @property
    def status(self) -> str:
        if self.a is None:
            return "added"
        if self.b is None:
            return "removed"
        if self.a.name != self.b.name:
            return "renamed"
        return "changed" if self.changes or self.settings else "unchanged"


@dataclass
class Diff:
    a: Side
    b: Side
    layers: list[LayerChange]
    totals: dict[str, tuple]  # name -> (value in A, value in B)
    metrics: dict[str, tuple]
    settings: dict[str, tuple]  # the spec settings that differ; None where a side has none


_COMPARED = (("type", "type"), ("output_shape", "output shape"), ("kernel", "kernel"),
             ("params", "params"), ("flops", "FLOPs"))


def align(a: list[LayerRow], b: list[LayerRow],
          settings: tuple[dict, dict] = ({}, {})) -> list[LayerChange]:
    """A's and B's layers paired (by name, then by position), in B's order with A's removed
    layers where they stood. `settings`: each side's layer_settings, by layer name, so that
    "alike in everything but the name" includes a layer's own fields (its activation, rate)."""
    own = {id(row): _settings_key(settings[0].get(row.name, {})) for row in a}
    own.update({id(row): _settings_key(settings[1].get(row.name, {})) for row in b})
    # the same in everything but the name; then in all but what the input decides (a layer
    # after an inserted conv2d has another weight shape and parameter count); then
    # _PAIRING_KEYS' looser ones
    keys = (lambda row: (*_PAIRING_KEYS[0](row), own[id(row)]),
            lambda row: (row.type, tuple(row.output_shape), own[id(row)]),
            *_PAIRING_KEYS)
    anchors = _name_anchors(a, b)
    pairs: list[LayerChange] = []
    previous_a = previous_b = -1
    for i, j in [*anchors, (len(a), len(b))]:
        pairs += _by_position(a[previous_a + 1:i], b[previous_b + 1:j], keys)
        if i < len(a):
            pairs.append(_pair(a[i], b[j]))
        previous_a, previous_b = i, j
    return pairs


def _name_anchors(a: list[LayerRow], b: list[LayerRow]) -> list[tuple[int, int]]:
    """(i, j) of the layers with one name in both, kept only while in the same order. Names
    nnrun gave (conv2d_2: the second conv2d) are no anchors: a conv2d inserted before it takes
    that name, and the old one is conv2d_3; those layers pair by position and type instead."""
    position = {row.name: j for j, row in enumerate(b) if not _generated_name(row)}
    anchors, last = [], -1
    for i, row in enumerate(a):
        j = -1 if _generated_name(row) else position.get(row.name, -1)
        if j > last:
            anchors.append((i, j))
            last = j
    return anchors


def _generated_name(row: LayerRow) -> bool:
    return re.fullmatch(rf"{re.escape(row.type)}_\d+", row.name) is not None


def _by_position(a: list[LayerRow], b: list[LayerRow], keys=None) -> list[LayerChange]:
    """Layers of one stretch paired where they run alike, by each of `keys` in turn between the
    pairs the one before found (align's: the same in everything but the name, then in all but
    the weight an inserted layer changes, then type and output shape, then type alone); the
    others removed, added."""
    keys = _PAIRING_KEYS if keys is None else keys
    if not keys:
        return [LayerChange(row, None) for row in a] + [LayerChange(None, row) for row in b]
    key = keys[0]
    matcher = SequenceMatcher(None, [key(row) for row in a], [key(row) for row in b],
                              autojunk=False)
    pairs, i, j = [], 0, 0
    for start_a, start_b, size in matcher.get_matching_blocks():
        pairs += _by_position(a[i:start_a], b[j:start_b], keys[1:])
        pairs += [_pair(x, y) for x, y in zip(a[start_a:start_a + size], b[start_b:start_b + size])]
        i, j = start_a + size, start_b + size
    return pairs


_PAIRING_KEYS = (
    lambda row: (row.type, tuple(row.output_shape), tuple(row.kernel or ()), row.params),
    lambda row: (row.type, tuple(row.output_shape)),
    lambda row: row.type,
)


def _settings_key(fields: dict) -> tuple:
    return tuple(sorted((name, repr(value)) for name, value in fields.items()))


def _pair(a: LayerRow, b: LayerRow) -> LayerChange:
    changes = ["name"] if a.name != b.name else []
    changes += [label for name, label in _COMPARED if getattr(a, name) != getattr(b, name)]
    return LayerChange(a, b, changes)


def _mark_rewired(layers: list[LayerChange]) -> None:
    """`inputs` among the changes of a layer that reads other layers in B than in A (a skip
    moved, an activation bypassed). The inputs are compared through the alignment, so that an
    input renamed is no change, and past the one-input layers added in B or removed from A on
    their way, so that a layer inserted before another is no change of the other."""
    counterpart = {"input": "input"} | {c.a.name: c.b.name for c in layers if c.a and c.b}
    removed = {c.a.name: c.a for c in layers if c.b is None}
    added = {c.b.name: c.b for c in layers if c.a is None}
    for change in layers:
        if change.a is None or change.b is None:
            continue
        was = [counterpart.get(_past(name, removed)) for name in change.a.inputs]
        now = [_past(name, added) for name in change.b.inputs]
        if change.b.type == "add":  # a sum in any order
            was, now = Counter(was), Counter(now)
        if was != now:
            after_name_and_type = sum(field in ("name", "type") for field in change.changes)
            change.changes.insert(after_name_and_type, "inputs")


def _past(name: str, skipped: dict[str, LayerRow]) -> str:
    while name in skipped and len(skipped[name].inputs) == 1:
        name = skipped[name].inputs[0]
    return name


def diff(a: Side, b: Side) -> Diff:
    totals = {name: (_total(a.summary, name), _total(b.summary, name)) for name in _TOTALS}
    metrics = {}
    if a.metrics is not None or b.metrics is not None:
        names = [*(a.metrics or {}), *(k for k in (b.metrics or {}) if k not in (a.metrics or {}))]
        metrics = {name: ((a.metrics or {}).get(name), (b.metrics or {}).get(name))
                   for name in names}
    layers = align(a.summary.layers, b.summary.layers, (a.layer_settings, b.layer_settings))
    _mark_rewired(layers)
    for change in layers:
        change.memory = (change.a and a.layer_memory.get(change.a.name),
                         change.b and b.layer_memory.get(change.b.name))
        if change.a and change.b and change.memory[0] != change.memory[1]:
            change.changes.append("memory")
        if change.a and change.b:
            change.settings = _changed_settings(a.layer_settings.get(change.a.name, {}),
                                                b.layer_settings.get(change.b.name, {}))
    settings = _changed_settings(a.settings, b.settings)
    if a.spec is not None and b.spec is not None and metrics_alike(a.spec, b.spec):
        settings.pop("train.metrics", None)  # the left-out default and a list it stands for
    return Diff(a, b, layers, totals, metrics, settings)


def _changed_settings(a: dict, b: dict) -> dict[str, tuple]:
    names = [*a, *(name for name in b if name not in a)]
    return {name: (a.get(name), b.get(name)) for name in names if a.get(name) != b.get(name)}


DEFAULT_METRICS = "default: accuracy for class labels, mae for real-valued targets"


_TOTALS = {
    "input_shape": "input shape", "output_shape": "output shape", "layers": "layers",
    "total_params": "parameters", "trainable_params": "trainable parameters",
    "flops_per_sample": "FLOPs per sample", "batch_size": "batch size (train)",
    "train_memory_bytes": "training memory",
}


def _total(summary: Summary, name: str):
    return len(summary.layers) if name == "layers" else getattr(summary, name)


# --- JSON -------------------------------------------------------------------------------------


def diff_json(result: Diff) -> dict:
    return {
        "a": _side_json(result.a), "b": _side_json(result.b),
        "layers": [{"status": change.status, "changes": change.changes,
                    "settings": {name: _values_json(*values)
                                 for name, values in change.settings.items()},
                    "a": _layer_json_with_memory(change.a, change.memory[0]),
                    "b": _layer_json_with_memory(change.b, change.memory[1])}
                   for change in result.layers],
        "totals": {name: _values_json(*values) for name, values in result.totals.items()},
        "metrics": {name: _values_json(*values) for name, values in result.metrics.items()},
        "settings": {name: _values_json(*values) for name, values in result.settings.items()},
    }


def _layer_json_with_memory(row: LayerRow | None, memory: int | None) -> dict | None:
    return None if row is None else {**layer_json(row), "train_memory_bytes": memory}


def _side_json(side: Side) -> dict:
    return {"path": side.label, "name": side.summary.name,
            "kind": "spec" if side.metrics is None else "run"}


def _values_json(a, b) -> dict:
    change = b - a if _is_number(a) and _is_number(b) else None
    if isinstance(change, float):  # 0.001 - 0.01 is -0.009000000000000001 in binary
        change = float(f"{change:.15g}")
    return {"a": a, "b": b, "change": change}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- text and markdown ------------------------------------------------------------------------

LAYER_COLUMNS = ["", "layer", "type", "output shape", "params", "FLOPs", "train memory",
                 "what changed"]


def _layer_cells(change: LayerChange) -> list[str]:
    a, b = change.a, change.b
    renamed = ["name"] if "name" in change.changes else []
    what = {"added": "added", "removed": "removed"}.get(change.status, ", ".join(
        renamed + [f"{_setting_name(name)} {_setting(x)} -> {_setting(y)}"
                   for name, (x, y) in change.settings.items()]
        + [_inputs_change(a, b) if field == "inputs" else field
           for field in change.changes if field != "name"]))
    return [STATUS_MARK[change.status], _pick(a, b, lambda row: row.name),
            _pick(a, b, lambda row: row.type),
            _pick(a, b, lambda row: shape_text(row.output_shape)),
            _count_change(a and a.params, b and b.params),
            _count_change(a and a.flops, b and b.flops), _memory_change(*change.memory), what]


def _inputs_change(a: LayerRow, b: LayerRow) -> str:
    return f"inputs {', '.join(a.inputs)} -> {', '.join(b.inputs)}"


def _pick(a, b, text) -> str:
    if a is None or b is None:
        return text(a or b)
    return text(a) if text(a) == text(b) else f"{text(a)} -> {text(b)}"


def _count_change(a: int | None, b: int | None) -> str:
    if a is None or b is None:
        return f"{(a if b is None else b):,}"
    return f"{a:,}" if a == b else f"{a:,} -> {b:,} ({b - a:+,})"


def _memory_change(a: int | None, b: int | None) -> str:
    if a is None and b is None:  # a side given without layer memory
        return "-"
    if a is None or b is None:
        return byte_size(a if b is None else b)
    return byte_size(a) if a == b else \
        f"{byte_size(a)} -> {byte_size(b)} ({byte_size(b - a, signed=True)})"


def _total_cells(name: str, a, b) -> list[str]:
    label = _TOTALS[name]
    if name == "train_memory_bytes":
        return [label, byte_size(a), byte_size(b), _relative(a, b, byte_size(b - a, signed=True))]
    if isinstance(a, list):
        return [label, shape_text(a), shape_text(b), "" if a == b else "changed"]
    return [label, f"{a:,}", f"{b:,}", _relative(a, b, f"{b - a:+,}")]


def _relative(a, b, absolute: str) -> str:
    if a == b:
        return ""
    return f"{absolute} ({(b - a) / a:+.1%})" if a else absolute


def _metric_cells(name: str, a, b) -> list[str]:
    change = ""
    if _is_number(a) and _is_number(b) and a != b:
        change = f"{b - a:+,}" if isinstance(b - a, int) else metric_text(b - a, signed=True)
    return [name, _metric(a), _metric(b), change]


def _metric(value) -> str:
    if isinstance(value, str):  # the checkpoint
        return value
    if not _is_number(value):
        return "-"
    return f"{value:,}" if isinstance(value, int) else metric_text(value)


def _sections(result: Diff) -> list[tuple[str, list[str], list[list[str]], tuple]]:
    """(title, headers, rows, right-aligned columns) of each table."""
    a, b = result.a.label, result.b.label
    counts = _status_counts(result)
    tables = [(f"layers ({counts})", LAYER_COLUMNS,
               [_layer_cells(change) for change in result.layers], (4, 5, 6)),
              ("totals", ["", "A", "B", "change"],
               [_total_cells(name, *values) for name, values in result.totals.items()],
               (1, 2, 3))]
    if result.settings:
        tables.append(("settings that differ", ["", "A", "B"],
                       [[name, _setting(a), _setting(b)]
                        for name, (a, b) in result.settings.items()], ()))
    if result.metrics:
        tables.append(("final metrics", ["", "A", "B", "change"],
                       [_metric_cells(name, *values) for name, values in result.metrics.items()],
                       (1, 2, 3)))
    return [(f"A = {a}, B = {b}", [], [], ())] + tables


def _setting_name(path: str) -> str:
    """`activation` for `activation.type`: the mapping's type is what the spec names."""
    return path.removesuffix(".type")


def _setting(value) -> str:
    if value is None:
        return "-"
    return json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)


def _status_counts(result: Diff) -> str:
    counts = Counter(change.status for change in result.layers)
    order = ("unchanged", "changed", "renamed", "added", "removed")
    return ", ".join(f"{counts[s]} {s}" for s in order if counts.get(s))


FOOTNOTE = ("FLOPs per sample: 2 per multiply-accumulate of dense and convolution layers, "
            "others 0. Training memory at each side's train.batch_size: a layer's row is its "
            "parameters with their gradients and optimizer state, and its output for the batch; "
            "the total is summary's estimate: the step's memory plan, which shares buffers "
            "between layers, and the constants some ops keep")


def diff_text(result: Diff, width: int | None = None) -> str:
    parts = []
    for title, headers, rows, right in _sections(result):
        parts.append(title)
        if headers:
            parts.append(table_text(headers, rows, right=right, width=width).rstrip("\n"))
    return "\n".join(parts + [FOOTNOTE]) + "\n"


def diff_markdown(result: Diff) -> str:
    """GitHub-flavoured markdown, to paste into a pull request."""
    parts = []
    for title, headers, rows, right in _sections(result):
        if not headers:
            parts.append(f"**{_escape(title)}**")
            continue
        parts.append(f"### {title}")
        parts.append(_markdown_table(headers, rows, right))
    parts.append(f"<sub>{FOOTNOTE}</sub>")
    return "\n\n".join(parts) + "\n"


def _markdown_table(headers: list[str], rows: list[list[str]], right: tuple) -> str:
    rule = ["---:" if index in right else "---" for index in range(len(headers))]
    lines = [headers, rule, *rows]
    return "\n".join("| " + " | ".join(_escape(cell) for cell in line) + " |" for line in lines)


def _escape(cell: str) -> str:
    # `|` would end a cell; `->` reads well but `→` reads better in a rendered table.
    return cell.replace("|", "\\|").replace(" -> ", " → ")
