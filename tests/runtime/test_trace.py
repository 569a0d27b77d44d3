"""`nnrun trace`: the values of one training step as the course writes them, read from the
training-step graph. The 2-2-1 sigmoid example is checked against the hand-derived deltas
(plain Python floats, not nnrun) to 1e-12 in float64."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import nnrun
from nnrun.cli import main
from nnrun.runtime.checkpoint import checkpoint_meta, load_checkpoint, save_checkpoint
from nnrun.runtime.schedules import learning_rate
from nnrun.runtime.trace import TraceError, trace

SPECS = Path(__file__).resolve().parents[2] / "specs"
COURSE = SPECS / "course-2-2-1-sigmoid.yaml"


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def by_hand(x, y, w2, b2, w3, b3, eta):
    """The lecture's formulas. w2[j][k] joins input k to hidden unit j, w3[j] hidden j to the
    output; C = 1/2 (a3 - y)^2."""
    z2 = [sum(w2[j][k] * x[k] for k in range(2)) + b2[j] for j in range(2)]
    a2 = [sigmoid(z) for z in z2]
    z3 = sum(w3[j] * a2[j] for j in range(2)) + b3
    a3 = sigmoid(z3)
    delta3 = (a3 - y) * a3 * (1 - a3)
    delta2 = [delta3 * w3[j] * a2[j] * (1 - a2[j]) for j in range(2)]
    grad_w2 = [[delta2[j] * x[k] for k in range(2)] for j in range(2)]
    grad_w3 = [delta3 * a2[j] for j in range(2)]
    return {
        "z2": z2, "a2": a2, "z3": z3, "a3": a3, "cost": 0.5 * (a3 - y) ** 2,
        "delta3": delta3, "delta2": delta2, "grad_w2": grad_w2, "grad_w3": grad_w3,
        "w2": [[w2[j][k] - eta * grad_w2[j][k] for k in range(2)] for j in range(2)],
        "b2": [b2[j] - eta * delta2[j] for j in range(2)],
        "w3": [w3[j] - eta * grad_w3[j] for j in range(2)], "b3": b3 - eta * delta3,
    }


# The spec's numbers, in the course's orientation.
X, Y, ETA = [0.05, 0.10], 0.01, 0.5
W2, B2, W3, B3 = [[0.15, 0.20], [0.25, 0.30]], [0.35, 0.35], [0.40, 0.45], 0.60


def close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64).reshape(-1),
                               np.asarray(expected, dtype=np.float64).reshape(-1),
                               rtol=0, atol=1e-12)


def test_course_example_steps_match_the_hand_derived_deltas():
    result = trace(nnrun.load_spec(COURSE), steps=3)
    w2, b2, w3, b3 = W2, B2, W3, B3
    for step in result.steps:
        hand = by_hand(X, Y, w2, b2, w3, b3, ETA)
        hidden, output = step.layers
        assert (hidden.index, output.index) == (2, 3)
        close(step.x, X)
        close(hidden.z, hand["z2"])
        close(hidden.a, hand["a2"])
        close(output.z, hand["z3"])
        close(output.a, hand["a3"])
        close(step.cost, hand["cost"])
        close(output.delta, hand["delta3"])
        close(hidden.delta, hand["delta2"])
        params = {p.name: p for p in step.params}
        # stored [in, out]: the transpose of the course's w_jk
        close(params["dense_1.weight"].gradient.T, hand["grad_w2"])
        close(params["dense_2.weight"].gradient[:, 0], hand["grad_w3"])
        close(params["dense_1.bias"].gradient, hand["delta2"])
        close(params["dense_2.bias"].gradient, hand["delta3"])
        close(params["dense_1.weight"].updated.T, hand["w2"])
        close(params["dense_2.weight"].updated[:, 0], hand["w3"])
        close(params["dense_1.bias"].updated, hand["b2"])
        close(params["dense_2.bias"].updated, hand["b3"])
        w2, b2, w3, b3 = hand["w2"], hand["b2"], hand["w3"], hand["b3"]
    # the lecture's updated output weights
    first = {p.name: p for p in result.steps[0].params}
    assert first["dense_2.weight"].updated[:, 0] == pytest.approx([0.35891648, 0.408666186])


def test_text_shows_the_course_notation_and_numbers():
    result = CliRunner().invoke(main, ["trace", str(COURSE)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "transpose of nnrun's stored dense layout [in, out]" in text
    hand = by_hand(X, Y, W2, B2, W3, B3, ETA)
    assert f"δ⁽³⁾ = ∂C/∂z⁽³⁾ dense_2 = [{hand['delta3']:.10g}]" in text
    assert f"a⁽²⁾ = sigmoid(z⁽²⁾) = [{hand['a2'][0]:.10g}, {hand['a2'][1]:.10g}]" in text
    assert f"C = {hand['cost']:.10g}" in text
    # w⁽²⁾ printed with row j = hidden unit, column k = input: row 1 is [w_11, w_12]
    assert "j=1  w        [0.15, 0.2]" in text
    assert "j=2  w        [0.25, 0.3]" in text
    assert text.index("forward") < text.index("backward") < text.index("gradients and updates")


def test_json_holds_every_value_in_the_course_orientation():
    result = CliRunner().invoke(main, ["trace", str(COURSE), "--format", "json", "--steps", "2"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert len(document["steps"]) == 2
    step = document["steps"][0]
    hand = by_hand(X, Y, W2, B2, W3, B3, ETA)
    layers = {layer["name"]: layer for layer in step["layers"]}
    close(layers["dense_1"]["delta"], hand["delta2"])
    close(layers["dense_2"]["delta"], hand["delta3"])
    params = {p["name"]: p for p in step["params"]}
    close(params["dense_1.weight"]["value"], W2)  # [j][k], as the course writes it
    close(params["dense_1.weight"]["gradient"], hand["grad_w2"])
    assert "transpose" in params["dense_1.weight"]["layout"]
    close(document["steps"][1]["params"][0]["value"], hand["w2"])


MIXED = """\
name: mixed
seed: 3
dtype: float64
data:
  dataset: digits
  augment: [{type: random_shift, max_shift: 1}]
