"""The text and JSON forms of a trace (runtime/trace.py), in the course's notation: layer l
counts from the input (layer 1), w⁽ˡ⁾_jk joins unit k of layer l−1 to unit j of layer l, and
units count from 1. Large values are elided in the text (the JSON has every value)."""

from __future__ import annotations

import math
import textwrap

import numpy as np

MAX_VALUES = 12  # per printed row; longer rows keep their first and last 6
MAX_SAMPLES = 4  # samples of a batch printed per value
MAX_MAP = 12  # feature maps up to 12x12 are printed as grids
MAX_ROWS = 8  # rows (units j) of a parameter printed
MAX_CHANNELS = 16  # feature maps printed per value

SYMBOLS = {"weight": "w", "bias": "b", "gamma": "γ", "beta": "β"}
# The losses that read the model's output as logits, and what makes them probabilities p.
LINKS = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}

CONVENTIONS = [
    "layer 1 is the input, a⁽¹⁾ = x; layer l ≥ 2 is the spec's layer l−1 (named beside it)",
    "z⁽ˡ⁾ is a layer's value before its activation, a⁽ˡ⁾ after it (a layer without an "
    "activation has only a⁽ˡ⁾); for a dense layer z⁽ˡ⁾_j = Σ_k w⁽ˡ⁾_jk a⁽ˡ⁻¹⁾_k + b⁽ˡ⁾_j",
    "w⁽ˡ⁾_jk joins unit k of layer l−1 to unit j of layer l; it is printed with row j and "
    "column k, the transpose of nnrun's stored dense layout [in, out] (conv weights are printed "
    "as [j, k, kernel]: filter j of layer l, channel k of layer l−1, as a convolution stores "
    "them; a transposed convolution stores [k, j, kernel]); units count from 1",
    "C is the cost of the batch as the spec's loss defines it (the mean over its samples, and "
    "over their outputs where the loss averages them: mse, label maps, several labels a "
    "sample); "
    "δ⁽ˡ⁾ = ∂C/∂z⁽ˡ⁾ (∂C/∂a⁽ˡ⁾ for a layer without an activation), so for a dense layer "
    "∂C/∂w⁽ˡ⁾_jk = Σ over the batch of δ⁽ˡ⁾_j a⁽ˡ⁻¹⁾_k and ∂C/∂b⁽ˡ⁾_j = Σ δ⁽ˡ⁾_j",
    "updated: the parameter after this step's optimizer update, the next step's starting point",
]


def superscript(number: int) -> str:
    return "⁽" + str(number).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")) + "⁾"


def course_layout(param, array: np.ndarray | None) -> np.ndarray | None:
    """A parameter as the course indexes it: a weight stored [in, out, ...] (dense, transposed
    convolutions) becomes [j, k, ...]."""
    if array is None or not param.input_first:
        return array
    return np.swapaxes(array, 0, 1)


# --- text -----------------------------------------------------------------------------------


def trace_text(trace) -> str:
    spec = trace.spec
    digits = 10 if spec.dtype == "float64" else 7
    batch = _batch_size(trace)
    fewer = f" (every training sample: train.batch_size {spec.train.batch_size} is past them)" \
        if batch < spec.train.batch_size else ""
    header = (f"trace of {spec.name}: {len(trace.steps)} step{'s' * (len(trace.steps) != 1)}, "
              f"batch size {batch}{fewer}, {spec.dtype}, {_optimizer(spec)}, "
              f"loss {_loss(spec)}")
    lines = [header, "conventions (the course's):"]
    lines += [textwrap.fill(line, 100, initial_indent="  ", subsequent_indent="    ")
              for line in CONVENTIONS]
    lines += [f"note: {note}" for note in trace.notes]
    for step in trace.steps:
        lines += [""] + _step_lines(step, digits, spec.loss, trace.logits)
    return "\n".join(lines) + "\n"


# The optimizer's fields that shape its update, shown beside the learning rate.
_UPDATE_FIELDS = ("momentum", "nesterov", "beta1", "beta2", "alpha", "eps")


def _optimizer(spec) -> str:
    optimizer = spec.optimizer
    parts = [f"lr {optimizer.lr:g}"]
    for name in _UPDATE_FIELDS:
        value = getattr(optimizer, name, None)
        if name == "nesterov":
            parts += ["nesterov"] if value else []
        elif value is not None and not (name == "momentum" and value == 0):
            parts.append(f"{name} {value:g}")
    return f"{optimizer.type} ({', '.join(parts)})"


