"""Lowering: each layer of a spec becomes primitive ops in one graph (DESIGN.md section 3).

One function per layer type, keyed by the same `type` strings as the schema's Layer union
(a test checks that the two key sets are equal). Each returns the layer's output value.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from . import schema
from .builder import CompileError, CompileWarning, GraphBuilder
from .datasets import DATASETS, defaulted_dataset, paths_relative_to
from .diagnostics import suggest
from .output_checks import FUSED_ACTIVATION, check_outputs
from .ir import BATCH, Graph, Origin, TensorType, Value
from .ops import REGISTRY
from .ops.conv import ConvAttrs, ConvTransposeAttrs
from .ops.linear import MatmulAttrs
from .ops.norm import BatchNormAttrs, EpsAttrs, MomentumAttrs, RateAttrs, StatisticsAttrs
from .ops.pool import PoolAttrs
from .ops.resize import UpsampleAttrs
from .ops.shape import ConcatAttrs, PadAttrs, ReshapeAttrs
from .shapes import (COPYING_PADDINGS, MOST_POSITIONS, Unread, as_tuple, per_sample, same_padding,
                     setting_text, size_of, every_tap_reads, taps_reading_input, unread_positions,
                     unread_through_copies, window_output, windows_reading_no_input)


@dataclass(frozen=True)
class ParamInfo:
    name: str
    shape: tuple[int, ...]
    init: Any  # an initializer model of the schema
    fan_in: int
    fan_out: int
    layer: str


@dataclass
class LayerInfo:
    name: str
    type: str
    output: Value
    inputs: list[str] = field(default_factory=list)
    params: int = 0  # every stored value, batchnorm's running statistics included
    trainable_params: int = 0
    kernel: tuple[int, ...] | None = None  # weight shape, or the pooling window
    flops: int = 0
    pre_activation: Value | None = None  # z of a layer with an activation (a = output)


@dataclass
class Lowered:
    """A forward graph plus what training and `summary` need to know about it."""

    graph: Graph
    builder: GraphBuilder
    params: dict[str, ParamInfo] = field(default_factory=dict)
    state: dict[str, ParamInfo] = field(default_factory=dict)
    layers: list[LayerInfo] = field(default_factory=list)
    logits: Value | None = None  # the output before a final softmax/sigmoid fused into the loss
    fused_layer: str | None = None  # the layer of that softmax/sigmoid (the last, or one before
    # layers that only reshape its values: flatten, reshape, identity)
    prediction: Value | None = None
    output_origin: Origin | None = None  # the last layer: where the loss's shape errors point

    @property
    def warnings(self) -> list[CompileWarning]:
        return self.builder.warnings


@dataclass
class LayerContext:
    """What a layer's lowering function may use besides its own spec."""

    gb: GraphBuilder
    lowered: Lowered
    spec: Any
    name: str
    origin: Origin
    mode: str

    def param(self, suffix, shape, init, fan_in, fan_out, trainable=True,
              counted_by: tuple[str, int] | None = None) -> Value:
        """counted_by: the layer's field that gives one of the axes, and its value (units,
        filters): a size no machine holds is its error when that axis is the largest."""
        name = f"{self.name}.{suffix}"
        info = ParamInfo(name, tuple(shape), init, fan_in, fan_out, self.name)
        if trainable:
            self.lowered.params[name] = info
            field, count = counted_by or (None, None)
            at = self.origin.at_field(field) if count == max(shape) else self.origin
            with self.gb.at(at):
                return self.gb.param(name, TensorType(tuple(shape), self.spec.dtype))
        self.lowered.state[name] = info
        return self.gb.state(name, TensorType(tuple(shape), self.spec.dtype))

    def rng(self) -> Value:
        for value in self.gb.graph.inputs:
            if value.name == "rng":
                return value
        return self.gb.input("rng", TensorType((3,), "rng"))  # the step's dropout key

    def fail(self, message: str, *keys, of_shapes: bool = False):
        """`of_shapes`: the shapes of the layer's inputs are at fault (a merge's branches)."""
        raise CompileError(self.origin.at_field(*keys) if keys else self.origin, message,
                           of_shapes=of_shapes)


# --- the input shape ------------------------------------------------------------------------


# The start of the error of a data file that gave no sample shape (validate --data replaces
# it with the reason train gives when it reads the file).
SHAPE_NOT_READ = "model.input_shape is needed: "


def input_shape(spec, directory: Path = Path(".")) -> tuple[int, ...]:
    """The sample shape: declared, a named dataset's, or else an error that asks for it
    (`directory`: the spec's, which its data.path is read from)."""
    declared = tuple(spec.model.input_shape) if spec.model.input_shape else None
    dataset = DATASETS[spec.data.dataset] if spec.data else None
    known = dataset.input_shape if dataset else None
    if declared and known and declared != known:
        raise CompileError(
            Origin("model.input_shape", keys=("model", "input_shape")),
            f"input_shape {list(declared)} does not match dataset '{dataset.name}' samples "
            f"{list(known)}; use {list(known)} or remove model.input_shape"
            + defaulted_dataset(spec.data),
        )
    if declared or known:
        return declared or known
    where = ("model",) if spec.data is None else ("data", "dataset")
    raise CompileError(
        Origin("model", keys=where),
        f"{SHAPE_NOT_READ}{spec.data.dataset} data gives its sample shape in the "
        "file data.path names, which could not be read for it (missing, or its features are "
        f"not [N, ...]); check data.path (relative to {paths_relative_to(directory)}), or add "
        "input_shape under model, e.g. input_shape: [4] for 4 features"
        if spec.data else "model.input_shape is needed when there is no data section",
    )


# --- activations ----------------------------------------------------------------------------

def apply_activation(gb: GraphBuilder, activation, x: Value) -> Value:
    if activation is None or activation.type == "identity":
        return x
    # The op's attrs from the spec's fields of the same names (leaky_relu's and elu's alpha);
    # the rest keep their defaults (softmax over axis 1, the sample's first).
    kind = REGISTRY[activation.type].attrs
    given = {f.name: getattr(activation, f.name) for f in fields(kind)
             if hasattr(activation, f.name)}
    return gb.emit(activation.type, x, attrs=kind(**given))


# --- layers ---------------------------------------------------------------------------------