model:
  layers:
    - {type: conv2d, filters: 2, kernel_size: 3, activation: relu}
    - {type: maxpool2d, pool_size: 2}
    - {type: flatten}
    - {type: dropout, rate: 0.3}
    - {type: dense, units: 10}
optimizer: {type: sgd, lr: 0.05, momentum: 0.9}
train: {batch_size: 4, epochs: 1}
"""


def test_trace_steps_are_the_training_run_s_steps(tmp_path):
    """Same batches, augmentation, dropout draws and momentum as `nnrun train`."""
    spec = tmp_path / "mixed.yaml"
    spec.write_text(MIXED)
    result = trace(nnrun.load_spec(spec), steps=3)
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True, max_steps=3)
    trained, _ = load_checkpoint(tmp_path / "run" / "last.npz")
    for param in result.steps[-1].params:
        np.testing.assert_allclose(param.updated, trained[param.name], rtol=1e-10, atol=1e-12)
    # each step starts where the previous one ended
    for before, after in zip(result.steps, result.steps[1:]):
        for old, new in zip(before.params, after.params):
            np.testing.assert_array_equal(old.updated, new.value)


def test_small_feature_maps_are_printed_large_ones_elided(tmp_path):
    spec = tmp_path / "mixed.yaml"
    spec.write_text(MIXED)
    small = CliRunner().invoke(main, ["trace", str(spec), "--batch-size", "1"])
    assert small.exit_code == 0, small.output
    assert "z⁽²⁾ conv2d_1: 2 maps of 6×6" in small.output
    assert "δ⁽³⁾ = ∂C/∂a⁽³⁾ maxpool2d_1: 2 maps of 3×3" in small.output
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "big.npz", x=rng.normal(size=(6, 1, 20, 20)), y=np.arange(6) % 2)
    big_spec = tmp_path / "big.yaml"
    big_spec.write_text(MIXED.replace("dataset: digits", "dataset: npz\n  path: big.npz")
                        .replace("units: 10", "units: 2")
                        .replace("model:\n", "model:\n  input_shape: [1, 20, 20]\n"))
    big = CliRunner().invoke(main, ["trace", str(big_spec), "--batch-size", "1"])
    assert big.exit_code == 0, big.output
    assert "z⁽²⁾ conv2d_1: 2 maps of 18×18 not shown (larger than 12×12)" in big.output
    assert "a⁽³⁾ maxpool2d_1 (maxpool2d): 2 maps of 9×9\n" in big.output


def test_a_label_map_is_one_map(tmp_path):
    """A segmentation target [H, W] is one map per sample, not H channels of W values."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "maps.npz", x=rng.normal(size=(4, 1, 5, 5)),
             y=rng.integers(0, 2, size=(4, 5, 5)))
    spec = tmp_path / "maps.yaml"
    spec.write_text("data: {dataset: npz, path: maps.npz}\nmodel:\n  input_shape: [1, 5, 5]\n"
                    "  layers: [{type: conv2d, filters: 2, kernel_size: 3, padding: 1}]\n"
                    "train: {batch_size: 1}\n")
    result = CliRunner().invoke(main, ["trace", str(spec)])
    assert result.exit_code == 0, result.output
    assert "y (target): 1 map of 5×5\n" in result.output


@pytest.mark.parametrize("layer, in_channels, input_shape", [
    ("conv2d_transpose", 1, [1, 2, 2]), ("conv1d_transpose", 2, [2, 3])])
