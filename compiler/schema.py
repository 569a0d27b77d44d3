"""The spec language (DESIGN.md section 4) as pydantic v2 models.

One model per layer type, joined in a discriminated union on `type`. Every model forbids unknown
keys and is frozen. Tables such as "all layer types" are derived from the unions, never repeated.
"""

from __future__ import annotations

import decimal
import re
import typing
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from pydantic_core import PydanticCustomError

from .datasets import DATASETS, SIZED_DATASETS, USER_FILE_DATASETS, dataset_of_file


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _wrap_name(value: Any) -> Any:
    """Let `relu` stand for `{type: relu}` wherever a typed mapping is expected."""
    return {"type": value} if isinstance(value, str) else value


def _tag(model: type[BaseModel]) -> str:
    return typing.get_args(model.model_fields["type"].annotation)[0]


def _named_alone(model: type[BaseModel]) -> bool:
    """True when the type name alone makes a valid value: every other field has a default."""
    fields = model.model_fields
    return all(not fields[name].is_required() for name in fields if name != "type")


def tagged_union(*models: type[BaseModel]) -> Any:
    union = Annotated[Union[models], Field(discriminator="type")]
    # The JSON Schema must accept the bare names too, or editors flag `activation: relu`.
    names = [_tag(model) for model in models if _named_alone(model)]
    accepted = Union[Literal[tuple(names)], union] if names else union
    return Annotated[union, BeforeValidator(_wrap_name, json_schema_input_type=accepted)]


def union_members(union: Any) -> tuple[type[BaseModel], ...]:
    """The models of a tagged union, e.g. every layer class of `Layer`."""
    inner = typing.get_args(union)[0]
    return typing.get_args(inner)


def union_tags(union: Any) -> dict[str, type[BaseModel]]:
    return {_tag(model): model for model in union_members(union)}


def _not_boolean(error_type: str, message: str, context: dict | None = None,
                 refused: tuple[type, ...] = (bool,)):
    """YAML reads `true` as a boolean, and pydantic would take it as 1: never what was meant.
    `refused`: other kinds of value lax pydantic would convert too."""
    def check(value: Any) -> Any:
        if isinstance(value, refused):
            raise PydanticCustomError(error_type, message, context)
        return value

    return BeforeValidator(check)


# `units: '10'` is refused too: quoted on purpose or by a slip, as YAML reads every plain whole
# number as an int (floats stay lax: YAML 1.1 reads `5e-4` as a string). A whole number in
# exponent form is the exception: YAML 1.1 leaves `max_params: 1e5` a string, YAML 1.2 (an
# editor) reads it as 100000.
EXPONENT_TEXT = re.compile(r"\s*[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+\s*")


def _whole_exponent_text(value: Any) -> Any:
    if isinstance(value, str) and EXPONENT_TEXT.fullmatch(value):
        number = decimal.Decimal(value.strip())  # exact: a float loses digits past 2**53
        if number == number.to_integral_value() and number.adjusted() < 100:
            return int(number)
    if isinstance(value, float) and value.is_integer():  # finite: inf is no integer
        # `1.0e+19` is a float to YAML: pydantic takes whole floats below 2**63 alone
        return int(value)
    return value


Int = Annotated[int, _not_boolean("int_type", "Input should be a valid integer",
                                  refused=(bool, str)), BeforeValidator(_whole_exponent_text)]
# `use_bias: 'no'` or `shuffle: 1` is not read as a boolean: YAML's own true and false only.
Bool = StrictBool
Float = Annotated[float, _not_boolean("float_type", "Input should be a valid number"),
                Field(allow_inf_nan=False)]
PositiveInt = Annotated[Int, Field(gt=0)]
NonNegativeInt = Annotated[Int, Field(ge=0)]
PositiveFloat = Annotated[Float, Field(gt=0)]
NonNegativeFloat = Annotated[Float, Field(ge=0)]

# Kernel sizes, strides, paddings and dilations: at most 2**31 - 1, past any input's length (a
# stride of 1e18 passed here and overflowed NumPy's index arithmetic in training and export).
MOST_GEOMETRY = 2**31 - 1
GeometryInt = Annotated[Int, Field(gt=0, le=MOST_GEOMETRY)]
NonNegGeometryInt = Annotated[Int, Field(ge=0, le=MOST_GEOMETRY)]
IntOrPair = Union[GeometryInt, Annotated[list[GeometryInt], Field(min_length=1, max_length=2)]]
NonNegIntOrPair = Union[
    NonNegGeometryInt, Annotated[list[NonNegGeometryInt], Field(min_length=1, max_length=2)]
]

# --- activations ----------------------------------------------------------------------------


class Relu(Strict):
    type: Literal["relu"]


class LeakyRelu(Strict):
    type: Literal["leaky_relu"]
    alpha: NonNegativeFloat = Field(0.01, description="slope for x < 0")


class Elu(Strict):
    type: Literal["elu"]
    alpha: PositiveFloat = Field(1.0, description="alpha * (exp(x) - 1) for x < 0")


class Sigmoid(Strict):
    type: Literal["sigmoid"]


class Tanh(Strict):
    type: Literal["tanh"]


class Softmax(Strict):
    type: Literal["softmax"]


class Gelu(Strict):
    type: Literal["gelu"]


class Softplus(Strict):
    type: Literal["softplus"]


class Identity(Strict):
    type: Literal["identity"]


class Step(Strict):
    """The perceptron's threshold unit: 1 if x >= 0, else 0. Its derivative is 0 wherever it
    is defined: last, before loss: perceptron (which reads the scores before it)."""

    type: Literal["step"]


ACTIVATION_MODELS = (Relu, LeakyRelu, Elu, Sigmoid, Tanh, Softmax, Gelu, Softplus, Identity,
                     Step)
Activation = tagged_union(*ACTIVATION_MODELS)


def _none_is_no_activation(value: Any) -> Any:
    """`activation: none`, as DESIGN.md's tables write the default, is no activation (YAML
    reads `none` as a string, not as null)."""
    return None if value == "none" else value


# A layer's own activation: one of the above, or none (`none`, null or the field left out).
LayerActivation = Annotated[
    Union[Activation, None],
    BeforeValidator(_none_is_no_activation,
                    json_schema_input_type=Union[Literal["none"], Activation, None])]

