import json
import textwrap
from typing import Annotated, Literal, Union

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from nnrun.compiler.diagnostics import (
    Diagnostic,
    SpecError,
    diagnostics_from_validation_error,
    format_diagnostics,
    format_path,
    suggest,
)
from invoking import invoke
from nnrun.compiler.loader import apply_overrides, load_yaml_text

# --- the record and its formats ------------------------------------------------------------------

ERROR = Diagnostic("specs/bad.yaml", 9, 7, "error", "model.layers[1]", "unknown field 'kernal_size'")
WARNING = Diagnostic("specs/bad.yaml", 12, 11, "warning", "", "13 columns / stride 2 leaves 1 unused")


def test_format_is_gcc_style():
    assert ERROR.format() == "specs/bad.yaml:9:7: error: model.layers[1]: unknown field 'kernal_size'"


def test_format_without_where():
    """Section 5's `where:` is in every line: "spec" for the document as a whole (a parser of
    `file:line:col: severity: where: message` split a message at its first colon)."""
    assert WARNING.format() == ("specs/bad.yaml:12:11: warning: spec: 13 columns / stride 2 "
                                "leaves 1 unused")


def test_spec_error_carries_and_prints_its_diagnostics():
    error = SpecError([ERROR, WARNING])
    assert error.diagnostics == [ERROR, WARNING]
    assert str(error) == ERROR.format() + "\n" + WARNING.format()


def test_text_format():
    assert format_diagnostics([ERROR, WARNING], "text") == f"{ERROR.format()}\n{WARNING.format()}"


def test_json_format():
    decoded = json.loads(format_diagnostics([ERROR, WARNING], "json"))
    assert decoded[0] == {
        "file": "specs/bad.yaml", "line": 9, "col": 7, "severity": "error",
        "where": "model.layers[1]", "message": "unknown field 'kernal_size'",
    }
    assert decoded[1]["severity"] == "warning"
    assert json.loads(format_diagnostics([], "json")) == []


def test_github_format():
    lines = format_diagnostics([ERROR, WARNING], "github").splitlines()
    assert lines == [
        "::error file=specs/bad.yaml,line=9,col=7::model.layers[1]: unknown field 'kernal_size'",
        "::warning file=specs/bad.yaml,line=12,col=11::spec: 13 columns / stride 2 leaves 1 unused",
    ]


def test_github_format_escapes_what_would_break_the_command():
    odd = Diagnostic("a,b:c.yaml", 1, 1, "error", "", "100% done\nnext")
    assert format_diagnostics([odd], "github") == "::error file=a%2Cb%3Ac.yaml,line=1,col=1::spec: 100%25 done%0Anext"


def test_unknown_format_is_a_value_error():
    with pytest.raises(ValueError, match="github"):
        format_diagnostics([ERROR], "xml")


# --- helpers ---------------------------------------------------------------------------------


def test_suggest():
    assert suggest("kernal_size", ["kernel_size", "filters", "stride"]) == "kernel_size"
    assert suggest("mnsit", ["digits", "mnist", "fashion_mnist"]) == "mnist"
    assert suggest("zzz", ["kernel_size", "filters"]) is None
    assert suggest("x", []) is None
    # a capital letter: the same name, though difflib finds 'elu' closer to 'Relu'
    assert suggest("Relu", ["relu", "leaky_relu", "elu"]) == "relu"
    assert suggest("SGD", ["sgd", "adam"]) == "sgd"


def test_format_path():
    assert format_path(("model", "layers", 3, "kernel_size")) == "model.layers[3].kernel_size"
    assert format_path(("train", "metrics", 0)) == "train.metrics[0]"
    assert format_path(()) == ""


# --- stand-in schema, shaped like compiler/schema.py -------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def wrap_name(value):
    return {"type": value} if isinstance(value, str) else value


def tagged(*models):
    return Annotated[Union[models], Field(discriminator="type"), BeforeValidator(wrap_name)]


class Relu(Strict):
    type: Literal["relu"]


class LeakyRelu(Strict):
    type: Literal["leaky_relu"]
    alpha: float = 0.01


Activation = tagged(Relu, LeakyRelu)


class Dense(Strict):
    type: Literal["dense"]
    name: str | None = None
    units: int = Field(gt=0)
    activation: Activation | None = None


class Conv2d(Strict):
    type: Literal["conv2d"]
    name: str | None = None
    filters: Annotated[int, Field(ge=1)]
    kernel_size: Union[
        Annotated[int, Field(ge=1)], Annotated[list[int], Field(min_length=1, max_length=2)]
    ]
    padding: Union[Literal["valid", "same"], int] = 0
    activation: Activation | None = None


class Sgd(Strict):
    type: Literal["sgd"]
    lr: float = Field(0.01, gt=0)
    momentum: float = 0.0


class Adam(Strict):
    type: Literal["adam"]
    lr: float = 0.001


class Data(Strict):
    dataset: Literal["digits", "mnist", "fashion_mnist", "npz"]
    path: str | None = None

    @model_validator(mode="after")
    def _npz_needs_path(self):
        if self.dataset == "npz" and not self.path:
            raise ValueError("dataset 'npz' needs data.path")
        return self


class Model(Strict):
    layers: list[tagged(Dense, Conv2d)] = Field(min_length=1)


class StandInSpec(Strict):
    seed: int = Field(0, ge=0)
    dtype: Literal["float32", "float64"] = "float32"
    data: Data | None = None
    model: Model
    optimizer: tagged(Sgd, Adam) = Field(default_factory=lambda: Sgd(type="sgd"))


def diagnose(text: str, overrides=(), schema=StandInSpec) -> list[Diagnostic]:
    loaded = load_yaml_text(textwrap.dedent(text), "spec.yaml")
    loaded = apply_overrides(loaded, list(overrides))
    with pytest.raises(ValidationError) as caught:
        schema.model_validate(loaded.data)
    return diagnostics_from_validation_error(caught.value, loaded, schema)


def formatted(text: str, overrides=(), schema=StandInSpec) -> list[str]:
    return [d.format() for d in diagnose(text, overrides, schema)]


def test_unknown_field_with_did_you_mean_points_at_the_key():
    assert formatted(
        """\
        model:
          layers:
            - {type: dense, units: 3}
            - {type: conv2d, filters: 6, kernal_size: 5}
        """
    ) == [
        "spec.yaml:4:34: error: model.layers[1]: unknown field 'kernal_size'; "
        "did you mean 'kernel_size'?",
    ]


def test_unknown_field_without_a_close_match():
    assert formatted("model:\n  layers: [{type: dense, units: 3, colour: red}]\n") == [
        "spec.yaml:2:36: error: model.layers[0]: unknown field 'colour'",
    ]


def test_unknown_field_at_the_top_level():
    assert formatted("sed: 1\nmodel:\n  layers: [{type: dense, units: 3}]\n") == [
        "spec.yaml:1:1: error: spec: unknown field 'sed'; did you mean 'seed'?",
    ]


def test_unknown_field_in_a_nested_union_member():
    assert formatted(
        """\
        model:
          layers:
            - type: dense
              units: 3
              activation: {type: leaky_relu, alpa: 0.1}
        """
    ) == [
        "spec.yaml:5:38: error: model.layers[0].activation: unknown field 'alpa'; "
        "did you mean 'alpha'?",
    ]


def test_unknown_layer_type_points_at_the_type_value():
    assert formatted(
        """\
        model:
          layers:
            - {type: dense, units: 3}
            - {type: conv3d, filters: 6}
            - {type: conv3d, name: second}
        """
    ) == [
        "spec.yaml:4:14: error: model.layers[1]: unknown layer type 'conv3d'; "
        "did you mean 'conv2d'?",
        "spec.yaml:5:14: error: model.layers[2]: unknown layer type 'conv3d'; "
        "did you mean 'conv2d'?",
    ]


def test_unknown_tag_without_a_close_match_lists_the_choices():
    assert formatted("model:\n  layers: [{type: dense, units: 3}]\noptimizer: lbfgs\n") == [
        "spec.yaml:3:12: error: optimizer: unknown optimizer 'lbfgs'; expected one of 'sgd', "
        "'adam'",
    ]


def test_unknown_activation_given_by_name():
    assert formatted("model:\n  layers: [{type: dense, units: 3, activation: relux}]\n") == [
        "spec.yaml:2:48: error: model.layers[0]: unknown activation 'relux'; "
        "did you mean 'relu'?",
    ]


def test_missing_type_is_named_from_the_fields():
    assert formatted("model:\n  layers:\n    - units: 3\n") == [
        "spec.yaml:3:7: error: model.layers[0]: missing required field 'type'; "
        "its fields are those of 'dense': add type: dense",
    ]


def test_a_type_written_as_the_key_of_its_fields_is_told_the_mapping_meant(Spec):
    """The augmentation audit: `- random_shift: {max_shift: 2}` (Hydra's and Keras' configs
    nest a type's fields so) was told only that `type` is missing."""
    text = ("data:\n  augment:\n    - random_shift: {max_shift: 2}\n    - Random_Flip:\n"
            "        axis: horizontal\nmodel:\n  layers:\n    - dense: 64\n"
            "    - conv2d: {filters: 4, kernel_size: [3, 3]}\noptimizer: {adam: {lr: 0.01}}\n"
            "loss: {mse: {type: mse}}\n")  # its own type beside: not written twice (the review)
    keyed = "missing required field 'type'; the type is written as a key of its fields: write"
    assert formatted(text, schema=Spec) == [
        f"spec.yaml:3:7: error: data.augment[0]: {keyed} {{type: random_shift, max_shift: 2}}",
        f"spec.yaml:4:7: error: data.augment[1]: {keyed} {{type: random_flip, axis: horizontal}}",
        f"spec.yaml:8:7: error: model.layers[0]: {keyed} {{type: dense, units: 64}}",
        f"spec.yaml:9:7: error: model.layers[1]: {keyed} {{type: conv2d, filters: 4, "
        "kernel_size: [3, 3]}",
        f"spec.yaml:10:12: error: optimizer: {keyed} {{type: adam, lr: 0.01}}",
        f"spec.yaml:11:7: error: loss: {keyed} {{type: mse}}",
    ]


def test_missing_type_without_fields_names_no_type():
    assert formatted("model:\n  layers:\n    - {}\n") == [
        "spec.yaml:3:7: error: model.layers[0]: missing required field 'type'",
    ]


def test_literal_with_a_kind_gets_did_you_mean():
    assert formatted("data: {dataset: mnsit}\nmodel:\n  layers: [{type: dense, units: 3}]\n") == [
        "spec.yaml:1:17: error: data: unknown dataset 'mnsit'; did you mean 'mnist'?",
    ]


def test_literal_without_a_kind_names_the_choices():
    assert formatted("dtype: half\nmodel:\n  layers: [{type: dense, units: 3}]\n") == [
        "spec.yaml:1:8: error: spec: 'dtype' must be 'float32' or 'float64', got 'half'",
    ]


def test_missing_required_field_points_at_the_parent_mapping():
    assert formatted(
        """\
        model:
          layers:
            - type: dense
              activation: relu
        """
    ) == ["spec.yaml:3:7: error: model.layers[0]: missing required field 'units' (e.g. units: 10)"]


def test_a_field_of_many_places_gets_no_section_hint(Spec):
    """`type`, `mode`, `scale` are fields of several sections and layers: no section hint, or
    the indentation hint when a section below has it (a convolution's mode is its
    padding_mode: reflect is no upsampling mode)."""
    text = ("model:\n  layers:\n    - {type: conv2d, filters: 2, kernel_size: 3, mode: reflect}\n"
            "train:\n  pruning:\n  type: magnitude\n")
    assert formatted(text, schema=Spec) == [
        "spec.yaml:3:50: error: model.layers[0]: unknown field 'mode'; did you mean "
        "'padding_mode'?",
        "spec.yaml:6:3: error: train: unknown field 'type'; it belongs in the pruning section: "
        "indent it under pruning:"]


def test_a_field_of_another_section_says_where_it_goes(Spec):
    text = ("model:\n  layers:\n    - {type: batchnorm, sync_batchnorm: true}\n"
            "optimizer: {type: sgd, lr: 0.1, epochs: 3}\ntrain: {lr: 0.1}\n")
    assert formatted(text, schema=Spec) == [
        "spec.yaml:3:25: error: model.layers[0]: unknown field 'sync_batchnorm'; "
        "it is a field of train: set train.sync_batchnorm",
        "spec.yaml:4:33: error: optimizer: unknown field 'epochs'; it is a field of train: set "
        "train.epochs",
        "spec.yaml:5:9: error: train: unknown field 'lr'; it is a field of optimizer: set "
        "optimizer.lr"]


def test_a_layer_by_its_name_alone_that_needs_fields_names_them(Spec):
    assert formatted("model:\n  layers: [flatten, dense]\n", schema=Spec) == [
        "spec.yaml:2:21: error: model.layers[1]: missing required field 'units' (e.g. units: 10)"]
    assert formatted("model:\n  layers: [conv2d]\n", schema=Spec) == [
        "spec.yaml:2:12: error: model.layers[0]: missing required field 'filters' (e.g. "
        "filters: 8)",
        "spec.yaml:2:12: error: model.layers[0]: missing required field 'kernel_size' (e.g. "
        "kernel_size: 3)"]


def test_a_missing_field_is_offered_what_the_spec_already_says(Spec):
    """The error-positions audit: "(e.g. units: 10)" for blobs' 3 classes, or beside the
    layer's own [2, 2] weights, was, inserted, the next error."""
    blobs = ("data: {dataset: blobs}\nmodel:\n  layers:\n    - {type: dense, units: 8}\n"
             "    - {type: dense, activation: softmax}\n")
    assert formatted(blobs, schema=Spec) == [
        "spec.yaml:5:7: error: model.layers[1]: missing required field 'units' (e.g. units: 3)"]
    # not the last layer of units, or a loss other than cross_entropy: at a glance
    assert "(e.g. units: 10)" in formatted(blobs.replace("units: 8", "activation: relu")
                                           + "    - {type: dense, units: 3}\n", schema=Spec)[0]
    assert "(e.g. units: 10)" in formatted(blobs + "loss: mse\n", schema=Spec)[0]
    weights = "model:\n  layers:\n    - {type: dense, weights: [[1, 2, 3], [4, 5, 6]]}\n"
    assert formatted(weights, schema=Spec) == [
        "spec.yaml:3:7: error: model.layers[0]: missing required field 'units' (e.g. units: 3)"]


def test_missing_required_top_level_field():
    assert formatted("seed: 1\n") == ["spec.yaml:1:1: error: spec: missing required field 'model'"]


def test_bound_errors_say_what_is_expected():
    assert formatted(
        """\
        seed: -1
        model:
          layers:
            - {type: conv2d, filters: -3, kernel_size: 5}
            - {type: dense, units: 0}
        optimizer: {type: sgd, lr: -0.5}
        """
    ) == [
        "spec.yaml:1:7: error: spec: 'seed' must be an integer ≥ 0, got -1",
        "spec.yaml:4:31: error: model.layers[0]: 'filters' must be an integer ≥ 1, "
        "got -3",
        "spec.yaml:5:28: error: model.layers[1]: 'units' must be an integer ≥ 1, got 0",
        "spec.yaml:6:28: error: optimizer: 'lr' must be a number > 0, got -0.5",
    ]


def test_type_errors_say_what_is_expected():
    assert formatted(
        """\
        seed: 1.5
        model:
          layers:
            - {type: dense, units: many}
        optimizer: {type: sgd, momentum: [1]}
        """
    ) == [
        "spec.yaml:1:7: error: spec: 'seed' must be an integer, got 1.5",
        "spec.yaml:4:28: error: model.layers[0]: 'units' must be an integer, got 'many'",
        "spec.yaml:5:34: error: optimizer: 'momentum' must be a number, got [1]",
    ]


def test_length_errors():
    assert formatted("model:\n  layers: []\n") == [
        "spec.yaml:2:11: error: model: 'layers' must be a list of at least 1 entry, got []",
    ]