def test_a_transposed_convolutions_weight_is_printed_per_filter_j_and_input_channel_k(
        tmp_path, layer, in_channels, input_shape):
    """Its weight is stored [in, out, kernel] (PyTorch's layout): row j is still the filter."""
    rng = np.random.default_rng(0)
    maps = [3, 4, 4] if layer == "conv2d_transpose" else [3, 6]
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(2, *input_shape)),
             y=np.zeros((2, *maps[1:]), dtype=np.int64))
    spec = tmp_path / "t.yaml"
    spec.write_text("dtype: float64\ndata: {dataset: npz, path: d.npz, normalize: none}\n"
                    f"model:\n  input_shape: {input_shape}\n"
                    f"  layers: [{{type: {layer}, filters: 3, kernel_size: 2, stride: 2, "
                    "name: up}]\ntrain: {batch_size: 2}\n")
    text = CliRunner().invoke(main, ["trace", str(spec)])
    assert text.exit_code == 0, text.output
    rows = [line.split()[:2] for line in text.output.splitlines() if "  w  " in line]
    assert rows == [[f"j={j}", f"k={k}"] for j in (1, 2, 3) for k in range(1, in_channels + 1)]
    document = json.loads(CliRunner().invoke(
        main, ["trace", str(spec), "--format", "json"]).output)
    (param,) = [p for p in document["steps"][0]["params"] if p["name"] == "up.weight"]
    assert param["layout"].startswith("[j, k, kernel]: filter j")
    stored = trace(nnrun.load_spec(spec), steps=1).steps[0].params[0]
    assert stored.value.shape[:2] == (in_channels, 3)
    np.testing.assert_array_equal(param["value"], np.swapaxes(stored.value, 0, 1))
    np.testing.assert_array_equal(param["gradient"], np.swapaxes(stored.gradient, 0, 1))


def test_weights_file_sets_the_starting_point(tmp_path):
    weights = {"dense_1.weight": np.full((2, 2), 0.1), "dense_1.bias": np.zeros(2),
               "dense_2.weight": np.full((2, 1), -0.2), "params/dense_2.bias": np.ones(1)}
    np.savez(tmp_path / "w.npz", **weights)
    result = trace(nnrun.load_spec(COURSE), weights=tmp_path / "w.npz")
    params = {p.name: p.value for p in result.steps[0].params}
    for name, value in weights.items():
        np.testing.assert_array_equal(params[name.removeprefix("params/")], value)
    # one parameter given twice: refused as init_from refuses it, not one of them taken
    np.savez(tmp_path / "twice.npz", **weights, **{"params/dense_1.weight": np.ones((2, 2))})
    with pytest.raises(TraceError) as twice:
        trace(nnrun.load_spec(COURSE), weights=tmp_path / "twice.npz")
    assert str(twice.value) == (f"{tmp_path / 'twice.npz'}: arrays 'dense_1.weight' and "
                                "'params/dense_1.weight' both give dense_1.weight; keep one")

    del weights["dense_1.bias"]
    np.savez(tmp_path / "partial.npz", **weights)
    refused = CliRunner().invoke(main, ["trace", str(COURSE), "--weights",
                                        str(tmp_path / "partial.npz")])
    assert refused.exit_code == 1
    assert refused.output.count("\n") == 1 and "Traceback" not in refused.output
    assert "missing dense_1.bias" in refused.output


@pytest.mark.parametrize("bad, expected", [
    (np.array([["a", "b"], ["c", "d"]]), "holds <U1 values"),  # was an internal error
    (np.zeros((2, 2), dtype=complex), "holds complex128 values"),  # was a warning, then cast
    (np.full((2, 2), np.nan), "holds nan or inf"),
])
def test_weights_that_are_not_finite_real_numbers_are_one_line_errors(tmp_path, bad, expected):
    weights = {"dense_1.weight": bad, "dense_1.bias": np.zeros(2),
               "dense_2.weight": np.full((2, 1), -0.2), "dense_2.bias": np.ones(1)}
    np.savez(tmp_path / "w.npz", **weights)
    refused = CliRunner().invoke(main, ["trace", str(COURSE), "--weights",
                                        str(tmp_path / "w.npz")])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.output.count("\n") == 1, refused.output
    assert "'dense_1.weight'" in refused.output and expected in refused.output


def test_activation_layers_and_a_spec_without_data(tmp_path):
    spec = tmp_path / "separate.yaml"
    spec.write_text("""\
seed: 0
data: {dataset: xor, n_samples: 8}
model:
  layers:
    - {type: dense, units: 3}
    - {type: tanh}
    - {type: dense, units: 1, activation: sigmoid}
loss: {type: mse, scale: 0.5}
train: {batch_size: 2, metrics: [mse]}
""")
    dense, tanh, _ = trace(nnrun.load_spec(spec)).steps[0].layers
    assert (dense.z, dense.activation, tanh.activation) == (None, None, "tanh")
    np.testing.assert_array_equal(tanh.z, dense.a)  # the activation layer's z is its input
    np.testing.assert_allclose(tanh.a, np.tanh(dense.a), rtol=1e-6)
    np.testing.assert_array_equal(dense.delta, tanh.delta)  # both dC/d(the dense output)
    text = CliRunner().invoke(main, ["trace", str(spec)]).output
    assert "a⁽³⁾ = tanh(z⁽³⁾) [sample 1]" in text

    refused = CliRunner().invoke(main, ["trace", str(spec), "--set", "data=null",
                                        "--set", "model.input_shape=[2]"])
    assert refused.exit_code == 1 and "--set data=null: a trace needs a data section" in \
        refused.output


