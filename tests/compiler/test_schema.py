import pytest
import yaml

from nnrun.compiler import schema
from nnrun.compiler.diagnostics import SpecError
from nnrun.compiler.frontend import load_spec_text
from nnrun.compiler.lower import LOWERINGS


def test_every_layer_type_has_exactly_one_lowering():
    assert set(LOWERINGS) == set(schema.LAYER_TYPES)


def test_activation_names_work_as_layers_and_as_fields():
    assert set(schema.ACTIVATION_TYPES) <= set(schema.LAYER_TYPES)
    spec = schema.Spec.model_validate({"model": {"input_shape": [3], "layers": [
        {"type": "dense", "units": 2, "activation": "leaky_relu"},
        {"type": "dense", "units": 2, "activation": {"type": "elu", "alpha": 0.5}},
        {"type": "tanh"}]}})
    first, second, third = spec.model.layers
    assert first.activation.type == "leaky_relu" and first.activation.alpha == 0.01
    assert second.activation.alpha == 0.5
    assert third.type == "tanh"


def test_activation_none_is_no_activation():
    """DESIGN.md's table writes dense's default as `activation (none)`: a spec copying it says
    `activation: none`, which YAML reads as the string 'none'."""
    spec = load_spec_text("""
model:
  input_shape: [3, 8]
  layers:
    - {type: conv1d, filters: 2, kernel_size: 3, activation: none}
    - {type: conv1d_transpose, filters: 2, kernel_size: 3, activation: none}
    - {type: flatten}
    - {type: dense, units: 4, activation: none}
    - {type: dense, units: 2, activation: null}
""").spec
    assert [getattr(layer, "activation", None) for layer in spec.model.layers] == [None] * 5
    with pytest.raises(SpecError, match="unknown activation 'nothing'"):
        load_spec_text("model: {input_shape: [3], layers: [{type: dense, units: 2, "
                       "activation: nothing}]}")
    with pytest.raises(SpecError):  # not a layer type
        load_spec_text("model: {input_shape: [3], layers: [{type: none}]}")
    with pytest.raises(SpecError):  # the JSON Schema takes the name alone, and so does validate
        load_spec_text("model: {input_shape: [3], layers: [{type: dense, units: 2, "
                       "activation: {type: none}}]}")


def test_defaults_follow_the_design():
    spec = schema.Spec.model_validate({"model": {"input_shape": [3], "layers": [
        {"type": "conv1d", "filters": 2, "kernel_size": 1}, {"type": "batchnorm"}]}})
    conv, norm = spec.model.layers
    assert (conv.stride, conv.padding, conv.dilation, conv.padding_mode) == (1, 0, 1, "zeros")
    assert (norm.momentum, norm.eps) == (0.9, 1e-5)
    assert spec.version == 1 and spec.dtype == "float32" and spec.seed == 0
    assert spec.optimizer.type == "sgd" and spec.loss.type == "cross_entropy"


def test_the_embedded_digits_are_the_default_dataset():
    source = load_spec_text("data: {validation_split: 0.1}\nmodel:\n  layers:\n"
                            "    - {type: flatten}\n    - {type: dense, units: 10}\n")
    assert source.spec.data.dataset == "digits"
    assert source.spec.data.validation_split == 0.1


@pytest.mark.parametrize("dataset, option, value, applies_to", [
    ("digits", "path", "d.npz", "datasets read from files"),
    ("mnist1d", "path", "d.npz", "datasets read from files"),
    ("spirals", "path", "d.npz", "datasets read from files"),
    ("digits", "n_samples", 5, "generated datasets"),
    ("npz", "noise", 0.5, "generated datasets"),
])
def test_an_option_the_dataset_does_not_take_is_an_error_on_its_line(dataset, option, value,
                                                                     applies_to):
    """data.path on digits was silently ignored; n_samples was refused at `dataset`'s line."""
    text = (f"data:\n  dataset: {dataset}\n  validation_split: 0.1\n  {option}: {value}\n"
            + ("  path: d.npz\n" if dataset == "npz" else "")
            + "model:\n  input_shape: [2]\n  layers: [{type: dense, units: 2}]\n")
    with pytest.raises(SpecError) as caught:
        load_spec_text(text)
    # input_shape [2] beside a named dataset's own shape is an error of its own, said too
    diagnostic, = [d for d in caught.value.diagnostics if d.where != "model.input_shape"]
    assert diagnostic.line == 4, diagnostic.format()
    assert f"data.{option} applies to {applies_to}" in diagnostic.message
    if (dataset, option) == ("digits", "path"):  # the default, likely read where none is named
        assert diagnostic.message.endswith("not 'digits' (also what data naming no dataset reads); "
                                           "set data.dataset: npz, or remove the path")
    else:
        assert f"not '{dataset}'; remove it" in diagnostic.message


