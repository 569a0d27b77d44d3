import math
import os
import textwrap

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nnrun.compiler import loader
from nnrun.compiler.diagnostics import SpecError
from nnrun.compiler.loader import (
    Loaded,
    Position,
    apply_overrides,
    load_yaml_file,
    load_yaml_text,
)

LENET = textwrap.dedent(
    """\
    name: lenet
    seed: 0
    model:
      input_shape: [1, 28, 28]
      layers:
        - {type: conv2d, filters: 6, kernel_size: 5}
        - type: maxpool2d
          pool_size: 2
        - {type: flatten}
        - type: dense
          units: 10
    optimizer:
      type: sgd
      lr: 0.05
    """
)

# Hypothesis's checks of how it draws (speed, size), which a loaded 2-core CI machine failed
# for its own slowness; the checks of how the tests are written stay on.
DRAWING_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                  HealthCheck.large_base_example]


def load(text: str) -> Loaded:
    return load_yaml_text(textwrap.dedent(text), "spec.yaml")


def errors_of(text: str, filename: str = "spec.yaml") -> list:
    with pytest.raises(SpecError) as caught:
        load_yaml_text(textwrap.dedent(text), filename)
    return caught.value.diagnostics


def errors_of_override(text: str, argument: str) -> list:
    with pytest.raises(SpecError) as caught:
        apply_overrides(load(text), [argument])
    return caught.value.diagnostics


def only_error(text: str):
    diagnostics = errors_of(text)
    assert len(diagnostics) == 1, diagnostics
    return diagnostics[0]


# --- data and positions --------------------------------------------------------------------------


def test_data_is_what_safe_load_gives():
    assert load(LENET).data == yaml.safe_load(LENET)


def test_positions_of_top_level_keys_and_values():
    loaded = load(LENET)
    assert loaded.position(("seed",)) == (2, 7)
    assert loaded.position(("seed",), key=True) == (2, 1)
    assert loaded.position(("optimizer", "lr")) == (14, 7)
    assert loaded.position(("optimizer", "lr"), key=True) == (14, 3)


def test_positions_of_block_list_items():
    loaded = load(LENET)
    assert loaded.position(("model", "layers", 1)) == (7, 7)
    assert loaded.position(("model", "layers", 1, "pool_size")) == (8, 18)
    assert loaded.position(("model", "layers", 1, "pool_size"), key=True) == (8, 7)
    assert loaded.position(("model", "layers", 3, "units"), key=True) == (11, 7)


def test_positions_inside_flow_mappings_and_sequences():
    loaded = load(LENET)
    assert loaded.position(("model", "layers", 0)) == (6, 7)
    assert loaded.position(("model", "layers", 0, "type")) == (6, 14)
    assert loaded.position(("model", "layers", 0, "filters")) == (6, 31)
    assert loaded.position(("model", "layers", 0, "filters"), key=True) == (6, 22)
    assert loaded.position(("model", "input_shape", 2)) == (4, 24)


def test_position_of_a_missing_path_is_its_nearest_ancestor():
    loaded = load(LENET)
    assert loaded.position(("model", "layers", 3, "activation")) == (10, 7)
    assert loaded.position(("model", "layers", 3, "activation"), key=True) == (10, 7)
    assert loaded.position(("data", "dataset")) == (1, 1)


def test_location_names_the_file():
    location = load(LENET).location(("seed",))
    assert location == Position("spec.yaml", 2, 7)
    assert location.origin == ""


def test_load_yaml_file(tmp_path):
    path = tmp_path / "lenet.yaml"
    path.write_text(LENET)
    loaded = load_yaml_file(path)
    assert loaded.filename == str(path)
    assert loaded.location(("seed",)).file == str(path)


def test_load_yaml_file_that_does_not_exist(tmp_path):
    with pytest.raises(SpecError) as caught:
        load_yaml_file(tmp_path / "missing.yaml")
    assert "cannot read file" in caught.value.diagnostics[0].message


def _refusal(path) -> str:
    with pytest.raises(SpecError) as caught:
        load_yaml_file(path)
    (diagnostic,) = caught.value.diagnostics
    return diagnostic.format()


def test_what_is_not_a_regular_file_is_refused_before_it_is_read(tmp_path):
    # /dev/zero never ends and a FIFO blocks until someone writes to it
    assert _refusal("/dev/zero") == "/dev/zero:1:1: error: spec: not a regular file; a spec is a YAML file"
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    assert _refusal(fifo).endswith("not a regular file; a spec is a YAML file")
    # the kernel's files say they are regular, and a read of some blocks (/proc/kmsg: the
    # hostile-input audit), here through a link to one that does not
    link = tmp_path / "status.yaml"
    link.symlink_to("/proc/self/status")
    assert _refusal(link).endswith("a file of the kernel's (/proc, /sys), not a spec; a spec "
                                   "is a YAML file")