def test_a_checkpoint_with_momentum_continues_its_run(tmp_path):
    """--weights RUN/last.npz: its parameters, optimizer state, epoch and step, so the traced
    step is the one the run makes when it is resumed."""
    spec = tmp_path / "mixed.yaml"
    spec.write_text(MIXED)
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True, max_steps=2)
    saved, _ = load_checkpoint(tmp_path / "run" / "last.npz")
    assert any(name.startswith("opt/") for name in saved)
    # The run's last checkpoint (issue 11: "--weights takes a checkpoint and continues that
    # run"): traced on as `--resume --epochs 2` trains, without asking for --set (the issues
    # audit: refused before), and the same steps as with it.
    extended = trace(nnrun.load_spec(spec), weights=tmp_path / "run" / "last.npz")
    assert extended.notes[0] == ("the weights are of epoch 1, the run's last (train.epochs 1): "
                                 "traced with train.epochs 2, as `nnrun train RUN_DIR/spec.yaml "
                                 "--resume RUN_DIR "
                                 "--epochs 2` trains")
    longer = nnrun.load_spec(spec, ["train.epochs=2"])  # as the resume below
    step = trace(longer, weights=tmp_path / "run" / "last.npz").steps[0]
    assert (step.step, step.epoch, step.batch) == (3, 2, 1)
    for param, same in zip(step.params, extended.steps[0].params):
        np.testing.assert_array_equal(param.updated, same.updated)
    for param in step.params:
        np.testing.assert_array_equal(param.value, saved[param.name])
    # the toolbox audit: the checkpoint's velocity moves the first step already
    (velocity,) = [note for note in extended.notes if "velocity" in note]
    assert "from step 2 on" not in velocity and "the weights file's velocity" in velocity
    nnrun.train(spec, resume=tmp_path / "run", overrides=["train.epochs=2"], quiet=True,
                max_steps=1)
    resumed, _ = load_checkpoint(tmp_path / "run" / "last.npz")
    for param in step.params:
        np.testing.assert_allclose(param.updated, resumed[param.name], rtol=1e-10, atol=1e-12)
    gone_past = trace(nnrun.load_spec(spec), weights=tmp_path / "run" / "last.npz")
    assert gone_past.steps[0].epoch == 3 and "traced with train.epochs 3" in gone_past.notes[0]


@pytest.mark.parametrize("optimizer", ["{type: sgd, lr: 0.05}", "{type: rmsprop, lr: 0.01}"])
def test_momentum_added_on_a_resume_starts_at_zero_and_the_trace_shows_that_step(tmp_path,
                                                                                   optimizer):
    """The toolbox audit: `--resume --allow-changes --set optimizer.momentum=0.9` called the
    checkpoint damaged ("it has no 'opt/dense_1.weight.momentum'"), and advised copying
    best.npz over it, which lacks it as well; trace refused the same."""
    spec = tmp_path / "plain.yaml"
    spec.write_text(MIXED.replace("{type: sgd, lr: 0.05, momentum: 0.9}", optimizer))
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True, max_steps=2)
    changed = ["train.epochs=2", "optimizer.momentum=0.9"]
    step = trace(nnrun.load_spec(spec, changed), weights=tmp_path / "run" / "last.npz").steps[0]
    assert (step.epoch, step.batch) == (2, 1)
    nnrun.train(spec, resume=tmp_path / "run", overrides=changed, allow_changes=True,
                quiet=True, max_steps=1)
    resumed, _ = load_checkpoint(tmp_path / "run" / "last.npz")
    for param in step.params:
        np.testing.assert_allclose(param.updated, resumed[param.name], rtol=1e-10, atol=1e-12)
        # v = 0.9 * 0 + g (sgd), or the rmsprop step itself: the velocity is the step taken
        velocity = resumed[f"opt/{param.name}.momentum"]
        if "sgd" in optimizer:
            np.testing.assert_allclose(velocity, param.gradient, rtol=1e-10, atol=1e-12)
        assert velocity.any()
    # back without it: the velocity is left unread, by the resume and the trace alike
    nnrun.train(spec, resume=tmp_path / "run", overrides=["train.epochs=2"], allow_changes=True,
                quiet=True, max_steps=1)
    assert trace(nnrun.load_spec(spec, ["train.epochs=2"]),
                 weights=tmp_path / "run" / "last.npz").steps
    # another optimizer's state is not a velocity: refused in its own words, where the file
    # lacks the spec's type's state, or holds another type's (the review: an adam run traced
    # as sgd with momentum went through, its state dropped)
    # (the sgd run's file now keeps no state; the rmsprop run's its square_avg)
    refusals = ({"adam": "keeps no adam state (missing opt/conv2d_1.weight.exp_avg",
                 "rmsprop": "keeps no rmsprop state (missing opt/conv2d_1.weight.square_avg"}
                if "sgd" in optimizer else
                {"adam": "keeps the state of another optimizer than the spec's adam "
                         "(opt/conv2d_1.bias.square_avg, opt/conv2d_1.weight.square_avg, ...)",
                 "sgd": "keeps the state of another optimizer than the spec's sgd"})
    for kind, said in refusals.items():
        with pytest.raises(TraceError) as refused:
            trace(nnrun.load_spec(spec, ["train.epochs=2", f"optimizer.type={kind}"]),
                  weights=tmp_path / "run" / "last.npz")
        assert said in str(refused.value), str(refused.value)
        assert "the run trained with another optimizer" in str(refused.value)