def test_a_layer_that_is_not_a_mapping():
    assert formatted("model:\n  layers: [{type: dense, units: 3}, 5]\n") == [
        "spec.yaml:2:37: error: model.layers[1]: expected a name or a mapping with "
        "'type', got 5",
    ]


def test_union_alternatives_that_all_fail_become_one_message():
    assert formatted("model:\n  layers: [{type: conv2d, filters: 1, kernel_size: 3, padding: smae}]\n") == [
        "spec.yaml:2:64: error: model.layers[0]: 'padding' must be 'valid', 'same' "
        "or an integer, got 'smae'; did you mean 'same'?",
    ]


def test_union_alternative_that_got_furthest_wins():
    assert formatted("model:\n  layers: [{type: conv2d, filters: 1, kernel_size: [3, a]}]\n") == [
        "spec.yaml:2:56: error: model.layers[0]: 'kernel_size[1]' must be an integer, "
        "got 'a'",
    ]


def test_union_alternatives_failing_at_the_value_itself():
    assert formatted("model:\n  layers: [{type: conv2d, filters: 1, kernel_size: [3, 3, 3]}]\n") == [
        "spec.yaml:2:52: error: model.layers[0]: 'kernel_size' must be an integer "
        "or a list of at most 2 entries, got [3, 3, 3]",
    ]


def test_custom_validator_message_is_used():
    assert formatted("data: {dataset: npz}\nmodel:\n  layers: [{type: dense, units: 3}]\n") == [
        "spec.yaml:1:7: error: data: dataset 'npz' needs data.path",
    ]


def test_every_error_once_sorted_by_position():
    diagnostics = diagnose(
        """\
        optimizer: {type: adam, lr: x}
        model:
          layers:
            - {type: dense, unit: 3, activation: relux}
        seed: -1
        dtype: 16
        """
    )
    positions = [(d.line, d.col) for d in diagnostics]
    assert positions == sorted(positions)
    # 6 problems; the missing 'units' beside 'unit' (did you mean 'units'?) is not said twice
    assert len({d.format() for d in diagnostics}) == len(diagnostics) == 5


def test_without_a_schema_there_is_no_field_suggestion():
    loaded = load_yaml_text("model:\n  layers: [{type: dense, units: 3, unit: 3}]\n", "spec.yaml")
    with pytest.raises(ValidationError) as caught:
        StandInSpec.model_validate(loaded.data)
    diagnostic, = diagnostics_from_validation_error(caught.value, loaded)
    assert diagnostic.message == "unknown field 'unit'"


# --- overridden values name the --set argument ------------------------------------------------

BASE = "model:\n  layers: [{type: conv2d, filters: 6, kernel_size: 5}]\n"


def test_error_in_an_overridden_value_names_the_argument():
    assert formatted(BASE, ["model.layers[0].filters=-1"]) == [
        "--set:1:1: error: --set model.layers[0].filters=-1: 'filters' must be an integer ≥ 1, "
        "got -1",
    ]


def test_error_inside_an_overridden_mapping_names_the_argument():
    assert formatted(BASE, ["seed=1", "optimizer={type: sgd, lr: 0.1, momentun: 0.9}"]) == [
        "--set:2:1: error: --set optimizer={type: sgd, lr: 0.1, momentun: 0.9}: "
        "unknown field 'momentun'; did you mean 'momentum'?",
    ]


def test_errors_from_the_file_come_before_those_of_overrides():
    diagnostics = diagnose(BASE + "seed: -1\n", ["dtype=half"])
    assert [d.file for d in diagnostics] == ["spec.yaml", "--set"]


# --- the real schema ---------------------------------------------------------------------------


@pytest.fixture
def Spec():
    return pytest.importorskip("nnrun.compiler.schema").Spec


BAD_SPEC = """\
dtype: float16
data:
  dataset: mnsit
model:
  init: xavier
  layers:
    - {type: conv3d, filters: 6}
    - {type: conv2d, filters: -3, kernal_size: 5, padding: smae, activation: relux}
    - type: dense
      activation: {type: leaky_relu, alpa: 0.1}
loss: crossentropy
optimizer: {type: sgd, lr: -1, schedule: {type: cosin}}
train: {metrics: [accuracy, top_k], early_stopping: {patiense: 3}}
"""


def test_real_schema_messages(Spec):
    assert formatted(BAD_SPEC, schema=Spec) == [
        "spec.yaml:1:8: error: spec: 'dtype' must be 'float32' or 'float64', got 'float16'; did you "
        "mean 'float64'?",
        "spec.yaml:3:12: error: data: unknown dataset 'mnsit'; did you mean 'mnist'?",
        "spec.yaml:5:9: error: model: unknown initializer 'xavier'; did you mean 'xavier_normal'?",
        "spec.yaml:7:14: error: model.layers[0]: unknown layer type 'conv3d'; did you "
        "mean 'conv2d' or 'conv1d'?",
        "spec.yaml:8:31: error: model.layers[1]: 'filters' must be an integer ≥ 1, "
        "got -3",
        "spec.yaml:8:35: error: model.layers[1]: unknown field 'kernal_size'; did you "
        "mean 'kernel_size'?",
        "spec.yaml:8:60: error: model.layers[1]: 'padding' must be 'valid', 'same', "
        "an integer or a list, got 'smae'; did you mean 'same'?",
        "spec.yaml:8:78: error: model.layers[1]: unknown activation 'relux'; did you "
        "mean 'relu'?",
        "spec.yaml:9:7: error: model.layers[2]: missing required field 'units' (e.g. units: 10)",
        "spec.yaml:10:38: error: model.layers[2].activation: unknown field 'alpa'; did "
        "you mean 'alpha'?",
        "spec.yaml:11:7: error: loss: unknown loss 'crossentropy'; did you mean 'cross_entropy'?",
        "spec.yaml:12:28: error: optimizer: 'lr' must be a number > 0, got -1",
        "spec.yaml:12:49: error: optimizer.schedule: unknown schedule 'cosin'; did you mean "
        "'cosine'?",
        "spec.yaml:13:29: error: train.metrics[1]: unknown metric 'top_k'; "
        "expected one of 'accuracy', 'top_k_accuracy', 'mae', 'mse', 'pixel_accuracy', 'mean_iou'",
        "spec.yaml:13:54: error: train.early_stopping: unknown field 'patiense'; did you mean "
        "'patience'?",
    ]


def test_real_schema_with_an_override(Spec):
    text = "model:\n  layers: [{type: dense, units: 3}]\n"
    assert formatted(text, ["model.layers[0].units=0"], schema=Spec) == [
        "--set:1:1: error: --set model.layers[0].units=0: 'units' must be an integer ≥ 1, got 0",
    ]


# --- every error of a spec at once: the YAML's, the --set arguments', the schema's ----------

ALL_AT_ONCE = """\
seed: 1
seed: 2
model:
  input_shape: [4]
  layers:
    - {type: dense, unitz: 3}
    - {type: dense, units: !!python/object:os.system x}
loss: mse
optimizer: {type: sgd, lr: 0.1}
"""


def _load_errors(text: str, overrides=()) -> list[str]:
    from nnrun.compiler.frontend import load_spec_text

    with pytest.raises(SpecError) as raised:
        load_spec_text(text, "spec.yaml", overrides)
    return [d.format() for d in raised.value.diagnostics]


def _check_errors(text: str, overrides=()) -> list:
    """The diagnostics of checking a spec that fails its shapes (or the checks beside them)."""
    from nnrun.compiler.frontend import check, load_spec_text

    with pytest.raises(SpecError) as raised:
        check(load_spec_text(text, "spec.yaml", overrides))
    return raised.value.diagnostics


@pytest.mark.parametrize("text, said", [
    ('name: "abc\nmodel:\n  input_shape: [64]\n  layers:\n    - {type: dense, units: 3}\n',
     'spec.yaml:1:7: error: spec: invalid YAML: the " at 1:7 is never closed (YAML reads on '
     "to 6:1, the end of the file); close it where the value ends"),
    ("model:\n  input_shape: [64]\n  layers:\n    - type: dense\n      units: 3\n"
     "   - {type: dense, units: 2}\n",
     "spec.yaml:6:4: error: spec: invalid YAML: a list item at 6:4 is not lined up with the "
     "list's items above it (column 5); indent it to column 5"),
    ("model:\n  layers:\n  - {type: dense, units: 3}\n - {type: dense, units: 3}\n",
     "spec.yaml:4:2: error: spec: invalid YAML: a list item at 4:2 is not lined up with the "
     "list's items above it (column 3); indent it to column 3"),
    # the second review: a layer's own block list above is not the list meant
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - type: conv2d\n      filters: 2\n"
     "      kernel_size:\n        - 3\n        - 3\n   - {type: flatten}\n",
     "spec.yaml:9:4: error: spec: invalid YAML: a list item at 9:4 is not lined up with the "
     "list's items above it (column 5); indent it to column 5"),
])
def test_a_quote_left_open_or_an_item_indented_too_little_is_said_where_it_is(text, said):
    """The YAML positions audit: an open quote was placed a line past the file's end, and a
    '- ' indented one space too little got PyYAML's "expected <block end>, but found
    '<block sequence start>'" (then, the review: advice to line it up with the mapping's keys,
    which gave the same error again)."""
    assert _load_errors(text) == [said]


def test_yaml_errors_do_not_hide_the_schema_errors():
    assert _load_errors(ALL_AT_ONCE) == [
        "spec.yaml:2:1: error: spec: duplicate key 'seed' (first at line 1)",
        "spec.yaml:6:21: error: model.layers[0]: unknown field 'unitz'; did you mean "
        "'units'?",
        # the refused value is not reported again as a missing integer
        "spec.yaml:7:28: error: model.layers[1].units: tag '!!python/object:os.system' is not "
        "allowed: specs never build Python objects",
    ]


@pytest.mark.parametrize("fault, said", [
    # a section that decides no shape, a field of data that decides none
    ("optimizer: {type: sgd, lr: 0.1, lr: 0.2}\n",
     ["spec.yaml:6:33: error: optimizer: duplicate key 'lr' (first at line 6)"]),
    ("data: {dataset: digits, limit: 10, limit: 20}\n",
     ["spec.yaml:6:36: error: data: duplicate key 'limit' (first at line 6)"]),
    # a dataset given twice decides the input's shape: unsure, nothing that reads it is checked
    ("data: {dataset: mnist, dataset: digits}\n",
     None),
    ("seed: 1\nseed: !!python/object:os.system 2\n",
     ["spec.yaml:7:1: error: spec: duplicate key 'seed' (first at line 6)"]),
])
def test_a_duplicate_key_or_a_refused_value_hides_no_shape_error(fault, said):
    """The follow-the-fix audit: one duplicate key hid every shape error of the file, against
    cli.md's "schema errors do not hide shape errors"."""
    text = ("model:\n  input_shape: [1, 8, 8]\n  layers:\n"
            "    - {type: conv2d, filters: 4, kernel_size: 9}\n    - {type: dense, units: 10}\n"
            + fault)
    if said is None:
        text = text.replace("  input_shape: [1, 8, 8]\n", "")
        assert _load_errors(text) == [
            "spec.yaml:5:24: error: data: duplicate key 'dataset' (first at line 5)"]
        return
    assert _load_errors(text) == [
        "spec.yaml:4:47: error: model.layers[0] (conv2d_1): kernel 9x9 does not fit the 8x8 "
        "input (rows: (8 + 2*0 - 9)/1 + 1 = 0); use kernel_size: 8 or less, or padding: 1",
        *said]


def test_a_duplicate_key_in_a_layer_hides_the_shapes_from_it_on_only():
    """Its value is unsure (the first is kept): the layers from it on are not checked."""
    text = ("model:\n  input_shape: [1, 8, 8]\n  layers:\n"
            "    - {type: conv2d, filters: 4, kernel_size: 9}\n"
            "    - {type: conv2d, filters: 4, kernel_size: 9, kernel_size: 1}\n"
            "    - {type: conv2d, filters: 4, kernel_size: 9}\n")
    errors = _load_errors(text)
    assert [line.split(": error: ")[0] for line in errors] == ["spec.yaml:4:47", "spec.yaml:5:50"]
    assert "duplicate key 'kernel_size'" in errors[1]
    # an unsure input shape decides every layer's: none is checked
    assert _load_errors(text.replace("[1, 8, 8]\n", "[1, 8, 8]\n  input_shape: [1, 9, 9]\n")) == [
        "spec.yaml:3:3: error: model: duplicate key 'input_shape' (first at line 2)",
        "spec.yaml:6:50: error: model.layers[1]: duplicate key 'kernel_size' (first at line 6)"]


def test_override_errors_do_not_hide_each_other_or_the_schema_errors():
    text = ("model:\n  input_shape: [4]\n  layers: [{type: dense, units: 3}]\nloss: mse\n"
            "optimizer: {type: sgd, lr: 0.1}\n")
    assert _load_errors(text, ["optimizer.lr=abc", "model.layers[9].units=3", "foo.bar=1",
                               "optimizer.x[0]=1", "seed=2"]) == [
        "--set:1:1: error: --set optimizer.lr=abc: 'lr' must be a number, got 'abc'",
        "--set:2:1: error: --set model.layers[9].units=3: model.layers has 1 entry "
        "(indices 0..0, or -1..-1 from the end)",
        "--set:3:1: error: --set foo.bar=1: unknown field 'foo'",
        "--set:4:1: error: --set optimizer.x[0]=1: optimizer has no 'x' to index",
    ]  # and the failed arguments changed nothing: no optimizer.x is reported as unknown


def test_values_yaml_types_by_itself_are_shown_as_the_file_wrote_them():
    text = ("seed: 2001-12-14\nmodel:\n  input_shape: [4]\n"
            "  layers: [{type: dense, units: !!binary aGVsbG8=}]\n")
    assert _load_errors(text) == [
        "spec.yaml:1:7: error: spec: 'seed' must be an integer, got the date 2001-12-14",
        "spec.yaml:4:33: error: model.layers[0].units: no spec field takes binary data "
        "(!!binary); write the value as text"]


def test_a_field_another_layer_type_names_so_is_suggested():
    text = ("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - {type: conv2d, filters: 2, "
            "kernel_size: 3}\n    - {type: flatten}\n    - {type: dense, units: 2}\n"
            "optimizer: {type: sgd, lr: 0.1}\n")
    assert [line.split(": ", 3)[-1] for line in _load_errors(text, [
        "model.layers[0].units=3", "model.layers[2].filters=3", "optimizer.learning_rate=1"])] == [
        "unknown field 'units'; did you mean 'filters' (set already)?",
        "unknown field 'filters'; did you mean 'units' (set already)?",
        "unknown field 'learning_rate'; did you mean 'lr' (set already)?"]


def test_tabs_are_named_with_the_fix():
    (line,) = _load_errors("model:\n\tinput_shape: [2]\n")
    assert line.endswith("found character '\\t' that cannot start any token; YAML indents with "
                         "spaces only: replace the tabs")