def test_a_spec_file_too_large_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "MAX_SPEC_BYTES", 1 << 20)
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (1 << 20))
    assert "1,048,578 bytes is more than a spec can be (1 MiB)" in _refusal(path)


def test_a_byte_that_is_not_utf8_is_named_at_its_line_and_column(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: x\nmodel:\n  layers: [] # caf\xe9\n")
    assert _refusal(path) == (f"{path}:3:19: error: spec: byte 0xe9 is not UTF-8 text; save the file "
                              "as UTF-8")


def test_anchors_and_aliases_are_fine():
    loaded = load(
        """\
        conv: &conv {type: conv2d, filters: 6, kernel_size: 3}
        model:
          layers: [*conv, *conv]
        """
    )
    assert loaded.data["model"]["layers"] == [loaded.data["conv"]] * 2
    assert loaded.position(("conv", "filters")) == (1, 37)
    # reached through the second alias: placed where the value is reused
    assert loaded.position(("model", "layers", 1, "filters")) == (3, 19)


def test_an_anchored_value_is_placed_where_its_value_is_written_not_at_the_anchor():
    """The error audit: `units: &u 0` was placed at `&u`. A tag is still the node's start, an
    anchor with no value the anchor; everything an alias reuses is placed at the alias."""
    loaded = load(
        """\
        a: &m
          b: &u 1
        t: &t !!int 2
        e: &e
        c: *m
        """
    )
    assert [loaded.position(path) for path in [("a",), ("a", "b"), ("t",), ("e",)]] == [
        (2, 3), (2, 9), (3, 7), (4, 4)]
    assert loaded.position(("c",)) == loaded.position(("c", "b")) == (5, 4)
    assert loaded.position(("c", "b"), key=True) == (5, 4)
    assert loaded.position(("c",), key=True) == (5, 1)


def test_a_duplicate_anchor_is_still_reported_at_the_anchors():
    diagnostic = only_error("a: &x 1\nb: &x 2\n")
    assert (diagnostic.line, diagnostic.col) == (2, 4)
    assert diagnostic.message == ("invalid YAML: second occurrence (found duplicate anchor 'x'; "
                                  "first occurrence started at 1:4)")


def test_a_recursive_alias_is_reported_at_the_alias():
    diagnostic = only_error("a: &loop [1, *loop]\n")
    assert (diagnostic.line, diagnostic.col) == (1, 14)


def test_merge_keys_fill_in_what_the_mapping_does_not_set():
    loaded = load(
        """\
        base: &base {type: conv2d, filters: 6}
        layer: {<<: *base, filters: 8}
        """
    )
    assert loaded.data["layer"] == {"type": "conv2d", "filters": 8}
    assert loaded.position(("layer", "filters")) == (2, 29)
    assert loaded.position(("layer", "type")) == (1, 20)


# --- errors ----------------------------------------------------------------------------------


def test_duplicate_key_points_at_the_second_key():
    diagnostic = only_error(
        """\
        seed: 0
        name: a
        seed: 1
        """
    )
    assert (diagnostic.line, diagnostic.col) == (3, 1)
    assert diagnostic.message == "duplicate key 'seed' (first at line 1)"
    assert diagnostic.where == "spec"


def test_duplicate_keys_in_nested_and_flow_mappings_are_all_reported():
    diagnostics = errors_of(
        """\
        model:
          layers:
            - {type: dense, units: 3, units: 4}
            - type: dense
              type: flatten
        """
    )
    assert [(d.line, d.col, d.where) for d in diagnostics] == [
        (3, 31, "model.layers[0]"),
        (5, 7, "model.layers[1]"),
    ]


def test_python_object_tags_are_rejected_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    text = f'model: !!python/object/apply:os.system ["touch {marker}"]\n'
    with pytest.raises(SpecError) as caught:
        load_yaml_text(text, "evil.yaml")
    assert not marker.exists()
    diagnostic = caught.value.diagnostics[0]
    assert (diagnostic.file, diagnostic.line, diagnostic.col) == ("evil.yaml", 1, 8)
    assert "'!!python/object/apply:os.system' is not allowed" in diagnostic.message


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/name:os.system\n",
        "a: !!python/tuple [1, 2]\n",
        "a: !custom {x: 1}\n",
        "a: !!set {x, y}\n",
        "!!python/object:builtins.dict {a: 1}\n",
        "? !!python/tuple [1]\n: 2\n",
    ],
)
def test_other_unsafe_or_unknown_tags_are_rejected(text):
    assert "tag" in only_error(text).message