def test_a_finished_cosine_run_is_traced_on_as_its_resume_restarts_the_schedule(tmp_path):
    """Extending a run restarts a cosine schedule at the resumed epoch (cli.md, Resume): the
    trace of the run's last checkpoint takes the rate that resume takes."""
    spec = tmp_path / "cosine.yaml"
    spec.write_text(MIXED.replace("optimizer: {type: sgd, lr: 0.05, momentum: 0.9}",
                                  "optimizer: {type: sgd, lr: 0.05, schedule: {type: cosine, "
                                  "min_lr: 0.001}}").replace("epochs: 1", "epochs: 2"))
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True, max_steps=4)
    meta = checkpoint_meta(tmp_path / "run" / "last.npz")
    assert meta["epoch"] == 2  # the run's end: max_steps cut both epochs short
    traced = trace(nnrun.load_spec(spec), weights=tmp_path / "run" / "last.npz")
    assert traced.notes[0].endswith("; the cosine schedule restarts at epoch 3")
    nnrun.train(spec, resume=tmp_path / "run", epochs=3, quiet=True, max_steps=1)
    resumed, _ = load_checkpoint(tmp_path / "run" / "last.npz")
    assert traced.steps[0].lr == pytest.approx(0.05)  # the restart's first rate: optimizer.lr
    for param in traced.steps[0].params:
        np.testing.assert_allclose(param.updated, resumed[param.name], rtol=1e-10, atol=1e-12)
    # --set train.epochs other than the run's: the resume restarts the cosine schedule at the
    # checkpoint's epoch (the review: the trace took the run's own restart, at epoch 2)
    assert checkpoint_meta(tmp_path / "run" / "last.npz")["schedule_start"] == 2
    longer = nnrun.load_spec(tmp_path / "run" / "spec.yaml", ["train.epochs=4"])
    further = trace(longer, weights=tmp_path / "run" / "last.npz")
    assert further.notes[0].startswith("train.epochs is 4, the run's 3: the cosine schedule "
                                       "restarts at epoch 4")
    assert (further.steps[0].epoch, further.steps[0].lr) == (4, 0.05)
    nnrun.train(spec, resume=tmp_path / "run", epochs=4, quiet=True, max_steps=1)
    resumed, _ = load_checkpoint(tmp_path / "run" / "last.npz")
    for param in further.steps[0].params:
        np.testing.assert_allclose(param.updated, resumed[param.name], rtol=1e-10, atol=1e-12)


def test_a_checkpoint_s_restarted_schedule_counts_from_its_restart(tmp_path):
    """A checkpoint of a run whose cosine schedule restarted (meta schedule_start), traced at
    the run's own length, goes on from that restart; the trace counted from epoch 1."""
    spec = tmp_path / "cosine.yaml"
    spec.write_text(MIXED.replace("optimizer: {type: sgd, lr: 0.05, momentum: 0.9}",
                                  "optimizer: {type: sgd, lr: 0.05, schedule: {type: cosine, "
                                  "min_lr: 0.001}}").replace("epochs: 1", "epochs: 5"))
    source = nnrun.load_spec(spec)
    model = nnrun.compile(source)
    state = model.host_train_state()
    meta = {"epoch": 3, "step": 3, "schedule_start": 2, "seed": 3,
            "rng": {"seed": 3, "next_epoch": 4}, "spec_text": spec.read_text()}
    save_checkpoint(tmp_path / "last.npz", state, meta)
    further = trace(source, weights=tmp_path / "last.npz")
    steps = math.ceil(further_samples(source) / 4)
    assert further.steps[0].epoch == 4 and not any("restarts" in n for n in further.notes)
    assert further.steps[0].lr == learning_rate(source.spec.optimizer, 3, 0, steps, 5,
                                                restarted_at=2)