@pytest.mark.parametrize("text, message", [
    ("model:\n  input_shape: [2]\n  layers:\n    - type: dense\n   units: 10\n",
     "spec.yaml:5:4: error: spec: invalid YAML: a key at 5:4 does not fit the mapping started at 2:3; "
     "line it up with that mapping's keys, or indent it further to belong to one of them"),
    ("model:\n  input_shape: [2]\n  layers:\n    - {type: dense, units: 3}\n    units: 3\n",
     "spec.yaml:5:5: error: spec: invalid YAML: a key at 5:5 does not fit the list started at 4:5; "
     "line it up with that list's items"),
    ("model:\n  layers:\n  - {type: dense, units: 3\n",
     "the { at 3:5 is not closed, or a ',' is missing between its entries"),
    ("model:\n  input_shape: [4]\n  layers:\n  - type: dense\n     units: 3\n",
     "spec.yaml:5:11: error: spec: invalid YAML: mapping values are not allowed here; 'units' is "
     "indented deeper than 'type' on line 4, so YAML reads 'units' as more of its value: indent "
     "it to column 5, as 'type'"),
    # the mutation fuzz: the line above dedented among its keys, or a section's line deleted
    ("model:\n  input_shape: [4]\n  layers: [{type: dense, units: 2}]\ntrain:\n  epochs: 2\n"
     "batch_size: 8\n  shuffle: true\n",
     "'batch_size' on line 6 is indented less than the keys around it ('epochs' on line 5, "
     "'shuffle' on line 7), so YAML reads 'shuffle' as more of its value: indent 'batch_size' to "
     "column 3, as they are"),
    ("model:\n  input_shape: [4]\n  layers:\n      - {type: flatten}\n"
     "    - {type: dense, units: 2}\n    - {type: dense, units: 2}\n",
     "invalid YAML: the list's first item, at 4:7, is indented further than the items after it "
     "(column 5); indent it to column 5, as they are"),
    # the review: the section's line is there, and the key under it dedented; a first item
    # out of line whose next item spans lines
    ("data:\ndataset: digits\n  validation_split: 0.1\n",
     "'dataset' on line 2 is indented as 'data:' above it is, not as the keys under it "
     "('validation_split' on line 3), so YAML reads 'validation_split' as more of its value: "
     "indent 'dataset' to column 3, as 'validation_split' is"),
    ("model:\n  layers:\n      - type: flatten\n    - type: dense\n      units: 10\n"
     "    - type: relu\n",
     "the list's first item, at 3:7, is indented further than the items after it (column 5)"),
    ("  name: x\nmodel:\n  input_shape: [4]\n",
     "spec.yaml:1:3: error: spec: invalid YAML: the first key, 'name', is indented by 2 spaces, "
     "so the keys at the line's start after it cannot follow it; begin every top-level key at "
     "the line's start"),
    ("seed: 0\n  dataset: xor\n  n_samples: 100\nmodel:\n  input_shape: [2]\n",
     "'dataset' is indented deeper than 'seed' on line 1, so YAML reads 'dataset' as more of "
     "its value: if it is data's, the line 'data:' is missing above it; else begin it at the "
     "line's start, as 'seed'"),
    ("name: a: b  # c\n", "mapping values are not allowed here; a value that holds ': ' must be "
                          "quoted: name: 'a: b'"),
])
def test_the_commonest_yaml_slips_say_what_to_do(text, message):
    (line,) = _load_errors(text)
    assert message in line


def test_a_key_out_of_line_above_where_yaml_stops_is_placed_at_that_key():
    """The error-positions audit: a dedented key, or a section's first key indented further,
    was placed at the line after it (where PyYAML stops), though the message named it; a key
    one space short among its mapping's keys was told to line up with the top level's."""
    from nnrun.compiler.loader import load_yaml_text

    cases = [("optimizer:\n  type: sgd\nlr: 0.05\n  momentum: 0.9\n", (3, 1)),
             ("train:\n    epochs: 2\n  batch_size: 8\n", (2, 5))]
    for text, place in cases:
        with pytest.raises(SpecError) as raised:
            load_yaml_text(text, "spec.yaml")
        (error,) = raised.value.diagnostics
        assert (error.line, error.col) == place, error.format()
    one_space = "optimizer:\n  type: sgd\n  lr: 0.05\n momentum: 0.9\n  weight_decay: 0.1\n"
    with pytest.raises(SpecError) as raised:
        load_yaml_text(one_space, "spec.yaml")
    (error,) = raised.value.diagnostics
    assert (error.line, error.col) == (4, 2) and error.message.endswith(
        "a key at 4:2 is indented less than the keys around it ('lr' on line 3, "
        "'weight_decay' on line 5); indent 'momentum' to column 3, as they are")
    load_yaml_text(one_space.replace(" momentum", "  momentum"), "spec.yaml")  # as told
    # a section's key, its own keys under it, is not told to line up with them (the review)
    section = ("optimizer:\n  type: sgd\n  lr: 0.1\n schedule:\n  type: step\n"
               "  step_size: 2\n")
    with pytest.raises(SpecError) as raised:
        load_yaml_text(section, "spec.yaml")
    assert "indent 'schedule' to column 3" not in raised.value.diagnostics[0].message


_LAYERS = "    - {type: flatten}\n    - {type: dense, units: 10}\n"


@pytest.mark.parametrize("text, said, fixed", [
    # the first key of a section indented further than the keys after it
    ("model:\n   input_shape: [1, 8, 8]\n  layers:\n" + _LAYERS,
     "the first key under 'model:', at 2:4, is indented further than the keys after it (column "
     "3); indent it to column 3, as they are", lambda lines: lines.__setitem__(1, lines[1][1:])),
    # ... less (YAML reads the keys after it as its value)
    ("data:\n dataset: xor\n  n_samples: 20\n  noise: 0.1\nmodel:\n  layers: [{type: dense, "
     "units: 1}]\nloss: binary_cross_entropy\n",
     "the first key under 'data:', 'dataset' on line 2, is indented less than the keys after it "
     "('n_samples' on line 3), so YAML reads 'n_samples' as more of its value: indent 'dataset' to "
     "column 3, as they are", lambda lines: lines.__setitem__(1, " " + lines[1])),
    # a list's first item at its key's column, the items after it deeper
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n  - {type: flatten}\n"
     "    - {type: dense, units: 10}\n",
     "the first item under 'layers:', at 4:3, is indented less than the items after it (column "
     "5); indent it to column 5, as they are", lambda lines: lines.__setitem__(3, "  " + lines[3])),
    # ... or less than its key (the re-run of the audit)
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n - {type: flatten}\n"
     "    - {type: dense, units: 10}\n",
     "the first item under 'layers:', at 4:2, is indented less than its key (column 3); indent "
     "it to column 5, as the items after it", lambda lines: lines.__setitem__(3, "   " + lines[3])),
    # the first item further than its key, the later ones left of the key: they are out of line
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n      - {type: flatten}\n"
     " - {type: dense, units: 2}\n - {type: dense, units: 2}\n",
     "a list item at 5:2 is not lined up with the list's items above it (column 7); indent it to "
     "column 7", lambda lines: lines.__setitem__(slice(4, 6), ["     " + lines[4]] * 2)),
    # a list's last item at its key's column
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n" + _LAYERS + "  - {type: relu}\n",
     "a list item at 6:3 is not lined up with the list's items above it (column 5); indent it to "
     "column 5", lambda lines: lines.__setitem__(5, "  " + lines[5])),
    # a key of a block list item between its '-' and its keys
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - type: conv2d\n      filters: 4\n"
     "     kernel_size: 3\n    - {type: flatten}\n",
     "a key at 6:6 is not lined up with the keys of the list item above it (column 7); indent "
     "it to column 7", lambda lines: lines.__setitem__(5, " " + lines[5])),
    # a key of a block item at the item's dash column
    ("model:\n  input_shape: [4]\n  layers:\n    - type: dense\n      units: 3\n"
     "    activation: relu\n",
     "a key at 6:5 is not lined up with the keys of the list item above it (column 7); indent "
     "it to column 7", lambda lines: lines.__setitem__(5, "  " + lines[5])),
    # an item shifted deeper than the keys of the block item above it
    ("model:\n  input_shape: [4]\n  layers:\n    - type: dense\n      units: 2\n"
     "      init: {type: uniform, limit: 0.1}\n       - {type: dense, units: 1}\n",
     "a list item at 7:8 is not lined up with the list's items above it (column 5); indent it "
     "to column 5", lambda lines: lines.__setitem__(6, lines[6][3:])),
    # a section of the top level indented under the one before it
    ("data:\n  dataset: xor\n    model:\n  layers:\n    - {type: dense, units: 1}\n",
     "'model' at 3:5 is a section of the spec's top level: begin it at the line's start",
     lambda lines: lines.__setitem__(2, lines[2].lstrip())),
    ("data:\n  dataset: xor\nmodel:\n  layers:\n    - {type: dense, units: 1}\n"
     "   loss: mse\n",
     "'loss' at 6:4 is a section of the spec's top level: begin it at the line's start",
     lambda lines: lines.__setitem__(5, lines[5].lstrip())),
    # the line of a list's key left out
    ("model:\n  input_shape: [1, 8, 8]\n" + _LAYERS,
     "a list at 3:5 follows 'input_shape', whose value is on its line already: the line "
     "'layers:' is missing above the list, indented as 'input_shape'",
     lambda lines: lines.insert(2, "  layers:")),
    # the line of a list's key left out after a key with a plain value, flow or block items
    ("model:\n  input_shape: [1, 8, 8]\n  init: he_uniform\n" + _LAYERS,
     "a list at 4:5 follows 'init', whose value is on its line already: the line 'layers:' is "
     "missing above the list, indented as 'init'", lambda lines: lines.insert(3, "  layers:")),
    ("model:\n  input_shape: [4]\n  init: he_uniform\n    - type: dense\n      units: 3\n",
     "a list at 4:5 follows 'init', whose value is on its line already: the line 'layers:' is "
     "missing above the list", lambda lines: lines.insert(3, "  layers:")),
    # a section's line left out, its first key one that many sections have
    ("model:\n  input_shape: [2]\n  layers:\n    - {type: dense, units: 1}\n"
     "loss: binary_cross_entropy\n  type: sgd\n  lr: 0.5\n",
     "if it is optimizer's, the line 'optimizer:' is missing above it",
     lambda lines: lines.insert(5, "optimizer:")),
])
def test_indentation_advice_followed_clears_the_error(text, said, fixed):
    """The follow-the-fix audit: advice to line a key up with the top-level mapping, or to
    indent one key at a time, where the first key or item was the one out of line, and a
    missing `layers:` or `optimizer:` line not said."""
    (line,) = _load_errors(text)
    assert said in line
    lines = text.splitlines()
    fixed(lines)
    from nnrun.compiler.frontend import load_spec_text

    load_spec_text("\n".join(lines) + "\n", "spec.yaml")  # no SpecError


@pytest.mark.parametrize("text", [
    "model:\n  input_shape: [4]\n  layers:\n    - {type: dense, units: 3}\n"
    "        - {type: dense, units: 3}\n    - {type: dense, units: 2}\n",
    "model:\n  input_shape: [4]\n    init: he_uniform\n  layers:\n    - {type: dense, units: 2}\n",
    "model:\n  input_shape: [4]\n     layers:\n    - {type: dense, units: 2}\n",
])
def test_the_second_entry_out_of_line_is_not_blamed_on_the_first(text):
    """The re-run of the audit: with the third entry at the first one's column, the second is
    the one out of line, and moving the first to it made more to move."""
    (line,) = _load_errors(text)
    assert "the first" not in line


@pytest.mark.parametrize("text, message", [
    ("data:\n  dataset:mnist\n", "'data' must be a mapping, got 'dataset:mnist'; write a space "
                                  "after the colon (dataset: mnist), or YAML reads one string"),
    ("model:\n  input_shape: [2]\nlayers:\n  - {type: dense, units: 3}\n",
     "unknown field 'layers'; it belongs in the model section: indent it under model:"),
    ("model: {input_shape: [2], layers: [{type: dense, units: 3}]}\nepochs: 3\n",
     "unknown field 'epochs'; it belongs in the train section: indent it under train:"),
])
def test_a_key_out_of_place_says_where_it_goes(text, message):
    assert any(message in line for line in _load_errors(text))


def test_a_misspelt_set_path_suggests_the_field_the_spec_has():
    text = ("model: {input_shape: [2], layers: [{type: dense, units: 3}]}\n"
            "optimizer: {type: sgd, lr: 0.1}\n")
    (line,) = _load_errors(text, ["optimiser.lr=0.01"])
    assert line.endswith("unknown field 'optimiser'; did you mean 'optimizer' (set already)?")


@pytest.mark.parametrize("text, overrides, ending", [
    ("model:\n  input_shape: [2]\n  layers:\n    - &h {type: dense, units: 8}\n"
     "    - <<: *h\n      unitz: 2\n", [], "unknown field 'unitz'; did you mean 'units'? It is "
                                             "set already: remove 'unitz', or give its value to "
                                             "units"),
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n"
     "    - {type: conv2d, filters: 4, kernel_size: 3, padding: 1}\n    - {type: flatten}\n",
     ["model.layers[0].paddin=0"], "unknown field 'paddin'; did you mean 'padding' (set "
                                   "already)?"),
    ("model:\n  input_shape: [2]\n  layers:\n    - {type: dense, units: 2, \u200bunits: 3}\n",
     [], "unknown field '\\u200bunits'; did you mean 'units'? It is set already: remove "
         "'\\u200bunits', or give its value to units"),
])
def test_did_you_mean_names_the_closest_field_even_when_it_is_set(text, overrides, ending):
    """The YAML audit: with `units` set, `unitz` was offered `init` (the closest field not set),
    and `paddin` `padding_mode`, which fails when applied; an invisible character in a key
    showed as nothing."""
    assert any(line.endswith(ending) for line in _load_errors(text, overrides))


def test_names_as_near_as_the_nearest_are_offered_too():
    """The fuzz audit: `convd` on samples [1, 40] was offered conv2d alone, which failed next;
    conv1d is as near. A synonym or a name but for its case is offered alone."""
    base = "model:\n  input_shape: [1, 40]\n  layers:\n    - {type: TYPE, filters: 2, " \
           "kernel_size: 3}\n"
    (line,) = _load_errors(base.replace("TYPE", "convd"))
    assert line.endswith("unknown layer type 'convd'; did you mean 'conv2d' or 'conv1d'?")
    (line,) = _load_errors(base.replace("TYPE", "Conv1D"))
    assert line.endswith("did you mean 'conv1d'?")


def test_a_whole_number_in_exponent_form_is_an_integer():
    """The YAML audit: `max_params: 1e5` is text to PyYAML (YAML 1.1), 100000 to an editor's
    YAML 1.2 reader; an int field refused it. `'10'` quoted, 1.5e0 and 1e400 stay errors."""
    from nnrun.compiler.frontend import load_spec_text

    base = "model: {input_shape: [2], layers: [{type: dense, units: 1e0}]}\n"
    spec = load_spec_text(base + "limits: {max_params: 1e5}\ntrain: {epochs: 3E+0}\n",
                          "spec.yaml").spec
    assert (spec.limits.max_params, spec.train.epochs, spec.model.layers[0].units) == (
        100000, 3, 1)
    exact = load_spec_text(base + "seed: 9007199254740993e0\n", "spec.yaml").spec
    assert exact.seed == 2**53 + 1  # not through a float (the session review)
    for bad in ("'10'", "1.5e0", "1e400"):
        (line,) = _load_errors(base + f"train: {{epochs: {bad}}}\n")
        assert "'epochs' must be an integer" in line
    # `1.0e+19` is a float to YAML: pydantic's own words past 2**63 ("Unable to parse input
    # string as an integer"), where 10000000000000000000 written out was taken (the fuzz audit)
    for text, value in (("1.0e+19", 10**19), ("1.0e+300", int(1e300))):
        assert load_spec_text(base + f"seed: {text}\n", "spec.yaml").spec.seed == value
    (line,) = _load_errors(base + "seed: -2.0e+19\n")
    assert "'seed' must be an integer ≥ 0, got -2e+19" in line
    assert load_spec_text("version: 1e0\n" + base, "spec.yaml").spec.version == 1  # spec audit


def test_a_file_that_is_not_yaml_stops_at_its_syntax_error():
    assert _load_errors("model: [\n", ["seed=x"]) == [
        "spec.yaml:2:1: error: spec: invalid YAML: expected the node content, but found "
        "'<stream end>' (while parsing a flow node started at 2:1)"]


# --- whatever the data, every pydantic error becomes a diagnostic ---------------------------------

