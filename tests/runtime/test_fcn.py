"""Fully convolutional networks (issue 14): whole models against PyTorch with per-pixel losses,
the planned executor against the reference one, the shapes dataset, npz label maps, the
segmentation metrics, shape errors, and the commands on specs/fcn-segmentation.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nnrun
from nnrun.compiler.diagnostics import SpecError
from nnrun.compiler.frontend import check, load_spec_text
from nnrun.runtime.data import load_dataset
from nnrun.runtime.metrics import confusion_matrix, confusion_metrics
from nnrun.runtime.model import Model
from invoking import invoke

ROOT = Path(__file__).resolve().parents[2]
FCN_SPEC = ROOT / "specs" / "fcn-segmentation.yaml"

# Every new layer once, on odd sizes: conv2d_transpose with output_padding, both upsampling
# modes, a skip added back, and a 1x1 convolution to class scores per pixel.
FCN_LAYERS = """\
    - {type: conv2d, name: c1, filters: 4, kernel_size: 3, padding: same, activation: relu}
    - {type: maxpool2d, name: p1, pool_size: 2}
    - {type: conv2d, name: c2, filters: 6, kernel_size: 3, padding: same, activation: tanh}
    - {type: conv2d_transpose, name: up, filters: 4, kernel_size: 3, stride: 2, padding: 1,
       output_padding: 1}
    - {type: add, name: skip, inputs: [up, c1]}
    - {type: upsample2d, name: near, scale: 2}
    - {type: conv2d, name: c3, filters: 5, kernel_size: 3, stride: 2, padding: 1}
    - {type: upsample2d, name: bil, scale: [1, 2], mode: bilinear}
    - {type: conv2d, name: score, filters: 3, kernel_size: [1, 2], stride: [1, 2]}
"""


def spec_text(layers=FCN_LAYERS, input_shape=(2, 6, 6), loss="cross_entropy", dtype="float64",
              optimizer='{"type": "sgd", "lr": 0.1, "momentum": 0.9}', data=""):
    return (f"seed: 3\ndtype: {dtype}\n{data}model:\n  input_shape: {list(input_shape)}\n"
            f"  init: he_uniform\n  layers:\n{layers}loss: {loss}\noptimizer: {optimizer}\n")


def compile_text(text):
    return nnrun.compile(load_spec_text(text))


# --- against PyTorch ------------------------------------------------------------------------


def torch_fcn(params, x, torch):
    F = torch.nn.functional
    t = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    c1 = torch.relu(F.conv2d(torch.tensor(x), t["c1.weight"], t["c1.bias"], padding=1))
    c2 = torch.tanh(F.conv2d(F.max_pool2d(c1, 2), t["c2.weight"], t["c2.bias"], padding=1))
    up = F.conv_transpose2d(c2, t["up.weight"], t["up.bias"], stride=2, padding=1,
                            output_padding=1)
    near = F.interpolate(up + c1, scale_factor=2, mode="nearest")
    c3 = F.conv2d(near, t["c3.weight"], t["c3.bias"], stride=2, padding=1)
    bil = F.interpolate(c3, scale_factor=(1.0, 2.0), mode="bilinear", align_corners=False)
    return F.conv2d(bil, t["score.weight"], t["score.bias"], stride=(1, 2)), t


@pytest.mark.torch
@pytest.mark.parametrize("loss", ["cross_entropy",
                                  {"type": "cross_entropy", "ignore_index": 255,
                                   "label_smoothing": 0.1}])
def test_fcn_loss_and_gradients_match_torch_in_float64(loss):
    torch = pytest.importorskip("torch")
    model = compile_text(spec_text(loss=json.dumps(loss)))
    assert model.lowered.logits.type.shape[1:] == (3, 6, 6)
    params = model.init_params(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 6, 6))
    y = rng.integers(0, 3, (3, 6, 6))
    ignore = loss["ignore_index"] if isinstance(loss, dict) else -100
    if isinstance(loss, dict):
        y[rng.random(y.shape) < 0.3] = ignore
    value, grads = model.loss_and_grads(params, x, y)
    out, tensors = torch_fcn(params, x, torch)
    smoothing = loss["label_smoothing"] if isinstance(loss, dict) else 0.0
    expected = torch.nn.functional.cross_entropy(out, torch.tensor(y), ignore_index=ignore,
                                                 label_smoothing=smoothing)
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-10)
    np.testing.assert_allclose(model.forward(params, x), out.detach().numpy(), rtol=1e-10)
    assert set(grads) == set(params)
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, tensors[name].grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)


@pytest.mark.torch
def test_per_pixel_binary_cross_entropy_with_ignore_index_matches_torch():
    torch = pytest.importorskip("torch")
    layers = FCN_LAYERS.replace("name: score, filters: 3", "name: score, filters: 1")
    model = compile_text(spec_text(layers, loss='{"type": "binary_cross_entropy", '
                                                '"ignore_index": 255}'))
    params = model.init_params(2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 6, 6))
    y = rng.integers(0, 2, (2, 6, 6))
    y[rng.random(y.shape) < 0.25] = 255
    value, grads = model.loss_and_grads(params, x, y)
    out, tensors = torch_fcn(params, x, torch)
    target = torch.tensor(y, dtype=torch.float64)[:, None]
    kept = (target != 255).double()
    losses = torch.nn.functional.binary_cross_entropy_with_logits(out, target * kept,
                                                                  reduction="none")
    expected = (losses * kept).sum() / kept.sum()
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-10)
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, tensors[name].grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)


# --- the planned executor -------------------------------------------------------------------

ONE_D_LAYERS = """\
    - {type: conv1d, filters: 4, kernel_size: 3, stride: 2, padding: 1, activation: relu}
    - {type: conv1d_transpose, filters: 3, kernel_size: 4, stride: 3, padding: 2, output_padding: 2}
    - {type: upsample1d, scale: 3, mode: linear}
    - {type: upsample1d, scale: 2}
    - {type: conv1d, filters: 3, kernel_size: 3, stride: 3}