def _lower_dense(ctx: LayerContext, layer, inputs: list[Value]) -> Value:
    (x,) = inputs
    features = x.type.shape[1]  # on anything but a vector, matmul's shape rule says so
    w = ctx.param("weight", (features, layer.units), _init(ctx, layer), features, layer.units,
                  counted_by=("units", layer.units))
    with ctx.gb.at(ctx.origin, input_hint=_flatten_hint(layer)):
        y = ctx.gb.emit("matmul", x, w, attrs=MatmulAttrs())
    return _with_bias(ctx, layer, y, layer.units, features, layer.units)


def _flatten_hint(layer) -> str:
    """A flatten before the layer, or, where it names its input, of that input."""
    named = [layer.inputs] if isinstance(layer.inputs, str) else layer.inputs
    if not named:
        return "add {type: flatten} before this layer"
    (source,) = named
    return (f"flatten '{source}' first: add {{type: flatten, name: {source}_flat, inputs: "
            f"{source}}} and set inputs: {source}_flat")


def _with_bias(ctx: LayerContext, layer, y: Value, count: int, fan_in: int, fan_out: int) -> Value:
    """y plus the layer's bias of `count` values (one per unit or filter), where it has one."""
    if not layer.use_bias:
        return y
    b = ctx.param("bias", (count,), layer.bias_init, fan_in, fan_out)
    return ctx.gb.emit("bias_add", y, b)


def _init(ctx: LayerContext, layer):
    return layer.init or ctx.spec.model.init


def _conv_geometry(ctx, layer, x: Value, rank: int):
    """Kernel, stride, dilation and (before, after) padding per spatial axis."""
    kernel_field = "pool_size" if hasattr(layer, "pool_size") else "kernel_size"
    kernel = _per_axis(ctx, kernel_field, getattr(layer, kernel_field), rank)
    stride = _per_axis(ctx, "stride", layer.stride or kernel, rank)
    dilation = _per_axis(ctx, "dilation", getattr(layer, "dilation", 1), rank)
    spatial = x.type.shape[2:]
    if len(spatial) != rank:  # the op's shape rule reports the wrong rank; no geometry to do
        return kernel, stride, dilation, ((0, 0),) * rank
    if layer.padding == "same":
        pad = tuple(same_padding(n, k, s, d) for n, k, s, d in zip(spatial, kernel, stride, dilation))
    elif layer.padding == "valid":
        pad = ((0, 0),) * rank
    else:
        pad = tuple((p, p) for p in as_tuple(layer.padding, rank))
        if len(pad) != rank:
            ctx.fail(f"padding needs {rank} value{'s' if rank > 1 else ''}, got {layer.padding}",
                     "padding")
    # the field to change: the stride, or a pool's pool_size where its stride is left out
    stride_field = "stride" if layer.stride is not None else kernel_field
    # a padding of zeros or noise holds none of the input; reflect, replicate, circular copy it
    padding_mode = getattr(layer, "padding_mode", None)
    padding_of_no_input = padding_mode in ("zeros", "random")
    _warn_unused(ctx, spatial, kernel, stride, pad, dilation, kernel_field, stride_field,
                 padding_mode)
    if padding_of_no_input:
        _warn_windows_of_padding_only(ctx, spatial, kernel, stride, pad, dilation)
    if padding_mode == "zeros" and kernel_field == "kernel_size":  # weights, read from zeros
        _warn_taps_of_padding_only(ctx, spatial, kernel, stride, pad, dilation)
    return kernel, stride, dilation, pad


def _warn_unused(ctx, spatial, kernel, stride, pad, dilation, kernel_field, stride_field,
                 padding_mode: str | None = None) -> None:
    """Input positions no window reads (`padding_mode`: a convolution's; a padding that copies
    the input reads the positions it copies)."""
    warn_shaped = ctx.gb.warn_of_shapes  # said with the overrides that shaped the input
    names = ("positions",) if len(spatial) == 1 else ("rows", "columns")
    padding_of_no_input = padding_mode in ("zeros", "random")
    for axis, n, k, s, p, d in zip(names, spatial, kernel, stride, pad, dilation):
        result = window_output(n, k, s, p, d)
        if result.size < 1:
            continue
        copied = padding_mode in COPYING_PADDINGS and any(p)
        unread = unread_through_copies(n, k, s, p, d, padding_mode) if copied \
            else unread_positions(n, k, s, p, d)
        if unread is None:  # an axis too long to search: what lies past the last window
            unread = Unread(result.unused, (), True)
        if not unread.count:
            continue
        unit = axis.rstrip("s") if unread.count == 1 else axis
        field = stride_field if s > 1 else "dilation" if d > 1 else None
        to_adjust = ("padding, kernel_size, dilation" if kernel_field == "kernel_size"
                     else "padding, pool_size")
        geometry = f"{n} {axis} / stride {s}{f', dilation {d}' if d > 1 else ''}"
        with ctx.gb.at(ctx.origin.at_field(field) if field else ctx.origin):
            if unread.count == n and padding_of_no_input:  # kernel 1, stride 6, padding 2
                warn_shaped(f"{geometry}, padding {_pad_text(p)}: every window lies in the "
                            f"padding, so the layer reads none of the {n} {axis} "
                            f"({result.formula}); adjust {to_adjust} or stride to use every "
                            "input")
            elif unread.past_the_end_only:
                warn_shaped(f"{geometry} leaves {unread.count} {unit} unused "
                            f"({result.formula}); adjust {to_adjust} or stride to use every input")
            else:
                warn_shaped(f"{geometry} leaves {unread.count} {unit} unused: no window reads "
                            f"{_positions(axis, unread)}; adjust {to_adjust} or stride to use "
                            "every input")