def test_syntax_error_has_the_position_pyyaml_reports():
    diagnostic = only_error(
        """\
        model:
          layers: [1, 2
        seed: 0
        """
    )
    assert diagnostic.message.startswith("invalid YAML: ")
    assert (diagnostic.line, diagnostic.col) == (3, 5)


def test_mapping_value_syntax_error_position():
    diagnostic = only_error("seed: 0\nname: a: b\n")
    assert (diagnostic.line, diagnostic.col) == (2, 8)
    assert "mapping values are not allowed here" in diagnostic.message


def test_unprintable_character_is_an_error_with_a_position():
    diagnostic = only_error("seed: 0\nname: a\x07b\n")
    assert (diagnostic.line, diagnostic.col) == (2, 8)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file_is_an_error(text):
    diagnostic = only_error(text)
    assert "empty" in diagnostic.message
    assert (diagnostic.line, diagnostic.col) == (1, 1)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n", "---\n"])
def test_top_level_must_be_a_mapping(text):
    assert "top level must be a mapping" in only_error(text).message


def test_several_documents_are_an_error():
    diagnostic = only_error("seed: 0\n---\nseed: 1\n")
    assert (diagnostic.line, diagnostic.col) == (2, 1)
    assert diagnostic.message == ("a spec is one YAML document, and this '---' starts another; "
                                  "remove it and what follows, or give each spec its own file")


def test_recursive_alias_is_an_error():
    assert "alias" in only_error("a: &loop [*loop]\n").message


def test_exponential_aliases_are_refused():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    assert "aliases expand" in only_error("\n".join(lines) + "\n").message


def test_a_document_too_large_without_aliases_is_not_blamed_on_them(monkeypatch):
    monkeypatch.setattr(loader, "_MAX_NODES", 50)
    diagnostic = only_error("train: {metrics: [" + ", ".join(["accuracy"] * 60) + "]}\n")
    # lists and mappings count as values (the spec-reference walk: "values" read as numbers)
    assert diagnostic.message == ("the document holds more than 50 values (each number, text, "
                                  "list and mapping counts one; the first one past that is "
                                  "here), more than nnrun reads in a spec (large initial values "
                                  "go in an .npz file, with init_from)")
    assert diagnostic.line == 1 and diagnostic.col > 100  # inside the list, not at 1:1
    # far past it, composing stops at twice the limit: that place is not called the first past
    far = only_error("train: {metrics: [" + ", ".join(["accuracy"] * 120) + "]}\n")
    assert "(each number, text, list and mapping counts one; reading stopped here, at 100)" \
        in far.message


@pytest.mark.parametrize("escaped", ["\\ud800", "a\\ud83d\\ude00"])
def test_a_lone_surrogate_is_refused_where_it_is_written(escaped):
    """YAML's \\u escapes can write half of a UTF-16 pair, which no file name, UTF-8 file or
    terminal takes: refused at its position instead of failing when written out."""
    diagnostics = errors_of(f'name: ok\nmodel:\n  layers: [{{type: flatten, name: "{escaped}"}}]\n')
    assert len(diagnostics) == 1
    assert (diagnostics[0].line, diagnostics[0].col) == (3, 34)  # the opening quote
    assert "is half of a UTF-16 surrogate pair, not a character; write the character itself" \
        in diagnostics[0].message
    assert load('name: "\\U0001F600"\n').data == {"name": "\U0001F600"}  # the whole character


def test_binary_data_is_refused_by_the_loader():
    diagnostic = only_error("name: !!binary aGVsbG8=\n")
    assert diagnostic.message == ("no spec field takes binary data (!!binary); write the value "
                                  "as text")


def test_a_plain_equals_sign_is_told_to_be_quoted_not_called_a_tag():
    """YAML 1.1 resolves a plain `=` to its value key: "unsupported YAML tag '!!value'", a tag
    the text never wrote (the loader fuzz)."""
    assert only_error("name: =\n").message == ("a plain = is YAML 1.1's value key (!!value), "
                                                "no text; write it in quotes: '='")
    assert load("name: '='\n").data == {"name": "="}
    assert only_error("seed: !!value 3\n").message == "unsupported YAML tag '!!value' here"