WORDS = st.sampled_from(
    ["model", "layers", "type", "dense", "conv2d", "units", "filters", "kernel_size", "padding",
     "activation", "relu", "leaky_relu", "alpha", "optimizer", "sgd", "lr", "data", "dataset",
     "mnist", "seed", "name", "train", "metrics", "loss", "init", "same", "x"]
)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 5) | st.floats(-2, 2) | WORDS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(WORDS, children, max_size=4),
    max_leaves=25,
)
LAYERS = st.lists(st.dictionaries(WORDS, VALUES, max_size=5) | VALUES, max_size=3)
SPECS = st.builds(
    lambda top, layers: {**top, "model": {"layers": layers}},
    st.dictionaries(WORDS, VALUES, max_size=5),
    LAYERS,
) | st.dictionaries(WORDS, VALUES, min_size=1, max_size=5)


def check_every_error_is_diagnosed(data, schema):
    loaded = load_yaml_text(yaml.safe_dump(data), "random.yaml")
    try:
        schema.model_validate(loaded.data)
    except ValidationError as error:
        diagnostics = diagnostics_from_validation_error(error, loaded, schema)
        assert diagnostics and all(d.line >= 1 and d.message for d in diagnostics)


@settings(max_examples=150, deadline=None)
@given(SPECS)
def test_random_data_against_the_stand_in(data):
    check_every_error_is_diagnosed(data, StandInSpec)


@settings(max_examples=150, deadline=None)
@given(SPECS)
def test_random_data_against_the_real_schema(data):
    schema = pytest.importorskip("nnrun.compiler.schema")
    check_every_error_is_diagnosed(data, schema.Spec)


@pytest.mark.parametrize("text, message", [
    ("loss: null\n", "'loss' must be a name or a mapping with 'type', got null"),
    ("loss: [mse]\n", "'loss' must be a name or a mapping with 'type', got [mse]"),
    ("optimizer: 3\n", "'optimizer' must be a name or a mapping with 'type', got 3"),
    ("model:\n  input_shape: [4]\n  layers:\n    - {type: dense, units: 2, activation: [relu]}\n",
     "'activation' must be a name or a mapping with 'type', got [relu]"),
    ("train: {pruning: 3}\n", "'pruning' must be a mapping, got 3"),  # no name stands for it
    ('version: "1"\n', "'version' must be 1, got the string '1'; write it without quotes"),
])
def test_a_wrong_kind_of_value_says_what_the_field_takes(text, message):
    from nnrun.compiler.schema import Spec

    messages = [d.message for d in diagnose(text, schema=Spec)]  # and a missing model
    assert any(message in m for m in messages), messages


DIGITS_LAYERS = ("name: x\ndata: {{dataset: digits}}\nmodel:\n  layers:\n"
                 "    - {{type: conv2d, filters: 4, kernel_size: 3}}\n"
                 "    - {{type: flatten}}\n    - {}\n")


@pytest.mark.parametrize("layer, message", [
    ("{type: dense, units: -3}", "'units' must be an integer ≥ 1, got -3"),
    ("{type: dens, units: 10}", "unknown layer type 'dens'; did you mean 'dense'?"),
])
def test_the_layers_left_before_a_broken_one_are_not_checked_against_the_labels(layer, message):
    """They do not end the model: a flatten's 144 outputs are no mistake against 10 classes."""
    errors = _load_errors(DIGITS_LAYERS.format(layer))
    assert len(errors) == 1 and errors[0].endswith(message), errors
    # a shape error of the layers left is still found
    broken = DIGITS_LAYERS.format(layer).replace("kernel_size: 3", "kernel_size: 9")
    assert [e.split(": ", 3)[-1][:26] for e in _load_errors(broken)] == [
        "kernel 9x9 does not fit th", message[:26]]


@pytest.mark.parametrize("loss", ["cross_entropyy", "null", "{type: hubr, delta: 1.0}"])
def test_a_broken_loss_is_not_replaced_by_one_the_outputs_are_checked_against(loss):
    """The copy checked for shape errors takes mse for a broken loss: the model's outputs,
    right for the loss the user meant, were called wrong for mse, first of the errors."""
    text = ("data: {dataset: shapes}\nmodel:\n  layers:\n"
            "    - {type: conv2d, filters: 4, kernel_size: 3, padding: same}\n"
            f"loss: {loss}\n")
    errors = _load_errors(text)
    assert len(errors) == 1 and errors[0].startswith("spec.yaml:5:"), errors
    broken = text.replace("kernel_size: 3, padding: same", "kernel_size: 40")  # still found
    assert [e.split(": ", 3)[-1][:22] for e in _load_errors(broken)] == [
        "kernel 40x40 does not ", errors[0].split(": ", 3)[-1][:22]]


@pytest.mark.parametrize("data", ["validation_split: 1.5", "limit: 0", "normalize: bogus",
                                  "augment: [{type: random_flip, axis: sideways}]"])
def test_a_data_field_that_decides_no_shape_hides_no_shape_error(data):
    """The dataset gives the input shape: a broken validation_split dropped the whole data
    section from the copy checked for shapes, and with it every shape error."""
    text = (f"data: {{dataset: digits, {data}}}\nmodel:\n  layers:\n"
            "    - {type: conv2d, filters: 4, kernel_size: 9}\n    - {type: flatten}\n"
            "    - {type: dense, units: 10}\n")
    errors = _load_errors(text)
    assert len(errors) == 2 and errors[0].startswith("spec.yaml:1:"), errors
    assert "kernel 9x9 does not fit the 8x8 input" in errors[1]


def test_a_misspelt_data_key_is_read_as_the_field_it_misspells():
    """`datset: mnist` was dropped from the copy checked for shapes: the default digits' 8x8
    made two 5x5 convolutions an error that the spec does not have."""
    text = ("data: {datset: mnist}\nmodel:\n  layers:\n"
            + "    - {type: conv2d, filters: 4, kernel_size: 5}\n" * 2
            + "    - {type: flatten}\n    - {type: dense, units: 10}\n")
    assert _load_errors(text) == [
        "spec.yaml:1:8: error: data: unknown field 'datset'; did you mean 'dataset'?"]


def test_a_misspelt_type_key_is_named_with_its_position():
    text = ("model:\n  input_shape: [4]\n  layers:\n    - {tyep: dense, units: 2}\n"
            "optimizer: {Type: adam}\n")
    assert _load_errors(text) == [
        "spec.yaml:4:8: error: model.layers[0]: unknown field 'tyep'; did you mean "
        "'type'?",
        "spec.yaml:5:13: error: optimizer: unknown field 'Type'; did you mean 'type'?"]


def test_a_layer_with_a_misspelt_type_key_is_read_as_its_type_so_later_layers_are_checked():
    text = ("name: x\ndata: {dataset: digits}\nmodel:\n  layers:\n"
            "    - {tyep: conv2d, filters: 4, kernel_size: 3}\n"
            "    - {type: conv2d, filters: 4, kernel_size: 9}\n"
            "    - {type: flatten}\n    - {type: dense, units: 10}\n")
    errors = _load_errors(text)
    assert [e.split(": ", 3)[-1][:40] for e in errors] == [
        "unknown field 'tyep'; did you mean 'type", "kernel 9x9 does not fit the 6x6 input (r"]


def test_yes_no_fields_take_true_or_false_and_whole_numbers_are_not_quoted():
    text = ("model:\n  input_shape: [4]\n  layers:\n"
            "    - {type: dense, units: '10', use_bias: 'no'}\n"
            "train: {shuffle: 1, log_grad_norms: 0}\n")
    assert [e.split(": ", 3)[-1] for e in _load_errors(text)] == [
        "'units' must be an integer, got '10'; write it without quotes: 10",
        "'use_bias' must be true or false, got 'no'",
        "'shuffle' must be true or false, got 1",
        "'log_grad_norms' must be true or false or a mapping, got 0"]


def test_a_whole_number_with_a_leading_zero_is_told_to_lose_the_zero_not_quotes():
    """The claims audit: `units: 08` (text to YAML, octal digits it has not) was told "write
    it without quotes", which it had none of."""
    for written, number in (("08", 8), ("'019'", 19)):
        text = f"model:\n  input_shape: [4]\n  layers:\n    - {{type: dense, units: {written}}}\n"
        (error,) = _load_errors(text)
        assert error.endswith(f"write {number}: with a leading 0, YAML reads "
                              f"{written.strip(chr(39))} as text or octal")


def test_a_message_holding_a_line_break_is_still_one_line():
    """A key "a\\nb" printed the diagnostic over two lines: one problem, one line."""
    diagnostic = Diagnostic("spec.yaml", 4, 31, "error", "model.layers[0]",
                            "unknown field 'a%b\nc\rd'")
    assert diagnostic.format() == ("spec.yaml:4:31: error: model.layers[0]: unknown field "
                                   "'a%b\\nc\\rd'")


def test_an_error_at_a_file_line_that_an_override_changed_names_the_override():
    """The line shown said conv2d while the error was of the conv1d that --set made of it."""
    from nnrun.compiler.frontend import check, load_spec_text

    text = ("model:\n  input_shape: [1, 8, 8]\n  layers:\n"
            "    - {type: conv2d, filters: 4, kernel_size: 3}\n    - {type: flatten}\n"
            "    - {type: dense, units: 10}\n")
    source = load_spec_text(text, "spec.yaml", ["model.layers[0].type=conv1d"])
    with pytest.raises(SpecError) as raised:
        check(source)
    (error,) = raised.value.diagnostics
    assert (error.line, error.col) == (4, 7)
    assert error.message.endswith("(after --set model.layers[0].type=conv1d)")


def test_an_error_downstream_of_an_override_names_the_override():
    """A layer the file leaves as it was but whose input an override changed: its line alone
    could not explain the 1x1 input. Overrides after it, of fields that shape nothing, or of
    other sections, are not named (the review)."""
    from nnrun.compiler.frontend import check, load_spec_text

    text = ("model:\n  input_shape: [1, 12, 12]\n  layers:\n"
            "    - {type: conv2d, filters: 4, kernel_size: 3}\n"
            "    - {type: conv2d, filters: 4, kernel_size: 3}\n"
            "    - {type: flatten}\n    - {type: dense, units: 10}\n")
    source = load_spec_text(text, "spec.yaml", ["model.layers[0].kernel_size=12",
                                                "model.layers[0].activation=relu",
                                                "model.layers[3].units=10", "seed=3"])
    with pytest.raises(SpecError) as raised:
        check(source)
    (error,) = raised.value.diagnostics
    assert (error.line, error.where) == (5, "model.layers[1] (conv2d_2)")
    assert error.message.endswith("(after --set model.layers[0].kernel_size=12)")
    source = load_spec_text(text, "spec.yaml", ["model.input_shape=[1,2,2]"])
    with pytest.raises(SpecError) as raised:
        check(source)
    assert raised.value.diagnostics[0].message.endswith("(after --set model.input_shape=[1,2,2])")


def test_an_override_of_a_layers_own_window_or_of_a_named_setting_is_named():
    """The YAML positions audit: `--set model.layers[0].padding=0` gave an error at the file's
    kernel_size, whose line shows `padding: 1`, advising `padding: 1`; an override of
    data.validation_split gave train.early_stopping.monitor's error unnamed."""
    from nnrun.compiler.frontend import check, load_spec_text

    text = ("model:\n  input_shape: [1, 3, 3]\n  layers:\n"
            "    - {type: conv2d, filters: 2, kernel_size: 4, padding: 1}\n"
            "    - {type: flatten}\n    - {type: dense, units: 3}\n")
    check(load_spec_text(text, "spec.yaml"))
    for own in ("padding=0", "padding=valid"):
        (error,) = _check_errors(text, [f"model.layers[0].{own}"])
        assert (error.line, error.message.endswith(f"(after --set model.layers[0].{own})")) \
            == (4, True), error.message
    text = ("data: {dataset: xor, validation_split: 0.2}\n"
            "model: {layers: [{type: dense, units: 2}]}\n"
            "train: {early_stopping: {monitor: val_loss}}\n")
    assert check(load_spec_text(text, "spec.yaml")).ok
    source = load_spec_text(text, "spec.yaml", ["data.validation_split=0"])
    (error,) = [d for d in check(source).diagnostics if d.severity == "error"]
    assert error.where == "train.early_stopping.monitor"
    assert error.message.endswith("(after --set data.validation_split=0)")


def test_a_shape_error_names_the_overrides_and_layers_on_its_own_path_only():
    """The YAML positions audit: a conv reading the model's input beside a maxpool was told to
    "remove a downsampling layer before it", and an override of the maxpool, on the other
    branch, was named as the one that shaped the conv's input."""
    text = ("model:\n  input_shape: [1, 4, 4]\n  layers:\n"
            "    - {name: a, type: maxpool2d, pool_size: 2, inputs: input}\n"
            "    - {name: b, type: conv2d, filters: 4, kernel_size: 6, inputs: input}\n"
            "    - {type: concat, inputs: [a, b]}\n    - {type: flatten}\n"
            "    - {type: dense, units: 3}\n")
    (error,) = _check_errors(text, ["model.layers[0].pool_size=1"])
    assert error.line == 5 and error.message.endswith("use kernel_size: 4 or less, or padding: 2")
    chained = text.replace("kernel_size: 6, inputs: input", "kernel_size: 3, inputs: a")
    (error,) = _check_errors(chained, ["model.layers[0].pool_size=4"])
    assert "or remove a downsampling layer before it" in error.message
    assert error.message.endswith("(after --set model.layers[0].pool_size=4)")


@pytest.mark.parametrize("broken, said", [
    ("data: {dataset: digits, normalize: bogus}", ["data", "model.layers[1] (dense_1)",
                                                   "train.early_stopping.monitor"]),
    ("data: {dataset: digits}\nloss: {type: cross_entropy, label_smoothing: -0.1}",
     ["loss", "model.layers[1] (dense_1)", "train.early_stopping.monitor"]),
    # the split refused is not said to be missing by the monitor's check
    ("data: {dataset: digits, validation_split: 1.5}", ["data", "model.layers[1] (dense_1)"]),
])
def test_a_schema_error_in_data_or_loss_hides_no_check_of_the_rest(broken, said):
    """The YAML positions audit: `normalize: bogus` (or a label_smoothing of -0.1) hid the 5
    outputs against digits' 10 classes and a val_loss monitor without a validation split,
    said one fix later; without input_shape they were said at once."""
    from nnrun.compiler.frontend import load_spec_text

    text = (f"{broken}\nmodel:\n  input_shape: [1, 8, 8]\n  layers:\n    - {{type: flatten}}\n"
            "    - {type: dense, units: 5}\ntrain: {epochs: 2, early_stopping: {monitor: "
            "val_loss}}\n")
    with pytest.raises(SpecError) as raised:
        load_spec_text(text, "spec.yaml")
    assert sorted(d.where for d in raised.value.diagnostics) == sorted(said)


def test_shape_errors_of_branches_that_do_not_read_each_other_are_all_said():
    """The YAML positions audit: two convolutions reading the input, each too large for it,
    were said one fix apart; a layer that reads a failed one is not checked (its input's
    shape is unknown), as in a chain."""
    text = ("model:\n  input_shape: [1, 4, 4]\n  layers:\n"
            "    - {name: a, type: conv2d, filters: 4, kernel_size: 5, inputs: input}\n"
            "    - {name: b, type: conv2d, filters: 4, kernel_size: 6, inputs: input}\n"
            "    - {name: c, type: conv2d, filters: 4, kernel_size: 9, inputs: a}\n"
            "    - {type: concat, inputs: [a, b]}\n    - {type: flatten}\n"
            "    - {type: dense, units: 3}\n")
    assert [(d.line, d.where) for d in _check_errors(text)] == [
        (4, "model.layers[0] (a)"), (5, "model.layers[1] (b)")]


@pytest.mark.parametrize("value, fix", [
    ("(1, 8, 8)", "write [1, 8, 8]"), ("(64)", "write [64]"), ("1x8x8", "write [1, 8, 8]"),
    ("'[1, 8, 8]'", "write [1, 8, 8]"), ("1, 8, 8", "write [1, 8, 8]")])