def _warn_windows_of_padding_only(ctx, spatial, kernel, stride, pad, dilation) -> None:
    """Outputs whose window lies wholly in a padding wider than the kernel reaches, or whose
    taps, spread wider than the input, step over it: they read no input (a layer whose
    windows read none at all is _warn_unused's)."""
    warn_shaped = ctx.gb.warn_of_shapes  # said with the overrides that shaped the input
    names = ("positions",) if len(spatial) == 1 else ("rows", "columns")
    fixes = [_padding_only_fix(*geometry) for geometry in zip(spatial, kernel, stride, pad,
                                                               dilation)]
    for axis, n, p, d, fix in zip(names, spatial, pad, dilation, fixes):
        if fix is None:
            continue
        # a fix names every axis's value ([2, 1] for rows at fault: a scalar would set both),
        # another axis's changed only where its own fix is of the same kind
        alike = [other is not None and other.kind == fix.kind for other in fixes]
        dilations = [other.dilation if same else each
                     for other, same, each in zip(fixes, alike, dilation)]
        paddings = [other.padding if same else each[0] for other, same, each in zip(fixes, alike,
                                                                                  pad)]
        outputs = f"{fix.blind} of the {fix.size} outputs along the {axis} read only padding"
        padding = "" if fix.padding is None else \
            _setting_of_axes(paddings, pad, fix.padding) + (" or less" if fix.or_less else "")
        if fix.padding is None:  # the padding is within the reach: the taps step over the input
            with ctx.gb.at(ctx.origin.at_field("dilation")):
                warn_shaped(f"dilation {d} sets the kernel's taps {d} apart, more than the "
                            f"{n} {axis}: {outputs}, the input between two taps; use "
                            f"dilation: {_setting_of_axes(dilations, None, fix.dilation)}")
        elif fix.dilation:  # the taps step over the input, and the padding holds a smaller one's
            with ctx.gb.at(ctx.origin.at_field("dilation")):
                warn_shaped(f"dilation {d} sets the kernel's taps {d} apart, more than the "
                            f"{n} {axis}, and padding {_pad_text(p)} leaves the taps of a "
                            f"smaller one in it: {outputs}; use dilation: "
                            f"{_setting_of_axes(dilations, None, fix.dilation)} with padding: "
                            f"{padding}")
        else:
            with ctx.gb.at(ctx.origin.at_field("padding")):
                warn_shaped(f"padding {_pad_text(p)} is at least the kernel's reach "
                            f"({fix.reach}): {outputs}, none of the input; use padding: {padding}")


def _warn_taps_of_padding_only(ctx, spatial, kernel, stride, pad, dilation) -> None:
    """A kernel wider than the padded input needs (kernel_size 100 with padding same on 8, or
    taps spread past it by a dilation): the taps that meet only the zeros of the padding, for
    every output, multiply nothing, and their weights never get a gradient. Axes of outputs
    that read only padding are _warn_windows_of_padding_only's. One warning for the axes
    alike."""
    warn_shaped = ctx.gb.warn_of_shapes  # said with the overrides that shaped the input
    names = ("positions",) if len(spatial) == 1 else ("rows", "columns")
    found: dict[tuple, list[str]] = {}
    for axis, n, k, s, p, d in zip(names, spatial, kernel, stride, pad, dilation):
        if k > MOST_POSITIONS or windows_reading_no_input(n, k, s, p, d):
            continue
        live = len(taps_reading_input(n, k, s, p, d))
        if live and live < k:
            found.setdefault((n, k, s, p, d, live), []).append(axis)
    for (n, k, s, p, d, live), axes in found.items():
        spread = f", dilation {d}" if d > 1 else ""
        fix = _every_tap_fix(n, k, s, d)
        along = " and ".join(axes)
        with ctx.gb.at(ctx.origin.at_field("kernel_size" if d == 1 else "dilation")):
            warn_shaped(f"kernel_size {k}{spread} on {n} {along}, padding {_pad_text(p)}: "
                        f"{k - live} of the kernel's {k} taps along the {along} meet only the "
                        "padding's zeros, at every output, so their weights never get a "
                        f"gradient and add nothing; {fix}")


def _every_tap_fix(n: int, k: int, s: int, d: int) -> str:
    """The largest dilation, else kernel, below the layer's whose every tap reads the input
    under padding: same (which keeps the output's size)."""
    def every_tap(kernel: int, dilation: int) -> bool:
        pad = same_padding(n, kernel, s, dilation)
        return every_tap_reads(n, kernel, s, pad, dilation)

    dilation = next((smaller for smaller in range(d - 1, 0, -1) if every_tap(k, smaller)), None)
    widest = min(k - 1, 2 * n * s + 1)  # beyond it, a tap misses the input at every output
    kernel = next(smaller for smaller in range(widest, 0, -1) if every_tap(smaller, d))
    fixes = ([f"dilation: {dilation}"] if dilation else []) + [f"kernel_size: {kernel}"]
    return f"use {' or '.join(fixes)}, with padding: same"


@dataclass(frozen=True)
class _PaddingOnlyFix:
    """One axis's outputs that read only padding, and the setting that gives them input: a
    smaller dilation (padding None: the padding is within the reach), a padding within the
    reach (dilation None), or both."""

    blind: int
    size: int
    reach: int
    dilation: int | None
    padding: int | None
    or_less: bool = False

    @property
    def kind(self) -> tuple[bool, bool]:
        return self.dilation is not None, self.padding is not None


def _padding_only_fix(n: int, k: int, s: int, p: tuple[int, int], d: int
                      ) -> _PaddingOnlyFix | None:
    blind = windows_reading_no_input(n, k, s, p, d)
    size = window_output(n, k, s, p, d).size
    if not blind or blind == size:
        return None
    reach = d * (k - 1) + 1
    found = (blind, size, reach)
    fitting = _dilation_reading_input(n, k, s, p, d) if max(p) < reach else None
    if fitting:
        return _PaddingOnlyFix(*found, dilation=fitting, padding=None)
    within = tuple(min(side, reach - 1) for side in p)  # the padding's fix alone
    if max(p) < reach or (n < d and windows_reading_no_input(n, k, s, within, d)):
        # the padding within the reach of a dilation of n
        return _PaddingOnlyFix(*found, dilation=n, padding=n * (k - 1), or_less=True)
    # (less, where the taps are further apart than the input, can leave some between)
    return _PaddingOnlyFix(*found, dilation=None, padding=reach - 1,
                           or_less=reach > 1 and n >= d)


def _setting_of_axes(values: list[int], pads: tuple | None, own: int) -> str:
    """The value of a field of every axis (`[2, 1]`), or one number where they are the same or
    the other axes' paddings are uneven (`same`'s, which a list cannot write)."""
    uneven = pads is not None and any(lo != hi for lo, hi in pads)
    return str(own) if uneven else setting_text(values)