def test_default_layer_names_count_each_type():
    spec = schema.Spec.model_validate({"model": {"input_shape": [3], "layers": [
        {"type": "dense", "units": 2}, {"type": "relu"}, {"type": "dense", "units": 2},
        {"type": "dense", "units": 2, "name": "head"}]}})
    assert schema.default_layer_names(spec.model.layers) == ["dense_1", "relu_1", "dense_2", "head"]


def test_json_schema_lists_every_layer_type():
    document = schema.Spec.model_json_schema()
    text = str(document)
    for layer_type in schema.LAYER_TYPES:
        assert f"'{layer_type}'" in text


BOOLEANS_AS_NUMBERS = """\
version: true
model:
  input_shape: [true, 2]
  layers:
    - {type: dense, units: true}
    - {type: conv1d, filters: 2, kernel_size: true}
    - {type: dropout, rate: false}
optimizer: {type: sgd, lr: true}
seed: false
"""


def test_yaml_booleans_are_not_numbers():
    with pytest.raises(SpecError) as raised:
        load_spec_text(BOOLEANS_AS_NUMBERS, "bools.yaml")
    found = {(d.line, d.col, d.message) for d in raised.value.diagnostics}
    assert found == {
        (1, 10, "'version' must be 1, got true"),
        (3, 17, "'input_shape[0]' must be an integer, got true"),
        (5, 28, "'units' must be an integer, got true"),
        (6, 47, "'kernel_size' must be an integer or a list, got true"),
        (7, 29, "'rate' must be a number, got false"),
        (8, 28, "'lr' must be a number, got true"),
        (9, 7, "'seed' must be an integer, got false"),
    }


YAML_11_ONLY = """\
name: on
model:
  input_shape: [4]
  layers:
    - {type: dense, units: 010, use_bias: yes}
    - {type: dense, units: 3}
train: {epochs: 1:30, shuffle: off, batch_size: 1_000}
optimizer: {type: sgd, lr: 0.1, momentum: 0b1}
"""


def test_plain_values_yaml_1_1_and_1_2_read_apart_are_errors_with_both_readings():
    """PyYAML read `use_bias: yes` as true and `epochs: 010` as 8, where an editor (YAML 1.2)
    reads the text 'yes' and 10: the spec validated and meant something else in the editor."""
    with pytest.raises(SpecError) as raised:
        load_spec_text(YAML_11_ONLY, "yaml11.yaml")
    found = {(d.line, d.col): d.message for d in raised.value.diagnostics}
    assert set(found) == {(1, 7), (5, 28), (5, 43), (7, 17), (7, 32), (7, 49), (8, 43)}
    assert found[1, 7] == ("on is true to YAML 1.1 (PyYAML, nnrun) but text to YAML 1.2 "
                           "(editors); write true for the yes/no value, or 'on' in quotes for "
                           "the text")
    assert found[5, 28] == ("010 is 8 to YAML 1.1 (a leading 0 makes it octal) but 10 to YAML "
                            "1.2 (editors); write 8 or 10 without the leading 0")
    assert "yes is true to YAML 1.1" in found[5, 43] and "write true" in found[5, 43]
    assert found[7, 17].startswith("1:30 is 90 to YAML 1.1 (base 60) but text to YAML 1.2")
    assert "off is false" in found[7, 32] and "write false" in found[7, 32]
    assert "write 1000, or '1_000' in quotes" in found[7, 49]
    assert "0b1 is 1 to YAML 1.1 (binary)" in found[8, 43]


@pytest.mark.parametrize("text", ["true", "False", "0", "07", "-3", "0x1F", "1.5", "-.5", "1.",
                                  "1.0e+5", ".inf", "-.Inf", ".nan", "2.0e-3"])