@pytest.mark.parametrize("magic", [b"PK\x03\x04", b"\x93NUMPY"])
def test_a_numpy_file_given_as_a_spec_is_named_so(tmp_path, magic):
    path = tmp_path / "last.npz"
    path.write_bytes(magic + bytes(range(256)))
    assert _refusal(path) == (f"{path}:1:1: error: spec: a NumPy file (a checkpoint or data), not a "
                              "spec; give the spec's YAML file (or, to a command that takes one, "
                              "the run directory)")


def test_scalar_that_does_not_fit_its_tag_is_an_error():
    diagnostic = only_error("a: 1\nday: 2001-13-45\n")
    assert (diagnostic.line, diagnostic.col) == (2, 6)
    diagnostic = only_error("a: !!int abc\n")
    assert "cannot read 'abc' as !!int" in diagnostic.message


def test_mapping_as_a_key_is_an_error():
    assert "keys must be plain scalars" in only_error("? [a, b]\n: 1\n").message


@pytest.mark.parametrize("key, shown", [("~", "null"), ("1", "1"), ("1.5", "1.5"),
                                        ("yes", "true"), ("2020-01-01", "2020-01-01")])
def test_a_key_that_is_not_a_name_is_an_error_at_the_key(key, shown):
    """`~: x` was reported at 1:1 as pydantic's "Keys should be strings (got null)"."""
    diagnostic = only_error(f"model:\n  layers: []\ndata:\n  dataset: xor\n  {key}: x\n")
    assert (diagnostic.line, diagnostic.col) == (5, 3)
    assert diagnostic.message.startswith(f"keys must be names; got {shown}")
    assert diagnostic.where == "data"