def test_a_checkpoint_is_checked_and_cast_as_plain_weights_are(tmp_path):
    """A run's last.npz (float64 here) traces in float32 too, and an edited one gets the
    trace's words, not a resume's ("copy best.npz over it to resume")."""
    spec = tmp_path / "mixed.yaml"
    spec.write_text(MIXED)
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True, max_steps=2)
    longer = ["train.epochs=2"]
    single = trace(nnrun.load_spec(spec, [*longer, "dtype=float32"]),
                   weights=tmp_path / "run" / "last.npz").steps[0]
    double = trace(nnrun.load_spec(spec, longer), weights=tmp_path / "run" / "last.npz").steps[0]
    assert single.params[0].value.dtype == np.float32
    np.testing.assert_allclose(single.params[0].updated, double.params[0].updated, rtol=1e-5)
    with np.load(tmp_path / "run" / "last.npz") as archive:
        arrays = dict(archive)
    name = next(key for key in arrays if key.startswith("opt/"))
    arrays[name] = np.full_like(arrays[name], np.nan)
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(TraceError) as caught:
        trace(nnrun.load_spec(spec, longer), weights=tmp_path / "edited.npz")
    assert f"'{name}' holds nan or inf; a trace starts from finite weights" in str(caught.value)


@pytest.mark.parametrize("optimizer, header, rule", [
    ("{type: sgd, lr: 0.5}", "sgd (lr 0.5)", None),
    ("{type: sgd, lr: 0.5, momentum: 0.9}", "sgd (lr 0.5, momentum 0.9)", "w ← w − lr·v"),
    ("{type: sgd, lr: 0.5, momentum: 0.9, nesterov: true}", "sgd (lr 0.5, momentum 0.9, nesterov)",
     "w ← w − lr·(∂C/∂w + 0.9·v)"),
    ("{type: adam, lr: 0.01}", "adam (lr 0.01, beta1 0.9, beta2 0.999, eps 1e-08)",
     "the update is adam's"),
])
def test_the_header_and_a_note_say_how_updated_follows_from_the_gradient(optimizer, header, rule):
    """The course audit: with momentum, `updated` differs from w − lr·∂C/∂w from step 2 on,
    and nothing said why."""
    result = CliRunner().invoke(main, ["trace", str(COURSE), "--steps", "2", "--set",
                                       f"optimizer={optimizer}"])
    assert result.exit_code == 0, result.output
    assert f", {header}, " in result.output.splitlines()[0]
    notes = [line for line in result.output.splitlines() if line.startswith("note: ")]
    assert (rule is None) == (notes == []) and all(rule in note for note in notes)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_weight_decay_note_says_the_rule_the_update_follows(optimizer):
    """The course audit: adamw's note said its decay was added to the gradients shown, which
    is adam's coupled rule; following it gave adam's numbers, not adamw's."""
    lr, decay = 0.5, 0.1
    result = CliRunner().invoke(main, ["trace", str(COURSE), "--format", "json", "--set",
                                       f"optimizer={{type: {optimizer}, lr: {lr}, "
                                       f"weight_decay: {decay}}}"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    (note,) = [n for n in document["notes"] if "decay" in n]
    param = {p["name"]: p for p in document["steps"][0]["params"]}["dense_1.weight"]
    w, g = np.array(param["value"]), np.array(param["gradient"])
    if optimizer == "sgd":
        assert "∂C/∂w + 0.1·w" in note
        expected = w - lr * (g + decay * w)
    else:  # adam's first step is lr * g / (|g| + eps), from the weights already shrunk
        assert "w ← w·(1 − lr·0.1)" in note and "adds" not in note
        expected = w * (1 - lr * decay) - lr * g / (np.abs(g) + 1e-8)
    close(param["updated"], expected)


def further_samples(source) -> int:
    from nnrun.runtime.train import Trainer

    return len(Trainer(source, "numpy", quiet=True).data.train.x)


def test_steps_past_the_run_s_end_are_traced_as_a_longer_run():
    """--steps beyond train.epochs was refused (the issues audit: the issue names
    `--steps N` with no bound); they are traced as a run of as many epochs as they need, which
    the first line of the notes says, the same steps as with that --set."""
    result = CliRunner().invoke(main, ["trace", str(COURSE), "--steps", "25", "--format", "json"])
    assert result.exit_code == 0, result.output
    traced = json.loads(result.output)
    assert len(traced["steps"]) == 25
    assert traced["notes"][0] == ("--steps 25 goes past train.epochs 20: traced with "
                                  "train.epochs 25, as `nnrun train SPEC --epochs 25` trains")
    followed = CliRunner().invoke(main, ["trace", str(COURSE), "--steps", "25", "--set",
                                         "train.epochs=25", "--format", "json"])
    assert json.loads(followed.output)["steps"] == traced["steps"]


def test_weights_beyond_the_dtype_are_refused_after_the_cast(tmp_path):
    """The hostile-input audit: float64 weights of 1e300 became inf in float32 and traced."""
    model = nnrun.compile(str(COURSE))
    np.savez(tmp_path / "big.npz", **{k: np.full(v.shape, 1e300)
                                      for k, v in model.init_params(0).items()})
    with pytest.raises(TraceError, match="holds values beyond the range of float32"):
        trace(nnrun.load_spec(COURSE, ["dtype=float32"]), weights=tmp_path / "big.npz")


def test_the_run_s_length_is_read_from_its_own_spec_text_only(tmp_path):
    """The second review: a checkpoint of a large spec keeps the digest of its spec.yaml, not
    the text; the run directory's spec.yaml beside it may be a later resume's, of another
    train.epochs (a resume stopped before its first checkpoint), and was read all the same."""
    from nnrun.runtime.checkpoint import text_digest
    from nnrun.runtime.trace import _run_epochs

    trained = "train: {epochs: 2}\n"
    (tmp_path / "spec.yaml").write_text(trained)
    meta = {"epoch": 2, "spec_sha256": text_digest(trained), "spec_text": None}
    assert _run_epochs(tmp_path / "last.npz", meta) == 2
    (tmp_path / "spec.yaml").write_text("train: {epochs: 4}\n")  # a later resume's
    assert _run_epochs(tmp_path / "last.npz", meta) is None
    assert _run_epochs(tmp_path / "last.npz", {**meta, "spec_text": trained}) == 2
    assert _run_epochs(tmp_path / "last.npz", {**meta, "spec_sha256": None}) is None


def test_the_nesterov_note_does_not_say_its_first_step_is_plain():
    """The toolbox audit: 'from step 2 on' held for momentum, not for nesterov, whose first
    update is already w − lr·(1 + m)·∂C/∂w."""
    result = CliRunner().invoke(main, ["trace", str(COURSE), "--set",
                                       "optimizer={type: sgd, lr: 0.5, momentum: 0.9, "
                                       "nesterov: true}"])
    notes = [line for line in result.output.splitlines() if line.startswith("note: ")]
    assert notes and "from step 2 on" not in notes[0]
    assert "updated is not w − lr·∂C/∂w" in notes[0]


def test_x_is_said_to_be_preprocessed_and_a_warning_is_said_once(tmp_path, capsys):
    """The trace printed a⁽¹⁾ = x normalised with no word of it (a learner compared it with
    the file's row), and a trace crossing an epoch said the batch-size warning twice."""
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: xor, n_samples: 8}\nmodel: {input_shape: [2], layers: "
                    "[{type: dense, units: 2}]}\ntrain: {epochs: 1, batch_size: 100}\n")
    traced = trace(nnrun.load_spec(spec), steps=2)
    assert any(note.startswith("x is the input as the model sees it, after data.normalize: "
                               "standard") for note in traced.notes)
    assert capsys.readouterr().err.count("is more than the") == 1
    raw = trace(nnrun.load_spec(spec, ["data.normalize=none"]), steps=1)
    assert not any(note.startswith("x is the input") for note in raw.notes)


PROBABILITIES = """\
seed: 0
dtype: float64
data: {dataset: npz, path: d.npz, normalize: none}
model:
  input_shape: [3]
  layers:
    - {type: dense, units: 2, activation: tanh}
    - {type: dense, units: 3}
loss: {type: cross_entropy, scale: 0.5, label_smoothing: 0.1, ignore_index: 7}
optimizer: {type: sgd, lr: 0.1}
train: {batch_size: 4, shuffle: false, metrics: [accuracy]}
"""


def softmax_rows(z: np.ndarray) -> np.ndarray:
    exp = np.exp(z - z.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_cross_entropy_shows_the_softmax_probabilities_and_delta_is_p_less_t(tmp_path):
    """The course audit: a lesson on softmax and cross-entropy wants p = softmax(z) and
    δ = p − onehot(y) shown; the trace printed the logits and δ only. Here with a scale, label
    smoothing (t = 0.9·onehot + 0.1/3) and an ignored label (δ 0, N counts 3 of 4)."""
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(8, 3)), y=np.array([0, 2, 7, 1] * 2))
    spec = tmp_path / "ce.yaml"
    spec.write_text(PROBABILITIES)
    document = json.loads(CliRunner().invoke(
        main, ["trace", str(spec), "--format", "json"]).output)
    step = document["steps"][0]
    logits = np.array(step["layers"][-1]["a"])
    p = softmax_rows(logits)
    close(step["p"], p)
    labels = np.array(step["y"])
    counted = labels != 7
    t = np.where(counted[:, None], 0.9 * np.eye(3)[np.where(counted, labels, 0)] + 0.1 / 3, p)
    assert step["counted"] == 3
    close(step["layers"][-1]["delta"], 0.5 * (p - t) / 3)
    (note,) = [note for note in document["notes"] if note.startswith("loss cross_entropy")]
    assert ("p = softmax(a⁽³⁾), the class probabilities (the softmax over the classes, of "
            "each sample or position of a label map); C = −0.5·Σ t·log p / N and ∂C/∂a⁽³⁾ = "
            "0.5·(p − t)/N, t = (1 − 0.1)·onehot(y) + 0.1/K (label_smoothing, K the classes), "
            "N the labels the mean counts; a label equal to ignore_index 7 counts in neither N "
            "nor C, and its δ is 0") in note

    text = CliRunner().invoke(main, ["trace", str(spec)]).output
    lines = text.splitlines()
    after_logits = lines.index(next(line for line in lines if line.startswith(
        "  a⁽³⁾ dense_2 (dense) [sample 4]"))) + 1
    first = ", ".join(f"{v:.10g}" for v in p[0])
    assert lines[after_logits] == f"  p = softmax(a⁽³⁾) [sample 1] = [{first}]"
    assert lines[after_logits + 4].startswith("  y (target) [sample 1]")
    assert "  δ⁽³⁾ = ∂C/∂a⁽³⁾ = 0.5·(p − t)/3 dense_2 [sample 1] = " in text
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(8, 3)), y=np.array([0, 2, 2, 1] * 2))
    plain = CliRunner().invoke(main, ["trace", str(spec), "--set",
                                      "loss={type: cross_entropy}"]).output
    assert "  δ⁽³⁾ = ∂C/∂a⁽³⁾ = (p − onehot(y))/4 dense_2 [sample 1] = " in plain