"""


BINARY_LAYERS = FCN_LAYERS.replace("name: score, filters: 3", "name: score, filters: 1")


@pytest.mark.parametrize("layers, input_shape, loss", [
    (FCN_LAYERS, (2, 6, 6), "cross_entropy"), (ONE_D_LAYERS, (1, 9), "cross_entropy"),
    (BINARY_LAYERS, (2, 6, 6), "binary_cross_entropy")], ids=["2d", "1d", "2d-binary"])
@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-6), ("float64", 1e-12)])
def test_planned_step_trains_like_the_reference_executor(layers, input_shape, loss, dtype,
                                                         tolerance):
    text = spec_text(layers, input_shape, dtype=dtype,
                     loss=f'{{"type": "{loss}", "ignore_index": 7}}')
    planned = compile_text(text)
    reference = Model(planned.source, "numpy", optimized=False)
    output = planned.lowered.logits.type.shape[2:]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, *input_shape))
    y = rng.integers(0, 2 if loss == "binary_cross_entropy" else 3, (6, *output))
    y[rng.random(y.shape) < 0.2] = 7
    results = []
    for model in (reference, planned):
        state = {name: np.array(value) for name, value in model.train_state().items()}
        for step in range(1, 4):
            feeds = model.step_feeds(state, x, y, 0.05, step, seed=step)
            outputs, updates = model.step_executor.run(feeds)
            state.update({name: np.array(value) for name, value in updates.items()})
        results.append((float(outputs["loss"]), state))
    (loss_ref, ref), (loss_opt, opt) = results
    assert loss_opt == pytest.approx(loss_ref, rel=1e-5)
    for name in planned.lowered.params:
        scale = np.linalg.norm(ref[name]) or 1.0
        assert np.linalg.norm(opt[name] - ref[name]) <= tolerance * scale, name
        assert not np.array_equal(ref[name], planned.init_params()[name]), f"{name} never moved"


# --- metrics --------------------------------------------------------------------------------


def test_pixel_accuracy_and_mean_iou_count_pixels_and_leave_out_ignore_index():
    # two 2x2 label maps, scores favouring the classes below; 255 is ignored
    predicted = np.array([[[0, 1], [1, 2]], [[2, 2], [0, 0]]])
    target = np.array([[[0, 1], [2, 2]], [[2, 255], [0, 1]]])
    logits = np.moveaxis(np.eye(3)[predicted], -1, 1)  # [2, 3, 2, 2]
    confusion = confusion_matrix(logits, logits, target, "cross_entropy", 255)
    assert confusion.sum() == 7
    result = confusion_metrics(confusion)
    assert result["pixel_accuracy"] == pytest.approx(5 / 7)
    # class 0: 2 right of 3 pixels true or predicted 0; class 1: 1 of 3; class 2: 2 of 3
    iou = [2 / 3, 1 / 3, 2 / 3]
    assert result["mean_iou"] == pytest.approx(np.mean(iou))


# --- data -----------------------------------------------------------------------------------


def test_shapes_dataset_is_generated_seeded_with_label_maps():
    spec = load_spec_text(spec_text(data="data: {dataset: shapes, n_samples: 50, noise: 0.0}\n"),
                          "s.yaml").spec
    first = load_dataset(spec.data, spec_dir=Path("."), seed=0)
    again = load_dataset(spec.data, spec_dir=Path("."), seed=9)
    assert first.train.x.shape == (40, 1, 32, 32) and first.test.y.shape == (10, 32, 32)
    assert first.task == "segmentation" and first.num_classes == 4
    np.testing.assert_array_equal(first.train.y, again.train.y)
    assert set(np.unique(first.train.y)) <= {0, 1, 2, 3} and len(np.unique(first.train.y)) == 4
    # without noise the background is one value: the label map marks every pixel drawn
    background = first.train.x[:, 0][first.train.y == 0]
    assert np.allclose(background, background[0])
    assert not np.isclose(first.train.x[:, 0][first.train.y > 0], background[0]).any()


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


NPZ_SPEC = """\
data: {dataset: npz, path: maps.npz}
model:
  input_shape: [1, 6, 6]
  layers:
    - {type: conv2d, filters: 3, kernel_size: 3, padding: same}