def _dilation_reading_input(n: int, k: int, s: int, pad: tuple[int, int],
                            d: int) -> int | None:
    """The largest dilation below `d` whose every window reads the input (None for none)."""
    return next((smaller for smaller in range(min(d - 1, n), 0, -1)
                 if window_output(n, k, s, pad, smaller).size >= 1
                 and not windows_reading_no_input(n, k, s, pad, smaller)), None)


def _pad_text(pad: tuple[int, int]) -> str:
    return str(pad[0]) if pad[0] == pad[1] else f"{pad[0]} before, {pad[1]} after"


def _positions(axis: str, unread: Unread) -> str:
    """`rows 1, 3, 5 and 7` (counted from 0), the first eight of a longer list."""
    noun = axis.rstrip("s") if unread.count == 1 else axis
    shown = [str(p) for p in unread.first]
    if unread.count > len(shown):
        return f"{noun} {', '.join(shown)}, ... (counted from 0)"
    listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"
    return f"{noun} {listed} (counted from 0)"


def _compact_pad(pad) -> tuple:
    return tuple(lo if lo == hi else (lo, hi) for lo, hi in pad)


def _spatial_rank(layer_type: str) -> int:
    """The spatial axes a convolution, pool or upsample layer reads: the N of its `Nd`."""
    return int(re.search(r"([12])d", layer_type).group(1))


def _other_rank(layer_type: str) -> str:
    """The layer of the other rank: conv1d_transpose for conv2d_transpose, maxpool2d for
    maxpool1d."""
    rank = _spatial_rank(layer_type)
    return layer_type.replace(f"{rank}d", f"{3 - rank}d", 1)


def _rank_hint(ctx: LayerContext, x: Value, layer_type: str) -> str:
    """What fixes a convolution's, pool's or upsample's input of the wrong rank (the op's rule
    says what is wrong): the other rank's layer only when the sample has its rank, a reshape
    where the channel axis is missing (for an npz's samples, saving them with one first: a
    reshape leaves `normalize` statistics per row or per feature), for a vector a layer made
    the layer before that one, and for more axes than the layer reads, a reshape."""
    sample, rank = per_sample(x.type), _spatial_rank(layer_type)
    if len(sample) == rank + 1:
        return ""
    axes = "[channels, length]" if rank == 1 else "[channels, height, width]"
    fixes = []
    if len(sample) == (3 if rank == 1 else 2):
        fixes.append(f"use {_other_rank(layer_type)}")
    if len(sample) == rank and x.name == "x" and ctx.spec.data is not None \
            and ctx.spec.data.dataset == "npz":
        fixes.append("give the npz's samples a channel axis (save x[:, None], and x_test; "
                     f"input_shape {[1, *sample]})")
    if len(sample) == rank:
        fixes.append(f"add {{type: reshape, shape: {[1, *sample]}}} before it (a channel axis)")
    side = math.isqrt(sample[0]) if len(sample) == 1 and rank == 2 else 0
    if side > 1 and side * side == sample[0] and x.name == "x":  # 784 features: 28 x 28
        fixes.append(f"add {{type: reshape, shape: {[1, side, side]}}} before it")
    if not fixes and len(sample) == 1 and x.name != "x":
        fixes.append(f"place {layer_type} before the layer that made the vector (a flatten, "
                     f"dense or global pool), or reshape to {axes} first")
    if not fixes and len(sample) == 1:
        fixes.append(f"start with dense layers, or reshape the samples to {axes}")
    if not fixes:
        fixes.append(f"reshape to {axes} first")
    return ", or ".join(fixes)


def _lower_conv(ctx: LayerContext, layer, inputs: list[Value]) -> Value:
    (x,) = inputs
    rank = _spatial_rank(layer.type)
    kernel, stride, dilation, pad = _conv_geometry(ctx, layer, x, rank)
    hint = _rank_hint(ctx, x, layer.type)
    at_kernel = {"kernel": "kernel_size", "dilation": "dilation"}
    padded = layer.padding_mode != "zeros" and any(lo or hi for lo, hi in pad)
    if padded:  # a reflect padding wider than the input first: the kernel's fixes assume it
        seed = padding_seed(ctx.spec.seed, ctx.name) if layer.padding_mode == "random" else None
        pad_attrs = PadAttrs(pad, layer.padding_mode, seed)
        with ctx.gb.at(ctx.origin.at_field("padding_mode")):  # what its error advises to change
            ctx.gb.shape("pad", pad_attrs, x.type, reads=x)
    if layer.padding_mode != "zeros":
        # The convolution's shape rule on the input as given, so that an error shows the
        # padding the spec wrote, not the explicit pad op's output
        weight = TensorType((layer.filters, x.type.shape[1], *kernel), x.type.dtype)
        attrs = ConvAttrs(stride, _compact_pad(pad), dilation,
                          padding_mode=layer.padding_mode)
        with ctx.gb.at(ctx.origin, at_kernel, input_hint=hint):
            ctx.gb.shape(layer.type, attrs, x.type, weight, reads=x)
    if padded:
        with ctx.gb.at(ctx.origin.at_field("padding_mode")):
            x = ctx.gb.emit("pad", x, attrs=pad_attrs)
        pad = ((0, 0),) * rank
    channels = x.type.shape[1]
    fan_in, fan_out = channels * size_of(kernel), layer.filters * size_of(kernel)
    w = ctx.param("weight", (layer.filters, channels, *kernel), _init(ctx, layer), fan_in, fan_out,
                  counted_by=("filters", layer.filters))
    with ctx.gb.at(ctx.origin, at_kernel, input_hint=hint):
        y = ctx.gb.emit(layer.type, x, w, attrs=ConvAttrs(stride, _compact_pad(pad), dilation))
    return _with_bias(ctx, layer, y, layer.filters, fan_in, fan_out)


