"""`nnrun schema` accepts what nnrun accepts: every spec in specs/ and every YAML example of the
docs validates against it with the `jsonschema` package, as an editor would check them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nnrun.cli import main
from nnrun.compiler.frontend import check, load_spec_data
from nnrun.compiler.schema import spec_json_schema

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
NOT_SPECS = {"repos"}  # the pre-commit configuration shown in docs/spec-reference.md


class Yaml12Loader(yaml.SafeLoader):
    """Reads floats as YAML 1.2 does, like the editors' YAML language server: PyYAML follows
    YAML 1.1, where `2.0e6` and `1e-3` are strings."""


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"),
    list("-+0123456789."))


def load_yaml(text: str):
    return yaml.load(text, Loader=Yaml12Loader)


def schema_validator(schema: dict):
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def document() -> dict:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_schema_command_prints_the_generated_schema(document):
    jsonschema.Draft202012Validator.check_schema(document)
    assert document == spec_json_schema()


@pytest.mark.parametrize("path", SPECS, ids=lambda path: path.stem)
@pytest.mark.parametrize("load", [load_yaml, yaml.safe_load], ids=["yaml-1.2", "pyyaml"])
def test_every_shipped_spec_validates(document, path, load):
    """Also read as PyYAML reads it (YAML 1.1, where `5.0e6` is a string): the specs write
    floats both readings agree on (`5.0e+6`)."""
    errors = list(schema_validator(document).iter_errors(load(path.read_text())))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def yaml_examples() -> list[tuple[str, str]]:
    """(where, text) of each ```yaml block of the docs; a block of unindented lines (alternatives
    such as `loss: cross_entropy` then `loss: {type: mse}`) gives one example per line."""
    examples = []
    for path in DOCS:
        for match in re.finditer(r"```yaml\n(.*?)```", path.read_text(), re.DOTALL):
            line = path.read_text()[:match.start()].count("\n") + 2
            block = match.group(1)
            lines = [text for text in block.splitlines() if text.strip()
                     and not text.lstrip().startswith("#")]
            where = f"{path.name}:{line}"
            if all(not text[0].isspace() for text in lines):
                examples += [(where, text) for text in lines]
            else:
                examples.append((where, block))
    return examples


def schema_for(document: dict, example) -> dict:
    """The part of the schema that an example fragment (a spec section, a layer) must match."""
    definitions = document["$defs"]
    if isinstance(example, list):
        return {"$defs": definitions, **definitions["Model"]["properties"]["layers"]["items"]}
    key = next(iter(example))
    owner = document if key in document["properties"] else next(
        (d for d in definitions.values() if key in d.get("properties", {})), None)
    assert owner is not None, f"no field '{key}' anywhere in the schema"
    properties = {name: owner["properties"][name] for name in example}
    return {"$defs": definitions, "type": "object", "properties": properties,
            "additionalProperties": False}


def is_spec(text: str) -> bool:
    example = load_yaml(text)
    return not (isinstance(example, dict) and set(example) <= NOT_SPECS)


EXAMPLES = [(where, text) for where, text in yaml_examples() if is_spec(text)]


def test_the_docs_have_examples():
    assert len(EXAMPLES) >= 30


@pytest.mark.parametrize("where, text", EXAMPLES, ids=[where for where, _ in EXAMPLES])
@pytest.mark.parametrize("load", [load_yaml, yaml.safe_load], ids=["yaml-1.2", "pyyaml"])
def test_every_docs_example_validates(document, where, text, load):
    example = load(text)
    validator = schema_validator(schema_for(document, example))
    items = example if isinstance(example, list) else [example]
    errors = [error for item in items for error in validator.iter_errors(item)]
    assert not errors, [f"{where}: {list(e.absolute_path)}: {e.message}" for e in errors]


@pytest.mark.parametrize("shorthand", [
    {"loss": "cross_entropy"}, {"optimizer": "adam"},
    {"train": {"metrics": ["accuracy"]}}, {"model": {"init": "he_normal", "layers": ["flatten"]}},
    {"data": {"dataset": "digits", "augment": ["gaussian_noise"]}},
])
def test_bare_names_are_in_the_schema(document, shorthand):
    spec = {"model": {"layers": [{"type": "dense", "units": 2, "activation": "relu"}]}}
    spec.update(shorthand)
    assert list(schema_validator(document).iter_errors(spec)) == []


@pytest.mark.parametrize("wrong", [
    {"loss": "cross_entropi"}, {"train": {"metrics": ["top_k_accuracy", "bogus"]}},
    {"model": {"layers": ["dense"]}},  # dense needs units: no bare name
])
def test_unknown_or_incomplete_names_are_not(document, wrong):
    spec = {"model": {"layers": [{"type": "flatten"}]}}
    spec.update(wrong)
    assert list(schema_validator(document).iter_errors(spec)) != []


def test_bounds_are_json_schema_keywords_an_editor_enforces(document):
    """pydantic's own `gt`/`ge`/`lt`/`le` are not JSON Schema: an editor would ignore them."""
    text = json.dumps(document)
    assert not re.search(r'"(gt|ge|lt|le)":', text)
    validator = schema_validator(document)
    zero_units = {"model": {"input_shape": [4], "layers": [{"type": "dense", "units": 0}]}}
    too_much_dropout = {"model": {"input_shape": [4], "layers": [{"type": "dropout",
                                                                  "rate": 1.0}]}}
    assert not validator.is_valid(zero_units)
    assert not validator.is_valid(too_much_dropout)


def _one_layer(layer: dict, input_shape=(4,), **top) -> dict:
    return {"model": {"input_shape": list(input_shape), "layers": [layer]}, **top}


@pytest.mark.parametrize("spec", [
    _one_layer({"type": "flatten", "name": "1dense"}),
    _one_layer({"type": "flatten", "name": "my-dense"}),
    _one_layer({"type": "flatten", "name": "input"}),
    _one_layer({"type": "flatten", "inputs": []}),
    _one_layer({"type": "reshape", "shape": [0, 4]}),
    _one_layer({"type": "reshape", "shape": [-2, 2]}),
    _one_layer({"type": "conv1d", "filters": 2, "kernel_size": [3, 3]}, (2, 16)),
    _one_layer({"type": "maxpool1d", "pool_size": 2, "padding": [1, 1]}, (2, 16)),
    _one_layer({"type": "flatten"}, name="/etc/x"),
    _one_layer({"type": "flatten"}, name="a/../b"),
    _one_layer({"type": "flatten"}, name=""),
    _one_layer({"type": "flatten"}, name="a" * 201),
    _one_layer({"type": "flatten"}, name="a\\b"),
    _one_layer({"type": "flatten"}, name="ab\u202ecd"),  # shown reversed (hostile-input audit)
    _one_layer({"type": "flatten"}, name="ab\u2028cd"),  # a line separator (second review)
    _one_layer({"type": "dense", "units": 2, "use_bias": "no"}),
    _one_layer({"type": "dense", "units": "2"}),
    # the spec reference audit: these passed the schema
    _one_layer({"type": "reshape", "shape": [-1, -1]}),
    _one_layer({"type": "flatten", "inputs": "1bad"}),
    _one_layer({"type": "flatten", "inputs": ["input", "my-layer"]}),
    _one_layer({"type": "flatten"}, optimizer={"type": "sgd", "lr": "-0.5"}),
    _one_layer({"type": "flatten"}, optimizer={"type": "sgd", "lr": "0.0e+3"}),
    _one_layer({"type": "flatten"}, optimizer={"type": "sgd", "lr": "-5e-4"}),
    _one_layer({"type": "flatten"}, optimizer={"type": "sgd", "weight_decay": "-1e-3"}),
    _one_layer({"type": "flatten"}, optimizer={"type": "sgd", "weight_decay": "-0.01"}),
    _one_layer({"type": "flatten"}, optimizer={"type": "sgd", "weight_decay": "-0e0.5"}),
    _one_layer({"type": "upsample1d", "scale": 3_000_000_000}, (2, 16)),
    # the user-facing audit: an integer in exponent form that is not whole
    _one_layer({"type": "dense", "units": "1.5e0"}),
    _one_layer({"type": "dense", "units": "1.25e1"}),
    _one_layer({"type": "dense", "units": "25e-1"}),
    {"data": {"dataset": "npz", "path": ""}, "model": {"input_shape": [2], "layers": ["flatten"]}},
    # the schema audit: a merge by its name alone has no inputs (the editor offered it)
    {"model": {"input_shape": [2], "layers": [{"type": "dense", "units": 2}, "add"]}},
    {"model": {"input_shape": [2], "layers": [{"type": "dense", "units": 2}, "concat"]}},
    # a merge of one input, or of the previous layer alone (session 44)
    _one_layer({"type": "add", "inputs": ["input"]}),
    _one_layer({"type": "add"}),
    _one_layer({"type": "concat", "inputs": "input"}),
    _one_layer({"type": "concat", "inputs": []}),
    # the docs audit: a layer of one input given two passed the schema
    _one_layer({"type": "dense", "units": 2, "inputs": ["input", "input"]}),
    _one_layer({"type": "relu", "inputs": ["input", "input"]}),
])
def test_what_validate_refuses_and_a_json_schema_can_say_the_schema_refuses(document, spec):
    from nnrun.compiler.diagnostics import SpecError
    from nnrun.compiler.frontend import load_spec_data, check

    assert not schema_validator(document).is_valid(spec)
    with pytest.raises(SpecError):
        check(load_spec_data(spec))


def test_names_validate_takes_the_schema_takes(document):
    validator = schema_validator(document)
    assert validator.is_valid(_one_layer({"type": "flatten", "name": "_flat_2"}, name="exp/lenet"))
    assert validator.is_valid(_one_layer({"type": "conv1d", "filters": 2, "kernel_size": [3]},
                                         (2, 16)))
    assert validator.is_valid(_one_layer({"type": "reshape", "shape": [2, -1]}))
    assert validator.is_valid(_one_layer({"type": "reshape", "shape": [2, 2]}))
    # whole numbers, as text; a negative exponent too (the schema audit: refused by validate)
    for units in ("1e1", "1.5e1", ".25e2", "1.50e1", "2.0E+3", "20e-1", "200e-2", "20.0e-1",
                  "10e-0"):
        assert validator.is_valid(_one_layer({"type": "dense", "units": units})), units
        check(load_spec_data(_one_layer({"type": "dense", "units": units})))
    assert validator.is_valid(_one_layer({"type": "flatten", "inputs": ["input"]}))
    for merge in ("add", "concat"):
        assert validator.is_valid(_one_layer({"type": merge, "inputs": ["input", "input"]}))
    for lr in ("5e-4", "+1.5", ".5", "2.0e+6"):  # text with the sign its bound allows
        assert validator.is_valid(_one_layer({"type": "flatten"},
                                             optimizer={"type": "sgd", "lr": lr})), lr
    for decay in ("0.0", "-0", "-0.0e3", " -.0 "):  # validate reads -0 as 0, which is ≥ 0
        assert validator.is_valid(_one_layer({"type": "flatten"},
                                             optimizer={"type": "sgd", "weight_decay": decay}))


@pytest.mark.parametrize("load", [load_yaml, yaml.safe_load], ids=["yaml-1.2", "pyyaml"])
def test_a_number_that_yaml_1_1_reads_as_text_is_accepted_as_validate_accepts_it(document, load):
    """DESIGN.md's own `max_flops: 2.0e6` (and `lr: 5e-4`) is a string to PyYAML, which
    validate reads as the number; the schema rejected it. Text that is no number still fails."""
    spec = load("model: {input_shape: [2], layers: [{type: dense, units: 2}]}\n"
                "optimizer: {type: adam, lr: 5e-4}\n"
                "limits: {max_params: 100000, max_flops: 2.0e6, max_train_memory_mb: 256}\n")
    assert list(schema_validator(document).iter_errors(spec)) == []
    spec["optimizer"]["lr"] = "fast"
    assert list(schema_validator(document).iter_errors(spec))
    lr = document["$defs"]["Adam"]["properties"]["lr"]
    assert lr["default"] == 0.001 and lr["title"] == "Lr"  # where editors show them


def _fields(document: dict):
    for model_name, model in {"Spec": document, **document["$defs"]}.items():
        for field_name, field in model.get("properties", {}).items():
            if field_name != "type":
                yield f"{model_name}.{field_name}", field


@pytest.mark.parametrize("name", ["08", "0o17", "1e3", "-1E-3"])
def test_a_run_name_yaml_1_2_reads_as_a_number_is_written_quoted(document, name):
    """The docs audit: `name: '08'` was written back to a run's spec.yaml as `name: 08`, which
    an editor reading YAML 1.2 takes for 8 and flags against the schema."""
    from nnrun.compiler.frontend import resolved_spec_data, spec_yaml

    source = load_spec_data(_one_layer({"type": "flatten"}, name=name))
    written = spec_yaml(resolved_spec_data(source))
    assert f"name: '{name}'\n" in written and yaml.safe_load(written)["name"] == name
    assert schema_validator(document).is_valid(load_yaml(written))


def test_every_field_has_a_description_for_editors(document):
    """92 of 245 fields (lr, epochs, stride, ...) had none, where the docs promise an editor
    shows each field's description."""
    assert [name for name, field in _fields(document) if not field.get("description")] == []


def test_defaults_built_per_spec_are_shown_and_are_what_validate_fills_in(document):
    """pydantic leaves a default_factory's value out of the schema: loss, optimizer, train,
    augment, init, bias_init and schedule showed no default."""
    from nnrun.compiler.frontend import load_spec_text

    properties = document["properties"]
    assert properties["loss"]["default"] == "cross_entropy"
    assert properties["optimizer"]["default"] == {"type": "sgd"}
    definitions = document["$defs"]
    assert definitions["Model"]["properties"]["init"]["default"] == "xavier_uniform"
    assert definitions["Conv2d"]["properties"]["bias_init"]["default"] == "zeros"
    assert definitions["Adam"]["properties"]["schedule"]["default"] == "constant"
    assert definitions["Data"]["properties"]["augment"]["default"] == []
    spec = load_spec_text("model: {input_shape: [4], layers: [{type: dense, units: 2}]}\n",
                          "d.yaml").spec
    assert spec.loss.type == "cross_entropy" and spec.optimizer.type == "sgd"
    assert spec.model.init.type == "xavier_uniform"
    assert spec.model.layers[0].bias_init.type == "zeros"
    assert spec.optimizer.schedule.type == "constant"
    validator = schema_validator(document)
    for name, field in _fields(document):
        if "default" in field and field["default"] is not None:
            assert validator.evolve(schema={**field, "$defs": definitions}).is_valid(
                field["default"]), name