def test_a_list_written_as_a_tuple_or_text_is_told_the_list_that_works(value, fix):
    """The newcomer audit: `input_shape: (1, 8, 8)` was told `write [(1, 8, 8)]`, which failed
    again."""
    text = "model:\n  input_shape: {}\n  layers: [{{type: flatten}}]\n"
    from nnrun.compiler.frontend import load_spec_text

    assert _load_errors(text.format(value))[0].endswith(fix)
    load_spec_text(text.format(fix.removeprefix("write ")), "spec.yaml")  # the fix loads


@pytest.mark.parametrize("layer, fix", [
    ("{type: conv2d, filters: 2, kernel_size: (3, 3)}",
     "YAML has no tuples: write a list in square brackets, [ ], not ( )"),
    ("{type: conv2d, filters: 2, kernel_size: 3x3}", "write [3, 3]"),
    ("{type: reshape, shape: (1, 8, 8)}",
     "YAML has no tuples: write a list in square brackets, [ ], not ( )"),
    ("{type: dense, units: 10, bias: 0}",
     "write one value per unit (filter) in a list, or bias_init: {type: constant, value: 0} "
     "for 0 in every one")])
def test_a_layers_list_written_otherwise_is_told_how_to_write_it(layer, fix):
    """The newcomer audit: a kernel_size of (3, 3) got no fix, `bias: 0` one of the wrong
    length (`write [0]`)."""
    text = f"model:\n  input_shape: [1, 8, 8]\n  layers: [{layer}]\n"
    assert _load_errors(text)[0].endswith(fix)


def test_a_merge_or_an_error_at_an_override_names_the_overrides_that_shaped_its_input():
    """The review: an add whose branch an override shrank said "'b' gives [2, 6, 6]" of a file
    showing b's padding: 1; an error placed at an --set named none of the others upstream."""
    text = ("model:\n  input_shape: [1, 8, 8]\n  layers:\n"
            "    - {name: a, type: conv2d, filters: 2, kernel_size: 3, padding: 1}\n"
            "    - {name: b, type: conv2d, filters: 2, kernel_size: 3, padding: 1, inputs: input}\n"
            "    - {name: s, type: add, inputs: [a, b]}\n    - {type: flatten}\n"
            "    - {type: dense, units: 10}\n")
    (error,) = _check_errors(text, ["model.layers[1].padding=0"])
    assert error.line == 6 and error.message.endswith("(after --set model.layers[1].padding=0)")
    (error,) = _check_errors(text, ["model.layers[0].stride=2", "model.layers[1].kernel_size=11"])
    assert error.file == "--set" and error.message.startswith("kernel 11x11 does not fit")
    assert "(after" not in error.message  # a: its stride shapes a, not b's input
    chained = text.replace("padding: 1, inputs: input}", "padding: 1, inputs: a}")
    (error,) = [d for d in _check_errors(chained, ["model.layers[0].stride=2",
                                                   "model.layers[1].kernel_size=11"])
                if d.file == "--set"]
    assert error.message.endswith("(after --set model.layers[0].stride=2)")


def test_a_geometry_warning_names_the_overrides_that_shaped_its_input(tmp_path):
    """The CLI audit: `--set model.input_shape=[1,9,9]` made a pool leave a row unused, said
    at the pool's line of an 8x8 file without the override (errors of shapes named it)."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("model:\n  input_shape: [1, 8, 8]\n  layers:\n"
                    "    - {type: maxpool2d, pool_size: 2}\n    - {type: flatten}\n"
                    "    - {type: dense, units: 10, activation: tanh}\n")
    result = invoke("validate", spec, "--set", "model.input_shape=[1, 9, 9]")
    unused = [line for line in result.stderr.splitlines() if "unused" in line]
    assert len(unused) == 2 and all(line.endswith("(after --set model.input_shape=[1, 9, 9])")
                                    for line in unused), result.stderr
    # a warning of no shape (a tanh before the cross-entropy) names none
    (tanh,) = [line for line in result.stderr.splitlines() if "warning" in line
               and "unused" not in line]
    assert "tanh before cross_entropy" in tanh and "(after" not in tanh


def test_a_percentage_where_a_fraction_goes_is_told_the_fraction():
    """The newcomer audit: `validation_split: 20` was told only "must be a number < 1"."""
    text = ("data: {dataset: digits, validation_split: 20}\nmodel: {layers: [{type: flatten}, "
            "{type: dropout, rate: 50}, {type: dense, units: 10}]}\n")
    assert [line.split("; ")[-1] for line in _load_errors(text)] == [
        "a fraction: write 0.2 for 20%", "a fraction: write 0.5 for 50%"]


def test_a_schema_error_at_a_line_an_override_changed_names_the_override():
    """A maxpool line made a dense layer: 'units' missing and 'pool_size' unknown, though the
    file's line is a whole maxpool. A value of the file beside an override is its own error."""
    from nnrun.compiler.frontend import load_spec_text

    text = ("model:\n  input_shape: [1, 8, 8]\n  layers:\n"
            "    - {type: maxpool2d, pool_size: 2}\n    - {type: dense, units: -1}\n")
    with pytest.raises(SpecError) as raised:
        load_spec_text(text, "spec.yaml", ["model.layers[0].type=dense",
                                           "model.layers[1].use_bias=false"])
    lines = [d.format() for d in raised.value.diagnostics]
    assert lines == [
        "spec.yaml:4:7: error: model.layers[0]: missing required field 'units' (e.g. units: 10) "
        "(after --set model.layers[0].type=dense)",
        "spec.yaml:4:25: error: model.layers[0]: unknown field 'pool_size'; dense has no "
        "pool_size, a field of maxpool1d, maxpool2d, avgpool1d and avgpool2d: remove it "
        "(after --set model.layers[0].type=dense)",
        "spec.yaml:5:28: error: model.layers[1]: 'units' must be an integer ≥ 1, got -1"]


@pytest.mark.parametrize("line, meant", [
    ("loss: categorical_crossentropy", "cross_entropy"),      # likeness said binary_cross_entropy
    ("loss: bce", "binary_cross_entropy"),
    ("loss: mean_squared_error", "mse"),
    ("model: {input_shape: [2], init: kaiming_uniform, layers: [{type: dense, units: 2}]}",
     "he_uniform"),                                          # likeness said xavier_uniform
    ("optimizer: {type: adam, momentum: 0.9}", "beta1"),
    ("optimizer: {type: sgd, lr: 0.1, beta1: 0.9}", "momentum"),
    ("train: {metrics: [{type: top_k_accuracy, topk: 3}]}", "k"),
    # the newcomer audit: Keras's layer and metric names got the whole list of types
    ("model: {input_shape: [1, 4, 4], layers: [{type: MaxPooling2D, pool_size: 2}]}",
     "maxpool2d"),
    ("model: {input_shape: [1, 4, 4], layers: [{type: BatchNormalization}]}", "batchnorm"),
    ("model: {input_shape: [1, 4, 4], layers: [{type: GlobalAveragePooling2D}]}",
     "global_avgpool"),
    ("train: {metrics: [acc]}", "accuracy"),
])
def test_other_frameworks_names_suggest_nnruns(line, meant):
    from nnrun.compiler.frontend import load_spec_text

    text = f"data: {{dataset: xor}}\n{line}\n"
    if not line.startswith("model"):
        text += "model: {layers: [{type: dense, units: 2}]}\n"
    with pytest.raises(SpecError) as raised:
        load_spec_text(text, "s.yaml")
    assert f"did you mean '{meant}'?" in raised.value.diagnostics[0].message


def test_a_field_of_another_optimizer_or_loss_type_is_said_so():
    """The API walk: a run's spec.yaml (every field written out) with `--set
    optimizer.type=sgd` was told only "unknown field 'beta2'", and `loss.type=mse` "unknown
    field 'label_smoothing'"."""
    from nnrun.compiler.frontend import load_spec_text

    text = ("data: {dataset: xor}\nmodel: {layers: [{type: dense, units: 2}]}\n"
            "loss: {type: cross_entropy, label_smoothing: 0.0}\n"
            "optimizer: {type: adam, lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1.0e-08}\n")
    # the resume field walk: fields at their defaults, as nnrun writes them out, go with the
    # old type (a run's own spec.yaml could not take --set optimizer.type=adam, as the advice
    # to start a new run from it says)
    changed = load_spec_text(text, "s.yaml", ["optimizer.type=sgd", "loss.type=mse"]).spec
    assert (changed.optimizer.type, changed.optimizer.lr, changed.loss.type) == ("sgd", 0.01,
                                                                               "mse")
    # set to other values, they are said to be the old type's
    own = text.replace("label_smoothing: 0.0", "label_smoothing: 0.1").replace(
        "beta1: 0.9, beta2: 0.999, eps: 1.0e-08", "beta1: 0.8, beta2: 0.99, eps: 1.0e-07")
    load_spec_text(own, "s.yaml")
    with pytest.raises(SpecError) as raised:
        load_spec_text(own, "s.yaml", ["optimizer.type=sgd", "loss.type=mse"])
    assert [d.message for d in raised.value.diagnostics] == [
        "unknown field 'label_smoothing'; mse has no label_smoothing, a field of cross_entropy: "
        "remove it (after --set loss.type=mse)",
        "unknown field 'beta1'; did you mean 'momentum'? (beta1 is a field of adam and adamw) "
        "(after --set optimizer.type=sgd)",
        "unknown field 'beta2'; sgd has no beta2, a field of adam and adamw: remove it (after "
        "--set optimizer.type=sgd)",
        "unknown field 'eps'; sgd has no eps, a field of adam, adamw, rmsprop and adagrad: "
        "remove it (after --set optimizer.type=sgd)"]
    # the review: a near name of this type (warmup_epochs) is no counterpart of step_epochs
    schedule = text + "  schedule: {type: cosine, step_epochs: 3}\n"
    with pytest.raises(SpecError) as raised:
        load_spec_text(schedule.replace("optimizer: {type: adam, lr: 0.01, beta1: 0.9, beta2: "
                                        "0.999, eps: 1.0e-08}", "optimizer:\n  type: adam"),
                       "s.yaml")
    assert raised.value.diagnostics[-1].message == (
        "unknown field 'step_epochs'; cosine has no step_epochs, a field of step: remove it")


@pytest.mark.parametrize("text", [
    "data: http://example.com/x.csv\nmodel: {input_shape: [2], layers: [{type: dense, units: 1}]}\n",
    "model: {input_shape: [2], layers: [{type: dense, units: 1}]}\ntrain: {shuffle: fals:e}\n",
])
def test_no_colon_advice_where_no_mapping_is_meant(text):
    """The YAML hint fuzz: a URL, or a word with a colon where true/false goes, was told to
    take a space after its colon, which made invalid YAML."""
    (line,) = _load_errors(text)
    assert "space after the colon" not in line


def test_a_misspelt_type_hides_no_error_of_its_mapping():
    """The YAML audit: pydantic stops at an unknown type, so `{type: dens, units: -8}` said
    only "did you mean 'dense'?", and the bad units came one fix later."""
    text = ("model:\n  input_shape: [2]\n  layers:\n"
            "    - {type: dens, units: -8, activaton: relu}\n    - {type: dense, units: 2}\n"
            "optimizer: {type: adamm, lr: -1}\n")
    assert [line.split(": error: ")[1] for line in _load_errors(text)] == [
        "model.layers[0]: unknown layer type 'dens'; did you mean 'dense'?",
        "model.layers[0]: 'units' must be an integer ≥ 1, got -8",
        "model.layers[0]: unknown field 'activaton'; did you mean 'activation'?",
        "optimizer: unknown optimizer 'adamm'; did you mean 'adam'?",
        "optimizer: 'lr' must be a number > 0, got -1"]


def test_a_missing_or_unknown_type_is_checked_as_the_type_its_fields_fit():
    """A mapping without its type, or with a type no name is near, hid its other errors until
    the type was fixed; when its fields fit one type, they are checked as that type's."""
    text = ("model:\n  input_shape: [2]\n  layers:\n"
            "    - {units: -8, bogus: 1}\n    - {type: zzz, units: 0}\n"
            "    - {filters: 2, kernel_size: 3}\n    - {type: dense, units: 2}\n"
            "optimizer: {lr: -1, momentum: 0.9}\n")
    assert [line.split(": error: ")[1] for line in _load_errors(text)] == [
        "model.layers[0]: missing required field 'type'; its fields are those of 'dense': "
        "add type: dense",
        "model.layers[0]: 'units' must be an integer ≥ 1, got -8",
        "model.layers[0]: unknown field 'bogus'",
        "model.layers[1]: unknown layer type 'zzz'; its fields are those of 'dense': set "
        "type: dense",
        "model.layers[1]: 'units' must be an integer ≥ 1, got 0",
        "model.layers[2]: missing required field 'type'; its fields fit 'conv1d', 'conv2d', "
        "'conv1d_transpose' or 'conv2d_transpose': add the one meant",
        "optimizer: missing required field 'type'; its fields fit 'sgd' or 'rmsprop': "
        "add the one meant"]


def test_a_misspelt_type_key_is_read_as_its_type_for_the_other_errors():
    text = "model:\n  input_shape: [2]\n  layers:\n    - {tyep: dense, units: -3}\n"
    assert [line.split(": error: ")[1] for line in _load_errors(text)] == [
        "model.layers[0]: unknown field 'tyep'; did you mean 'type'?",
        "model.layers[0]: 'units' must be an integer ≥ 1, got -3"]


def test_a_layers_name_is_not_read_as_a_misspelt_type():
    """The mutation fuzz: `{name: hid, tipe: dense}` was told "unknown field 'name'; did you
    mean 'type'?" (Keras calls an optimizer's type its name), and `{name: a, units: 10}` the
    same, where every layer has a name."""
    text = ("model:\n  input_shape: [4]\n  layers:\n    - {name: hid, tipe: dense, units: -3}\n"
            "    - {name: a, units: 10}\n")
    assert _load_errors(text) == [
        "spec.yaml:4:19: error: model.layers[0]: unknown field 'tipe'; did you mean 'type'?",
        "spec.yaml:4:39: error: model.layers[0]: 'units' must be an integer ≥ 1, got -3",
        "spec.yaml:5:7: error: model.layers[1]: missing required field 'type'; its fields are "
        "those of 'dense': add type: dense"]
    # where no type has a name field, it stands for the type still
    assert "optimizer: unknown field 'name'; did you mean 'type'?" in _load_errors(
        "model:\n  input_shape: [2]\n  layers: [{type: dense, units: 2}]\noptimizer: "
        "{name: adam}\n")[0]


def test_a_layer_among_the_augmentations_and_the_reverse_are_told_their_list():
    """The mutation fuzz: a conv2d line moved into data.augment was told "its fields are those
    of 'random_crop': set type: random_crop", then four errors of random_crop's fields."""
    text = ("data:\n  augment:\n    - {type: conv2d, filters: 8, "
            "kernel_size: 3, padding: same}\nmodel:\n  layers:\n    - {type: random_flip}\n"
            "    - {type: flatten}\n    - {type: dense, units: 10}\n")
    assert [line.split(": error: ")[1] for line in _load_errors(text)] == [
        "data.augment[0]: unknown augmentation 'conv2d'; conv2d is a layer: it belongs in "
        "model.layers",
        "model.layers[0]: unknown layer type 'random_flip'; random_flip is an augmentation: it "
        "belongs in data.augment"]


def test_an_invisible_character_in_a_key_is_named():
    """The mutation fuzz: a zero-width space pasted before `normalize:` gave "unknown field
    '\\u200b  normalize'" with no fix."""
    text = ("data:\n  dataset: digits\n\u200b  normalize: standard\nmodel:\n  layers: "
            "[{type: flatten}, {type: dense, units: 10}]\n")
    assert _load_errors(text) == [
        "spec.yaml:3:1: error: spec: unknown field '\\u200b  normalize'; it holds a zero width "
        "space (U+200B), which YAML reads as a character of the key: remove it"]


@pytest.mark.parametrize("layer", ["{type: maxpool2d, pool_size: 2, padding: same}",
                                   "{type: conv2d_transpose, filters: 2, kernel_size: 3, "
                                   "padding: valid}"])