loss: {type: cross_entropy, ignore_index: 255}
train: {epochs: 1, batch_size: 4, metrics: [pixel_accuracy, mean_iou]}
"""


@pytest.mark.parametrize("names", [("y", "y_test"), ("masks", "masks_test")])
def test_npz_label_maps_train_and_report_segmentation_metrics(tmp_path, names):
    rng = np.random.default_rng(0)
    maps = rng.integers(0, 3, (10, 6, 6))
    maps[0, 0, 0] = 255
    write_npz(tmp_path / "maps.npz", x=rng.standard_normal((10, 1, 6, 6)), **{names[0]: maps},
              x_test=rng.standard_normal((4, 1, 6, 6)), **{names[1]: maps[:4]})
    (tmp_path / "net.yaml").write_text(NPZ_SPEC)
    summary = nnrun.train(str(tmp_path / "net.yaml"), out_dir=tmp_path / "run", quiet=True)
    final = summary["final"]
    assert 0 <= final["test_pixel_accuracy"] <= 1 and 0 <= final["test_mean_iou"] <= 1
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert {"train_pixel_accuracy", "train_mean_iou"} <= set(rows[0])


@pytest.mark.parametrize("arrays, spec_change, message", [
    ({"y": np.zeros((4, 5, 5), np.int64)}, None,
     "label maps are [5, 5], the model ends with [3, 6, 6]"),
    ({"y": np.arange(4) % 2}, None, "has one label per sample, the model ends with [3, 6, 6]; "
     "end the model with {type: flatten} and a dense layer of units: 2"),
    ({"y": np.full((4, 6, 6), 3)}, None,
     "labels go up to 3 but the model has 3 outputs; set filters: 4 in model.layers[0] (conv2d_1)"),
    ({"masks": np.zeros(4, np.int64)}, None, "masks must be label maps [N, H, W]"),
    ({"masks": np.zeros((4, 6, 6)), "y": np.zeros(4)}, None, "has both 'y' and masks"),
    ({"y": np.full((4, 6, 6), 255)}, ("ignore_index: 255", "ignore_index: 9"),
     "filters: 256 in model.layers[0] (conv2d_1), or leave out the pixels labelled 255 with "
     "loss.ignore_index: 255"),
    ({"y": np.zeros((4, 6, 6), np.int64)}, ("maps.npz}", "maps.npz, augment: [random_shift]}"),
     "random_shift would move the pixels but not the label maps"),
])
def test_npz_label_maps_that_do_not_fit_are_one_line_errors(tmp_path, arrays, spec_change,
                                                           message):
    write_npz(tmp_path / "maps.npz", x=np.zeros((4, 1, 6, 6)), **arrays)
    text = NPZ_SPEC if spec_change is None else NPZ_SPEC.replace(*spec_change)
    (tmp_path / "net.yaml").write_text(text)
    result = invoke("train", tmp_path / "net.yaml", "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 1, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# --- shape errors ---------------------------------------------------------------------------


def diagnostics(text):
    try:
        found = check(load_spec_text(text, "net.yaml")).diagnostics
    except SpecError as error:
        found = error.diagnostics
    return [d for d in found if d.severity == "error"]


def test_a_transposed_convolution_of_an_input_1_long_is_not_told_a_larger_stride():
    """The FCN audit: a decoder at a smaller input size was told "a larger stride", which
    spreads nothing of an input 1 long ((1 - 1)*s), and failed again as told."""
    text = spec_text("    - {type: conv2d, filters: 2, kernel_size: 4}\n    - {type: "
                     "conv2d_transpose, filters: 2, kernel_size: 1, stride: 8, padding: 1}\n",
                     (1, 4, 4), loss="mse")
    (error,) = diagnostics(text)
    assert error.message.endswith("padding 1 crops the whole output (rows: (1 - 1)*8 - 2*1 + 1 "
                                  "= -1); use padding at most 0, or a larger kernel")


@pytest.mark.parametrize("layer, field, words", [
    ("{type: conv2d_transpose, filters: 2, kernel_size: 3, stride: 2, output_padding: 2}",
     "output_padding", ["output_padding 2 must be smaller than the stride 2", "0..1"]),
    ("{type: conv2d_transpose, filters: 2, kernel_size: 2, padding: 3}", "padding",
     ["padding 3 crops the whole output", "(4 - 1)*1 - 2*3 + 2 = -1",
      "use padding at most 2, or a larger kernel or a larger stride"]),

    ("{type: conv1d_transpose, filters: 2, kernel_size: 2}", None,
     ["conv1d_transpose expects a [channels, length] sample, got shape [1, 4, 4]",
      "use conv2d_transpose"]),
    ("{type: upsample1d, scale: 2}", None, ["upsample1d expects a [channels, length] sample",
                                            "use upsample2d"]),
    ("{type: upsample2d, scale: [2, 2, 2]}", "scale", ["scale"]),
])
def test_shape_errors_state_the_arithmetic_and_the_fix(layer, field, words):
    text = spec_text(f"    - {layer}\n", (1, 4, 4), loss="mse")
    (error,) = diagnostics(text)
    for word in words:
        assert word in error.message, error.message
    if field:  # the diagnostic points at the field's value
        line = text.splitlines()[error.line - 1]
        assert line[:error.col - 1].endswith(f"{field}: "), (line, error.col)


def test_dataset_with_label_maps_refuses_a_model_that_ends_with_class_scores():
    text = spec_text("    - {type: flatten}\n    - {type: dense, units: 4}\n", (1, 32, 32),
                     data="data: {dataset: shapes}\n")
    (error,) = diagnostics(text)
    assert "'shapes' has label maps [32, 32], the model ends with [4]" in error.message
    assert "upsample back to the input size" in error.message


# --- the example spec through the commands --------------------------------------------------


def test_fcn_spec_through_every_command(tmp_path):
    spec = str(FCN_SPEC)
    for command in (["validate", spec], ["summary", spec], ["graph", spec, "--backward"],
                    ["gradcheck", spec], ["bench", spec, "--steps", "1", "--batch-size", "4"]):
        result = invoke(*command)
        assert result.exit_code == 0, (command, result.output)
    summary = invoke("summary", spec).stdout
    assert "conv2d_transpose" in summary and "upsample2d" in summary and "[4, 32, 32]" in summary
    graph = invoke("graph", spec, "--backward").stdout
    assert "upsample2d_grad" in graph and "conv2d_transpose(" in graph
    run = tmp_path / "run"
    result = invoke("train", spec, "--out", run, "--epochs", "1",
                    "--set", "data.n_samples=120", "--set", "train.batch_size=16")
    assert result.exit_code == 0, result.output
    assert "val_mean_iou" in result.stderr and "test_pixel_accuracy" in result.stderr
    evaluated = invoke("eval", run)
    assert evaluated.exit_code == 0 and "test_mean_iou" in evaluated.output
    for transform in (["--shift", "2"], ["--permute"]):  # the maps would not move with the pixels
        refused = invoke("eval", run, *transform)
        assert refused.exit_code == 1 and "its targets are label maps" in refused.stderr, refused.output
    np.savez(tmp_path / "in.npz", x=np.zeros((2, 1, 32, 32)))
    predicted = invoke("predict", run, tmp_path / "in.npz", "--out", tmp_path / "p.npy")
    assert predicted.exit_code == 0, predicted.output
    assert np.load(tmp_path / "p.npy").shape == (2, 4, 32, 32)
    pytest.importorskip("matplotlib")
    plotted = invoke("plot", run, "--out", tmp_path / "curves.png")
    assert plotted.exit_code == 0, plotted.output
    assert "pixel_accuracy, mean_iou" in plotted.output


def test_linear_and_bilinear_name_the_same_interpolation_on_either_rank():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    outputs = []
    for mode in ("linear", "bilinear"):
        model = compile_text(spec_text(f"    - {{type: upsample2d, scale: 2, mode: {mode}}}\n",
                                       (3, 4, 5), loss="mse"))
        outputs.append(model.forward({}, x))
    np.testing.assert_array_equal(*outputs)
    model = compile_text(spec_text("    - {type: upsample1d, scale: 3, mode: bilinear}\n", (3, 5),
                                   loss="mse"))
    assert model.forward({}, x[:, :, 0]).shape == (2, 3, 15)


@pytest.mark.parametrize("loss, filters, message, before", [
    ("binary_cross_entropy", 1, "binary_cross_entropy needs 0/1 labels, but dataset 'shapes' "
                                "has 4 classes (labels 0..3); use loss: cross_entropy, and set "
                                "filters: 4 in model.layers[0] (conv2d_1)", "loss: "),
    ("cross_entropy", 3, "the model ends with 3 outputs but dataset 'shapes' has 4 classes; "
                         "set filters: 4", "filters: "),
])
def test_per_pixel_outputs_must_fit_the_datasets_classes(loss, filters, message, before):
    text = spec_text(f"    - {{type: conv2d, filters: {filters}, kernel_size: 1}}\n", (1, 32, 32),
                     loss=loss, data="data: {dataset: shapes}\n")
    (error,) = diagnostics(text)
    assert error.message == message
    line = text.splitlines()[error.line - 1]
    assert line[:error.col - 1].endswith(before)


def test_binary_cross_entropy_on_label_maps_beside_a_vector_output_names_the_positions_too():
    """'set units: 4 in model.layers[2]' for shapes' 4 classes behind a flatten and dense layer:
    the next check then refused the vector the fix left (a named-dataset fix audit)."""
    text = spec_text("    - {type: conv2d, filters: 3, kernel_size: 3, padding: same}\n"
                     "    - {type: flatten}\n    - {type: dense, units: 10}\n", (1, 32, 32),
                     loss="binary_cross_entropy", data="data: {dataset: shapes}\n")
    (error,) = diagnostics(text)
    assert error.message.endswith("use loss: cross_entropy, and keep the positions (no flatten, "
                                  "dense or global pool): end the model with a convolution of "
                                  "kernel_size 1 and filters: 4"), error.message


def test_float_masks_of_zeros_and_ones_train_a_per_pixel_binary_cross_entropy(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 1, 6, 6))
    write_npz(tmp_path / "maps.npz", x=x, y=(x[:, 0] > 0).astype(np.float32))
    (tmp_path / "net.yaml").write_text(NPZ_SPEC.replace("filters: 3", "filters: 1").replace(
        "cross_entropy", "binary_cross_entropy"))
    summary = nnrun.train(str(tmp_path / "net.yaml"), out_dir=tmp_path / "run", quiet=True)
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert 0 <= json.loads(rows[-1])["train_mean_iou"] <= 1
    assert summary["epochs_run"] == 1