def test_plain_values_both_yaml_versions_read_alike_stay_accepted(text):
    from nnrun.compiler.loader import _readings_differ

    assert not _readings_differ(text, yaml.safe_load(text))


def test_an_explicit_tag_is_read_alike_by_both_versions():
    """`lr: !!float 1` was told it had a leading 0 (the check took the tagged text as plain)."""
    spec = load_spec_text("model: {input_shape: [4], layers: [{type: dense, units: 2}]}\n"
                          "optimizer: {type: sgd, lr: !!float 1}\n", "tag.yaml").spec
    assert spec.optimizer.lr == 1.0


def test_a_yaml_1_1_boolean_as_a_key_is_told_to_quote_it():
    with pytest.raises(SpecError) as raised:
        load_spec_text("model: {input_shape: [4], layers: [{type: dense, units: 2}]}\non: 3\n",
                       "key.yaml")
    [diagnostic] = raised.value.diagnostics
    assert diagnostic.message == ("keys must be names; got true (on to YAML 1.1): write 'on' in "
                                  "quotes")


def test_permute_features_still_takes_a_boolean_or_a_seed():
    for value in (True, False, 7):
        data = schema.Data.model_validate({"dataset": "xor", "permute_features": value})
        assert data.permute_features == value and type(data.permute_features) is type(value)


def _yaml_string(text: str) -> str:
    import json

    return json.dumps(text)  # a JSON string is a YAML double-quoted string


def _named(name: str) -> str:
    return f"name: {_yaml_string(name)}\nmodel:\n  input_shape: [2]\n  layers: [{{type: dense, units: 2}}]\n"


@pytest.mark.parametrize("name", ["../../tmp/x", "/tmp/x", "exp/../../x", "exp//x", "exp/",
                                  "a\\b", "a\nb", "a\x00b", "..", ".", "", "x" * 201])
def test_a_spec_name_cannot_lead_outside_runs(name):
    with pytest.raises(SpecError) as raised:
        load_spec_text(_named(name))
    (diagnostic,) = raised.value.diagnostics
    assert (diagnostic.line, diagnostic.col) == (1, 7)
    assert "names its run directory" in diagnostic.message


@pytest.mark.parametrize("name", ["lenet5-mnist", "run.v2", "my model", "réseau_1", "-x",
                                  "exp/lenet"])  # runs/exp/lenet/...: older runs have such
def test_plain_spec_names_are_kept(name):
    assert load_spec_text(_named(name)).spec.name == name


def test_a_file_stem_that_cannot_name_a_directory_gives_the_name_spec(tmp_path):
    from nnrun.compiler.frontend import load_spec

    path = tmp_path / "we\\ird.yaml"  # a backslash: a path separator elsewhere
    path.write_text("model:\n  input_shape: [2]\n  layers: [{type: dense, units: 2}]\n")
    assert load_spec(path).spec.name == "spec"


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_numbers_of_a_spec_are_finite(value):
    with pytest.raises(SpecError) as raised:
        load_spec_text("model:\n  input_shape: [2]\n  layers: [{type: dense, units: 2}]\n"
                       f"loss: {{type: mse, scale: {value}}}\n")
    (diagnostic,) = raised.value.diagnostics
    assert "'scale' must be a finite number" in diagnostic.message


@pytest.mark.parametrize("layer, line, words", [
    ("    - {type: dense, units: 3,\n       use_bias: false,\n       bias: [1, 2, 3]}\n", 6,
     "bias values given with use_bias: false"),
    ("    - {type: conv1d, filters: 1, kernel_size: 2,\n       init: zeros,\n"
     "       weights: [[[1, 2]]]}\n", 6, "init has no effect when weights are given"),
    ("    - {type: dense, units: 1,\n       bias: [0],\n       init_from: w.npz}\n", 6,
     "either inline (weights, bias) or in init_from"),
])
def test_a_value_in_conflict_with_another_is_an_error_on_its_own_line(layer, line, words):
    """These pointed at the layer's first line, whatever field was in conflict."""
    text = f"model:\n  input_shape: [1, 4]\n  layers:\n{layer}"
    with pytest.raises(SpecError) as caught:
        load_spec_text(text.replace("input_shape: [1, 4]", "input_shape: [4]")
                       if "dense" in layer else text)
    diagnostic, = caught.value.diagnostics
    assert words in diagnostic.message and diagnostic.line == line, diagnostic.format()