def test_deep_nesting_is_an_error_not_a_crash():
    diagnostic = only_error("name: x\na: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in diagnostic.message
    assert diagnostic.line == 2 and diagnostic.col > 100  # where it is, not at 1:1


def test_nesting_past_the_builders_depth_is_placed_at_its_deepest_value():
    """The hostile-input audit: nesting deep enough to stop the builder, not the parser, was
    placed at 1:1 with no word of what a spec nests."""
    for depth in range(100, 2000, 25):  # where the builder stops depends on Python's stack
        text = "name: x\nmodel:\n  layers:\n    - type: dense\n      units: 2\n" \
               "      weights: " + "[" * depth + "1" + "]" * depth + "\n"
        try:
            load_yaml_text(text, "spec.yaml")
        except SpecError as error:
            (diagnostic,) = error.diagnostics
            if "invalid YAML" not in diagnostic.message:  # the parser stopped it first
                break
    assert diagnostic.message == ("the document is nested too deeply here (a spec nests a few "
                                  "levels)")
    assert diagnostic.line == 6 and diagnostic.col == 16 + depth


# --- overrides -------------------------------------------------------------------------------


def test_override_sets_values_parsed_as_yaml():
    loaded = apply_overrides(
        load(LENET),
        [
            "optimizer.lr=0.01",
            "model.layers[0].filters=8",
            "name=lenet-small",
            "model.input_shape=[1, 32, 32]",
            "seed=null",
        ],
    )
    assert loaded.data["optimizer"]["lr"] == 0.01
    assert loaded.data["model"]["layers"][0]["filters"] == 8
    assert loaded.data["name"] == "lenet-small"
    assert loaded.data["model"]["input_shape"] == [1, 32, 32]
    assert loaded.data["seed"] is None


def test_a_negative_index_counts_from_the_end():
    layers = load(LENET).data["model"]["layers"]
    loaded = apply_overrides(load(LENET), ["model.layers[-1].units=5"])
    assert loaded.data["model"]["layers"][-1]["units"] == 5
    assert loaded.data["model"]["layers"][:-1] == layers[:-1]
    # the value's position is the argument's, under the index counted from the start
    assert ("model", "layers", len(layers) - 1, "units") in loaded.positions


@pytest.mark.parametrize(
    "value, expected",
    [("true", True), ("3", 3), ("3.5", 3.5), ("'3'", "3"), ("relu", "relu"), ("", None),
     ("{type: leaky_relu, alpha: 0.1}", {"type": "leaky_relu", "alpha": 0.1}), ("a=b", "a=b")],
)
def test_override_values_are_yaml_typed(value, expected):
    loaded = apply_overrides(load(LENET), [f"model.layers[3].activation={value}"])
    assert loaded.data["model"]["layers"][3]["activation"] == expected


def test_override_adds_keys_and_missing_mappings():
    loaded = apply_overrides(load(LENET), ["optimizer.momentum=0.9", "data.limit=100"])
    assert loaded.data["optimizer"]["momentum"] == 0.9
    assert loaded.data["data"] == {"limit": 100}


def test_an_override_into_a_missing_optimizer_or_loss_starts_from_the_default():
    """`--set optimizer.lr=0.01` on a spec without an optimizer failed: "missing required
    field 'type'", though the spec runs sgd."""
    from nnrun.compiler import loader
    from nnrun.compiler.schema import Spec

    text = "model:\n  input_shape: [2]\n  layers: [{type: dense, units: 2}]\n"
    loaded = apply_overrides(load(text), ["optimizer.lr=0.01", "loss.scale=2"])
    assert loaded.data["optimizer"] == {"type": "sgd", "lr": 0.01}
    assert loaded.data["loss"] == {"type": "cross_entropy", "scale": 2}
    defaults = Spec.model_validate({"model": {"input_shape": [2], "layers": [{"type": "flatten"}]}})
    assert loader._DEFAULT_TYPES == {("optimizer",): {"type": defaults.optimizer.type},
                                     ("loss",): {"type": defaults.loss.type}}


def test_an_override_walks_into_a_value_written_by_its_type_name():
    """`loss: cross_entropy` is `{type: cross_entropy}`, so `--set loss.label_smoothing=0.1`
    sets its smoothing; it said "loss is the value 'cross_entropy'; it has no key"."""
    text = ("model:\n  input_shape: [4]\n  layers:\n    - {type: dense, units: 2, activation: elu}\n"
            "loss: cross_entropy\noptimizer: {type: sgd, schedule: cosine}\n"
            "data: {dataset: xor, augment: [gaussian_noise]}\ntrain: {metrics: [accuracy]}\n")
    loaded = apply_overrides(load(text), [
        "loss.label_smoothing=0.1", "optimizer.schedule.warmup_epochs=1",
        "model.layers[0].activation.alpha=0.5", "data.augment[0].std=0.2",
        "train.metrics[-1].type=top_k_accuracy", "train.metrics[0].k=2"])
    assert loaded.data["loss"] == {"type": "cross_entropy", "label_smoothing": 0.1}
    assert loaded.data["optimizer"]["schedule"] == {"type": "cosine", "warmup_epochs": 1}
    assert loaded.data["model"]["layers"][0]["activation"] == {"type": "elu", "alpha": 0.5}
    assert loaded.data["data"]["augment"] == [{"type": "gaussian_noise", "std": 0.2}]
    assert loaded.data["train"]["metrics"] == [{"type": "top_k_accuracy", "k": 2}]
    assert loaded.location(("loss", "type")).line == 5
    # a plain string stays one: it has no keys to set
    (error,) = errors_of_override(text, "data.dataset.limit=3")
    assert "data.dataset is the value 'xor'; it has no key 'limit'" in error.message


def test_the_fields_a_type_name_may_stand_for_are_the_tagged_unions():
    from nnrun.compiler.schema import SHORT_FORM_FIELDS

    assert SHORT_FORM_FIELDS == {"activation", "augment", "bias_init", "init", "layers", "loss",
                                 "metrics", "optimizer", "schedule"}


def test_an_index_into_a_misspelt_key_names_the_key():
    (error,) = errors_of_override(LENET, "model.layerz[0].units=3")
    assert "model has no 'layerz' to index; did you mean 'layers'?" in error.message


def test_overridden_positions_point_at_the_argument():
    arguments = ["optimizer.lr=0.01", "model.layers[0]={type: dense, units: 3}", "data.limit=5"]
    loaded = apply_overrides(load(LENET), arguments)
    expected = Position("--set", 2, 1, "--set model.layers[0]={type: dense, units: 3}")
    assert loaded.location(("model", "layers", 0, "units")) == expected
    assert loaded.location(("model", "layers", 0, "units"), key=True) == expected
    assert loaded.location(("model", "layers", 0, "missing")) == expected
    assert loaded.location(("optimizer", "lr")).origin == "--set optimizer.lr=0.01"
    assert loaded.location(("data",)).origin == "--set data.limit=5"
    # Keys that the replacement dropped have no position of their own any more.
    assert ("model", "layers", 0, "kernel_size") not in loaded.positions
    assert loaded.position(("model", "layers", 1, "pool_size")) == (8, 18)


def test_overrides_leave_the_original_alone():
    original = load(LENET)
    apply_overrides(original, ["optimizer.lr=0.5", "data.limit=5"])
    assert original.data == yaml.safe_load(LENET)
    assert ("data",) not in original.positions


def override_errors(*arguments: str) -> list:
    with pytest.raises(SpecError) as caught:
        apply_overrides(load(LENET), list(arguments))
    return caught.value.diagnostics


@pytest.mark.parametrize("index", ["9", "-5"])
def test_override_index_out_of_range(index):
    diagnostic, = override_errors(f"model.layers[{index}].filters=8")
    assert diagnostic.format() == (
        f"--set:1:1: error: --set model.layers[{index}].filters=8: "
        "model.layers has 4 entries (indices 0..3, or -4..-1 from the end)"
    )


@pytest.mark.parametrize(
    "argument, message",
    [
        ("seed.x=1", "seed is the value 0; it has no key 'x'"),
        ("model.layers.filters=8", "model.layers is a list; select an entry first"),
        ("model[0]=1", "model is a mapping, not a list"),
        ("seed[0]=1", "seed is the value 0, not a list"),
        ("optimizer.lr", "expected PATH=VALUE"),
        ("model..layers=1", "cannot read the path 'model..layers'"),
        ("=3", "cannot read the path ''"),
        ("model.layers[+1].units=3", "cannot read the path"),
        ("seed=[1", "invalid YAML"),
        ("seed=a: b: c", "invalid YAML"),
        ("seed=!!python/object/apply:os.system [ls]", "is not allowed"),
        ("seed={a: 1, a: 2}", "duplicate key 'a'"),
    ],
)
def test_override_errors(argument, message):
    diagnostic, = override_errors(argument)
    assert (diagnostic.file, diagnostic.line, diagnostic.col) == ("--set", 1, 1)
    assert diagnostic.where == f"--set {argument}"
    assert message in diagnostic.message


def test_override_errors_are_all_reported_with_their_argument_number():
    diagnostics = override_errors("optimizer.lr=0.1", "model.layers[4].units=1", "seed.x=1")
    assert [(d.line, d.where) for d in diagnostics] == [
        (2, "--set model.layers[4].units=1"),
        (3, "--set seed.x=1"),
    ]


# --- nothing but SpecError, whatever the input ---------------------------------------------------

YAMLISH = st.text(alphabet=list(" \n\t:-[]{},'\"&*!#|>?%@`.~=<") + list("abcxyz019_"), max_size=80)


@settings(max_examples=400, deadline=None, suppress_health_check=DRAWING_CHECKS)
@given(YAMLISH)
def test_random_text_raises_only_spec_errors(text):
    try:
        loaded = load_yaml_text(text, "random.yaml")
    except SpecError as error:
        assert error.diagnostics
        assert all(d.line >= 1 and d.col >= 1 for d in error.diagnostics)
        return
    # Whatever loads, loads as PyYAML would load it.
    assert repr(loaded.data) == repr(yaml.safe_load(text))
    for path in loaded.positions:
        assert loaded.position(path) >= (1, 1)


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)
)
NESTED = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), NESTED, min_size=1, max_size=5), st.booleans())
@example(data={"0": {" ": None, "\x85": None}}, flow=False)
def test_random_nested_dicts_round_trip(data, flow):
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    try:
        loaded = load_yaml_text(text, "random.yaml")
    except SpecError as error:
        # PyYAML writes some keys so that they read back as another ('\x85' as ' '): the text
        # then holds a key twice, which nnrun refuses and safe_load keeps the last of
        assert all("duplicate key" in d.message for d in error.diagnostics), error
        return
    # Compared with safe_load, not `data`: PyYAML itself does not round-trip some characters (\x85).
    assert loaded.data == yaml.safe_load(text)
    assert all(loaded.position(path) >= (1, 1) for path in loaded.positions)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=list("abmodelayrs.[]0129=-: {}'\"!"), max_size=30), max_size=3))