# --- initializers ---------------------------------------------------------------------------


class XavierUniform(Strict):
    type: Literal["xavier_uniform"]


class XavierNormal(Strict):
    type: Literal["xavier_normal"]


class HeUniform(Strict):
    type: Literal["he_uniform"]


class HeNormal(Strict):
    type: Literal["he_normal"]


class LecunNormal(Strict):
    type: Literal["lecun_normal"]


class NormalInit(Strict):
    type: Literal["normal"]
    std: PositiveFloat = Field(0.01, description="standard deviation")


class UniformInit(Strict):
    type: Literal["uniform"]
    limit: PositiveFloat = Field(0.05, description="samples from U(-limit, limit)")


class ZerosInit(Strict):
    type: Literal["zeros"]


class OnesInit(Strict):
    type: Literal["ones"]


class ConstantInit(Strict):
    type: Literal["constant"]
    value: Float = Field(description="every entry starts at this value")


Initializer = tagged_union(
    XavierUniform, XavierNormal, HeUniform, HeNormal, LecunNormal, NormalInit, UniformInit,
    ZerosInit, OnesInit, ConstantInit,
)

# Initial values written out: a weight as nested lists in nnrun's layout (dense [in, out],
# conv [out, in, k...]: 2 to 4 levels), a bias as a list.
Numbers = Union[list[list[Float]], list[list[list[Float]]], list[list[list[list[Float]]]]]


class ValueErrorAt(ValueError):
    """A validator's error about one entry inside the value: `at` is that entry's index path
    (diagnostics place the error there, not at the field)."""

    def __init__(self, message: str, at: tuple[int, ...]):
        super().__init__(message)
        self.at = at


def _rectangular(values: list) -> list:
    """Nested lists of numbers with one shape, e.g. [[1, 2], [3, 4]]; never ragged."""
    def shape(item, at: tuple[int, ...]) -> tuple:
        if not isinstance(item, list):
            return ()
        inner = [shape(entry, (*at, index)) for index, entry in enumerate(item)]
        for index, found in enumerate(inner):
            if found != inner[0]:
                name = _entry_name(at)
                raise ValueErrorAt(f"{name}[{index}] holds {_count(found)} where {name}[0] "
                                   f"holds {_count(inner[0])}; give every row the same number "
                                   "of values", (*at, index))
        return (len(item), *(inner[0] if inner else ()))

    if 0 in shape(values, ()):
        raise ValueError("weights: an empty list; give the values, or remove weights")
    return values


def _one_depth(values: Any) -> Any:
    """Before the nested-list types are tried: rows of different depths name the first such
    row, where each type alone would call every number of the other depth wrong."""
    def depth(item, at: tuple[int, ...]) -> int:
        if not isinstance(item, list):
            return 0
        depths = [depth(entry, (*at, index)) for index, entry in enumerate(item)]
        for index, found in enumerate(depths):
            if found != depths[0]:
                name = _entry_name(at)
                raise ValueErrorAt(f"{name}[{index}] is {_nesting(found)} where {name}[0] is "
                                   f"{_nesting(depths[0])}; give every row the same depth",
                                   (*at, index))
        return 1 + (depths[0] if depths else 0)

    depth(values, ())
    return values


def _entry_name(at: tuple[int, ...]) -> str:
    return "weights" + "".join(f"[{index}]" for index in at)


def _count(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape)) + (" value" if shape == (1,) else " values")


def _nesting(depth: int) -> str:
    return "a number" if depth == 0 else "a list" + " of lists" * (depth - 1)


GivenWeights = Annotated[Numbers, BeforeValidator(_one_depth), AfterValidator(_rectangular)]


def _no_switch(value: Any, info: ValidationInfo) -> Any:
    """`bias: false`, as PyTorch's Conv2d(..., bias=False) writes it, is use_bias here."""
    if isinstance(value, bool):
        kept = info.data.get("use_bias", True)
        fix = {(False, True): "to leave the bias out, write use_bias: false",
               (False, False): "use_bias: false leaves the bias out already: remove bias",
               (True, True): "a layer has a bias by default (use_bias: true): remove bias",
               (True, False): "to keep the bias, remove use_bias: false and bias"}[value, kept]
        raise ValueError(f"bias gives the bias's initial values (a list); {fix}")
    return value


GivenBias = Annotated[list[Float], BeforeValidator(_no_switch)]


def _check_given_value(cls, value: Any, info: ValidationInfo) -> Any:
    """weights, bias and init_from of dense and conv layers: one source per value. A field
    validator, so that the error points at the field in conflict with one before it."""
    given, field = info.data, info.field_name
    if value is None:
        return value
    if field == "bias" and not given.get("use_bias", True):
        raise ValueError("bias values given with use_bias: false; remove one of them")
    if field == "weights" and given.get("init") is not None:
        raise ValueError("init has no effect when weights are given; remove init")
    if field == "init_from" and (given.get("weights") is not None
                                 or given.get("bias") is not None):
        raise ValueError("give initial values either inline (weights, bias) or in init_from, "
                         "not both")
    return value


FILE_NAME_MAX_BYTES, PATH_MAX_BYTES = 255, 4096  # Linux's, and most file systems'
# a layer's name or the spec's: a checkpoint entry and a run directory's name hold it, and the
# run's time stamp follows it in a file name component of at most 255 bytes
NAME_MAX_BYTES = 200


def _possible_path(path: str) -> str:
    """No file system takes a NUL in a name, a name part over 255 bytes or a path over 4096:
    Python's path calls raise on them (ENAMETOOLONG would end validate for every spec)."""
    if not path:  # a template's unset value, say: silently no file at all
        raise ValueError("an empty path names no file; write the file's path, or leave the "
                         "field out")
    if "\0" in path:
        raise ValueError("no file name holds a NUL character (\\0); write the file's name")
    longest = max(len(part.encode("utf-8", "surrogatepass")) for part in path.split("/"))
    whole = len(path.encode("utf-8", "surrogatepass"))
    if longest > FILE_NAME_MAX_BYTES or whole > PATH_MAX_BYTES:
        length = (f"a name of {longest:,} bytes" if longest > FILE_NAME_MAX_BYTES
                  else f"{whole:,} bytes in all")
        raise ValueError(f"no file system takes a path this long ({length}; at most "
                         f"{FILE_NAME_MAX_BYTES} a name, {PATH_MAX_BYTES:,} the whole path); "
                         "write the file's path")
    return path