def test_same_padding_where_padding_is_a_count_says_so(layer):
    """The advice audit: `padding: same` on a pool said only "must be an integer or a list"."""
    text = f"model:\n  input_shape: [1, 8, 8]\n  layers:\n    - {layer}\n    - {{type: flatten}}\n"
    (line,) = _load_errors(text)
    assert "is a convolution's padding, this layer's is a count of positions" in line


def test_an_input_shape_with_the_batch_axis_is_told_to_drop_it():
    """The advice audit: [32, 1, 28, 28] was only "a list of at most 3 entries"."""
    text = ("model:\n  input_shape: [32, 1, 28, 28]\n  layers:\n"
            "    - {type: conv2d, filters: 2, kernel_size: 3}\n")
    (line,) = _load_errors(text)
    assert line.endswith("without the batch axis (train.batch_size sets that): [1, 28, 28]")
    # the follow-the-fix audit: [1, 28, 28, 2] of mnist was told [28, 28, 2], which mnist's
    # samples refuse next
    (line,) = _load_errors("data: {dataset: mnist}\n" + text.replace("32, ", "").replace(
        "28]", "28, 2]"))
    assert line.endswith("input_shape is one sample's shape, and mnist's samples are "
                         "[1, 28, 28]: write that, or leave input_shape out")


@pytest.mark.parametrize("text, said", [
    # a field of the top level under a section, where the top level gives it already
    ("seed: 1\ndata: {dataset: digits, seed: 4}\nmodel: {layers: [{type: dense, units: 10}]}\n",
     "data: unknown field 'seed'; seed is a field of the spec's top level, given there already: "
     "remove this one"),
    # an empty list is no fix where a list needs entries
    ("model: {input_shape: '', layers: [{type: dense, units: 2}]}\n",
     "model: 'input_shape' must be a list, got ''; write its entries as a list, in [ ]"),
])
def test_fixes_that_followed_made_another_error_say_what_clears_it(text, said):
    """The follow-the-fix audit: "write it at the start of a line" made a duplicate key, and
    "write []" a list of no entries, which input_shape, layers and shape refuse."""
    assert _load_errors(text)[0].split(": error: ")[1] == said


def test_pytorch_and_keras_names_are_offered_nnrun_s():
    """The advice audit: out_channels, out_features, kernel_initializer and type: linear had
    no suggestion (and a missing filters or units beside them)."""
    text = ("model:\n  input_shape: [1, 8, 8]\n  layers:\n"
            "    - {type: conv2d, out_channels: 2, kernel_size: 3, kernel_initializer: he_normal}\n"
            "    - {type: flatten}\n    - {type: linear, out_features: 10}\n")
    assert [line.split(": ", 3)[-1] for line in _load_errors(text)] == [
        "unknown field 'out_channels'; did you mean 'filters'?",
        "unknown field 'kernel_initializer'; did you mean 'init'?",
        "unknown layer type 'linear'; did you mean 'dense'?",
        "unknown field 'out_features'; did you mean 'units'?"]
    # torch.cat's dim, Keras's RMSprop rho (the errors audit: no suggestion)
    text = ("model:\n  input_shape: [2]\n  layers:\n    - {type: dense, units: 2, name: a}\n"
            "    - {type: concat, inputs: [a, input], dim: 0}\n"
            "optimizer: {type: rmsprop, rho: 0.9}\n")
    assert [line.split(": ", 3)[-1] for line in _load_errors(text)] == [
        "unknown field 'dim'; did you mean 'axis'?",
        "unknown field 'rho'; did you mean 'alpha'?"]


def test_a_layer_without_its_type_is_read_as_the_type_its_fields_fit_for_later_shapes():
    text = ("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - {type: flatten}\n"
            "    - {units: 4}\n    - {type: conv2d, filters: 3, kernel_size: 3}\n")
    lines = [line.split(": error: ")[1] for line in _load_errors(text)]
    assert lines[0].startswith("model.layers[1]: missing required field 'type'")
    assert lines[1].startswith("model.layers[2] (conv2d_1): conv2d expects a [channels, height, "
                               "width] sample, got shape [4]")


def test_a_type_that_is_not_a_name_is_shown_as_written_not_as_python():
    """`type: null` was "unknown initializer 'None'; did you mean 'ones'?"."""
    from nnrun.compiler.frontend import load_spec_text

    text = ("model:\n  input_shape: [2]\n  init: {type: null}\n  layers:\n"
            "    - {type: ~, units: 2}\n    - {type: {a: 1}}\nloss: {type: 5}\n")
    with pytest.raises(SpecError) as raised:
        load_spec_text(text, "spec.yaml")
    messages = [d.message for d in raised.value.diagnostics]
    assert messages[0].startswith("'type' must be a name, got null; expected one of "
                                  "'xavier_uniform'")
    assert messages[1] == ("'type' must be a name, got null; its fields are those of 'dense': "
                           "set type: dense")
    assert messages[2].startswith("'type' must be a name, got {a: 1}; expected one of 'dense'")
    assert messages[3].startswith("'type' must be a name, got 5; expected one of 'cross_entropy'")
    assert not any("None" in message for message in messages)


# --- the mistakes learners make first (the learners' audit) ---------------------------------

LEARNER = """\
model:
  input_shape: [1, 8, 8]
  layers:
    - Flatten()
    - Dense(64)
    - {type: dense, units:10, activation: None}
    - {type:dense, units: 3, activation: linear}
train:
  metrics: accuracy
  early_stopping: true
data:
  - dataset: digits
"""


def test_learners_first_mistakes_are_told_the_fix_to_write():
    """Fixes that failed when applied as written (did you mean 'dropout' for Dropout(0.5),
    'units' for `units:10`), or none at all (`metrics: accuracy`, `- dataset: digits`)."""
    messages = {line.split(": error: ")[0].removeprefix("spec.yaml:"): line.split(": ", 3)[-1]
                for line in _load_errors(LEARNER)}
    assert messages["4:7"].endswith("a layer is a name or a mapping, not a call: write flatten")
    assert messages["5:7"].endswith("a layer is a mapping, not a call: write {type: dense, "
                                    "units: 64}")
    assert messages["6:21"].endswith("YAML reads 'units:10' as one key: write a space after "
                                     "the colon (units: 10)")
    assert messages["6:43"].endswith("unknown activation 'None'; did you mean 'none'?")
    assert messages["7:7"].startswith("missing required field 'type'; YAML reads 'type:dense'")
    assert messages["7:42"].endswith("did you mean 'identity'?")
    assert messages["9:12"].endswith("'metrics' must be a list, got 'accuracy'; write [accuracy]")
    assert messages["10:19"].endswith("must be a mapping, got true; write its fields under it")
    assert messages["12:3"].endswith("remove the '- ' before its fields: they make a list of "
                                     "one mapping")


# --- anchors, aliases and merges -------------------------------------------------------------

LAYERS = "data: {dataset: digits}\nmodel:\n  layers:\n"


def test_an_error_on_an_anchored_value_points_at_the_value_not_the_anchor():
    """The error audit: `units: &u 0` was reported at `&u`, `- &d {...}` at `&d`. The alias
    that reuses the 0 is where that layer's error is."""
    assert _load_errors(LAYERS + "    - {type: flatten}\n    - {type: dense, units: &u 0}\n"
                        "    - {type: dense, units: *u}\n") == [
        "spec.yaml:5:31: error: model.layers[1]: 'units' must be an integer ≥ 1, got 0",
        "spec.yaml:6:28: error: model.layers[2]: 'units' must be an integer ≥ 1, got 0"]
    assert _load_errors(LAYERS + "    - {type: flatten}\n    - &d {type: dense, activation: relu}"
                        "\n    - {type: dense, units: 10}\n") == [
        "spec.yaml:5:10: error: model.layers[1]: missing required field 'units' (e.g. units: 10)"]


def test_a_duplicate_name_made_by_an_alias_points_at_the_alias():
    """The error audit: the layer `- *c` repeats was reported at the anchored layer's name,
    which is not the one to change."""
    from nnrun.compiler.frontend import check, load_spec_text

    text = (LAYERS + "    - &c {name: c1, type: conv2d, filters: 4, kernel_size: 3, padding: same}"
            "\n    - *c\n    - {type: flatten}\n    - {type: dense, units: 10}\n")
    with pytest.raises(SpecError) as raised:
        check(load_spec_text(text, "spec.yaml"))
    assert [d.format() for d in raised.value.diagnostics] == [
        "spec.yaml:5:7: error: model.layers[1] (c1): layer name 'c1' is used twice "
        "(model.layers[0] has it too); give each layer a unique name"]


@pytest.mark.parametrize("layers, error", [
    ("    - &conv {type: conv2d, filters: 4, kernal_size: 3}\n    - <<: *conv\n      filters: 8\n",
     "spec.yaml:4:40: error: model.layers[0]: unknown field 'kernal_size'; did you mean "
     "'kernel_size'?"),
    ("    - &a {type: conv2d, filters: 4, kernel_size: 3, padding: same}\n"
     "    - &b {type: conv2d, filters: 4, kernel_size: 3, padding: same, dilaton: 2}\n"
     "    - <<: [*a, *b]\n      name: merged\n",
     "spec.yaml:5:68: error: model.layers[1]: unknown field 'dilaton'; did you mean "
     "'dilation'?"),
    # the loader fuzz: the merging layer's advice differed ("'units' (set already)?")
    ("    - &c {type: conv2d, filterz: 4, kernel_size: 3}\n"
     "    - &e {type: conv2d, filters: 4, kernel_size: 3}\n    - {<<: [*c, *e]}\n",
     "spec.yaml:4:25: error: model.layers[0]: unknown field 'filterz'; did you mean "
     "'filters'?")])
def test_a_typo_in_an_anchor_that_a_merge_reuses_is_reported_once_where_it_is(layers, error):
    """The error audit: one line per layer that merged the typo, the same place and words."""
    text = LAYERS + layers + "    - {type: flatten}\n    - {type: dense, units: 10}\n"
    assert _load_errors(text) == [error]


def test_a_second_merge_key_is_a_duplicate_key():
    """The loader fuzz: the first `<<` won without a word (PyYAML takes the last)."""
    text = (LAYERS + "    - &a {type: conv2d, filters: 4, kernel_size: 3}\n"
            "    - &b {type: conv2d, filters: 2, kernel_size: 3}\n"
            "    - <<: *a\n      <<: *b\n    - {type: flatten}\n    - {type: dense, units: 10}\n")
    assert _load_errors(text) == [
        "spec.yaml:7:7: error: model.layers[2]: duplicate key '<<' (first at line 6)"]


def test_a_column_after_a_zero_width_no_break_space_counts_it_as_editors_do():
    """PyYAML counts no column for U+FEFF; an editor shows one inside a line (the byte-order
    mark that opens a file is no column to either)."""
    inside = 'model:\n  layers: [{type: dense, name: "h\ufeff1", unitz: 4}]\n'
    assert _load_errors(inside)[-1].startswith("spec.yaml:2:39: error: model.layers[0]: "
                                               "unknown field 'unitz'")
    opening = "\ufeffmodel: {layers: [{type: dense, unitz: 4}]}\n"
    assert _load_errors(opening)[-1].startswith("spec.yaml:1:32: error: ")
    # and it takes PyYAML's own count: recounting every node's column is for a U+FEFF inside
    # (the review: a spec saved with a byte-order mark loaded three times slower)
    from nnrun.compiler.loader import _has_yaml_11_breaks

    assert not _has_yaml_11_breaks(opening) and _has_yaml_11_breaks(inside)


def test_diagnostics_of_the_same_place_and_message_are_said_once():
    first = Diagnostic("spec.yaml", 4, 40, "error", "model.layers[0]", "unknown field 'x'")
    again = Diagnostic("spec.yaml", 4, 40, "error", "model.layers[1]", "unknown field 'x'")
    elsewhere = Diagnostic("spec.yaml", 5, 7, "error", "model.layers[1]", "unknown field 'x'")
    assert SpecError([first, again, elsewhere]).diagnostics == [first, elsewhere]
    assert format_diagnostics([first, again]) == first.format()
    # a --set argument is one place for all it sets: its layers' errors are all said
    set_twice = [Diagnostic("--set", 2, 1, "error", f"model.layers[{index}]",
                            f"unknown field 'unitz'; {advice}")
                 for index, advice in ((1, "did you mean 'units' (set already)?"),
                                       (2, "did you mean 'units'?"))]
    assert SpecError(set_twice).diagnostics == set_twice


@pytest.mark.parametrize("text, position, message", [
    ("data: {dataset: digits}\t# comment\n", "1:24", "a tab between tokens"),
    ("model:\n  layers:\n    - type: dense\n      units:\t0\n", "4:13", "a tab between tokens"),
    ("model:\n  layers:\n    - {type: dense,\tunits: 10}\n", "3:20", "a tab between tokens"),
    ("seed: 0\t\n", "1:8", "a tab at the end of the line"),
])
def test_a_tab_outside_the_indentation_is_not_blamed_on_indentation(text, position, message):
    """The error audit: every tab was told 'YAML indents with spaces only', also one before a
    comment or after a colon, where YAML 1.2 readers take it as a space."""
    fix = "remove it" if "end of the line" in message else "replace it with a space"
    assert _load_errors(text) == [
        f"spec.yaml:{position}: error: spec: invalid YAML: {message}, which PyYAML (the YAML 1.1 "
        f"reader nnrun uses) refuses, though YAML 1.2 editors may accept it; {fix}"]


def test_a_tab_in_the_indentation_is_named_as_indentation():
    assert _load_errors("model:\n  layers:\n \t- {type: flatten}\n") == [
        "spec.yaml:3:2: error: spec: invalid YAML: found character '\\t' that cannot start any "
        "token; YAML indents with spaces only: replace the tabs"]


def test_a_refused_value_an_alias_reuses_is_one_error_where_it_is_written():
    """Placing the alias's value at the alias would have reported the refused (None) units
    again there, as 'must be an integer, got null'."""
    text = (LAYERS + "    - {type: flatten}\n    - {type: dense, units: &u !!python/object:x 1}\n"
            "    - {type: dense, units: *u}\n")
    assert _load_errors(text) == [
        "spec.yaml:5:31: error: model.layers[1].units: tag '!!python/object:x' is not allowed: "
        "specs never build Python objects"]


@pytest.mark.parametrize("layer, said", [
    ("{type: global_maxpool, init: he_normal}", "unknown field 'init'; global_maxpool has no "
     "init, a field of dense, conv1d, conv2d, conv1d_transpose and conv2d_transpose: remove it"),
    ("{type: flatten, units: 4}", "unknown field 'units'; flatten has no units, a field of "
     "dense: remove it"),
    ("{type: maxpool2d, pool_size: 2, activation: {type: leaky_relu, alpha: 0.1}}",
     "unknown field 'activation'; maxpool2d has no activation: remove it, and add {type: "
     "leaky_relu, alpha: 0.1} as a layer after it"),
    ("{type: upsample2d, scale: 2, padding_mode: reflect}", "unknown field 'padding_mode'; "
     "upsample2d has no padding_mode, a field of conv1d and conv2d: remove it"),
    # whatever the value (a Keras name, a typo, one no layer takes): no misspelt inputs
    ("{type: global_maxpool, init: glorot_uniform}", "unknown field 'init'; global_maxpool has "
     "no init, a field of dense, conv1d, conv2d, conv1d_transpose and conv2d_transpose: remove "
     "it"),
    ("{type: flatten, units: -4}", "unknown field 'units'; flatten has no units, a field of "
     "dense: remove it"),
    ("{type: maxpool2d, pool_size: 2, activation: none}", "unknown field 'activation'; "
     "maxpool2d has no activation: remove it"),
    ("{type: conv2d, filters: 2, kernel_size: 3, mode: bilinear}", "unknown field 'mode'; conv2d "
     "has no mode, a field of upsample1d and upsample2d: remove it"),
    # a counterpart of the layer's own
    ("{type: maxpool2d, kernel_size: 2}", "unknown field 'kernel_size'; did you mean "
     "'pool_size'?"),
    ("{type: conv2d, filters: 2, kernel_size: 3, mode: reflect}", "unknown field 'mode'; did "
     "you mean 'padding_mode'?"),
])
def test_a_field_of_other_layers_says_whose_it_is_and_nothing_made_up(layer, said):
    """`init: he_normal` on a global_maxpool was told "did you mean 'inputs'?", and the
    repaired copy read it as inputs: a second error, "inputs: unknown layer 'he_normal'"."""
    from nnrun.compiler.frontend import load_spec_text

    text = ("data: {dataset: digits}\nmodel:\n  input_shape: [1, 8, 8]\n  layers:\n"
            f"    - {{type: conv2d, filters: 4, kernel_size: 3}}\n    - {layer}\n"
            "    - {type: flatten}\n    - {type: dense, units: 10}\n")
    with pytest.raises(SpecError) as raised:
        load_spec_text(text, "spec.yaml")
    lines = [d.format() for d in raised.value.diagnostics]
    assert len(lines) == 1 and lines[0].endswith(f"model.layers[1]: {said}"), lines