def test_random_overrides_raise_only_spec_errors(arguments):
    try:
        apply_overrides(load(LENET), arguments)
    except SpecError as error:
        assert all(d.file == "--set" for d in error.diagnostics)


def test_float_specials_load():
    loaded = load("a: .nan\nb: -.inf\n")
    assert math.isnan(loaded.data["a"]) and loaded.data["b"] == -math.inf


def test_a_number_of_thousands_of_digits_is_one_short_line():
    """A 5,001-digit units: was echoed in full, with Python's advice to raise its own limit."""
    (error,) = errors_of("model: {input_shape: [2], layers: [{type: dense, units: 1"
                         + "0" * 5000 + "}]}\n")
    assert "5,001 digits, far more than any setting takes" in error.message
    assert len(error.format()) < 300 and "sys.set_int_max_str_digits" not in error.message


def test_a_size_of_hundreds_of_digits_is_named_by_its_length():
    from nnrun.compiler.frontend import check, load_spec_text

    with pytest.raises(SpecError) as raised:
        check(load_spec_text("model: {input_shape: [2], layers: [{type: dense, units: 1"
                             + "0" * 300 + "}]}\n"))
    message = str(raised.value)
    assert "would hold a 301-digit number of values" in message and len(message) < 400


@pytest.mark.parametrize("text, position, says", [
    ("data:\n  dataset:xor\n  limit: 10\n", (2, 10), "'dataset:' is followed by no space"),
    ("model:\n  input_shape [2]\n  layers: []\n", (2, 14), "a ':' is missing after 'input_shape'"),
    ("model:\n  input_shape:\u00a0[2]\n  layers: []\n", (2, 15), "a no-break space (U+00A0)"),
    ("model:\n  input_shape\uff1a [2]\n  layers: []\n", (2, 14), "a full-width colon (U+FF1A)"),
    ("model:\n\u00a0 input_shape: [2]\n  layers: []\n", (2, 1), "write a plain space instead"),
])
def test_a_missing_or_hidden_colon_is_reported_where_it_is(text, position, says):
    """The YAML audit: PyYAML notices these on the next line, and said only "mapping values
    are not allowed here" or "could not find expected ':'"."""
    error = only_error(text)
    assert (error.line, error.col) == position and says in error.message


