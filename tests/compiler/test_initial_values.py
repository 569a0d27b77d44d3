"""Initial values given in a spec: init constant, a layer's weights/bias lists or init_from
file, model.init_from; shapes checked when the spec is compiled, errors at YAML positions."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

import nnrun
from nnrun.cli import main
from nnrun.compiler.diagnostics import SpecError
from nnrun.compiler.frontend import load_spec_text
from nnrun.compiler.schema import spec_json_schema

SPEC = """\
model:
  input_shape: [2]
  layers:
    - {type: dense, units: 3, activation: sigmoid}
    - {type: dense, units: 1}
"""


def compiled(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return nnrun.compile(path)


def validate(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return CliRunner().invoke(main, ["validate", str(path)])


def test_constant_initializer(tmp_path):
    model = compiled(tmp_path, SPEC.replace("[2]\n", "[2]\n  init: {type: constant, value: 0.25}\n")
                     .replace("units: 1}", "units: 1, bias_init: {type: constant, value: -1.5}}"))
    params = model.init_params()
    np.testing.assert_array_equal(params["dense_1.weight"], np.full((2, 3), 0.25))
    np.testing.assert_array_equal(params["dense_2.bias"], [-1.5])
    np.testing.assert_array_equal(params["dense_1.bias"], np.zeros(3))


def test_weights_and_bias_lists_in_the_stored_layout(tmp_path):
    text = SPEC.replace("activation: sigmoid}", "activation: sigmoid,\n"
                        "       weights: [[1, 2, 3], [4, 5, 6]], bias: [0.5, 0.25, 0]}")
    params = compiled(tmp_path, text).init_params()
    np.testing.assert_array_equal(params["dense_1.weight"], [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(params["dense_1.bias"], [0.5, 0.25, 0])
    assert params["dense_1.weight"].dtype == np.float32
    assert params["dense_2.weight"].std() > 0  # still the initializer's


def test_conv_weights_list(tmp_path):
    text = """\
model:
  input_shape: [1, 3, 3]
  layers:
    - {type: conv2d, filters: 1, kernel_size: 2, weights: [[[[1, 0], [0, -1]]]], bias: [2]}
    - {type: flatten}