def test_a_shape_error_in_a_branch_the_output_does_not_read_hides_no_check_of_the_outputs():
    """A conv too large for its input in a dead branch hid the 5 outputs against digits' 10
    classes until it was fixed; the branch's shaped layer is warned of as unread."""
    text = ("data: {dataset: digits}\nmodel:\n  input_shape: [1, 8, 8]\n  layers:\n"
            "    - {name: a, type: conv2d, filters: 2, kernel_size: 3, inputs: input}\n"
            "    - {name: dead, type: conv2d, filters: 2, kernel_size: 9, inputs: a}\n"
            "    - {type: flatten, inputs: a}\n    - {type: dense, units: 5}\n")
    errors = _check_errors(text)
    assert [(d.line, d.where) for d in errors] == [
        (6, "model.layers[1] (dead)"), (8, "model.layers[3] (dense_1)")]
    assert "kernel_size" in errors[0].message and "10 classes" in errors[1].message
    shaped = text.replace("kernel_size: 9", "kernel_size: 3")
    assert [(d.line, d.where) for d in _check_errors(shaped)] == [
        (8, "model.layers[3] (dense_1)")]


@pytest.mark.parametrize("layer, said", [
    ("{type: dropout, dropout: 0.2}", "unknown field 'dropout'; dropout takes its value as "
                                      "rate: write rate: 0.2"),
    ("{type: dense, dense: 10}", "unknown field 'dense'; dense takes its value as units: "
                                 "write units: 10"),
    ("{type: maxpool2d, maxpool2d: 2}", "unknown field 'maxpool2d'; maxpool2d takes its value "
                                        "as pool_size: write pool_size: 2"),
])
def test_a_layers_value_given_under_its_type_is_told_the_field(layer, said):
    """The mutation fuzz: `{type: dropout, dropout: 0.2}` (Keras' Dropout(0.2)) was told
    "'dropout' must be Field required or Extra inputs are not permitted": the type pydantic
    puts in an error's location was read as the layer's key of that name."""
    from nnrun.compiler.frontend import load_spec_text

    text = f"model:\n  input_shape: [1, 8, 8]\n  layers:\n    - {layer}\n"
    (error,) = _load_errors(text)
    assert error.endswith(said)
    key = layer.split(", ")[1].split(":")[0]
    load_spec_text(text.replace(f"{key}:", said.rsplit("write ", 1)[1].split(":")[0] + ":"),
                   "spec.yaml")  # the fix loads


def test_a_convolution_given_its_filters_under_its_type_is_still_told_its_kernel_size():
    text = ("model:\n  input_shape: [1, 8, 8]\n  init: {type: constant, constant: 0.5}\n"
            "  layers:\n    - {type: conv2d, conv2d: 4}\n    - {type: dense, units: 2, dense: 3}\n"
            "    - {type: conv2d, filters: 4, conv2d: 3}\n")
    assert [error.split(": ", 3)[-1] for error in _load_errors(text)] == [
        "unknown field 'constant'; constant takes its value as value: write value: 0.5",
        "missing required field 'kernel_size' (e.g. kernel_size: 3)",
        "unknown field 'conv2d'; conv2d takes its value as filters: write filters: 4",
        "unknown field 'dense'",
        # the review: the field it stands for is there, so the one missing is said
        "missing required field 'kernel_size' (e.g. kernel_size: 3)", "unknown field 'conv2d'"]


@pytest.mark.parametrize("text, said", [
    ("data:\n  dataset: digits\n  input_shape: [1, 8, 8]\n  init: he_uniform\n",
     "data: unknown field 'init'; it is a field of model: set model.init"),
    ("init: he_uniform\n", "spec: unknown field 'init'; it belongs in the model section: indent "
                           "it under model:"),
    ("data: {name: mnist1d}\n", "data: unknown field 'name'; did you mean 'dataset'?"),
    ("optimizer: {name: adam}\n", "optimizer: unknown field 'name'; did you mean 'type'?"),
    ("loss: {type: MSELoss}\n", "loss: unknown loss 'MSELoss'; did you mean 'mse'?"),
    ("loss: {type: BCEWithLogitsLoss}\n",
     "loss: unknown loss 'BCEWithLogitsLoss'; did you mean 'binary_cross_entropy'?"),
])
def test_a_field_of_one_section_or_another_frameworks_name_is_told_what_is_meant(text, said):
    """The mutation fuzz: `init` under data (its `model:` line deleted) was offered data's
    `limit`, at the top `limits`, though model has an init (and layers do: outside a layer,
    model's is meant); TFDS' `name: mnist1d` was told to move to the top level; PyTorch's loss
    classes but CrossEntropyLoss were offered nothing."""
    errors = _load_errors(text + "model:\n  input_shape: [4]\n  layers: [{type: dense, "
                                 "units: 1}]\n")
    assert any(error.endswith(said) for error in errors), errors


@pytest.mark.parametrize("data", ["data: {validation_split: 0.1}\n", "data: {}\n"])
def test_a_broken_hidden_layer_is_not_told_of_the_default_datasets_classes(data):
    """The field walk: with data naming no dataset (digits, by default), the layers kept
    before a broken one were checked against digits' labels under a stand-in mse, the first
    of them called the model's end ("the model ends with 64 outputs ... one-hot targets under
    mse")."""
    text = (f"{data}model:\n  layers:\n    - {{type: flatten}}\n"
            "    - {type: dense, units: 32, activation: rellu}\n    - {type: dense, units: 10}\n")
    (error,) = _load_errors(text)
    assert error.endswith("unknown activation 'rellu'; did you mean 'relu'?")


def test_a_value_just_past_1_is_not_offered_as_a_percentage():
    """The field walk: `rate: 1.5` was told `write 0.015 for 1.5%`, more likely 0.15."""
    text = "model:\n  input_shape: [4]\n  layers: [{type: dropout, rate: 1.5}]\n"
    (error,) = _load_errors(text)
    assert error.endswith("'rate' must be a number < 1, got 1.5")


@pytest.mark.parametrize("data, said", [
    ("data:\n  validation_split: 0.1\n", True), ("data:\n  dataset: digits\n", False)])
def test_errors_of_the_default_dataset_say_that_none_was_named(data, said):
    """The mutation fuzz: a deleted `dataset: mnist` line was told to use digits' [1, 8, 8]
    (which trained on digits without a word) with no sign that digits was only the default."""
    note = ("(data names no dataset, so the default, digits, is read; set data.dataset to the "
            "data meant)")
    shape = f"{data}model:\n  input_shape: [1, 28, 28]\n  layers: [{{type: flatten}}, " \
            "{type: dense, units: 10}]\n"
    classes = f"{data}model:\n  layers: [{{type: flatten}}, {{type: dense, units: 4}}]\n"
    # a layer that does not fit the default's samples (the second mutation fuzz: a kernel 9
    # on digits' 8x8, said with no word of digits)
    kernel = f"{data}model:\n  layers: [{{type: conv2d, filters: 2, kernel_size: 9}}, " \
             "{type: flatten}, {type: dense, units: 10}]\n"
    reshape = f"{data}model:\n  layers: [{{type: reshape, shape: [3, 3]}}, {{type: flatten}}, " \
              "{type: dense, units: 10}]\n"
    for text in (shape, classes, kernel, reshape):
        (error,) = _check_errors(text)
        assert error.message.endswith(note) == said, error.message
    # not at a layer the data's shape is not to blame for (the review: an add of branches of
    # 10 and 5 units was told of the default dataset)
    branches = f"{data}model:\n  layers: [{{type: flatten}}, {{name: a, type: dense, units: " \
               "10}, {name: b, type: dense, units: 5, inputs: a}, {type: add, inputs: [a, b]}]\n"
    (error,) = _check_errors(branches)
    assert not error.message.endswith(note), error.message


@pytest.mark.parametrize("layers, fix", [
    ("{type: dense, units: 64, activation: relu}",
     "set units: 10, and remove its relu activation (cross_entropy applies its own softmax)"),
    ("{type: dense, units: 64}, {type: tanh}",
     "set units: 10, and remove the tanh layer after it (cross_entropy applies its own "
     "softmax)"),
    ("{type: dense, units: 64, activation: softmax}", "set units: 10"),
])
def test_a_class_count_fix_takes_away_an_activation_the_loss_applies_itself(layers, fix):
    """The mutation fuzz: `set units: 10` on a relu layer led straight to the warning that the
    relu before cross_entropy must go."""
    from nnrun.compiler.frontend import check, load_spec_text

    text = f"data: {{dataset: digits}}\nmodel:\n  layers: [{{type: flatten}}, {layers}]\n"
    (error,) = _check_errors(text)
    assert error.message.endswith(f"has 10 classes; {fix}")
    fixed = text.replace("units: 64", "units: 10").replace(", activation: relu", "") \
        .replace(", {type: tanh}", "")
    assert check(load_spec_text(fixed, "spec.yaml")).diagnostics == []  # no warning either


def test_a_misspelt_input_shape_is_read_as_meant_for_the_shape_checks():
    """The mutation fuzz: `input_shpe: [4]` was told its did-you-mean and that
    model.input_shape is needed, a second error of the same slip; read as the input_shape it
    misspells, the layers' own errors are said (a value input_shape does not take is not)."""
    text = ("model:\n  input_shpe: [4]\n  layers: [{type: dense, units: 2}, "
            "{type: conv2d, filters: 2, kernel_size: 3}]\n")
    errors = _load_errors(text)
    assert len(errors) == 2
    assert errors[0].endswith("unknown field 'input_shpe'; did you mean 'input_shape'?")
    assert "conv2d expects a [channels, height, width] sample, got shape [2]" in errors[1]
    wrong = text.replace("input_shpe: [4]", "inti: 5\n  input_shape: [4]")
    errors = _load_errors(wrong)
    assert errors[0].endswith("unknown field 'inti'; did you mean 'init'?")
    assert "conv2d expects" in errors[1]


def test_a_list_is_offered_only_where_the_list_would_be_taken():
    """The mutation fuzz: `bias: cuda` was told `write [cuda]`, then that bias[0] must be a
    number."""
    text = "model:\n  input_shape: [4]\n  layers: [{type: dense, units: 2, bias: cuda}]\n"
    (error,) = _load_errors(text)
    assert error.endswith("'bias' must be a list, got 'cuda'")
    listed = "train: {metrics: accuracy}\nmodel:\n  input_shape: [4]\n  layers: [{type: dense}]\n"
    assert any(e.endswith("got 'accuracy'; write [accuracy]") for e in _load_errors(listed))


@pytest.mark.parametrize("text, said", [
    ("optimizer: {type: adam}\ntrain: {momentum: 0.9}\n",
     "train: unknown field 'momentum'; it is a field of optimizer of type sgd or rmsprop, and "
     "this spec's is adam: remove it"),
    ("loss: {type: cross_entropy}\nlimits: {delta: 1}\n",
     "limits: unknown field 'delta'; it is a field of loss of type huber, and this spec's is "
     "cross_entropy: remove it"),
    ("optimizer: {type: sgd, lr: 0.1}\ntrain: {lr: 0.1}\n",
     "train: unknown field 'lr'; it is a field of optimizer: set optimizer.lr"),
    ("data:\n  dataset: digits\n  augment:\n    - {type: random_flip, mode: horizontal}\n",
     "data.augment[0]: unknown field 'mode'"),
    ("model:\n  init: {type: he_uniform, std: 0.1}\n",
     "model.init: unknown field 'std'; he_uniform has no std, a field of normal: remove it"),
    ("optimizer: {type: adam, schedule: none}\n",
     "optimizer: unknown schedule 'none'; for a learning rate that does not change, write "
     "'constant'"),
])
def test_a_field_of_another_section_is_sent_only_where_that_sections_type_has_it(text, said):
    """The second mutation fuzz: momentum under train with an adam optimizer was told to be
    set as optimizer.momentum (then: did you mean beta1?); an augmentation's mode was sent to
    train.early_stopping.mode; `schedule: none` was offered cosine."""
    errors = _load_errors(text + "model:\n  input_shape: [4]\n  layers: [{type: dense, "
                                 "units: 1}]\n" if "model:" not in text else
                          text.replace("model:\n", "model:\n  input_shape: [4]\n  layers: "
                                                   "[{type: dense, units: 1}]\n"))
    assert any(error.endswith(said) for error in errors), errors


def test_a_misspelt_section_is_read_as_meant_for_the_checks_after_it():
    """The second mutation fuzz: `lsos: binary_cross_entropy` on xor's one output was first
    told to set units: 2 (under the default cross_entropy), which trains another loss."""
    text = ("data: {dataset: xor}\nmodel:\n  input_shape: [2]\n  layers:\n"
            "    - {type: dense, units: 1}\nlsos: binary_cross_entropy\n")
    (error,) = _load_errors(text)
    assert error.endswith("unknown field 'lsos'; did you mean 'loss'?")
    wrong = text.replace("binary_cross_entropy", "{type: nonsense}")  # not a loss: left out
    assert len(_load_errors(wrong)) == 2


@pytest.mark.parametrize("stopping, said", [
    ("{monitor: val_accuracy, mode: min}",
     "mode: min takes the epoch of the lowest val_accuracy, which improves upwards: the worst "
     "epoch would be kept as the best; use mode: max, or leave mode out (auto)"),
    ("{monitor: val_loss, mode: max}",
     "mode: max takes the epoch of the highest val_loss, which improves downwards: the worst "
     "epoch would be kept as the best; use mode: min, or leave mode out (auto)"),
    ("{monitor: val_accuracy, min_delta: 5}",
     "min_delta 5 on val_accuracy, a fraction from 0 to 1: no epoch can improve by it; for 5% "
     "write 0.05"),
    ("{monitor: val_loss, min_delta: 5, mode: min}", None),
    ("{monitor: val_accuracy, mode: max, min_delta: 0.01}", None),
])
def test_early_stopping_that_keeps_the_worst_epoch_is_warned_of(stopping, said):
    """The second mutation fuzz: `mode: min` on val_accuracy validated, and training kept
    epoch 1 (0.22) as the best; `min_delta: 5` (5% meant) let no epoch improve."""
    from nnrun.compiler.frontend import check, load_spec_text

    text = ("data: {dataset: digits, validation_split: 0.2}\nmodel:\n  layers: [{type: flatten}, "
            f"{{type: dense, units: 10}}]\ntrain: {{epochs: 5, early_stopping: {stopping}}}\n")
    found = [d.message for d in check(load_spec_text(text, "spec.yaml")).diagnostics
             if "early_stopping" in d.where]
    assert found == ([said] if said else [])