def padding_seed(spec_seed: int, layer_name: str) -> int:
    """padding_mode: random's seed: the spec's seed and the layer's name, so that two layers
    pad with different values and a run is reproducible from its spec."""
    digest = hashlib.sha256(f"{spec_seed}:{layer_name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _per_axis(ctx: LayerContext, name: str, value, rank: int) -> tuple[int, ...]:
    values = as_tuple(value, rank)
    if len(values) != rank:
        ctx.fail(f"{name} needs {rank} value{'s' if rank > 1 else ''}, got {list(values)}", name)
    return values


def _lower_conv_transpose(ctx: LayerContext, layer, inputs: list[Value]) -> Value:
    (x,) = inputs
    rank = _spatial_rank(layer.type)
    kernel, stride, pad, extra, dilation = (
        _per_axis(ctx, name, getattr(layer, name), rank)
        for name in ("kernel_size", "stride", "padding", "output_padding", "dilation"))
    channels = x.type.shape[1]
    # fan_in: the inputs that meet one output at stride 1, as for a convolution
    fan_in, fan_out = channels * size_of(kernel), layer.filters * size_of(kernel)
    w = ctx.param("weight", (channels, layer.filters, *kernel), _init(ctx, layer), fan_in, fan_out,
                  counted_by=("filters", layer.filters))
    hint = _rank_hint(ctx, x, layer.type)
    at_fields = {"pad": "padding", "output_padding": "output_padding"}
    with ctx.gb.at(ctx.origin, at_fields, input_hint=hint):
        y = ctx.gb.emit(layer.type, x, w, attrs=ConvTransposeAttrs(stride, pad, extra, dilation))
    return _with_bias(ctx, layer, y, layer.filters, fan_in, fan_out)


def _lower_upsample(ctx: LayerContext, layer, inputs: list[Value]) -> Value:
    (x,) = inputs
    rank = _spatial_rank(layer.type)
    scale = _per_axis(ctx, "scale", layer.scale, rank)
    hint = _rank_hint(ctx, x, layer.type)
    with ctx.gb.at(ctx.origin, input_hint=hint):
        return ctx.gb.emit(layer.type, x, attrs=UpsampleAttrs(scale, layer.mode))


def _lower_pool(ctx: LayerContext, layer, inputs: list[Value]) -> Value:
    (x,) = inputs
    rank = _spatial_rank(layer.type)
    kernel, stride, dilation, pad = _conv_geometry(ctx, layer, x, rank)
    op = layer.type.replace("pool", "_pool")  # maxpool2d: the op max_pool2d
    hint = _rank_hint(ctx, x, layer.type)
    with ctx.gb.at(ctx.origin, {"kernel": "pool_size", "pad": "padding"}, input_hint=hint):
        return ctx.gb.emit(op, x, attrs=PoolAttrs(kernel, stride, _compact_pad(pad), dilation))


def _lower_global_pool(ctx: LayerContext, layer, inputs: list[Value]) -> Value:
    (x,) = inputs
    if x.type.rank < 3:
        ctx.fail(f"{layer.type} needs spatial axes to reduce, got shape {per_sample(x.type)}; it "
                 "pools each channel of [channels, length] or [channels, height, width] maps: "
                 "place it after the convolutions, before any flatten or dense")
    spatial = tuple(x.type.shape[2:])
    rank = len(spatial)
    op = f"{'max' if layer.type == 'global_maxpool' else 'avg'}_pool{rank}d"
    zeros = (0,) * rank
    pooled = ctx.gb.emit(op, x, attrs=PoolAttrs(spatial, (1,) * rank, zeros, (1,) * rank))
    return ctx.gb.emit("reshape", pooled, attrs=ReshapeAttrs((x.type.shape[1],)))


def _lower_flatten(ctx: LayerContext, layer, inputs: list[Value]) -> Value:
    (x,) = inputs
    return ctx.gb.emit("reshape", x, attrs=ReshapeAttrs((size_of(x.type.shape[1:]),)))


def _lower_reshape(ctx: LayerContext, layer, inputs: list[Value]) -> Value:
    (x,) = inputs
    total = size_of(x.type.shape[1:])
    shape = list(layer.shape)
    if shape.count(-1) > 1 or any(d == 0 or d < -1 for d in shape):
        ctx.fail(f"shape {shape}: entries must be positive, with at most one -1", "shape")
    known = size_of([d for d in shape if d != -1])
    if -1 in shape:
        if total % known:
            ctx.fail(f"cannot reshape {per_sample(x.type)} ({total} values) into {shape}: "
                     f"{total} is not a multiple of {known}; the sizes besides -1 must multiply "
                     f"to a divisor of {total}", "shape")
        shape[shape.index(-1)] = total // known
    elif known != total:
        example = _inferring_one(shape, total)
        fix = (f"write -1 for the one to infer, e.g. {example}" if example else
               "no entry can be inferred with -1 while the others stay: choose sizes whose "
               f"product divides {total}")
        ctx.fail(f"cannot reshape {per_sample(x.type)} ({total} values) into {shape} ({known} "
                 f"values); the sizes must multiply to {total}: {fix}", "shape")
    with ctx.gb.at(ctx.origin, {"shape": "shape"}):  # the op checks that the sizes agree
        return ctx.gb.emit("reshape", x, attrs=ReshapeAttrs(tuple(shape)))


def _inferring_one(shape: list[int], total: int) -> list[int] | None:
    """`shape` with -1 in place of the first entry whose neighbours divide `total` (a fix that
    works), or None."""
    for index in range(len(shape)):
        others = size_of(shape[:index] + shape[index + 1:])
        if total % others == 0:
            return [*shape[:index], -1, *shape[index + 1:]]
    return None


def _lower_dropout(ctx: LayerContext, layer, inputs: list[Value]) -> Value:
    (x,) = inputs
    if ctx.mode != "train" or layer.rate == 0:
        return x
    stream = sum(node.op == "dropout_mask" for node in ctx.gb.graph.nodes)
    mask = ctx.gb.emit("dropout_mask", x, ctx.rng(), attrs=RateAttrs(layer.rate, stream))
    return ctx.gb.emit("mul", x, mask)


# What a batchnorm of one value per channel a step does (PyTorch refuses such a batch).
ONE_VALUE_EFFECT = "its output is beta alone, so no layer before it learns"


def one_value_per_channel(x: TensorType) -> bool:
    """Whether a sample of x holds one value per channel (a vector's features, 1x1 maps):
    batchnorm then normalises over the batch's samples alone."""
    return all(size == 1 for size in x.shape[2:])


def _lower_batchnorm(ctx: LayerContext, layer, inputs: list[Value]) -> Value:
    (x,) = inputs
    channels = (x.type.shape[1],)
    ones, zeros = schema.OnesInit(type="ones"), schema.ZerosInit(type="zeros")
    gamma = ctx.param("gamma", channels, ones, 0, 0)
    beta = ctx.param("beta", channels, zeros, 0, 0)
    mean = ctx.param("running_mean", channels, zeros, 0, 0, trainable=False)
    var = ctx.param("running_var", channels, ones, 0, 0, trainable=False)
    if ctx.spec.train.batch_size == 1 and one_value_per_channel(x.type):
        ctx.gb.warn(f"a batch of 1 sample (train.batch_size) gives it one value per channel "
                    f"to normalise: {ONE_VALUE_EFFECT}; use a batch_size of 2 or more")
    if ctx.mode != "train":
        return ctx.gb.emit("batch_norm_infer", x, mean, var, gamma, beta,
                           attrs=EpsAttrs(layer.eps))
    momentum = MomentumAttrs(layer.momentum)
    sync = ctx.spec.train.sync_batchnorm
    updates = ctx.gb.graph.updates
    for running, op in ((mean, "channel_mean"), (var, "channel_var")):
        batch_statistic = ctx.gb.emit(op, x, attrs=StatisticsAttrs(sync))
        updates[running.name] = ctx.gb.emit("ema", running, batch_statistic, attrs=momentum)
    statistics = BatchNormAttrs(layer.eps, sync=sync)
    return ctx.gb.emit("batch_norm_train", x, gamma, beta, attrs=statistics)


def _lower_add(ctx: LayerContext, layer, inputs: list[Value]) -> Value:
    if len(inputs) < 2:
        ctx.fail("add needs two or more inputs; list them in inputs: [a, b]", "inputs")
    total = inputs[0]
    for other in inputs[1:]:
        total = ctx.gb.emit("add", total, other)
    return total


def _lower_concat(ctx: LayerContext, layer, inputs: list[Value]) -> Value:
    if len(inputs) < 2:
        ctx.fail("concat needs two or more inputs; list them in inputs: [a, b]", "inputs")
    rank = inputs[0].type.rank - 1
    if not -rank <= layer.axis < rank:
        ctx.fail(f"axis {layer.axis} is out of range for {rank}-D samples "
                 f"{per_sample(inputs[0].type)}: use 0..{rank - 1}, or -{rank}..-1 from the end",
                 "axis")
    return ctx.gb.emit("concat", *inputs, attrs=ConcatAttrs(layer.axis % rank + 1))


def _lower_activation(ctx: LayerContext, layer, inputs: list[Value]) -> Value:
    (x,) = inputs
    return apply_activation(ctx.gb, layer, x)


LOWERINGS: dict[str, Callable] = {
    "dense": _lower_dense, "conv1d": _lower_conv, "conv2d": _lower_conv,
    "maxpool1d": _lower_pool, "maxpool2d": _lower_pool, "avgpool1d": _lower_pool,
    "avgpool2d": _lower_pool, "global_avgpool": _lower_global_pool,
    "global_maxpool": _lower_global_pool, "flatten": _lower_flatten, "reshape": _lower_reshape,
    "dropout": _lower_dropout, "batchnorm": _lower_batchnorm, "add": _lower_add,
    "concat": _lower_concat, "upsample1d": _lower_upsample, "upsample2d": _lower_upsample,
    "conv1d_transpose": _lower_conv_transpose, "conv2d_transpose": _lower_conv_transpose,
    **{name: _lower_activation for name in schema.ACTIVATION_TYPES},
}

MULTI_INPUT = {"add", "concat"}


# --- the whole model ------------------------------------------------------------------------


def lower(spec, mode: str = "eval", directory: Path = Path(".")) -> Lowered:
    """The forward graph of `spec`: input %x, outputs `logits` and `prediction`. `directory`:
    the spec's (frontend.SourceSpec.directory), where its data.path is read from, for the
    error of an input shape the file did not give (`.`: a spec file's)."""
    gb = GraphBuilder()
    lowered = Lowered(gb.graph, gb)
    try:
        return _lower_layers(spec, mode, gb, lowered, directory)
    except CompileError as error:
        error.warnings = list(gb.warnings)
        error.lowered = lowered  # the layers before the error, their parameters
        raise


def _lower_layers(spec, mode: str, gb: GraphBuilder, lowered: Lowered,
                  directory: Path) -> Lowered:
    with gb.at(Origin("model.input_shape", keys=("model", "input_shape"))):
        x = gb.input("x", TensorType((BATCH, *input_shape(spec, directory)), spec.dtype))
    env: dict[str, Value] = {"input": x}
    pre_activation: dict[str, Value] = {}
    layers = spec.model.layers
    names = schema.default_layer_names(layers)
    all_inputs = schema.layer_inputs(layers)
    named_inputs = {name: (inputs if layer.inputs is not None else [])
                    for name, inputs, layer in zip(names, all_inputs, layers)}
    shape_errors: list[CompileError] = []  # of layers whose outputs no later layer needs yet
    unshaped: set[str] = set()  # those layers, and the layers that read them
    for index, (layer, name, input_names) in enumerate(zip(layers, names, all_inputs)):
        if unshaped.intersection(input_names):  # its input's shape is unknown: nothing to say
            unshaped.add(name)
            continue
        origin = Origin.of_layer(index, name)
        ctx = LayerContext(gb, lowered, spec, name, origin, mode)
        try:
            _lower_layer(ctx, layer, index, names, input_names, env, named_inputs,
                         pre_activation)
        except CompileError as error:
            if not shape_errors and "input" in input_names and not spec.model.input_shape:
                error.message += defaulted_dataset(spec.data)  # the input is the data's
            if not error.of_shapes:
                raise _with_others([*shape_errors, error]) from None
            shape_errors.append(error)  # a branch beside it may have one of its own
            unshaped.add(name)
    if shape_errors and names[-1] in unshaped:
        raise _with_others(shape_errors)
    try:  # errors of branches the output does not read leave its checks to be made
        _set_outputs(lowered, spec, names, env, pre_activation)
    except CompileError as error:
        raise _with_others([*shape_errors, error]) from None
    if shape_errors:
        raise _with_others(shape_errors)
    return lowered


def _lower_layer(ctx: LayerContext, layer, index: int, names: list[str], input_names,
                 env: dict, named_inputs: dict, pre_activation: dict) -> None:
    gb, lowered, name = ctx.gb, ctx.lowered, names[index]
    _check_name(ctx, name, names[:index], layer.name is None)
    inputs = _resolve_inputs(ctx, layer, input_names, env, named_inputs)
    if layer.type in MULTI_INPUT:
        _check_branches(ctx, layer, input_names, inputs)
    before = (len(gb.graph.nodes), len(lowered.params), len(lowered.state))
    with gb.at(ctx.origin):
        output = LOWERINGS[layer.type](ctx, layer, inputs)
        activation = getattr(layer, "activation", None)
        if activation is not None:
            pre_activation[name] = output
            output = apply_activation(gb, activation, output)
        elif layer.type in schema.ACTIVATION_TYPES:
            pre_activation[name] = inputs[0]
    env[name] = output
    lowered.layers.append(_layer_info(lowered, name, layer.type, input_names, output, before))
    lowered.layers[-1].pre_activation = pre_activation.get(name)


def _with_others(errors: list[CompileError]) -> CompileError:
    """The first of `errors` (in the layers' order), carrying the rest: the shape errors of
    branches that do not read the layer of the first."""
    first, *rest = errors
    first.more = rest
    return first


def _check_name(ctx: LayerContext, name: str, earlier: list[str], by_default: bool) -> None:
    """`earlier`: the names of the layers before this one; `by_default`: nnrun named it."""
    if name not in earlier:
        return
    first = f"model.layers[{earlier.index(name)}]"
    if by_default:  # the user named another layer as nnrun names this one (conv2d_2)
        ctx.fail(f"this layer's default name '{name}' is already {first}'s; name one of them "
                 "otherwise (name: ...)")
    ctx.fail(f"layer name '{name}' is used twice ({first} has it too); give each layer a unique "
             "name", "name")


def _resolve_inputs(ctx, layer, input_names, env, reads: dict) -> list[Value]:
    """reads: every layer's name -> the inputs it names itself (none for the layer before,
    which a move would change)."""
    if not input_names and layer.type not in MULTI_INPUT:
        ctx.fail(f"{layer.type} takes one input, got none (inputs: []); name the layer it reads, "
                 "or leave inputs out to read the layer before it", "inputs")
    if len(input_names) != 1 and layer.type not in MULTI_INPUT:
        ctx.fail(f"{layer.type} takes one input, got {len(input_names)}; join them first with "
                 "an add or concat layer, and give its name", "inputs")
    values = []
    for index, input_name in enumerate(input_names):
        if input_name not in env:
            # at the entry of a list of inputs, the field of a single one
            keys = ("inputs", index) if isinstance(layer.inputs, list) else ("inputs",)
            if input_name == ctx.name:
                ctx.fail(f"inputs: layer '{input_name}' is this layer; a layer reads earlier "
                         "layers (the one before it when inputs is left out)", *keys)
            if input_name in reads and ctx.name in schema.layers_read_by(reads, input_name):
                ctx.fail(f"inputs: layer '{input_name}' comes after this one and reads it "
                         "itself (a cycle), so neither can come first; make one of them read "
                         "an earlier layer", *keys)
            if input_name in reads:
                ctx.fail(f"inputs: layer '{input_name}' comes after this one; layers may only "
                         "use earlier layers (move this layer below it)", *keys)
            ctx.fail(f"inputs: unknown layer '{input_name}'; "
                     f"{_did_you_mean(input_name, list(env))}", *keys)
        values.append(env[input_name])
    return values


def _check_branches(ctx, layer, names: list[str], inputs: list[Value]) -> None:
    """add takes equal shapes, concat equal ones but on its axis: said with each branch's shape
    and a fix that suits the axes that differ (the count of inputs and the axis: the
    lowerings)."""
    if len(inputs) < 2:
        return
    shapes = [per_sample(value.type) for value in inputs]
    rank = len(shapes[0])
    if layer.type == "concat" and not -rank <= layer.axis < rank:
        return

    def given() -> str:  # only for a message: the paths walk the branches' ancestors
        layers = {info.name: info for info in ctx.lowered.layers}
        return ", ".join(f"'{name}' gives {shape}{_branch_path(layers, name, names)}"
                         for name, shape in zip(names, shapes))

    if any(len(shape) != rank for shape in shapes):  # said at `inputs`, which lists them
        ctx.fail(f"{layer.type} needs inputs of one rank: {given()}; flatten or reshape a branch",
                 "inputs", of_shapes=True)
    axis = layer.axis % rank if layer.type == "concat" else None
    differ = sorted({i for shape in shapes[1:] for i in range(rank)
                     if shape[i] != shapes[0][i] and i != axis})
    if not differ:
        return
    need = ("add needs equal shapes" if axis is None
            else f"concat on axis {layer.axis} needs the other axes equal")
    # concat on another axis works only where that axis is the one that differs
    anywhere = sorted({i for shape in shapes[1:] for i in range(rank) if shape[i] != shapes[0][i]})
    fix = (_output_padding_fix(ctx, names, shapes, axis) if 0 not in differ else "") \
        or _branch_fix(layer.type, rank, differ, anywhere)
    ctx.fail(f"{need}: {given()}; {fix}", "inputs", of_shapes=True)


def _output_padding_fix(ctx, names: list[str], shapes: list[list[int]], axis) -> str:
    """`set output_padding: 1 on 'up1' (the branch then gives [4, 5, 5])`: the one branch a
    row or column short of all the others (an odd size halved), whose size a transposed
    convolution decides. Compared: the spatial axes but a concat's own (`axis`)."""
    compared = [i for i in range(1, len(shapes[0])) if i != axis]
    for index, (name, shape) in enumerate(zip(names, shapes)):
        others = {tuple(other[i] for i in compared) for i, other in enumerate(shapes)
                  if i != index}
        found = _transposed_convolution_at(ctx.lowered, ctx.spec, name)
        if len(others) != 1 or found is None:
            continue
        wanted = dict(zip(compared, next(iter(others))))
        short = [wanted.get(i, shape[i]) - shape[i] for i in range(1, len(shape))]
        layer_name, layer = found
        rank = len(shape) - 1
        padding = [extra + more for extra, more in zip(as_tuple(layer.output_padding, rank), short)]
        if min(short) >= 0 and all(extra < step for extra, step in
                                   zip(padding, as_tuple(layer.stride, rank))):
            value = padding[0] if len(set(padding)) == 1 else padding
            grown = [shape[0], *(size + more for size, more in zip(shape[1:], short))]
            return f"set output_padding: {value} on '{layer_name}' (the branch then gives {grown})"
    return ""


def _transposed_convolution_at(lowered, spec, name: str):
    """(name, spec layer) of the transposed convolution that decides the spatial size of the
    branch ending at `name`: that layer, or one before it through layers of one input that
    keep the size; None when there is none."""
    index = {info.name: i for i, info in enumerate(lowered.layers)}
    while name in index:
        info = lowered.layers[index[name]]
        layer = spec.model.layers[index[name]]
        if layer.type in ("conv1d_transpose", "conv2d_transpose"):
            return name, layer
        source = info.inputs[0] if len(info.inputs) == 1 else None
        if source not in index or (per_sample(lowered.layers[index[source]].output.type)[1:]
                                   != per_sample(info.output.type)[1:]):
            return None
        name = source
    return None


def _branch_path(layers: dict, name: str, joined: list[str], longest: int = 4) -> str:
    """` (pool1 [4, 5, 5] -> enc2 [4, 3, 3] -> up1 [4, 6, 6])`: the shapes along the branch
    that ends at `name`, from where it leaves another of the `joined` branches (up to `longest`
    layers), or "" for a branch of one layer."""
    reads = {layer: info.inputs for layer, info in layers.items()}
    others = {ancestor for other in joined if other != name
              for ancestor in schema.layers_read_by(reads, other)}
    path = []
    while name in layers and len(path) < longest:
        info = layers[name]
        path.append(f"{name} {per_sample(info.output.type)}")
        if name in others or len(info.inputs) != 1:
            break
        name = info.inputs[0]
    return f" ({' -> '.join(reversed(path))})" if len(path) > 1 else ""


def _branch_fix(layer_type: str, rank: int, differ: list[int], anywhere: list[int]) -> str:
    if rank == 1 or differ == [0]:
        what = "units" if rank == 1 else "channels (filters)"
        other = (", or join them with concat, which stacks them" if layer_type == "add"
                 else ", or concat on axis 0" if anywhere == [0] else "")
        return f"give the branches the same number of {what}{other}"
    fix = ("the spatial sizes differ: change a layer of one branch to make them agree (its "
           "padding, stride or pool size; a transposed convolution's output_padding adds the row "
           "or column that halving an odd size lost)")
    if 0 in differ:
        fix += "; the channels differ too: give the branches the same number of filters"
    if layer_type == "concat" and len(anywhere) == 1:
        fix += f"; or concat on axis {anywhere[0]}"
    return fix


NAMES_LISTED = 12  # of the layers before an unknown input: the nearest, in a deep spec


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = suggest(word, candidates)
    if close:
        return f"did you mean '{close}'?"
    if len(candidates) <= NAMES_LISTED:
        return "known names: " + ", ".join(candidates)
    return (f"known names (the {NAMES_LISTED} nearest of the {len(candidates)} before this "
            f"layer): {', '.join(candidates[-NAMES_LISTED:])}")


def _layer_info(lowered: Lowered, name, type_, inputs, output, before) -> LayerInfo:
    """`before`: how many nodes, parameters and buffers there were before the layer."""
    first_node, params_before, state_before = before
    nodes = lowered.graph.nodes[first_node:]
    flops = 0
    for node in nodes:
        op = REGISTRY[node.op]
        if op.flops:
            flops += op.flops(node.attrs, [v.type for v in node.inputs], node.output.type)
    trainable = sum(size_of(p.shape) for p in _added(lowered.params, params_before))
    buffers = sum(size_of(p.shape) for p in _added(lowered.state, state_before))
    return LayerInfo(name, type_, output, list(inputs), trainable + buffers, trainable,
                     _kernel(lowered, name, nodes), flops)


def _added(table: dict, before: int):
    """The entries added to `table` after its first `before`, without a walk over those (a
    walk per layer made 10,000 layers quadratic)."""
    return itertools.islice(reversed(table.values()), len(table) - before)


def _kernel(lowered: Lowered, name: str, nodes) -> tuple[int, ...] | None:
    """What torchinfo calls the kernel shape: the weight's, or the pooling window."""
    weight = lowered.params.get(f"{name}.weight")
    if weight is not None:
        return weight.shape
    windows = [node.attrs.kernel for node in nodes if isinstance(node.attrs, PoolAttrs)]
    return tuple(windows[0]) if windows else None


def _set_outputs(lowered, spec, names, env, pre_activation) -> None:
    """A final softmax (sigmoid) before cross_entropy (binary) is left out of the loss path."""
    prediction = env[names[-1]]
    lowered.prediction = prediction
    lowered.logits = _fused_logits(lowered, spec, names, pre_activation, prediction) \
        or prediction
    lowered.graph.outputs["prediction"] = prediction
    lowered.output_origin = Origin.of_layer(len(spec.model.layers) - 1, names[-1])
    check_outputs(spec, lowered)


# Layers that pass their input's values on unchanged, reshaped at most: a final softmax or
# sigmoid before them is as final as one last (an all-convolutional net's flatten).
_RESHAPING_ONLY = ("flatten", "reshape", "identity")


def _fused_logits(lowered, spec, names, pre_activation, prediction) -> Value | None:
    """The scores before the final activation that the loss applies itself (a softmax before
    cross_entropy), shaped as the prediction, where one is fused; None otherwise. A softmax
    is fused through reshapes that keep its axis (the classes) as the output's axis 1."""
    layers, inputs = spec.model.layers, schema.layer_inputs(spec.model.layers)
    index = len(layers) - 1
    while layers[index].type in _RESHAPING_ONLY and inputs[index][0] in names[:index]:
        index = names.index(inputs[index][0])
    layer = layers[index]
    activation = layer.activation.type if getattr(layer, "activation", None) else layer.type
    own = FUSED_ACTIVATION.get(spec.loss.type)
    scores = pre_activation.get(names[index])
    if own is None or activation != own or scores is None:
        return None
    if scores.type.shape == prediction.type.shape:
        fused = scores
    elif own == "softmax" and scores.type.shape[1] != prediction.type.shape[1]:
        return None  # other groups of values than the softmax's: its own warning
    else:
        with lowered.builder.at(Origin.of_layer(len(layers) - 1, names[-1])):
            fused = lowered.builder.emit("reshape", scores,
                                         attrs=ReshapeAttrs(tuple(prediction.type.shape[1:])))
    lowered.fused_layer = names[index]
    return fused