"""
    model = compiled(tmp_path, text)
    x = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)
    out = model.forward(model.init_params(), x)
    np.testing.assert_array_equal(out, [[x[0, 0, 0, 0] - x[0, 0, 1, 1] + 2] * 4])


def test_weights_of_the_wrong_shape_are_an_error_at_their_position(tmp_path):
    text = SPEC.replace("units: 1}", "units: 1, weights: [[1, 2, 3]]}")
    result = validate(tmp_path, text)
    assert result.exit_code == 1
    line = result.output.strip()
    assert line.startswith(f"{tmp_path / 'spec.yaml'}:5:")
    assert "weights have shape [1, 3], the layer needs [3, 1]" in line
    assert "transpose" in line  # [out, in] given: the message says which layout to use
    assert "([in, out]: 3 inputs, 1 unit)" in line


@pytest.mark.parametrize("later", ["{type: conv2d, filters: 2, kernel_size: 5}",
                                   "{type: conv2d, filters: 2, kernel_size: 2}\n    - {type: flatten}\n"
                                   "    - {type: conv1d, filters: 1, kernel_size: 3}"])
def test_a_wrong_list_is_reported_beside_a_later_layer_s_shape_error(tmp_path, later):
    """The course audit: a later layer's shape error hid the lists' errors of the layers
    before it, found only once that error was fixed."""
    text = ("model:\n  input_shape: [1, 4, 4]\n  layers:\n"
            "    - {type: conv2d, filters: 2, kernel_size: 2, weights: [[[[1, 0], [0, 1]]]],"
            " bias: [0, 0, 0]}\n"
            f"    - {later}\n")
    result = validate(tmp_path, text)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert "spec.yaml:4:" in lines[0] and "weights have shape [1, 1, 2, 2], the layer needs" in lines[0]
    assert "spec.yaml:4:" in lines[1] and "bias has shape [3], the layer needs [2]" in lines[1]
    assert len(lines) == 3 and ("spec.yaml:5:" in lines[2] or "spec.yaml:7:" in lines[2])


def test_bias_of_the_wrong_length(tmp_path):
    result = validate(tmp_path, SPEC.replace("units: 1}", "units: 1, bias: [1, 2]}"))
    assert result.exit_code == 1
    assert "bias has shape [2], the layer needs [1]" in result.output


@pytest.mark.parametrize("edit, literal, shown", [
    (("units: 1}", "units: 1, weights: [[1], [3], [1e39]]}"), "1e39", "1e+39"),
    (("units: 1}", "units: 1, bias: [-4e38]}"), "-4e38", "-4e+38"),
    (("[2]\n", "[2]\n  init: {type: normal, std: 1e39}\n"), "1e39", "1e+39"),
    (("units: 1}", "units: 1, bias_init: {type: constant, value: 1e300}}"), "1e300", "1e+300"),
    # the training settings too: train and trace leaked a NumPy overflow warning (trace: exit 0)
    (("units: 1}\n", "units: 1}\noptimizer: {type: sgd, lr: 1.0e39}\n"), "1.0e39", "1e+39"),
    (("units: 1}\n", "units: 1}\noptimizer: {type: adamw, weight_decay: 5e38}\n"), "5e38",
     "5e+38"),
    (("units: 1}\n", "units: 1}\nloss: {type: mse, scale: 1e300}\n"), "1e300", "1e+300"),
])
def test_initial_values_beyond_float32_are_an_error_at_their_position(tmp_path, edit, literal,
                                                                      shown):
    """Finite in the YAML, inf once cast to float32: validate said ok, train warned and then
    blamed the learning rate for the NaN loss."""
    text = SPEC.replace(*edit)
    row = next(number for number, line in enumerate(text.splitlines(), 1) if literal in line)
    column = text.splitlines()[row - 1].index(literal) + 1
    result = validate(tmp_path, text)
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert line.startswith(f"{tmp_path / 'spec.yaml'}:{row}:{column}: error:"), line
    assert f"{shown} is beyond the range of float32" in line and "Warning" not in line
    float64 = validate(tmp_path, text.replace("model:", "dtype: float64\nmodel:"))
    assert float64.exit_code == 0, float64.output  # float64 holds them


def test_ragged_weights_and_conflicting_sources(tmp_path):
    def column_of(text: str, entry: str) -> str:  # the entry's line:col in the spec
        row = next(number for number, line in enumerate(text.splitlines(), 1) if entry in line)
        return f"{row}:{text.splitlines()[row - 1].index(entry) + 1}:"

    text = SPEC.replace("units: 1}", "units: 1, weights: [[1], [2, 3]]}")
    ragged = validate(tmp_path, text)
    assert ragged.exit_code == 1 and "weights[1] holds 2 values where weights[0] holds 1 value" \
        in ragged.output
    assert column_of(text, "[2, 3]") in ragged.output  # at the row, not at weights
    # Rows of other depths: the row named, not each number of the rows that are right
    text = SPEC.replace("units: 1}", "units: 1, weights: [[[1], 2], [3, 4]]}")
    deeper = validate(tmp_path, text)
    assert deeper.exit_code == 1 and deeper.output.count("error") == 1, deeper.output
    assert "weights[0][1] is a number where weights[0][0] is a list" in deeper.output
    assert column_of(text, "2], [3, 4]") in deeper.output
    both = validate(tmp_path, SPEC.replace("units: 1}", "units: 1, bias: [1], init_from: a.npz}"))
    assert both.exit_code == 1 and "either inline" in both.output


def test_layer_init_from_file(tmp_path):
    np.savez(tmp_path / "hidden.npz", weight=np.full((2, 3), 0.5), bias=np.arange(3.0))
    text = SPEC.replace("activation: sigmoid}", "activation: sigmoid, init_from: hidden.npz}")
    params = compiled(tmp_path, text).init_params()
    np.testing.assert_array_equal(params["dense_1.weight"], np.full((2, 3), 0.5))
    np.testing.assert_array_equal(params["dense_1.bias"], [0, 1, 2])

    np.savez(tmp_path / "hidden.npz", weight=np.full((3, 2), 0.5))
    result = validate(tmp_path, text)
    assert result.exit_code == 1
    assert ":4:" in result.output and "has shape [3, 2], dense_1.weight needs [2, 3]" in result.output
    # a layer's own file of another shape: no advice to leave its arrays out (the layer's
    # init_from needs them); that is model.init_from's, below
    np.savez(tmp_path / "hidden.npz", weight=np.full((4, 3), 0.5))
    result = validate(tmp_path, text)
    assert "needs [2, 3]" in result.output and "save a file without" not in result.output
    missing = validate(tmp_path, text.replace("hidden.npz", "nowhere.npz"))
    assert missing.exit_code == 1 and "no such file" in missing.output


def test_init_from_a_device_a_directory_or_a_crafted_header_is_one_line(tmp_path):
    """/dev/zero and directories were 'no such file'; an npy header that does not parse was
    exit 70 (TokenError)."""
    import os
    import zipfile

    text = SPEC.replace("activation: sigmoid}", "activation: sigmoid, init_from: FILE}")
    for target in (os.devnull, str(tmp_path)):
        result = validate(tmp_path, text.replace("FILE", target))
        assert result.exit_code == 1 and "is not a regular file" in result.output
    with zipfile.ZipFile(tmp_path / "crafted.npz", "w") as archive:
        archive.writestr("weight.npy", b"\x93NUMPY\x01\x00\x20\x00{'descr': __import__('os')"
                                       b".system('x'), }  \n")
    result = validate(tmp_path, text.replace("FILE", "crafted.npz"))
    assert result.exit_code == 1 and "not a readable .npz file" in result.output
    # in words, not Python's ("malformed node or string on line 1: <ast.Call object at 0x...>")
    assert "member 'weight.npy' has a header that is not a NumPy array header" in result.output
    assert "ast." not in result.output and "0x" not in result.output


def test_model_init_from_a_checkpoint_and_layer_values_first(tmp_path):
    np.savez(tmp_path / "model.npz", **{"params/dense_1.weight": np.ones((2, 3)),
                                         "dense_2.bias": np.array([7.0]),
                                         "opt/dense_2.bias.momentum": np.zeros(1)})
    text = SPEC.replace("[2]\n", "[2]\n  init_from: model.npz\n").replace(
        "units: 1}", "units: 1, bias: [3]}")
    params = compiled(tmp_path, text).init_params()
    np.testing.assert_array_equal(params["dense_1.weight"], np.ones((2, 3)))
    np.testing.assert_array_equal(params["dense_2.bias"], [3])  # the layer's own value wins

    np.savez(tmp_path / "model.npz", **{"dense_1.wieght": np.ones((2, 3))})
    result = validate(tmp_path, text)
    assert result.exit_code == 1
    assert ":3:14:" in result.output and "did you mean 'dense_1.weight'?" in result.output
    # a layer of another shape than the file's (a run's, whose layer changed since): the others
    # begin from the file once its arrays are left out
    np.savez(tmp_path / "model.npz", **{"dense_1.weight": np.ones((2, 5))})
    result = validate(tmp_path, text)
    assert "needs [2, 3]; init_from sets every parameter it names: to begin the others from " \
        "it, save a file without this layer's arrays" in result.output


def test_json_schema_knows_the_new_fields():
    text = str(spec_json_schema())
    for word in ("'constant'", "'weights'", "'init_from'", "'bias'"):
        assert word in text


@pytest.mark.parametrize("value", ["[[1, true]]", "[[1, 'a']]"])
def test_weights_are_numbers(tmp_path, value):
    result = validate(tmp_path, SPEC.replace("units: 1}", f"units: 1, weights: {value}}}"))
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_model_init_from_a_pruned_runs_checkpoint(tmp_path):
    """A pruned run's checkpoint also holds boolean masks and the JSON meta: only the
    parameters are initial values, the rest is not refused as 'not numbers'."""
    np.savez(tmp_path / "pruned.npz", **{"params/dense_1.weight": np.full((2, 3), 0.5),
                                          "mask/dense_1.weight": np.ones((2, 3), bool),
                                          "meta": np.array('{"epoch": 3}')})
    text = SPEC.replace("[2]\n", "[2]\n  init_from: pruned.npz\n")
    assert validate(tmp_path, text).exit_code == 0
    params = compiled(tmp_path, text).init_params()
    np.testing.assert_array_equal(params["dense_1.weight"], np.full((2, 3), 0.5))


@pytest.mark.parametrize("where", ["layer", "model"])
def test_init_from_values_that_are_not_finite_are_refused_before_the_run_starts(tmp_path, where):
    """Trained from, they showed up only as "loss became nan"; now one line names the file and
    the array, and --out is left as it was."""
    weight = np.full((2, 3), 0.5)
    weight[1, 2] = np.nan if where == "layer" else np.inf
    if where == "layer":
        np.savez(tmp_path / "w.npz", weight=weight, bias=np.zeros(3))
        key, model = "weight", SPEC.replace("sigmoid}", "sigmoid, init_from: w.npz}")
    else:
        np.savez(tmp_path / "w.npz", **{"params/dense_1.weight": weight})
        key, model = "params/dense_1.weight", SPEC.replace("[2]\n", "[2]\n  init_from: w.npz\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text("seed: 0\ndata: {dataset: xor, n_samples: 20}\n" + model +
                    "loss: {type: mse}\ntrain: {epochs: 1, batch_size: 4, metrics: [mse]}\n")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(spec), "--out", str(run)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("\n") == 1, result.output
    assert f"{tmp_path / 'w.npz'}: array '{key}' holds nan or inf" in result.output
    assert "loss became nan" not in result.output and not run.exists()
    # said at the init_from that names the file, as validate --data says it (it said ok)
    lines = spec.read_text().splitlines()
    line = next(number for number, text in enumerate(lines, 1) if "init_from" in text)
    column = lines[line - 1].index("w.npz") + 1
    placed = f"{spec}:{line}:{column}: error: "
    assert result.output.startswith(placed), result.output
    checked = CliRunner().invoke(main, ["validate", "--data", str(spec)])
    assert checked.exit_code == 1 and checked.output.startswith(placed), checked.output


def test_a_setting_that_rounds_to_zero_in_float32_is_an_error(tmp_path):
    """`eps: 1.0e-50` is 0 in float32: Adam's first step divides 0 by 0 for a parameter whose
    gradient is 0 (a review of the day's changes); float64 holds it."""
    text = SPEC + "optimizer: {type: adam, eps: 1.0e-50}\n"
    result = validate(tmp_path, text)
    assert result.exit_code == 1
    assert result.output.strip().endswith("error: optimizer.eps: 1e-50 rounds to 0 in float32 (the "
                                          "smallest it holds is 1.4e-45); give a larger value")
    assert validate(tmp_path, text.replace("model:", "dtype: float64\nmodel:")).exit_code == 0
    tiny_init = SPEC.replace("[2]\n", "[2]\n  init: {type: normal, std: 1.0e-50}\n")
    assert "error: model.init: 1e-50 rounds to 0 in float32" in validate(tmp_path,
                                                                        tiny_init).output


@pytest.mark.parametrize("value, fix", [
    ("false", "to leave the bias out, write use_bias: false"),
    ("true", "a layer has a bias by default (use_bias: true): remove bias")])
def test_bias_as_pytorchs_switch_names_use_bias(value, fix):
    """PyTorch's Conv2d(..., bias=False): "'bias' must be a list, got false", no fix."""
    text = ("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - {type: conv2d, filters: 2, "
            f"kernel_size: 3, bias: {value}}}\n")
    with pytest.raises(SpecError) as excinfo:
        load_spec_text(text, "spec.yaml")
    (diagnostic,) = excinfo.value.diagnostics
    assert diagnostic.message == f"bias gives the bias's initial values (a list); {fix}"


def test_a_dense_weight_in_pytorchs_layout_in_init_from_is_told_to_transpose(tmp_path):
    """As the inline weights' error says it; the file's error named the shapes alone."""
    np.savez(tmp_path / "w.npz", **{"dense_1.weight": np.zeros((4, 6))})
    text = "model:\n  input_shape: [6]\n  init_from: w.npz\n  layers:\n    - {type: dense, units: 4}\n"
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(SpecError) as excinfo:
        nnrun.compile(tmp_path / "s.yaml")
    assert excinfo.value.diagnostics[0].message.endswith(
        "has shape [4, 6], dense_1.weight needs [6, 4]; nnrun stores a dense weight as [in, "
        "out], the transpose of PyTorch's Linear.weight [out, in]: save its .T")


def test_model_init_from_that_the_layers_own_values_wholly_replace_is_warned(tmp_path):
    """A run "continued" with model.init_from started from the layers' weights:/bias: lists,
    which take precedence, without a word (the course's 2-2-1 example)."""
    np.savez(tmp_path / "last.npz", **{"params/dense_1.weight": np.ones((2, 3)),
                                        "params/dense_2.weight": np.ones((3, 1))})
    listed = (SPEC + "loss: mse\n").replace("[2]\n", "[2]\n  init_from: last.npz\n").replace(
        "sigmoid}", "sigmoid,\n       weights: [[1, 2, 3], [4, 5, 6]], bias: [0, 0, 0]}").replace(
        "units: 1}", "units: 1, weights: [[1], [2], [3]], use_bias: false}")
    result = validate(tmp_path, listed)
    assert result.exit_code == 0, result.output
    assert (f"{tmp_path / 'spec.yaml'}:3:14: warning: model.init_from: init_from sets no "
            "parameter: the weights:/bias: of dense_1, dense_2 give every one, and a layer's own "
            "values take precedence; to start from init_from, remove their weights: and bias:"
            ) in result.output
    # a parameter left to the file: init_from sets it, and nothing is said
    for partial, left in ((listed.replace(", use_bias: false", ""), "dense_2.bias"),
                          (listed.replace(", bias: [0, 0, 0]", ""), "dense_1.bias")):
        np.savez(tmp_path / "last.npz", **{f"params/{left}": np.ones(1 if "2" in left else 3)})
        result = validate(tmp_path, partial)
        assert result.exit_code == 0 and "warning" not in result.output, result.output


def test_an_npz_files_headers_are_read_once_while_it_stays_the_same(tmp_path, monkeypatch):
    """validate read every member's header four times (an npz of 100,000 members took a
    minute); a file written again is read again."""
    from nnrun.compiler import initial_values
    from nnrun.compiler.frontend import check, load_spec

    read = []
    real = initial_values.npy_header
    monkeypatch.setattr(initial_values, "npy_header",
                        lambda archive, member: read.append(member) or real(archive, member))
    arrays = {f"m{i}": np.zeros(1, np.float32) for i in range(50)}
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 4), np.float32), y=np.zeros(10, int), **arrays)
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: npz, path: d.npz}\nmodel: {layers: [{type: dense, "
                    "units: 2}]}\n")
    assert check(load_spec(spec)).ok
    assert sorted(read) == sorted(f"{name}.npy" for name in ["x", "y", *arrays])
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 3), np.float32), y=np.zeros(10, int))
    assert check(load_spec(spec)).summary.input_shape == [3]
    # the second review: rewritten in place at the same size, its old mtime put back (cp -p)
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 5)), y=np.zeros(6), z=np.zeros(4))
    assert check(load_spec(spec)).summary.input_shape == [5]
    status = (tmp_path / "d.npz").stat()
    np.savez(tmp_path / "e.npz", x=np.zeros((5, 6)), y=np.zeros(5), z=np.zeros(5))
    (tmp_path / "d.npz").write_bytes((tmp_path / "e.npz").read_bytes())
    assert (tmp_path / "d.npz").stat().st_size == status.st_size
    os.utime(tmp_path / "d.npz", ns=(status.st_atime_ns, status.st_mtime_ns))
    assert check(load_spec(spec)).summary.input_shape == [6]


def test_a_layer_whose_shapes_failed_is_not_told_a_weights_shape_of_its_wrong_input():
    """The second review: a dense layer reading a conv's [2, 6, 6] without a flatten was also
    told "weights have shape [1, 2], the layer needs [2, 3]", a shape of the input it cannot
    take (after the flatten it needs [72, 3])."""
    text = ("model:\n  input_shape: [1, 8, 8]\n  layers:\n"
            "    - {type: conv2d, filters: 2, kernel_size: 3}\n"
            "    - {type: dense, units: 3, weights: [[1, 2]]}\n")
    with pytest.raises(SpecError) as raised:
        nnrun.compile(load_spec_text(text, "spec.yaml"))
    assert not [d for d in raised.value.diagnostics if "weights have shape" in d.message]