def test_binary_cross_entropy_shows_the_sigmoid_and_a_fused_one_is_the_layer_s_a(tmp_path):
    """p = sigmoid(z) under binary_cross_entropy; where the last layer's sigmoid is fused
    into the loss, its a is p (said on its line, not printed twice) and δ is of z."""
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(8, 3)), y=np.array([0, 1, 1, 0] * 2))
    spec = tmp_path / "bce.yaml"
    spec.write_text(PROBABILITIES.replace("units: 3}", "units: 1}").replace(
        "loss: {type: cross_entropy, scale: 0.5, label_smoothing: 0.1, ignore_index: 7}",
        "loss: binary_cross_entropy"))
    traced = trace(nnrun.load_spec(spec)).steps[0]
    logits = traced.layers[-1].a
    close(traced.p, 1 / (1 + np.exp(-logits)))
    close(traced.layers[-1].delta, (traced.p - traced.y) / 4)
    text = CliRunner().invoke(main, ["trace", str(spec)]).output
    assert f"  p = sigmoid(a⁽³⁾) [sample 2] = [{traced.p[1, 0]:.10g}]" in text
    assert "  δ⁽³⁾ = ∂C/∂a⁽³⁾ = (p − y)/4 dense_2 [sample 1] = " in text

    fused = CliRunner().invoke(main, ["trace", str(spec), "--set",
                                      "model.layers[1].activation=sigmoid"]).output
    assert "  a⁽³⁾ = sigmoid(z⁽³⁾) = p [sample 1] = " in fused
    assert "  p = " not in fused
    assert "  δ⁽³⁾ = ∂C/∂z⁽³⁾ = (p − y)/4 dense_2 [sample 1] = " in fused
    assert "note: loss binary_cross_entropy: p = sigmoid(z⁽³⁾) = a⁽³⁾, the probability of " \
           "each output's target 1;" in fused
    mse = CliRunner().invoke(main, ["trace", str(spec), "--set", "loss=mse"]).output
    assert "p = " not in mse and "note: loss" not in mse


def test_the_header_gives_the_batch_the_steps_take(tmp_path, monkeypatch):
    """The toolbox audit: --batch-size 1000 on 20 samples was headed "batch size 1000" (and
    JSON's batch_size 1000) above steps of 20 rows."""
    monkeypatch.chdir(tmp_path)
    Path("s.yaml").write_text("data: {dataset: xor, limit: 20}\nmodel:\n  input_shape: [2]\n"
                              "  layers: [{type: dense, units: 2}]\n")
    text = CliRunner().invoke(main, ["trace", "s.yaml", "--batch-size", "1000"])
    assert ("1 step, batch size 20 (every training sample: train.batch_size 1000 is past "
            "them)") in text.stdout
    as_json = CliRunner().invoke(main, ["trace", "s.yaml", "--batch-size", "1000", "--format",
                                        "json"])
    traced = json.loads(as_json.stdout)
    assert traced["batch_size"] == 20 == len(traced["steps"][0]["x"])
    kept = CliRunner().invoke(main, ["trace", "s.yaml", "--batch-size", "8", "--steps", "3"])
    assert "3 steps, batch size 8," in kept.stdout