def _loss(spec) -> str:
    scale = f", scale {spec.loss.scale:g}" if spec.loss.scale != 1 else ""
    return f"{spec.loss.type}{scale}"


def _step_lines(step, digits: int, loss, logits: str | None) -> list[str]:
    """`logits`: the value p is made of (z⁽ˡ⁾ or a⁽ˡ⁾ of the last layer), where the loss
    makes probabilities of it."""
    lines = [f"step {step.step} (epoch {step.epoch}, batch {step.batch}, lr {step.lr:g})",
             "forward"]
    lines += _forward_lines(step, digits, loss, logits)
    # a label map [H, W] is one map, not H channels of W
    labels = step.y[:, None] if np.ndim(step.y) > 2 else step.y
    lines += _values("y (target)", labels, digits)
    lines.append(f"  C = {_number(step.cost, digits)}")
    lines.append("backward")
    for layer in reversed(step.layers):
        if layer.delta is not None:
            sup = superscript(layer.index)
            wrt = f"{'z' if layer.z is not None else 'a'}{sup}"
            rule = f" = {_output_delta(loss, step.counted)}" if wrt == logits else ""
            lines += _values(f"δ{sup} = ∂C/∂{wrt}{rule} {layer.name}", layer.delta, digits)
    lines.append("gradients and updates")
    for param in step.params:
        lines += _param_lines(param, digits)
    return lines


def _forward_lines(step, digits: int, loss, logits: str | None) -> list[str]:
    lines = _values(f"a{superscript(1)} = x", step.x, digits)
    for layer in step.layers:
        sup = superscript(layer.index)
        if layer.z is not None:
            # of z: the final softmax (sigmoid) is fused into the loss, and its a is p
            is_p = " = p" if logits == f"z{sup}" else ""
            lines += _values(f"z{sup} {layer.name}", layer.z, digits)
            lines += _values(f"a{sup} = {layer.activation}(z{sup}){is_p}", layer.a, digits)
        else:
            lines += _values(f"a{sup} {layer.name} ({layer.type})", layer.a, digits)
    if step.p is not None and logits[0] == "a":
        lines += _values(f"p = {LINKS[loss.type]}({logits})", step.p, digits)
    return lines


def _output_delta(loss, counted: int) -> str:
    """δ of the logits: the probabilities less the targets, over the N labels the mean counts
    (t: the smoothed one-hot label, which the notes define)."""
    target = "y" if loss.type == "binary_cross_entropy" else \
        "t" if loss.label_smoothing else "onehot(y)"
    return f"{scale_factor(loss)}(p − {target})/{counted}"


def scale_factor(loss) -> str:
    """The loss's `scale` as a factor of a formula ("0.5·"), or nothing where it is 1."""
    return f"{loss.scale:g}·" if loss.scale != 1 else ""


def _values(label: str, batch: np.ndarray, digits: int) -> list[str]:
    """One value of every sample of a batch (up to MAX_SAMPLES)."""
    count = len(batch)
    lines = []
    for index in range(min(count, MAX_SAMPLES)):
        name = label if count == 1 else f"{label} [sample {index + 1}]"
        lines += _sample(name, batch[index], digits)
    if count > MAX_SAMPLES:
        lines.append(f"    ({count - MAX_SAMPLES} more samples not shown; --format json has "
                     "them)")
    return lines


def _sample(label: str, value: np.ndarray, digits: int) -> list[str]:
    """A vector on one line; feature maps [C, L] or [C, H, W] one row per line, when small."""
    if value.ndim <= 1:
        return [f"  {label} = {_row(value.reshape(-1), digits)}"]
    channels, spatial = value.shape[0], value.shape[1:]
    what = f"{channels} {'channel' if len(spatial) == 1 else 'map'}{'s' * (channels != 1)} of " \
           + "×".join(map(str, spatial))
    if len(spatial) > 1 and max(spatial) > MAX_MAP:
        return [f"  {label}: {what} not shown (larger than {MAX_MAP}×{MAX_MAP}); --format json "
                "has every value"]
    lines = [f"  {label}: {what}"]
    for channel in range(min(channels, MAX_CHANNELS)):
        rows = value[channel].reshape(-1, spatial[-1])
        lines += [f"    {channel + 1}: {_row(row, digits)}" if i == 0 else
                  f"    {' ' * len(str(channel + 1))}  {_row(row, digits)}"
                  for i, row in enumerate(rows)]
    if channels > MAX_CHANNELS:
        lines.append(f"    ({channels - MAX_CHANNELS} more not shown; --format json has them)")
    return lines