# The schema states the first two of those checks too: an editor flags an empty path.
FilePath = Annotated[str, AfterValidator(_possible_path), WithJsonSchema(
    {"type": "string", "minLength": 1, "pattern": "^[^\\u0000]*$"})]


WEIGHTS_HELP = ("initial weight values, nested lists in nnrun's layout: dense [in, out] (the "
                "transpose of the course's w_jk), conv [filters, in_channels, *kernel]")
BIAS_HELP = "initial bias values, one per unit (filter)"
INIT_FROM_HELP = (".npz file (relative to the spec) with arrays 'weight' and optionally 'bias' "
                  "(or '<layer>.weight', as a checkpoint names them)")

# --- layers ---------------------------------------------------------------------------------


LAYER_NAME_PATTERN = "[A-Za-z_][A-Za-z0-9_]*"  # names appear in parameter names and graph text


class LayerBase(Strict):
    name: str | None = Field(None, description="unique name (ASCII letters, digits, _); "
                                               "default <type>_<k>")
    inputs: str | list[str] | None = Field(
        None, description="input layer name(s); default the previous layer ('input' is the model input)"
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        # Names appear in parameter names (dense_1.weight) and in the graph text: keep them plain.
        if name is not None and not re.fullmatch(LAYER_NAME_PATTERN, name):
            raise ValueError(f"layer names use ASCII letters (a-z, A-Z), digits and _, starting "
                             f"with a letter or _; got '{name}'")
        if name is not None and len(name) > NAME_MAX_BYTES:  # a checkpoint's entry names it
            raise ValueError(f"layer names are at most {NAME_MAX_BYTES} characters long, got "
                             f"{len(name)}")
        if name == "input":
            raise ValueError("'input' names the model input; choose another layer name")
        return name


Padding = Union[Literal["valid", "same"], NonNegIntOrPair]


class Dense(LayerBase):
    type: Literal["dense"]
    units: PositiveInt = Field(description="number of output features")
    activation: LayerActivation = None
    use_bias: Bool = True
    init: Initializer | None = Field(None, description="weight initializer; default model.init")
    bias_init: Initializer = Field(default_factory=lambda: ZerosInit(type="zeros"))
    weights: GivenWeights | None = Field(
        None, description=WEIGHTS_HELP)
    bias: GivenBias | None = Field(None, min_length=1, description=BIAS_HELP)
    init_from: FilePath | None = Field(None, description=INIT_FROM_HELP)

    _given_values = field_validator("weights", "bias", "init_from")(_check_given_value)


class ConvBase(LayerBase):
    filters: PositiveInt = Field(description="number of output channels (feature maps)")
    stride: IntOrPair = 1
    padding: Padding = Field(0, description="0 | int | [h, w] | valid | same")
    dilation: IntOrPair = 1
    padding_mode: Literal["zeros", "reflect", "replicate", "circular", "random"] = Field(
        "zeros", description="what the padding holds: zeros, a mirror image, the edge value, "
                             "the opposite edge (circular), or fixed random values (seeded)")
    activation: LayerActivation = None
    use_bias: Bool = True
    init: Initializer | None = None
    bias_init: Initializer = Field(default_factory=lambda: ZerosInit(type="zeros"))
    weights: GivenWeights | None = Field(
        None, description=WEIGHTS_HELP)
    bias: GivenBias | None = Field(None, min_length=1, description=BIAS_HELP)
    init_from: FilePath | None = Field(None, description=INIT_FROM_HELP)

    _given_values = field_validator("weights", "bias", "init_from")(_check_given_value)


def _one_value_per_axis(cls, value: Any, info: ValidationInfo) -> Any:
    """A 1-D layer's window fields take one value. Checked here rather than when lowering, which
    stops at the first broken layer, so that every such error of a file comes at once."""
    if isinstance(value, list) and len(value) != 1:
        raise ValueError(f"{info.field_name} needs 1 value, got {value}")
    return value


def one_value_per_axis():
    return field_validator("kernel_size", "pool_size", "stride", "padding", "dilation",
                           "output_padding", check_fields=False)(_one_value_per_axis)


class Conv1d(ConvBase):
    type: Literal["conv1d"]
    kernel_size: IntOrPair = Field(description="kernel length")

    _one_value = one_value_per_axis()


class Conv2d(ConvBase):
    type: Literal["conv2d"]
    kernel_size: IntOrPair = Field(description="kernel size, int or [h, w]")


class Upsample1d(LayerBase):
    type: Literal["upsample1d"]
    scale: GeometryInt = Field(2, description="each value becomes `scale` values")
    mode: Literal["nearest", "linear", "bilinear"] = Field(
        "nearest", description="nearest: repeat; linear (or bilinear): interpolate (PyTorch "
                               "align_corners=False)")


class Upsample2d(LayerBase):
    type: Literal["upsample2d"]
    scale: IntOrPair = Field(2, description="whole factor, int or [h, w]")
    mode: Literal["nearest", "bilinear", "linear"] = Field(
        "nearest", description="nearest: repeat; bilinear (or linear): interpolate (PyTorch "
                               "align_corners=False)")


class ConvTransposeBase(LayerBase):
    filters: PositiveInt = Field(description="number of output channels (feature maps)")
    stride: IntOrPair = Field(1, description="upsampling factor")
    padding: NonNegIntOrPair = Field(0, description="cropped from each side of the output")
    output_padding: NonNegIntOrPair = Field(0, description="added at the output's end, < stride")
    dilation: IntOrPair = Field(1, description="spacing of the kernel's taps")
    activation: LayerActivation = None
    use_bias: Bool = True
    init: Initializer | None = None
    bias_init: Initializer = Field(default_factory=lambda: ZerosInit(type="zeros"))


class Conv1dTranspose(ConvTransposeBase):
    type: Literal["conv1d_transpose"]
    kernel_size: IntOrPair = Field(description="kernel length")

    _one_value = one_value_per_axis()


class Conv2dTranspose(ConvTransposeBase):
    type: Literal["conv2d_transpose"]
    kernel_size: IntOrPair = Field(description="kernel size, int or [h, w]")


class PoolBase(LayerBase):
    pool_size: IntOrPair = Field(description="window size")
    stride: IntOrPair | None = Field(None, description="default: pool_size")
    padding: NonNegIntOrPair = 0


class MaxPool1d(PoolBase):
    type: Literal["maxpool1d"]

    _one_value = one_value_per_axis()


class MaxPool2d(PoolBase):
    type: Literal["maxpool2d"]


class AvgPool1d(PoolBase):
    type: Literal["avgpool1d"]

    _one_value = one_value_per_axis()


class AvgPool2d(PoolBase):
    type: Literal["avgpool2d"]


class GlobalAvgPool(LayerBase):
    type: Literal["global_avgpool"]


class GlobalMaxPool(LayerBase):
    type: Literal["global_maxpool"]


class Flatten(LayerBase):
    type: Literal["flatten"]


class Reshape(LayerBase):
    type: Literal["reshape"]
    shape: list[Int] = Field(min_length=1, description="per-sample shape; one entry may be -1")


class Dropout(LayerBase):
    type: Literal["dropout"]
    rate: Float = Field(ge=0.0, lt=1.0, description="fraction of units zeroed in training")


class BatchNorm(LayerBase):
    type: Literal["batchnorm"]
    momentum: Float = Field(0.9, ge=0.0, le=1.0, description="running = m*running + (1-m)*batch")
    eps: PositiveFloat = 1e-5


class Add(LayerBase):
    type: Literal["add"]


class Concat(LayerBase):
    type: Literal["concat"]
    axis: Int = Field(0, description="per-sample axis; 0 is the channel axis, -1 the last")


def _activation_layer(model: type[BaseModel]) -> type[BaseModel]:
    """An activation usable as a layer: the same fields plus name and inputs."""
    return type(model.__name__ + "Layer", (model, LayerBase), {"__module__": __name__})


ACTIVATION_LAYERS = tuple(_activation_layer(m) for m in ACTIVATION_MODELS)

Layer = tagged_union(
    Dense, Conv1d, Conv2d, MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d, GlobalAvgPool,
    GlobalMaxPool, Flatten, Reshape, Dropout, BatchNorm, Add, Concat, *ACTIVATION_LAYERS,
    Upsample1d, Upsample2d, Conv1dTranspose, Conv2dTranspose,
)

# --- losses ---------------------------------------------------------------------------------


class LossBase(Strict):
    scale: PositiveFloat = Field(1.0, description="multiplier of the loss")


class CrossEntropy(LossBase):
    type: Literal["cross_entropy"]
    label_smoothing: Float = Field(0.0, ge=0.0, lt=1.0)
    ignore_index: Int | None = Field(None, description="label (e.g. 255) left out of the loss "
                                                       "and of the metrics")


class BinaryCrossEntropy(LossBase):
    type: Literal["binary_cross_entropy"]
    ignore_index: Int | None = Field(None, description="target value left out of the loss and "
                                                       "of the metrics")


class Mse(LossBase):
    type: Literal["mse"]


class Mae(LossBase):
    type: Literal["mae"]


class Huber(LossBase):
    type: Literal["huber"]
    delta: PositiveFloat = 1.0


class Perceptron(LossBase):
    """Rosenblatt's criterion on the scores, class labels 0..k-1 (0/1 for one output): the
    mean of max_c(z_c) - z_label (one output: (step(z) - t) * z), whose gradient step is the
    perceptron rule w += lr * (t - y) * x."""

    type: Literal["perceptron"]


Loss = tagged_union(CrossEntropy, BinaryCrossEntropy, Mse, Mae, Huber, Perceptron)
# The losses that take class labels, integers 0..k-1 (one per sample, or label maps); the
# others take targets shaped like the outputs.
CLASS_LABEL_LOSSES = ("cross_entropy", "perceptron")
# Losses of values: a target per output (class labels become one-hot targets or numbers).
REGRESSION_LOSSES = ("mse", "mae", "huber")

# --- optimizers and schedules ---------------------------------------------------------------


class ScheduleBase(Strict):
    warmup_epochs: NonNegativeInt = Field(
        0, description="epochs over which the rate rises per step from lr / (W * steps_per_epoch) "
                       "to lr")


class Constant(ScheduleBase):
    type: Literal["constant"]


class StepSchedule(ScheduleBase):
    type: Literal["step"]
    step_epochs: PositiveInt = 10
    gamma: PositiveFloat = 0.1


class Exponential(ScheduleBase):
    type: Literal["exponential"]
    gamma: PositiveFloat = 0.95


class Cosine(ScheduleBase):
    type: Literal["cosine"]
    min_lr: NonNegativeFloat = 0.0


Schedule = tagged_union(Constant, StepSchedule, Exponential, Cosine)


class OptimizerBase(Strict):
    clip_grad_norm: PositiveFloat | None = Field(None, description="clip by global L2 norm")
    clip_grad_value: PositiveFloat | None = Field(None, description="clip each gradient element")
    schedule: Schedule = Field(default_factory=lambda: Constant(type="constant"))


class Sgd(OptimizerBase):
    type: Literal["sgd"]
    lr: PositiveFloat = 0.01
    momentum: Float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: Bool = False
    weight_decay: NonNegativeFloat = 0.0

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_momentum(cls, nesterov: bool, info: ValidationInfo) -> bool:
        if nesterov and info.data.get("momentum") == 0:
            raise ValueError("nesterov: true needs momentum > 0; set optimizer.momentum (e.g. 0.9)")
        return nesterov


class Adam(OptimizerBase):
    type: Literal["adam"]
    lr: PositiveFloat = 0.001
    beta1: Float = Field(0.9, ge=0.0, lt=1.0)
    beta2: Float = Field(0.999, ge=0.0, lt=1.0)
    eps: PositiveFloat = 1e-8
    weight_decay: NonNegativeFloat = 0.0


class AdamW(Adam):
    type: Literal["adamw"]  # type: ignore[assignment]
    weight_decay: NonNegativeFloat = 0.01


class RmsProp(OptimizerBase):
    type: Literal["rmsprop"]
    lr: PositiveFloat = 0.01
    alpha: Float = Field(0.99, ge=0.0, lt=1.0)
    eps: PositiveFloat = 1e-8
    momentum: Float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: NonNegativeFloat = 0.0


class Adagrad(OptimizerBase):
    type: Literal["adagrad"]
    lr: PositiveFloat = 0.01
    eps: PositiveFloat = 1e-10
    weight_decay: NonNegativeFloat = 0.0


Optimizer = tagged_union(Sgd, Adam, AdamW, RmsProp, Adagrad)

# --- data -----------------------------------------------------------------------------------


class RandomShift(Strict):
    type: Literal["random_shift"]
    max_shift: PositiveInt = Field(
        2, description="pixels, each direction; the background (a raw 0, normalised) fills in")


class RandomFlip(Strict):
    type: Literal["random_flip"]
    axis: Literal["horizontal", "vertical"] = "horizontal"


class GaussianNoise(Strict):
    type: Literal["gaussian_noise"]
    std: PositiveFloat = 0.05


class RandomCrop(Strict):
    type: Literal["random_crop"]
    size: IntOrPair | None = Field(
        None, description="crop size, int or [h, w]; must be the samples' own size (the default), "
                          "so that training and test samples keep one shape")
    padding: NonNegGeometryInt = Field(
        2, description="pixels of background (a raw 0, normalised) added on each side before "
                       "cropping")


class RandomRotation(Strict):
    type: Literal["random_rotation"]
    degrees: PositiveFloat = Field(10.0, le=180.0, description="turns each 2-D sample by an "
                                                               "angle in [-degrees, degrees]")


Augmentation = tagged_union(RandomShift, RandomFlip, GaussianNoise, RandomCrop, RandomRotation)

DatasetName = Literal[tuple(DATASETS)]  # type: ignore[valid-type]


# The data fields that only some datasets take, and those datasets.
DATASETS_TAKING = {"path": tuple(name for name, data in DATASETS.items() if data.needs_files),
                   "n_samples": SIZED_DATASETS, "noise": SIZED_DATASETS}


class Data(Strict):
    dataset: DatasetName = Field("digits", description="which dataset (digits: embedded, no "
                                 "download)")  # type: ignore[valid-type]
    path: FilePath | None = Field(None, description="npz/csv file, or IDX directory; relative to "
                                                        "the spec")
    validation_split: Float = Field(0.0, ge=0.0, lt=1.0)
    normalize: Literal["none", "scale", "standard"] = "standard"
    permute_features: Bool | NonNegativeInt = Field(
        False, description="true or a seed (>= 0): one fixed shuffle of each sample's features")
    limit: PositiveInt | None = Field(None, description="use only the first N training samples")
    n_samples: PositiveInt | None = Field(None, description="size of a generated dataset")
    noise: NonNegativeFloat | None = Field(None, description="noise of a generated dataset")
    augment: list[Augmentation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _path_given(self) -> "Data":
        if self.dataset in USER_FILE_DATASETS and not self.path:
            raise ValueError(f"dataset '{self.dataset}' needs data.path (a file next to the spec)")
        return self

    # Field validators, not a model validator, so that the error points at the option's line.
    @field_validator("path", "n_samples", "noise")
    @classmethod
    def _option_fits_the_dataset(cls, value: Any, info: ValidationInfo) -> Any:
        dataset = info.data.get("dataset")
        takes = DATASETS_TAKING[info.field_name]
        if value is not None and dataset is not None and dataset not in takes:
            kind = "datasets read from files" if info.field_name == "path" else "generated datasets"
            named, fix = f"'{dataset}'", "remove it"
            if info.field_name == "path" and dataset == cls.model_fields["dataset"].default:
                # `data: {path: d.npz}`: likely no dataset named, and the default read (or
                # digits named: the validator cannot tell, so the words fit both)
                kind_of_file = dataset_of_file(value) or "the file's kind"
                named += " (also what data naming no dataset reads)"
                fix = f"set data.dataset: {kind_of_file}, or remove the path"
            raise ValueError(f"data.{info.field_name} applies to {kind} ({', '.join(takes)}), "
                             f"not {named}; {fix}")
        return value


# --- model, training, limits ----------------------------------------------------------------


class Model(Strict):
    input_shape: list[PositiveInt] | None = Field(
        None, min_length=1, max_length=3, description="per-sample shape, channels first"
    )
    init: Initializer = Field(default_factory=lambda: XavierUniform(type="xavier_uniform"))
    layers: list[Layer] = Field(min_length=1)
    init_from: FilePath | None = Field(
        None, description=".npz file (relative to the spec) of initial values by parameter name "
                          "(dense_1.weight, or a checkpoint's params/dense_1.weight); the "
                          "parameters it does not name start from their initializers")


class MetricBase(Strict):
    # counts predicted classes against class labels (no use on real-valued targets)
    of_classes: ClassVar[bool] = True
    # counted from the split's confusion matrix, over positions of label maps too
    from_confusion: ClassVar[bool] = False
    # reads one score per position of label maps as class 0 or 1 where the model has one
    reads_positions: ClassVar[bool] = True


class Accuracy(MetricBase):
    type: Literal["accuracy"]


class TopKAccuracy(MetricBase):
    type: Literal["top_k_accuracy"]
    k: PositiveInt = 5
    reads_positions: ClassVar[bool] = False  # one label per sample


class MaeMetric(MetricBase):
    type: Literal["mae"]
    of_classes: ClassVar[bool] = False
    reads_positions: ClassVar[bool] = False


class MseMetric(MetricBase):
    type: Literal["mse"]
    of_classes: ClassVar[bool] = False
    reads_positions: ClassVar[bool] = False


class PixelAccuracy(MetricBase):
    type: Literal["pixel_accuracy"]
    from_confusion: ClassVar[bool] = True


class MeanIou(MetricBase):
    type: Literal["mean_iou"]
    from_confusion: ClassVar[bool] = True


Metric = tagged_union(Accuracy, TopKAccuracy, MaeMetric, MseMetric, PixelAccuracy, MeanIou)
METRICS = union_tags(Metric)
CLASS_METRICS = tuple(name for name, model in METRICS.items() if model.of_classes)
CONFUSION_METRICS = tuple(name for name, model in METRICS.items() if model.from_confusion)
POSITION_CLASS_METRICS = tuple(name for name, model in METRICS.items()
                               if model.of_classes and model.reads_positions)


class EarlyStopping(Strict):
    monitor: str = Field("val_loss", description="a key of metrics.jsonl, e.g. val_loss, val_accuracy")
    patience: PositiveInt = 3
    min_delta: NonNegativeFloat = 0.0
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best: Bool = True


class Pruning(Strict):
    type: Literal["magnitude"] = "magnitude"
    target_sparsity: Float = Field(ge=0.0, lt=1.0)
    start_epoch: PositiveInt = 1
    end_epoch: PositiveInt | None = None

    @field_validator("end_epoch")
    @classmethod
    def _ramp_ends_after_it_starts(cls, value: Any, info: ValidationInfo) -> Any:
        start = info.data.get("start_epoch")
        if value is not None and start is not None and value < start:
            raise ValueError(f"end_epoch {value} is before start_epoch {start}: the ramp prunes "
                             f"from start_epoch to end_epoch; set end_epoch to {start} or later")
        return value


class GradNormLogging(Strict):
    every_steps: PositiveInt = Field(
        description="also record every K-th step's norms, one row per step, in the run "
                    "directory's grad-norms.jsonl")


class Train(Strict):
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 32
    shuffle: Bool = True
    metrics: list[Metric] | None = Field(
        None, description="default: [accuracy] for class labels, [mae] for real-valued targets "
                          "(regression)")
    early_stopping: EarlyStopping | None = None
    pruning: Pruning | None = None
    log_grad_norms: Bool | GradNormLogging = Field(
        False, description="per-layer gradient norms in metrics.jsonl (true), and per step "
                           "({every_steps: K})")
    sync_batchnorm: Bool = Field(
        False, description="nnrun train --distributed: batchnorm statistics over the whole "
                           "global batch (every rank's samples) instead of each rank's share")


class Limits(Strict):
    max_params: PositiveInt | None = None
    max_flops: PositiveFloat | None = Field(None, description="forward FLOPs per sample")
    max_train_memory_mb: PositiveFloat | None = None


class Spec(Strict):
    version: Annotated[Literal[1], _not_boolean("literal_error", "Input should be 1",
                                                {"expected": "1"}),
                       BeforeValidator(_whole_exponent_text)] = 1  # 1e0, as an Int reads it
    name: str | None = Field(None, description="names the run directory, runs/NAME/...; "
                                               "default the file's stem")
    seed: NonNegativeInt = 0
    dtype: Literal["float32", "float64"] = "float32"
    data: Data | None = None
    model: Model
    loss: Loss = Field(default_factory=lambda: CrossEntropy(type="cross_entropy"))
    optimizer: Optimizer = Field(default_factory=lambda: Sgd(type="sgd"))
    train: Train = Field(default_factory=Train)
    limits: Limits | None = None

    @field_validator("name")
    @classmethod
    def _directory_name(cls, name: str | None) -> str | None:
        if name is not None and (problem := run_name_problem(name)):
            raise ValueError(f"the spec's name names its run directory (runs/NAME/...), so it "
                             f"{problem}; got {name!r}")
        return name


BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def run_name_problem(name: str) -> str | None:
    """Why `name` cannot name a directory under runs/ (None: it can). `exp/lenet` makes
    runs/exp/lenet/..., but a name from a file must not lead elsewhere (`../x`, `/tmp/x`)."""
    if name.startswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
        return "must stay under runs/: no leading '/', and no empty, '.' or '..' part"
    if any(char in "\\\u2028\u2029" or ord(char) < 32 or 127 <= ord(char) < 160
           for char in name):
        return "cannot hold '\\', control characters or line separators"
    if any(char in BIDI_CONTROLS for char in name):  # a directory name shown reversed
        return "cannot hold the bidirectional controls U+202A-U+202E, U+2066-U+2069"
    if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
        return f"must be at most {NAME_MAX_BYTES} bytes long"
    return None


def spec_json_schema() -> dict:
    """The JSON Schema of the spec language, as `nnrun schema` prints it for editors."""
    document = _standard_bounds(Spec.model_json_schema())
    _add_help(document)
    _add_what_the_validators_check(document)
    _numbers_also_as_text(document)
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "nnrun spec (version 1)"
    return document


# What editors show for the fields without a description of their own (by field name, or
# "Model.field" where a name means different things), as docs/spec-reference.md words it.
_FIELD_HELP = {
    "version": "the spec language's version: 1",
    "seed": "all randomness derives from it: initial weights, validation split, shuffling, "
            "dropout, augmentation, permute_features: true",
    "dtype": "parameters, activations and data",
    "data": "the dataset, its split and preprocessing; required by train",
    "model": "input shape, default initializer, layers",
    "loss": "what training minimises",
    "optimizer": "the update rule, its learning rate and schedule",
    "train": "epochs, batch size, metrics, early stopping, pruning",
    "limits": "budgets that nnrun validate enforces",
    "validation_split": "fraction of the training set held out for validation (val_* metrics); "
                        "0 = none",
    "normalize": "none, scale ((x - min) / (max - min)) or standard ((x - mean) / std per "
                 "channel, per feature for vectors), by the training split's statistics",
    "augment": "applied to training batches only, in order",
    "Model.init": "default weight initializer of dense and conv layers",
    "init": "weight initializer; default model.init",
    "layers": "the layers in order; each takes the previous one's output unless it names inputs",
    "activation": "applied to the layer's output; none by default",
    "use_bias": "add a learned bias per output feature or channel",
    "bias_init": "bias initializer",
    "stride": "step of the kernel along each spatial axis",
    "dilation": "spacing of the kernel's taps",
    "padding": "positions padded on each side of every spatial axis (an int, or one per "
               "axis), at most half the window",
    "eps": "added to the denominator, for stability",
    "BatchNorm.eps": "added to the variance",
    "lr": "learning rate",
    "momentum": "fraction of the previous update kept (0: plain)",
    "nesterov": "Nesterov's momentum (needs momentum > 0)",
    "weight_decay": "L2 penalty coefficient (decoupled from the gradient for adamw)",
    "beta1": "decay of the gradient's running mean",
    "beta2": "decay of the squared gradient's running mean",
    "alpha": "decay of the squared gradient's running mean",
    "schedule": "how the learning rate changes during training; constant by default",
    "StepSchedule.gamma": "factor applied every step_epochs epochs",
    "Exponential.gamma": "factor applied every epoch",
    "step_epochs": "epochs between two multiplications by gamma",
    "min_lr": "the rate the cosine falls towards (never reached: the last epoch's is above)",
    "delta": "where the loss turns from squared to linear",
    "label_smoothing": "share of the target spread evenly over all classes (PyTorch's "
                       "smoothing)",
    "k": "a sample counts when its label is among the k highest outputs",
    "axis": "horizontal (along the width) or vertical (along the height, 2-D samples only)",
    "std": "standard deviation of the noise added to each input value",
    "epochs": "passes over the training set",
    "batch_size": "samples per step; the last batch of an epoch may be smaller",
    "shuffle": "a new order of the training set each epoch (seeded by seed and the epoch)",
    "early_stopping": "stop when a monitored metric stops improving",
    "pruning": "magnitude pruning of weights up to a target sparsity",
    "patience": "stop after this many epochs without improvement",
    "min_delta": "an improvement must exceed it",
    "mode": "min, max, or auto: min when the name contains loss, mae or mse",
    "restore_best": "the run's model is the best epoch's weights (false: the last epoch's)",
    "target_sparsity": "fraction of weights set to zero by end_epoch",
    "start_epoch": "first epoch of pruning",
    "end_epoch": "epoch by which target_sparsity is reached; default the last",
    "max_params": "all parameters, trainable and not",
    "max_train_memory_mb": "MiB at train.batch_size, as nnrun summary estimates it",
}


def _add_help(document: dict) -> None:
    """A description for every field pydantic left without one, and the default of a field
    built by a factory (pydantic leaves such defaults out), as its short form where it has one."""
    models = {"Spec": document, **document["$defs"]}
    for model_name, model in models.items():
        for field_name, field in model.get("properties", {}).items():
            if field_name == "type":
                continue
            help_text = _FIELD_HELP.get(f"{model_name}.{field_name}", _FIELD_HELP.get(field_name))
            if "description" not in field and help_text:
                field["description"] = help_text
    for model_name, fields in _FACTORY_DEFAULTS.items():
        for field_name, default in fields.items():
            models[model_name]["properties"][field_name].setdefault("default", default)


_FACTORY_DEFAULTS = {
    "Spec": {"loss": "cross_entropy", "optimizer": {"type": "sgd"}, "train": {}},
    "Data": {"augment": []},
    "Model": {"init": "xavier_uniform"},
    **{layer: {"bias_init": "zeros"} for layer in ("Dense", "Conv1d", "Conv2d", "Conv1dTranspose",
                                                   "Conv2dTranspose")},
    **{optimizer: {"schedule": "constant"} for optimizer in ("Sgd", "Adam", "AdamW", "RmsProp",
                                                             "Adagrad")},
}


# A number as text: what PyYAML (YAML 1.1) leaves a string, `2.0e6` or `5e-4` (no dot, or an
# exponent without its sign), and a quoted number; nnrun reads both as the number.
NUMBER_TEXT_PATTERN = r"^\s*[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?\s*$"


def _numbers_also_as_text(node) -> None:
    """Each number field also takes its number as text, as `nnrun validate` does: DESIGN's own
    `max_flops: 2.0e6` is a string to PyYAML (a YAML 1.1 reader, as a CI check with jsonschema
    may use) and a number to an editor's YAML 1.2 reader."""
    if isinstance(node, dict):
        children = list(node.items())
    elif isinstance(node, list):
        children = list(enumerate(node))
    else:
        return
    for key, child in children:
        if isinstance(child, dict) and isinstance(child.get("type"), str) \
                and child["type"] in TEXT_FORMS:
            about = {name: child.pop(name) for name in ("title", "description", "default")
                     if name in child}  # shown by editors from the field itself
            node[key] = {**about, "anyOf": [child, {"type": "string",
                                                    "pattern": _number_text_pattern(child)}]}
        else:
            _numbers_also_as_text(child)


def _whole_exponent_pattern(most_digits: int = 20) -> str:
    """EXPONENT_TEXT where its number is whole, as _whole_exponent_text takes it: no more
    fraction digits (but trailing zeros) than the exponent (`1.5e1`, not `1.5e0`). A regular
    expression cannot compare two counts, so each exponent up to `most_digits` is spelt out;
    past it (numbers past 1e20, beyond any count a field takes) any fraction of that many
    digits passes, and validate is the judge. A negative exponent takes as many zeros
    ending the whole part, and no fraction but zeros (`20e-1`)."""
    def mantissa(digits: int) -> str:
        if digits == 0:
            return r"([0-9]+(\.0*)?|\.0+)"
        return rf"([0-9]+(\.[0-9]{{0,{digits}}}0*)?|\.[0-9]{{1,{digits}}}0*)"

    signs = ["[-+]?", *[r"\+?"] * (most_digits - 1)]  # e-0 is e0
    forms = [rf"{mantissa(k)}[eE]{signs[k]}0*{k}" for k in range(most_digits)]
    forms += [rf"[0-9]*0{{{k}}}(\.0*)?[eE]-0*{k}" for k in range(1, most_digits)]
    forms.append(rf"{mantissa(most_digits)}[eE]\+?0*([2-9][0-9]|[1-9][0-9]{{2,}})")
    return rf"^\s*[-+]?({'|'.join(forms)})\s*$"


# What a number field takes as text: any number, or for an integer a whole number in exponent
# form (`max_params: 1e5`; `units: '10'` stays refused).
TEXT_FORMS = {"number": NUMBER_TEXT_PATTERN, "integer": _whole_exponent_pattern()}


def _number_text_pattern(number: dict) -> str:
    """The field's text form, with the sign a lower bound of 0 asks for (`lr: '-0.5'` is
    refused as text too); other bounds of a number as text are left to `nnrun validate`."""
    pattern = TEXT_FORMS[number["type"]]
    if number.get("exclusiveMinimum") == 0:  # no sign but +, a digit other than 0
        return pattern.replace(r"[-+]?", r"\+?(?=[.0-9]*[1-9])", 1)
    if number.get("minimum") == 0:  # no sign but +, or a - before a zero (`'-0'` is 0)
        return pattern.replace(r"[-+]?", r"(\+|-(?=[.0]*([eE]|\s*$)))?", 1)
    return pattern


# The run name's rule (run_name_problem) as a pattern: no leading '/', no empty, '.' or '..'
# part, no '\\' or control character.
_RUN_NAME_PATTERN = (r"^(?!/)(?!.*//)(?!.*/$)(?!(.*/)?\.\.?(/|$))"
                     r"[^\\\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]+$")


def _add_what_the_validators_check(document: dict) -> None:
    """The rules the model's validators enforce that a JSON Schema can state too, so that an
    editor flags what `nnrun validate` refuses: layer and run names, a layer's inputs (one,
    two or more to a merge), a reshape's entries, one value per axis for 1-D layers."""
    definitions = document["$defs"]
    one_d = {tag for tag in LAYER_TYPES if "1d" in tag}  # conv1d, maxpool1d, upsample1d, ...
    for definition in definitions.values():
        properties = definition.get("properties", {})
        if "inputs" in properties:  # a layer
            properties["name"].update({"pattern": f"^{LAYER_NAME_PATTERN}$",
                                       "not": {"const": "input"}, "maxLength": NAME_MAX_BYTES})
            for branch in properties["inputs"]["anyOf"]:
                if branch.get("type") == "array":  # one input, but to a merge (below)
                    branch.update(minItems=1, maxItems=1)
                    branch["items"]["pattern"] = f"^{LAYER_NAME_PATTERN}$"
                elif branch.get("type") == "string":
                    branch["pattern"] = f"^{LAYER_NAME_PATTERN}$"
        if properties.get("type", {}).get("const") in one_d:
            for field in properties.values():
                for branch in field.get("anyOf", []):
                    if branch.get("type") == "array" and branch.get("maxItems") == 2:
                        branch["maxItems"] = 1
    bare = next(branch for branch in definitions["Model"]["properties"]["layers"]["items"]
                ["anyOf"] if "enum" in branch)  # the names alone need no inputs
    bare["enum"] = [name for name in bare["enum"] if name not in ("add", "concat")]
    for merge in ("Add", "Concat"):  # inputs: a list of two or more (lower.py's check)
        inputs = definitions[merge]["properties"]["inputs"]
        array = next(branch for branch in inputs.pop("anyOf") if branch.get("type") == "array")
        array.pop("maxItems")
        inputs.pop("default", None)
        inputs.update(array, minItems=2, description="the layers it merges, two or more")
        definitions[merge].setdefault("required", []).append("inputs")
    definitions["Reshape"]["properties"]["shape"].update(
        items={"type": "integer", "anyOf": [{"minimum": 1}, {"const": -1}]},
        contains={"const": -1}, minContains=0, maxContains=1)  # at most one -1
    document["properties"]["name"].update(pattern=_RUN_NAME_PATTERN, maxLength=NAME_MAX_BYTES)


# pydantic writes a bound as its own keyword (`gt`) when the bounded type also carries a
# validator (the booleans check above), a keyword JSON Schema validators and editors ignore.
_JSON_SCHEMA_BOUNDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum",
                       "le": "maximum"}


def _standard_bounds(node: Any) -> Any:
    if isinstance(node, list):
        return [_standard_bounds(item) for item in node]
    if not isinstance(node, dict):
        return node
    typed = "type" in node
    return {(_JSON_SCHEMA_BOUNDS.get(key, key) if typed else key): _standard_bounds(value)
            for key, value in node.items()}


LAYER_TYPES = union_tags(Layer)
AUGMENTATION_TYPES = union_tags(Augmentation)
ACTIVATION_TYPES = union_tags(Activation)


def default_layer_names(layers: list[Any]) -> list[str]:
    """`<type>_<k>` with k counting each type from 1, or the layer's own name."""
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        counts[layer.type] = counts.get(layer.type, 0) + 1
        names.append(layer.name or f"{layer.type}_{counts[layer.type]}")
    return names


def layer_inputs(layers: list[Any]) -> list[list[str]]:
    """Each layer's input names: its own `inputs`, else the previous layer, else 'input'."""
    names = default_layer_names(layers)
    result = []
    for index, layer in enumerate(layers):
        if layer.inputs is None:
            result.append([names[index - 1] if index else "input"])
        else:
            result.append([layer.inputs] if isinstance(layer.inputs, str) else list(layer.inputs))
    return result


def layers_read_by(reads: dict[str, list[str]], name: str) -> set[str]:
    """`name` and every layer it reads, directly or through others (`reads`: each layer's
    input names, as layer_inputs gives them)."""
    seen, pending = set(), [name]
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending += reads.get(name, [])
    return seen


def short_form_fields(model: type[BaseModel] | None = None, seen=None) -> frozenset[str]:
    """The names of the fields, anywhere in a spec, where a type name stands for its mapping
    (`loss: mse` for `{type: mse}`: tagged_union's fields, and lists of them), so that
    `--set loss.scale=2` can walk into `loss: mse` (loader.py)."""
    model = model or Spec
    seen = set() if seen is None else seen
    seen.add(model)
    names = set()
    for name, field in model.model_fields.items():
        for inner in _annotations_within(field.annotation, field.metadata):
            if isinstance(inner, BeforeValidator) and inner.func is _wrap_name:
                names.add(name)
            elif isinstance(inner, type) and issubclass(inner, BaseModel) and inner not in seen:
                names |= short_form_fields(inner, seen)
    return frozenset(names)


def _annotations_within(annotation: Any, metadata: list) -> list:
    """Every type and Annotated metadata an annotation holds, nested ones included."""
    found, pending = list(metadata), [annotation]
    while pending:
        current = pending.pop()
        found.append(current)
        found.extend(getattr(current, "__metadata__", ()))
        pending.extend(typing.get_args(current))
    return found


SHORT_FORM_FIELDS = short_form_fields()