@pytest.mark.parametrize("text, position, says", [
    ('data: {dataset: csv, path: "\u5b9f\u9a13\uff1a1.csv"\nloss: mse\n', (2, 1),
     "the { at 1:7 is not closed"),
    ('name: "my\u00a0net"\nseed: 1: 2\n', (2, 8), "mapping values are not allowed here"),
    ("name: my\n  long name\ninput_shape: [2]: 3\n", (3, 17), "mapping values are not allowed"),
])
def test_a_look_alike_in_a_value_or_a_plain_value_s_words_are_no_slip(text, position, says):
    """The session review: a full-width colon in a quoted path, or a no-break space in a
    name, took over the message of an unrelated error, as did a plain value's second line."""
    error = only_error(text)
    assert (error.line, error.col) == position and says in error.message
    assert "missing after" not in error.message and "look" not in error.message


@pytest.mark.parametrize("text, position, says", [
    ("seed 0\n\nmodel: {input_shape: [2], layers: [{type: dense, units: 1}]}\n", (1, 5),
     "a ':' is missing after 'seed'"),
    ("seed 0\n# c\nmodel: {input_shape: [2], layers: [{type: dense, units: 1}]}\n", (1, 5),
     "a ':' is missing after 'seed'"),
    ("optimizer\n  type: sgd\nmodel: {input_shape: [2]}\n", (1, 10),
     "a ':' is missing after 'optimizer'"),
    ("optimizer:\n  type: sgd\n  lr 0.1\n\nmodel:\n  input_shape: [2]\n", (3, 5),
     "a ':' is missing after 'lr'"),
    ("data:\n  dataset xor   # c\n  noise: 0.1\n", (2, 10), "a ':' is missing after 'dataset'"),
    ("seed: 0   # a long comment that\nwraps onto the next line\nmodel: {}\n", (2, 6),
     "begin it with '#'"),
    ("loss:mse\n\nmodel: {}\n", (1, 5), "'loss:' is followed by no space"),
    ("data:dataset: xor\n  noise: 0.1\n", (1, 6), "a line break is missing after 'data:'"),
    # a character slipped in where the space goes (the mutation fuzz: told a line break was
    # missing, and the line broken there was refused again)
    ("train:\n  early_stopping:\u2013{monitor: train_loss, patience: 5}\n", (2, 18),
     "'early_stopping:' is followed by an en dash (U+2013) where YAML needs a space; write "
     "'early_stopping: {monitor: train_loss, patience: 5}'"),
    ("# a\u2028b\nmodel:\n  input_shape: [2]\n", (1, 4), "a line separator (U+2028)"),
    # text after a flow mapping: PyYAML's "expected <block end>, but found '<scalar>'"
    ("model:\n  layers:\n    - {type: dense, units: 8}   x\n", (3, 33),
     "text at 3:33 after the '}' that closes the value; remove it, or make it a comment with "
     "'#'"),
    # letters and quotes after the colon are the value's own: not named as slipped in (the
    # review: 'name:étude' was told to write 'name: tude')
    ("name:\u00e9tude\nmodel: {}\n", (1, 5), "'name:' is followed by no space, so YAML "
                                            "reads 'name:\u00e9tude' as one string"),
    # a dash look-alike before a list item's dash: told it was out of line
    ("model:\n  layers:\n    - {type: flatten}\n    \u2013- {type: dense, units: 2}\n", (4, 5),
     "an en dash (U+2013) here, which YAML reads as text; remove it"),
    ("model:\n  layers:\n    - {type: flatten}\n    \u2013 {type: dense, units: 2}\n", (4, 5),
     "an en dash (U+2013) here, which YAML does not read as a list item's '-'; write '-' "
     "instead"),
    ("model:\n  layers:\n    - {type: dense, units: 2}\n     {type: dense, units: 2}\n",
     (4, 6), "begin each item with '- '"),
])
def test_a_slip_is_found_past_blank_lines_and_comments(text, position, says):
    """The YAML hint fuzz: a missing colon before a blank line or a comment, a section
    header without its colon, joined lines, a hidden line break and a list item without its
    dash were reported lines late, or with advice that did not fix them."""
    error = only_error(text)
    assert (error.line, error.col) == position and says in error.message, error