def _param_lines(param, digits: int) -> list[str]:
    """The value, gradient and updated value of a parameter, one unit j (a conv weight: one
    filter j and input channel k) at a time."""
    kind = param.name.rsplit(".", 1)[1]
    symbol = SYMBOLS.get(kind, kind)
    arrays = [course_layout(param, a) for a in (param.value, param.gradient, param.updated)]
    labels = [symbol, f"∂C/∂{symbol}", "updated"]
    value = arrays[0]
    index = "_jk" if value.ndim >= 2 else "_j"
    rows = "" if value.ndim < 2 else " (rows j, columns k)" if value.ndim == 2 else \
        " (per filter j and input channel k: the kernel)"
    lines = [f"  {symbol}{superscript(param.layer)}{index} {param.name}{rows}"]
    units = list(np.ndindex(*value.shape[:2])) if value.ndim >= 3 else \
        [(j,) for j in range(len(value))] if value.ndim == 2 else [()]
    for unit in units[:MAX_ROWS]:
        name = " ".join(f"{axis}={i + 1}" for axis, i in zip("jk", unit))
        for label, array in zip(labels, arrays):
            part = "none (the cost does not depend on it)" if array is None else \
                _nested(array[unit], digits)
            lead = (name if label == symbol else " " * len(name)) + "  " * bool(name)
            lines.append(f"    {lead}{label:<7}  {part}")
    if len(units) > MAX_ROWS:
        lines.append(f"    ({len(units) - MAX_ROWS} more not shown; --format json has them)")
    return lines


def _nested(values: np.ndarray, digits: int) -> str:
    """A vector as a row, a small kernel as nested rows, anything larger flattened."""
    if values.ndim <= 1 or values.size > MAX_VALUES:
        return _row(values.reshape(-1), digits)
    return "[" + ", ".join(_nested(row, digits) for row in values) + "]"


def _row(values: np.ndarray, digits: int) -> str:
    if len(values) > MAX_VALUES:
        half = MAX_VALUES // 2
        head = ", ".join(_number(v, digits) for v in values[:half])
        tail = ", ".join(_number(v, digits) for v in values[-half:])
        return f"[{head}, …, {tail}] ({len(values)} values)"
    return "[" + ", ".join(_number(v, digits) for v in values) + "]"


def _number(value, digits: int) -> str:
    return f"{float(value) + 0.0:.{digits}g}"  # + 0.0: no "-0"


def _batch_size(trace) -> int:
    """The batch the steps take: the spec's, or every training sample where they are fewer."""
    return min(trace.spec.train.batch_size, trace.samples or trace.spec.train.batch_size)


# --- JSON -----------------------------------------------------------------------------------


def trace_json(trace) -> dict:
    spec = trace.spec
    return {
        "spec": spec.name, "dtype": spec.dtype, "batch_size": _batch_size(trace),
        "optimizer": spec.optimizer.type, "loss": _loss(spec),
        "conventions": CONVENTIONS, "notes": trace.notes,
        "steps": [_step_json(step) for step in trace.steps],
    }


def _step_json(step) -> dict:
    return {
        "step": step.step, "epoch": step.epoch, "batch": step.batch, "lr": step.lr,
        "x": _list(step.x), "y": _list(step.y), "cost": _plain(step.cost),
        **({"p": _list(step.p), "counted": step.counted} if step.p is not None else {}),
        "layers": [{"index": layer.index, "name": layer.name, "type": layer.type,
                    "activation": layer.activation, "z": _list(layer.z), "a": _list(layer.a),
                    "delta": _list(layer.delta)} for layer in step.layers],
        "params": [{"name": param.name, "layer": param.layer,
                    "layout": _layout(param),
                    "value": _list(course_layout(param, param.value)),
                    "gradient": _list(course_layout(param, param.gradient)),
                    "updated": _list(course_layout(param, param.updated))}
                   for param in step.params],
    }


def _layout(param) -> str:
    if not param.input_first:
        return "as stored"
    if param.value.ndim == 2:
        return ("[j, k]: unit j of layer l, unit k of layer l-1 (the transpose of the stored "
                "[in, out])")
    return ("[j, k, kernel]: filter j of layer l, channel k of layer l-1 (the stored "
            "[in, out, kernel] with its first two axes swapped)")


def _list(array):
    if array is None:
        return None
    return _plain(np.asarray(array).tolist())


def _plain(value):
    """JSON has no NaN or infinity: a diverging step writes them as strings."""
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