@pytest.mark.parametrize("text, said", [
    ("optimizer: {type: adam, betas: [0.9, 0.99]}\n",
     "optimizer: unknown field 'betas'; nnrun names them apart: write beta1: 0.9 and beta2: "
     "0.99"),
    ("optimizer: {type: adam, beta2: 0.99, beat: 0.9}\n",
     "optimizer: unknown field 'beat'; did you mean 'beta1'?"),
    ("data: {dataset: digits, max_samples: 300}\n",
     "data: unknown field 'max_samples'; did you mean 'limit'?"),
    ("data:\n  dataset: digits\n  augment: [{type: random_translation, max_shift: 1}]\n",
     "unknown augmentation 'random_translation'; did you mean 'random_shift'?"),
    ("train: {pruning: {type: magnitude, target_sparsity: 0.5, begin_epoch: 1, end_epoch: 2}}\n",
     "unknown field 'begin_epoch'; did you mean 'start_epoch'?"),
])
def test_other_frameworks_names_and_near_names_get_the_field_meant(text, said):
    """The second mutation fuzz: PyTorch's betas were offered beta1 (then: must be a number);
    `beat` beside beta2 got 'beta2 (set already)' though beta1 was unset; max_samples got
    n_samples, random_translation random_rotation, begin_epoch end_epoch."""
    errors = _load_errors(text + "model:\n  input_shape: [1, 8, 8]\n  layers: [{type: flatten}, "
                                 "{type: dense, units: 10}]\n")
    assert any(error.endswith(said) for error in errors), errors


def test_a_batch_size_past_the_training_samples_is_planned_at_the_samples():
    """The second mutation fuzz: xor's 200 samples at batch_size 100000000 were warned to need
    73 GB and refused by train, though each epoch is one step on all of them."""
    from nnrun.compiler.frontend import check, load_spec_text

    text = ("data: {dataset: xor}\nmodel:\n  input_shape: [2]\n  layers: [{type: dense, units: "
            "64, activation: tanh}, {type: dense, units: 1}]\nloss: binary_cross_entropy\n"
            "train: {epochs: 1, batch_size: 100000000}\n")
    checked = check(load_spec_text(text, "spec.yaml"))
    # xor's 200 less the 40 of its test split (the design audit: the splits were left in)
    assert checked.summary.batch_size == 160 and checked.summary.train_memory_bytes < 2**20
    limited = text.replace("{dataset: xor}", "{dataset: xor, limit: 20}")
    assert check(load_spec_text(limited, "spec.yaml")).summary.batch_size == 20
    npz = text.replace("{dataset: xor}", "{dataset: npz, path: d.npz}")  # unknown before load
    assert check(load_spec_text(npz, "spec.yaml")).summary.batch_size == 100000000


def test_train_takes_a_batch_size_past_the_training_samples(tmp_path):
    import nnrun

    spec = {"data": {"dataset": "xor"}, "model": {"input_shape": [2], "layers": [
        {"type": "dense", "units": 1}]}, "loss": "binary_cross_entropy",
        "train": {"epochs": 1, "batch_size": 100000000}}
    summary = nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    assert summary["epochs_run"] == 1


@pytest.mark.parametrize("text, said", [
    ("train: {epochs: 1, beta1: 0.9}\n",
     "train: unknown field 'beta1'; it is a field of optimizer of type adam or adamw, and this "
     "spec's is sgd (by default): remove it"),
    ("train: {epochs: 1, pruning: {type: magnitude, magnitude: 0.5}}\n",
     "train.pruning: unknown field 'magnitude'; magnitude takes its value as target_sparsity: "
     "write target_sparsity: 0.5"),
    ("optimizer: {type: adam, beta1: 0.8, betas: [0.9, 0.99]}\n",
     "optimizer: unknown field 'betas'; did you mean 'beta1'? It is set already: remove 'betas', "
     "or give its value to beta1"),
])
def test_the_second_reviews_field_cases(text, said):
    """A section the spec leaves out is of its default type (sgd: beta1 sent there was then
    'did you mean momentum'); a model with a type of its own (pruning) has no tag in its
    errors' locations (`magnitude: 0.5` was said as an unknown 'pruning'); betas beside beta1
    is not told to write beta1 again."""
    errors = _load_errors(text + "model:\n  input_shape: [4]\n  layers: [{type: dense, "
                                 "units: 1}]\n")
    assert any(error.endswith(said) for error in errors), errors
    assert not any("unknown field 'pruning'" in error for error in errors)


@pytest.mark.parametrize("overrides, said", [
    (["optimizer.beta1=0.9"], "unknown field 'beta1'; sgd (by default) has no beta1, a field of "
                              "adam and adamw: set optimizer.type to adam or adamw too"),
    (["loss.delta=1"], "unknown field 'delta'; cross_entropy (by default) has no delta, a field "
                       "of huber: set loss.type to huber too"),
    # a type set by the user is not the default's, even where it is the same
    (["optimizer.type=sgd", "optimizer.beta1=0.9"],
     "unknown field 'beta1'; did you mean 'momentum'? (beta1 is a field of adam and adamw)"),
])
def test_an_override_into_a_section_left_out_names_its_default_type(overrides, said):
    """`--set optimizer.beta1=0.9` on a spec without an optimizer builds sgd's (the default):
    it was told sgd's momentum, as if the user had written sgd; the fix is the type too, and it
    clears the error given in either order."""
    text = "model:\n  input_shape: [4]\n  layers: [{type: dense, units: 2}]\n"
    (error,) = _load_errors(text, overrides)
    assert error.endswith(said), error
    from nnrun.compiler.frontend import load_spec_text

    if "too" in said:
        path = overrides[0].split(".")[0]
        kind = said.split(" to ")[-1].split()[0]
        for fixed in ([*overrides, f"{path}.type={kind}"], [f"{path}.type={kind}", *overrides]):
            load_spec_text(text, "spec.yaml", fixed)


def test_a_dilation_and_padding_both_past_the_input_get_a_fix_that_clears_the_warning():
    """The second review: padding 8 at dilation 7 over 6 positions was told padding: 7 or
    less, which left the taps stepping over the input (143 of 2,767 geometries)."""
    text = ("model:\n  input_shape: [1, 6]\n  layers:\n    - {type: conv1d, filters: 2, "
            "kernel_size: 2, dilation: 7, padding: 8}\n    - {type: flatten}\n"
            "    - {type: dense, units: 3}\n")
    from nnrun.compiler.frontend import check, load_spec_text

    (warning,) = [d for d in check(load_spec_text(text, "spec.yaml")).diagnostics
                  if "read only padding" in d.message]
    assert warning.message.endswith("use dilation: 6 with padding: 6 or less")
    fixed = text.replace("dilation: 7, padding: 8", "dilation: 6, padding: 6")
    assert not [d for d in check(load_spec_text(fixed, "spec.yaml")).diagnostics
                if "padding" in d.message]


def test_mnist_from_a_folder_of_the_users_is_planned_at_the_batch_size():
    from nnrun.compiler.datasets import largest_step_batch
    from nnrun.compiler.frontend import load_spec_text

    text = ("data: {dataset: mnist}\nmodel:\n  layers: [{type: flatten}, {type: dense, units: "
            "10}]\ntrain: {batch_size: 65000}\n")
    assert largest_step_batch(load_spec_text(text, "spec.yaml").spec) == 60000
    folder = text.replace("{dataset: mnist}", "{dataset: mnist, path: idx}")
    assert largest_step_batch(load_spec_text(folder, "spec.yaml").spec) == 65000


@pytest.mark.parametrize("dataset, meant", [("mnist", "limit"), ("xor", "n_samples"),
                                            ("digits", "limit")])
def test_a_near_name_in_data_is_a_field_its_dataset_takes(dataset, meant):
    """The third review: num_samples on mnist was offered n_samples, which mnist refuses."""
    text = (f"data: {{dataset: {dataset}, num_samples: 100}}\nmodel:\n  input_shape: [2]\n"
            "  layers: [{type: dense, units: 2}]\n")
    assert any(e.endswith(f"unknown field 'num_samples'; did you mean '{meant}'?")
               for e in _load_errors(text))


@pytest.mark.parametrize("loss, dataset, warned", [
    ("{type: cross_entropy, ignore_index: 3}", "digits", True),
    ("{type: cross_entropy, ignore_index: -100}", "digits", False),
    ("{type: cross_entropy, ignore_index: 10}", "digits", False),  # beside the classes
    ("{type: binary_cross_entropy, ignore_index: 1}", "xor", True),
])
def test_ignore_index_naming_a_class_of_the_dataset_is_warned(loss, dataset, warned):
    """ignore_index: 3 on digits drops the class silently: legitimate for a label beside the
    classes (255 on masks), not for one of them."""
    from nnrun.compiler.frontend import check, load_spec_text

    units, shape = (10, "") if dataset == "digits" else (1, "  input_shape: [2]\n")
    text = (f"data: {{dataset: {dataset}}}\nmodel:\n{shape}  layers: [{{type: flatten}}, "
            f"{{type: dense, units: {units}}}]\nloss: {loss}\n")
    found = [d for d in check(load_spec_text(text, "spec.yaml")).diagnostics
             if "ignore_index" in d.message]
    assert bool(found) == warned, found
    if warned:
        loss_line = text.splitlines().index(f"loss: {loss}") + 1
        assert found[0].line == loss_line and "never learns that class" in found[0].message


@pytest.mark.parametrize("data, loss", [
    ("{dataset: digits}", "crossentropy"),
    ("{dataset: digts}", "cross_entropy"),
    ("{dataset: digits}", "{type: crossentropy, label_smoothing: 0.1}"),
])
def test_a_misspelt_loss_or_dataset_does_not_hide_the_output_check(data, loss):
    """`loss: crossentropy` (or `dataset: digts`) with 12 outputs for digits' 10 classes was
    told only the misspelling; the output error came one fix later. The name is read as its
    did-you-mean for the checks behind it."""
    text = (f"data: {data}\nmodel:\n  layers: [{{type: flatten}}, {{type: dense, units: 12}}]\n"
            f"loss: {loss}\n")
    errors = _load_errors(text)
    assert any("did you mean" in error for error in errors), errors
    assert any(error.endswith("the model ends with 12 outputs but dataset 'digits' has 10 "
                              "classes; set units: 10") for error in errors), errors
    unknown = _load_errors(text.replace("crossentropy", "bogusloss").replace("digts", "zzzz"))
    assert not any("12 outputs" in error for error in unknown)  # no name to read it as


def test_a_data_path_without_a_dataset_is_told_the_dataset_its_file_is():
    """The docs audit: `data: {path: d.npz}` was told "data.path applies to datasets read from
    files ..., not 'digits'; remove it": digits was the default, and the path was meant."""
    (error, *_) = _load_errors("data: {path: d.npz}\nmodel:\n  input_shape: [2]\n  layers: "
                               "[{type: dense, units: 2}]\n")
    assert error.endswith("not 'digits' (also what data naming no dataset reads); set "
                          "data.dataset: npz, or remove the path"), error
    (error, *_) = _load_errors("data: {dataset: spirals, noise: 0.1, path: d.csv}\nmodel:\n"
                               "  input_shape: [2]\n  layers: [{type: dense, units: 2}]\n")
    assert error.endswith("not 'spirals'; remove it"), error


def test_a_schema_error_hides_no_check_of_input_shape_against_the_data_file(tmp_path):
    """The follow-the-fix audit: an optimizer's typo hid that input_shape [4] did not match
    the csv's 2 columns, said only once the typo was fixed."""
    from nnrun.compiler.frontend import load_spec

    (tmp_path / "d.csv").write_text("a,b,label\n0,0,0\n0,1,0\n1,0,0\n1,1,1\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text("data: {dataset: csv, path: d.csv}\nmodel:\n  input_shape: [4]\n  layers: "
                    "[{type: dense, units: 1}]\nloss: binary_cross_entropy\n"
                    "optimizer: {type: sgd, lrr: 0.1}\n")
    with pytest.raises(SpecError) as raised:
        load_spec(spec)
    assert [(d.line, d.message.split(";")[0]) for d in raised.value.diagnostics] == [
        (3, "input_shape [4] does not match the samples of d.csv, [2]"),
        (6, "unknown field 'lrr'")]


@pytest.mark.parametrize("text, misplaced", [
    ("data: {dataset: xor}\nmodel:\nlayers: [{type: dense, units: 2}]\n", ["layers"]),
    ("data: {dataset: xor}\nmodel:\nlayers: [{type: dense, units: 2}]\ninput_shape: [2]\n",
     ["layers", "input_shape"]),
    ("data: {dataset: xor}\nmodel:\n  input_shape: [2]\nlayers: [{type: dense, units: 2}]\n",
     ["layers"]),
    ("data:\n  dataset: npz\npath: d.npz\nmodel: {input_shape: [2], layers: [{type: dense, "
     "units: 2}]}\n", ["path"]),
])
def test_a_key_out_of_its_section_is_one_error_not_its_sections_too(text, misplaced):
    """The mutation audit: `layers:` dedented under an empty `model:` was also told "'model'
    must be a mapping, got null" (or model's missing layers, data's missing path), a line
    the key's own fix clears."""
    lines = _load_errors(text)
    assert [line.split("unknown field ")[1].split("'")[1] for line in lines] == misplaced, lines
    assert all("it belongs in the " in line for line in lines)


@pytest.mark.parametrize("layer, said", [
    ("{type: maxpool2d, pool_size: 2, ceil_mode: true}",
     "nnrun's maxpool2d has no ceil_mode: it computes PyTorch's ceil_mode=False (pools take the "
     "floor), not ceil_mode=True; remove it"),
    ("{type: conv2d, filters: 2, kernel_size: 1, groups: 2}",
     "nnrun's conv2d has no groups: it computes PyTorch's groups=1 (grouped and depthwise "
     "convolutions have no spec form), not groups=2; remove it"),
    ("{type: avgpool2d, pool_size: 2, count_include_pad: true}",
     "nnrun's avgpool2d computes PyTorch's default (count_include_pad=True) and has no field "
     "for it: remove it"),
    ("{type: upsample2d, mode: bilinear, align_corners: true}",
     "it computes PyTorch's align_corners=False (linear and bilinear upsampling have no other "
     "form), not align_corners=True; remove it"),
    ("{type: batchnorm, affine: false}", "it computes PyTorch's affine=True (batchnorm always "
                                         "learns gamma and beta), not affine=False; remove it"),
    ("{type: batchnorm, track_running_stats: false}", "batchnorm always keeps running "
                                                      "statistics"),
    # the review: PyTorch's None, and a value the loader refuses, were told "not ...=None"
    ("{type: upsample2d, mode: bilinear, align_corners: null}",
     "nnrun's upsample2d computes PyTorch's default (align_corners=False) and has no field for "
     "it: remove it"),
    ("{type: batchnorm, affine: yes}", "(affine=True) and has no field for it: remove it"),
])
def test_pytorch_layer_options_without_a_field_say_what_nnrun_computes(layer, said):
    """The docs audit: spec-reference says validate explains these as it does the optimizers'
    options; they got a bare "unknown field"."""
    lines = _load_errors(f"model: {{input_shape: [1, 6, 6], layers: [{layer}]}}\n")
    assert any(said in line for line in lines), lines  # `yes`: also refused as no boolean


@pytest.mark.parametrize("optimizer, said", [
    ("{type: adamw, amsgrad: false}", "nnrun's adamw computes PyTorch's default (amsgrad=False) "
                                      "and has no field for it: remove it"),
    ("{type: sgd, momentum: 0.9, nesterov: true, dampening: 0}",
     "nnrun's sgd computes PyTorch's default (dampening=0) and has no field for it: remove it"),
    ("{type: rmsprop, centered: true}",
     "nnrun's rmsprop has no centered: it computes PyTorch's centered=False, not centered=True; "
     "remove it"),
    ("{type: adam, fused: true}",
     "fused is how PyTorch runs its update, not what it computes: remove it"),
    ("{type: sgd, schedule: {type: cosine, eta_min: 0.01}}", "did you mean 'min_lr'?"),
])
def test_pytorch_optimizer_options_without_a_field_say_what_nnrun_computes(optimizer, said):
    """The PyTorch fuzz: PyTorch's own defaults written out got a bare "unknown field"."""
    (line,) = _load_errors("model: {input_shape: [2], layers: [{type: dense, units: 2}]}\n"
                           f"optimizer: {optimizer}\n")
    assert line.endswith(said), line