def test_lines_are_counted_at_line_feeds_as_editors_count_them():
    """PyYAML breaks lines at U+2028 too (YAML 1.1): every later position was a line off."""
    from nnrun.compiler.frontend import load_spec_text

    with pytest.raises(SpecError) as caught:
        load_spec_text("# a\u2028# b\nseed: -1\nmodel: {input_shape: [2], layers: "
                       "[{type: dense, units: 1}]}\n", "spec.yaml")
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.line, diagnostic.col) == (2, 7)


@pytest.mark.parametrize("item", ["-{type: dense, units: 10}", "-type: dense"])
def test_a_dash_without_its_space_is_named(item):
    """The session's review: `-{type: dense}` under `- {type: flatten}` was told to line up with
    the list's items, which it did already."""
    error = only_error(f"model:\n  layers:\n    - {{type: flatten}}\n    {item}\n")
    assert (error.line, error.col) == (4, 5) and "is followed by no space" in error.message


def test_a_value_used_again_by_an_alias_is_refused_once():
    """Each use of the alias reported the same error at the same place."""
    diagnostics = errors_of("a: &n 010\nb: *n\nc: {<<: {d: 010}}\n")
    assert [(d.line, d.col) for d in diagnostics] == [(1, 7), (3, 13)]  # at 010, not &n


def test_the_overrides_in_effect_replay_in_the_order_given():
    """The start-again and resume commands gave them sorted: `data={...}` then `data.limit=50`
    came back as limit first, which the mapping then wiped (another spec trained)."""
    from nnrun.compiler.frontend import load_spec_text

    text = "data: {dataset: digits}\nmodel: {layers: [{type: flatten}, {type: dense, units: 10}]}\n"
    given = ["data={dataset: digits, validation_split: 0.1}", "data.limit=50"]
    loaded = load_spec_text(text, "spec.yaml", given).loaded
    assert loaded.overrides_in_order() == [f"--set {argument}" for argument in given]
    replaced = load_spec_text(text, "spec.yaml", given[::-1]).loaded  # the limit wiped
    assert replaced.overrides_in_order() == [f"--set {given[0]}"]
    # the API's overrides of a spec loaded with some: numbered after them (the review)
    from nnrun.compiler.frontend import with_overrides

    later = with_overrides(load_spec_text(text, "spec.yaml", given[:1]), given[1:]).loaded
    assert later.overrides_in_order() == [f"--set {argument}" for argument in given]


@pytest.mark.parametrize("option, value, said", [
    # "must be a whole number >= 1, got 1.0": 1.0 is one (the design audit)
    ("epochs", 1.0, "epochs must be a whole number >= 1 given as an int, not the float 1.0"),
    ("batch_size", "8", "batch_size must be a whole number >= 1 given as an int, not the str "
                        "'8'"),
    ("seed", True, "seed must be a whole number >= 0 given as an int, not the bool True"),
    ("threads", 0, "threads must be a whole number >= 1, got 0"),
    ("max_steps", 2.0, "max_steps must be a whole number >= 1 given as an int, not the float "
                       "2.0"),
])
def test_the_apis_counts_say_the_type_they_refuse(tmp_path, option, value, said):
    import nnrun

    with pytest.raises(ValueError) as excinfo:
        nnrun.train("no-such-spec.yaml", out_dir=tmp_path / "run", **{option: value})
    assert str(excinfo.value) == said