def test_nesterov_without_momentum_is_an_error_on_its_line():
    text = ("model:\n  input_shape: [2]\n  layers: [{type: dense, units: 2}]\n"
            "optimizer:\n  type: sgd\n  lr: 0.1\n  nesterov: true\n")
    with pytest.raises(SpecError) as caught:
        load_spec_text(text)
    diagnostic, = caught.value.diagnostics
    assert "nesterov: true needs momentum > 0" in diagnostic.message and diagnostic.line == 7
    load_spec_text(text.replace("lr: 0.1", "momentum: 0.9"))


def test_every_1d_layer_with_two_values_is_reported_at_once():
    """They were found while lowering, one layer at a time (fix one, see the next)."""
    text = ("model:\n  input_shape: [3, 8]\n  layers:\n"
            "    - {type: conv1d, filters: 2, kernel_size: 3, stride: [1, 1]}\n"
            "    - {type: maxpool1d, pool_size: [2, 2]}\n"
            "    - {type: conv1d_transpose, filters: 2, kernel_size: 3, output_padding: [0, 0]}\n"
            "    - {type: avgpool1d, pool_size: 2, padding: [1]}\n")
    with pytest.raises(SpecError) as caught:
        load_spec_text(text)
    found = [(d.line, d.message) for d in caught.value.diagnostics]
    assert found == [(4, "stride needs 1 value, got [1, 1]"),
                     (5, "pool_size needs 1 value, got [2, 2]"),
                     (6, "output_padding needs 1 value, got [0, 0]")], found


def test_settings_that_train_but_do_not_do_what_they_say_are_warned_at_their_fields():
    """A top-k as large as the classes is always 1; a cosine schedule rising to its min_lr;
    a warm-up that takes the whole training. They validated silently."""
    from nnrun.compiler.frontend import check

    text = ("data: {dataset: digits}\nmodel:\n  layers:\n    - {type: flatten}\n"
            "    - {type: dense, units: 10}\noptimizer:\n  type: sgd\n  lr: 0.1\n"
            "  schedule: {type: cosine, min_lr: 0.5, warmup_epochs: 3}\n"
            "train:\n  epochs: 3\n  metrics: [accuracy, {type: top_k_accuracy, k: 12}]\n")
    found = [(d.severity, d.line, d.message) for d in check(load_spec_text(text)).diagnostics]
    assert [(severity, line) for severity, line, _ in found] == [
        ("warning", 9), ("warning", 9), ("warning", 12)], found
    assert "min_lr 0.5 is above lr 0.1" in found[0][2]
    assert "warmup_epochs 3 is not below train.epochs 3" in found[1][2]
    assert "k: 12 counts every sample right, the model has 10 scores" in found[2][2]
    fine = text.replace("min_lr: 0.5, warmup_epochs: 3", "min_lr: 0.01, warmup_epochs: 1")
    assert not check(load_spec_text(fine.replace("k: 12", "k: 3"))).diagnostics


def test_a_metric_listed_twice_is_warned_at_the_second(tmp_path):
    from nnrun.compiler.frontend import check

    text = ("data: {dataset: digits}\nmodel: {layers: [{type: flatten}, {type: dense, units: "
            "10}]}\ntrain:\n  metrics: [accuracy, {type: top_k_accuracy, k: 3}, mae,\n"
            "            {type: top_k_accuracy, k: 3}, {type: top_k_accuracy, k: 2}]\n")
    found = [(d.severity, d.line, d.where, d.message)
             for d in check(load_spec_text(text)).diagnostics]
    assert found == [("warning", 5, "train.metrics[3]", "top_3_accuracy is listed already "
                      "(train.metrics[1]); it is tracked once: remove this one")], found
    # the docs walk: the monitor's choices listed it twice
    wrong = text.replace("train:\n", "train:\n  early_stopping: {monitor: acc}\n")
    (error,) = [d.message for d in check(load_spec_text(wrong)).diagnostics
                if d.severity == "error"]
    assert error.endswith("choose one of: train_loss, train_accuracy, train_top_3_accuracy, "
                          "train_mae, train_top_2_accuracy"), error


@pytest.mark.parametrize("loss, choices", [
    ("cross_entropy", "train_loss, train_accuracy"),
    ("mse", "train_loss, train_accuracy, train_mae")])
def test_the_monitors_offered_before_the_npz_is_read_are_those_its_loss_can_have(loss,
                                                                                 choices):
    """Class labels are all cross_entropy reads: mae is a default only under mse, mae or huber,
    whose targets may be real numbers (validate offered train_mae, which train refused)."""
    from nnrun.compiler.frontend import check

    text = ("data: {dataset: npz, path: d.npz}\nmodel:\n  input_shape: [3]\n"
            "  layers: [{type: dense, units: 4}]\n"
            f"loss: {loss}\ntrain:\n  early_stopping: {{monitor: train_los}}\n")
    (error,) = [d.message for d in check(load_spec_text(text)).diagnostics
                if d.severity == "error"]
    assert f"choose one of: {choices}, val_loss" in error, error


def test_a_spec_without_data_has_its_monitor_checked_against_its_metrics():
    """validate of an architecture without a data section passed any monitor; val_* may come
    with the data, a metric the spec does not track will not."""
    from nnrun.compiler.frontend import check

    text = ("model:\n  input_shape: [3]\n  layers: [{type: dense, units: 4}]\n"
            "train:\n  metrics: [accuracy]\n  early_stopping: {monitor: val_los}\n")
    (error,) = [(d.line, d.message) for d in check(load_spec_text(text)).diagnostics
                if d.severity == "error"]
    assert error == (6, "'val_los' will not be a metric of this run; did you mean 'val_loss'? "
                     "choose one of: train_loss, train_accuracy, val_loss, val_accuracy"), error
    fine = text.replace("val_los", "val_accuracy")
    assert not [d for d in check(load_spec_text(fine)).diagnostics if d.severity == "error"]


def test_train_prints_the_settings_warnings_validate_gives(tmp_path):
    """The docs promise train prints every warning validate gives; the settings' warnings
    (checks.training_warnings) were validate's alone."""
    from invoking import invoke

    spec = tmp_path / "w.yaml"
    spec.write_text("data: {dataset: digits, limit: 64}\nmodel:\n  layers:\n"
                    "    - {type: flatten}\n    - {type: dense, units: 10}\n"
                    "optimizer: {type: sgd, lr: 0.1, schedule: {type: cosine, min_lr: 0.5}}\n"
                    "train: {epochs: 1}\n")
    result = invoke("train", spec, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert f"{spec}:6:66: warning: optimizer.schedule.min_lr: min_lr 0.5 is above lr" \
        in result.stderr


def test_top_k_on_one_output_is_warned():
    """One score ranks nothing: its top is class 0, and top-5 read 0.49 where accuracy read
    0.56, without a word."""
    from nnrun.compiler.frontend import check

    text = ("data: {dataset: xor}\nmodel: {layers: [{type: dense, units: 1}]}\n"
            "loss: binary_cross_entropy\ntrain: {metrics: [accuracy, top_k_accuracy]}\n")
    (warning,) = check(load_spec_text(text)).diagnostics
    assert warning.severity == "warning" and warning.line == 4
    assert "the model has one output (its top is always class 0); use accuracy" in \
        warning.message


@pytest.mark.parametrize("where", ["data", "model", "layer"])
@pytest.mark.parametrize("path, said", [
    # `data.path: "a\\0b"` passed validate with a warning and train, trace, diff and resume
    # ended in Python's ValueError (embedded null byte), exit 70
    ("a\\0b.npz", "no file name holds a NUL character"),
    # `init_from: ""` (a template's unset value) trained from the initializers without a word
    ("", "an empty path names no file; write the file's path, or leave the field out"),
])
def test_a_path_no_file_has_is_refused_at_the_field(where, path, said):
    data = (f'data: {{dataset: npz, path: "{path}"}}\n' if where == "data"
            else "data: {dataset: xor}\n")
    model_field = f', init_from: "{path}"' if where == "model" else ""
    layer_field = f', init_from: "{path}"' if where == "layer" else ""
    text = (f"{data}model: {{input_shape: [2]{model_field}, layers: [{{type: dense, units: 2"
            f"{layer_field}}}]}}\n")
    with pytest.raises(SpecError) as raised:
        load_spec_text(text, "path.yaml")
    [diagnostic] = raised.value.diagnostics
    assert said in diagnostic.message
    assert diagnostic.line == (1 if where == "data" else 2)
