"""The Python API of DESIGN.md section 7."""

import json
import re
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

import nnrun
from nnrun.runtime.evaluate import evaluate_run

QUICKSTART = Path(__file__).resolve().parents[2] / "specs" / "quickstart.yaml"
SPECS = QUICKSTART.parent


def test_compile_accepts_a_path_a_spec_and_a_source_with_overrides():
    source = nnrun.load_spec(QUICKSTART)
    for given in (QUICKSTART, str(QUICKSTART), source, source.spec):
        model = nnrun.compile(given, overrides=["model.layers[0].filters=4"])
        assert model.param_infos["conv2d_1.weight"].shape == (4, 1, 3, 3)


def test_a_spec_as_python_data_and_a_loaded_spec_read_like_the_spec():
    data = {"model": {"input_shape": [4], "layers": [{"type": "dense", "units": 3}]}}
    model = nnrun.compile(data, overrides="model.layers[0].units=2")
    assert model.forward(model.init_params(), np.zeros((1, 4))).shape == (1, 2)
    assert data["model"]["layers"][0]["units"] == 3  # the caller's data is left as it was
    with pytest.raises(nnrun.SpecError, match="did you mean 'units'"):
        nnrun.compile({"model": {"input_shape": [4], "layers": [{"type": "dense", "unit": 3}]}})
    source = nnrun.load_spec(QUICKSTART)
    assert source.name == "quickstart" and source.model is source.spec.model
    assert source.train.epochs == source.spec.train.epochs


def test_python_data_holds_what_yaml_loads_and_its_objects_run_no_code(tmp_path):
    """Copying the caller's data (copy.deepcopy) ran an object's __reduce__; NumPy's numbers
    read as Python's."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (marker.touch, ())

    def spec(name, units=3):
        return {"name": name, "model": {"input_shape": (4,),
                                        "layers": [{"type": "dense", "units": units}]}}

    with pytest.raises(nnrun.SpecError) as refused:
        nnrun.compile(spec(Payload()))
    assert not marker.exists()
    assert str(refused.value) == ("<spec>:1:1: error: name: a value of type Payload, which a "
                                  "spec cannot hold; give what YAML loads: text, numbers, "
                                  "true/false, None, lists and dicts")
    model = nnrun.compile(spec("n", np.int64(2)))
    assert model.forward(model.init_params(), np.zeros((1, 4))).shape == (1, 2)
    # arrays of numbers are values too: inline weights from NumPy or PyTorch, a path as text
    torch = pytest.importorskip("torch")
    from fractions import Fraction

    linear = torch.nn.Linear(4, 3)  # parameters that require their gradients, transposed
    given = spec("n")
    given["model"]["layers"][0].update(weights=linear.weight.T, bias=linear.bias)
    given["data"] = {"dataset": "npz", "path": tmp_path / "d.npz"}
    given["optimizer"] = {"type": "sgd", "lr": Fraction(1, 8)}
    model = nnrun.compile(given)
    np.testing.assert_allclose(model.init_params()["dense_1.weight"],
                               linear.weight.detach().numpy().T, rtol=1e-7)
    assert model.spec.data.path == str(tmp_path / "d.npz") and model.spec.optimizer.lr == 0.125
    # NumPy's longdouble; an array of values a spec cannot hold is one error, not one a value
    given = spec("n")
    given["model"]["layers"][0]["weights"] = np.full((4, 3), 0.5, np.longdouble)
    np.testing.assert_array_equal(nnrun.compile(given).init_params()["dense_1.weight"], 0.5)
    given["model"]["layers"][0]["weights"] = np.zeros((400, 300), complex)
    with pytest.raises(nnrun.SpecError) as refused:
        nnrun.compile(given)
    assert [d.where for d in refused.value.diagnostics] == ["model.layers[0].weights"]
    assert refused.value.diagnostics[0].message == (  # the review: told no next step
        "complex numbers (complex128), which a spec cannot hold; give their real parts (.real)")
    # two refusals of one kind, at two places: both said (Python data has no lines to tell them)
    twice = spec("n", -3)
    twice["model"]["layers"].append({"type": "dense", "units": -3})
    with pytest.raises(nnrun.SpecError) as refused:
        nnrun.compile(twice)
    assert [d.where for d in refused.value.diagnostics] == ["model.layers[0]", "model.layers[1]"]


def test_text_of_bytes_that_are_no_utf8_is_refused_before_a_run_is_written(tmp_path):
    """The hostile-input audit: a spec dict whose name held a lone surrogate (os.fsdecode of a
    byte that is not UTF-8) trained, and its spec.yaml could never be read back; one in a layer
    name was pydantic's UnicodeEncodeError."""
    import os

    odd = os.fsdecode(b"x\xffy")
    spec = {"data": {"dataset": "xor"}, "model": {"layers": [{"type": "dense", "units": 2}]},
            "train": {"epochs": 1}}
    for where, changed in (("name", {**spec, "name": odd}),
                           ("model.layers[0].name", {**spec, "model": {"layers": [
                               {"type": "dense", "units": 2, "name": odd}]}}),
                           ("data", {**spec, "data": {"dataset": "xor", odd: 1}})):
        with pytest.raises(nnrun.SpecError) as raised:
            nnrun.train(changed, out_dir=tmp_path / "run")
        assert str(raised.value) == (
            f"<spec>:1:1: error: {where}: {'a key: ' if where == 'data' else ''}\\udcff is half "
            "of a UTF-16 surrogate pair, not a character; write the character itself, or its "
            "\\U escape (\\U0001F600 for a smiling face)")
    assert not (tmp_path / "run").exists()
    # a path is told as a path (the review): not to write the character or its escape
    for field in ("path", "init_from"):
        data = {"dataset": "npz", "path": os.fsdecode(b"x\xff.npz")} if field == "path" else \
            {"dataset": "xor"}
        model = {"layers": [{"type": "dense", "units": 2}]}
        if field == "init_from":
            model["init_from"] = os.fsdecode(b"w\xff.npz")
        with pytest.raises(nnrun.SpecError) as raised:
            nnrun.train({**spec, "data": data, "model": model}, out_dir=tmp_path / "run")
        assert "\\U escape" not in str(raised.value), raised.value
        assert "holds the byte \\xff, which is not UTF-8" in str(raised.value), raised.value


def test_train_takes_the_commands_options(tmp_path):
    summary = nnrun.train(QUICKSTART, out_dir=tmp_path / "run", quiet=True, epochs=1,
                          batch_size=64, seed=5, overrides=["data.limit=300"])
    assert summary["epochs_run"] == 1
    text = (tmp_path / "run" / "spec.yaml").read_text()
    assert "batch_size: 64" in text and "seed: 5" in text


def test_train_distributed_outside_mpiexec_is_a_job_of_one_rank(tmp_path):
    pytest.importorskip("mpi4py", reason="the mpi extra is not installed")
    handler = signal.getsignal(signal.SIGINT)
    summary = nnrun.train(QUICKSTART, out_dir=tmp_path / "run", quiet=True, epochs=1,
                          distributed=True, overrides=["data.limit=128"])
    assert summary["epochs_run"] == 1
    assert signal.getsignal(signal.SIGINT) == handler  # the guard MPI's start entered is gone


def test_a_spec_error_of_a_distributed_train_is_raised_before_mpi_starts(tmp_path, monkeypatch):
    """The signal recheck: MPI's start enters the signal guard train hands back; a spec that
    failed to load after it left the guard (Ctrl-C no longer a KeyboardInterrupt)."""
    from nnrun.runtime import distributed

    started = []
    monkeypatch.setattr(distributed, "connect", lambda *arguments: started.append(arguments))
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(nnrun.SpecError):
        nnrun.train(tmp_path / "missing.yaml", distributed=True)
    assert started == [] and signal.getsignal(signal.SIGINT) == handler


def test_train_gives_its_distributed_timeout_to_the_ranks(tmp_path, monkeypatch):
    """The command's --distributed-timeout, from Python (it had no way to set it)."""
    from fractions import Fraction

    from nnrun.runtime import distributed

    asked = []

    def connect(backend, timeout=distributed.DEFAULT_TIMEOUT_S):
        asked.append(timeout)
        return distributed.ALONE

    monkeypatch.setattr(distributed, "connect", connect)
    nnrun.train(XOR, out_dir=tmp_path / "a", quiet=True, epochs=1, distributed=True)
    nnrun.train(XOR, out_dir=tmp_path / "b", quiet=True, epochs=1, distributed=True,
                distributed_timeout=30)
    nnrun.train(XOR, out_dir=tmp_path / "c", quiet=True, epochs=1, distributed=True,
                distributed_timeout=Fraction(1, 2))  # the watcher process reads it as a float
    nnrun.train(XOR, out_dir=tmp_path / "d", quiet=True, epochs=1, distributed=True,
                distributed_timeout=10**400)  # past float's range: for good
    assert asked == [distributed.DEFAULT_TIMEOUT_S, 30.0, 0.5, float("inf")]
    assert all(type(timeout) is float for timeout in asked[1:])


def test_forward_returns_numpy_outputs_and_grads_cover_every_parameter():
    model = nnrun.compile(QUICKSTART)
    params = model.init_params(seed=3)
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8))
    outputs = model.forward(params, x)
    assert isinstance(outputs, np.ndarray) and outputs.shape == (5, 10)
    loss, grads = model.loss_and_grads(params, x, np.arange(5))
    assert np.isfinite(loss) and set(grads) == set(params)


def test_init_params_is_seeded():
    model = nnrun.compile(QUICKSTART)
    first, again, other = model.init_params(1), model.init_params(1), model.init_params(2)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["dense_1.weight"], other["dense_1.weight"])


def test_train_from_a_spec_object_writes_a_run_that_eval_can_read(tmp_path):
    spec = nnrun.load_spec(QUICKSTART).spec
    summary = nnrun.train(spec, out_dir=tmp_path / "run", quiet=True,
                          overrides=["train.epochs=1", "data.limit=300"])
    assert summary["epochs_run"] == 1
    result = evaluate_run(tmp_path / "run", split="test")
    assert result["test_accuracy"] == summary["final"]["test_accuracy"]


def test_train_starts_from_init_params_of_the_spec_seed(tmp_path):
    model = nnrun.compile(QUICKSTART, overrides=["train.epochs=1"])
    expected = model.init_params(model.spec.seed)
    from nnrun.runtime.train import Trainer

    trainer = Trainer(model.source, "numpy", quiet=True)
    state = trainer.model.train_state(trainer.spec.seed)
    assert all(np.array_equal(state[k], v) for k, v in expected.items())


XOR = Path(__file__).resolve().parents[2] / "specs" / "xor-mlp.yaml"  # dense 2-8-1, sigmoid + BCE


def _error(call) -> tuple[type, str]:
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the type and message are what is checked
        return type(error), str(error)
    raise AssertionError("no error")


def test_the_api_refuses_what_would_broadcast_or_index_into_a_wrong_result():
    """Each of these ran before, returning a loss or outputs of other samples or classes."""
    conv, xor = nnrun.compile(QUICKSTART), nnrun.compile(XOR)
    conv_params, xor_params = conv.init_params(), xor.init_params()
    images = np.zeros((4, 1, 8, 8), np.float32)
    points = np.zeros((4, 2), np.float32)
    cases = [
        (lambda: conv.loss_and_grads(conv_params, images, [0, 3, 10, 2]), ValueError,
         "y_true holds 10 at sample 2; cross_entropy needs class labels 0..9"),
        (lambda: conv.loss_and_grads(conv_params, images, [0, 3, 2.7, 2]), ValueError,
         "y_true holds 2.7 at sample 2"),
        (lambda: xor.loss_and_grads(xor_params, points, [0, 1, 2, 0]), ValueError,
         "binary_cross_entropy needs targets in [0, 1]"),
        (lambda: xor.forward(xor_params, points[0]), ValueError,
         "x must be [N, 2], got shape [2]; for one sample, add a batch axis: x[None]"),
        # one image without its channel axis, or flat (the data audit: no hint)
        (lambda: conv.forward(conv_params, images[0, 0]), ValueError,
         "x must be [N, 1, 8, 8], got shape [8, 8]; one sample? x.reshape(1, 1, 8, 8)"),
        (lambda: conv.forward(conv_params, images[0].ravel()), ValueError,
         "x must be [N, 1, 8, 8], got shape [64]; one sample? x.reshape(1, 1, 8, 8)"),
        (lambda: xor.loss_and_grads(xor_params, points[:2], [1]), ValueError,
         "y_true holds 1 targets for 2 samples"),
        (lambda: xor.loss_and_grads(xor_params, points, np.zeros((4, 3))), ValueError,
         "y_true must hold targets shaped like the outputs, [N, 1], under "
         "binary_cross_entropy; got shape [4, 3]"),
        (lambda: xor.forward({**xor_params, "dense_2.bias": np.float32(0.3)}, points), ValueError,
         "params['dense_2.bias'] has shape [], the model's is [1]"),
    ]
    for call, kind, message in cases:
        assert _error(call)[0] is kind and message in _error(call)[1], _error(call)


def test_the_api_names_what_is_wrong_instead_of_failing_deep_inside():
    conv, xor = nnrun.compile(QUICKSTART), nnrun.compile(XOR)
    conv_params, xor_params = conv.init_params(), xor.init_params()
    cases = [
        (lambda: xor.forward({k: v for k, v in xor_params.items() if k != "dense_2.bias"},
                             np.zeros((1, 2))), KeyError, "params lacks 'dense_2.bias'"),
        (lambda: xor.forward("weights", np.zeros((1, 2))), TypeError, "params must be a dict"),
        (lambda: conv.forward(conv_params, np.zeros((4, 64))), ValueError,
         "x must be [N, 1, 8, 8], got shape [4, 64]; the values are there in another shape: "
         "x.reshape(-1, 1, 8, 8)"),
        (lambda: conv.forward(conv_params, np.zeros((4, 8, 8, 1))), ValueError,
         "the model's are [1, 8, 8]; channels last? x.transpose(0, 3, 1, 2) puts them first"),
        (lambda: conv.forward(conv_params, np.zeros((0, 1, 8, 8))), ValueError,
         "x holds no samples"),
        (lambda: conv.loss_and_grads(conv_params, np.zeros((4, 1, 8, 8)), np.eye(10)[:4]),
         ValueError, "one-hot rows? give y_true.argmax(1)"),
        (lambda: xor.loss_and_grads(xor_params, np.zeros((1, 2)), None), TypeError,
         "y_true must be an array of numbers"),
        (lambda: xor.init_params(seed="0"), ValueError, "seed must be an integer >= 0"),
        (lambda: nnrun.compile(XOR, backend=None), nnrun.BackendUnavailable, "unknown backend"),
        (lambda: nnrun.compile([{"model": {}}]), TypeError,
         "spec must be a file path, a Spec, a SourceSpec or a mapping"),
        (lambda: xor.forward({**xor_params, "dense_1.weight": xor_params["dense_1.weight"]
                              .astype(complex)}, np.zeros((1, 2))), TypeError,
         "params['dense_1.weight'] must be an array of real numbers, got an array of complex128"),
        (lambda: xor.forward({**xor_params, "dense_1.bias": None}, np.zeros((1, 2))), TypeError,
         "params['dense_1.bias'] must be an array of real numbers, got NoneType 'None'"),
        (lambda: xor.forward(xor_params, np.zeros((1, 2), complex)), TypeError,
         "x must be real numbers [N, 2], got complex values"),
        (lambda: nnrun.compile("model:\n  input_shape: [2]\n"), TypeError,
         "spec is YAML text, not a file path: give nnrun.load_spec_text(text)"),
    ]
    for call, kind, message in cases:
        raised, text = _error(call)
        assert issubclass(raised, kind) and message in text, (raised, text)


def test_without_cupy_the_api_names_its_backend_parameter_not_the_commands_option(
        tmp_path, monkeypatch):
    run = tmp_path / "run"
    nnrun.train(XOR, out_dir=run, epochs=1, quiet=True)
    for module in ("cupy", "nnrun.backends.cupy_backend"):
        monkeypatch.setitem(sys.modules, module, None)  # as where CuPy is not installed
    for call in (lambda: nnrun.compile(XOR, backend="cupy"),
                 lambda: nnrun.train(XOR, backend="cupy", out_dir=tmp_path / "other"),
                 lambda: nnrun.load_run(run, backend="cupy")):
        raised, text = _error(call)
        assert raised is nnrun.BackendUnavailable, text
        assert text.endswith("or use backend='numpy'") and "--backend" not in text
    assert not (tmp_path / "other").exists()


def test_a_batch_of_other_samples_is_not_guessed_to_be_one_sample():
    """The review: [2, 32] for a [64] model (two samples, likely) was asked "one sample?"."""
    xor = nnrun.compile(XOR)
    raised, text = _error(lambda: xor.forward(xor.init_params(), np.zeros((2, 1))))
    assert raised is ValueError
    assert text == "x must be [N, 2], got shape [2, 1]: samples of shape [1], the model's are [2]"


def test_class_labels_that_become_one_hot_targets_must_be_within_the_classes():
    """Under mse, -1 would index the last class (a wrong loss, silently) and 3 past the end."""
    model = nnrun.compile({"model": {"input_shape": [3], "layers": [{"type": "dense",
                                                                      "units": 3}]},
                           "loss": "mse"})
    params, x = model.init_params(), np.zeros((2, 3))
    for label in (-1, 3):
        raised, text = _error(lambda: model.loss_and_grads(params, x, np.array([0, label])))
        assert raised is ValueError and text == (
            f"y_true holds {label} at sample 1; mse needs class labels 0..2 (one-hot targets "
            "of the 3 outputs)")
    model.loss_and_grads(params, x, np.array([0, 2]))


def test_train_where_the_directory_cannot_be_made_is_a_run_directory_error(tmp_path):
    from nnrun.runtime.run_dir import RunDirectoryError

    (tmp_path / "afile").write_text("mine")
    raised, text = _error(lambda: nnrun.train(XOR, out_dir=tmp_path / "afile" / "run",
                                              quiet=True))
    assert raised is RunDirectoryError
    assert text == (f"{tmp_path / 'afile' / 'run'}: Not a directory; a part of the path is a "
                    "file, not a directory: choose another path")


def test_train_takes_threads_as_the_command_does(tmp_path):
    summary = nnrun.train(XOR, out_dir=tmp_path / "run", epochs=3, threads=1, quiet=True)
    assert summary["epochs_run"] == 3
    # the run's rate is its samples over its time, not the mean of the epochs' rates
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    seconds = sum(row["epoch_s"] for row in rows)
    samples = sum(row["samples_per_s"] * row["epoch_s"] for row in rows)
    assert summary["samples_per_s"] == pytest.approx(samples / seconds, abs=0.1)
    from nnrun.runtime.progress import overall_rate

    rows = [{"epoch_s": 1.0, "samples_per_s": 100.0}, {"epoch_s": 3.0, "samples_per_s": 20.0}]
    assert overall_rate(rows) == 40.0 and overall_rate([]) == 0.0  # not (100 + 20) / 2
    raised, text = _error(lambda: nnrun.train(XOR, out_dir=tmp_path / "two", threads=0))
    assert raised is ValueError and "threads must be a whole number >= 1, got 0" in text


def test_one_override_may_be_given_as_a_string():
    assert nnrun.compile(XOR, overrides="seed=3").spec.seed == 3


def test_overrides_may_be_a_mapping_of_paths_to_python_values():
    spec = nnrun.compile(XOR, overrides={
        "seed": np.int64(3), "optimizer": {"type": "adam", "lr": 0.001},
        "model.layers[0].activation": "tanh", "train.metrics": ["accuracy", "mse"],
        "name": "run #2"}).spec  # a string is the string, not YAML's `run` and a comment
    assert spec.name == "run #2"
    assert spec.seed == 3 and spec.optimizer.type == "adam" and spec.optimizer.lr == 0.001
    assert spec.model.layers[0].activation.type == "tanh"
    assert [metric.type for metric in spec.train.metrics] == ["accuracy", "mse"]
    raised, text = _error(lambda: nnrun.compile(XOR, overrides={"train.epochs": 0}))
    assert "--set train.epochs=0: 'epochs' must be an integer ≥ 1, got 0" in text


def test_a_run_predicts_only_samples_of_its_shape_and_loads_only_its_checkpoints(tmp_path):
    nnrun.train(XOR, out_dir=tmp_path / "run", overrides=["train.epochs=1"], quiet=True)
    run = nnrun.load_run(tmp_path / "run")
    assert run.predict(np.zeros((3, 2))).shape == (3, 1)
    assert repr(run) == (f"<Run {str(tmp_path / 'run')!r}: best.npz of epoch 1, 33 values in "
                         "4 arrays>")  # not every parameter's values (the CLI audit)
    raised, text = _error(lambda: run.predict(np.zeros((3, 3))))
    assert raised is ValueError and "x must be [N, 2], got shape [3, 3]" in text
    raised, text = _error(lambda: nnrun.load_run(tmp_path / "run", checkpoint="best.npz"))
    assert "no checkpoint 'best.npz'; a run has 'best' and 'last'" in text


def test_train_into_a_file_is_a_run_directory_error(tmp_path):
    from nnrun.runtime.run_dir import RunDirectoryError

    (tmp_path / "afile").write_text("mine")
    raised, text = _error(lambda: nnrun.train(XOR, out_dir=tmp_path / "afile", quiet=True))
    assert raised is RunDirectoryError and "is a file, not a directory" in text
    assert (tmp_path / "afile").read_text() == "mine"


def test_the_errors_a_run_raises_are_nnruns_own_names(tmp_path):
    """nnrun.RunDirectoryError and the others are the classes the runtime raises, loaded on
    first use (`import nnrun` stays light)."""
    import subprocess
    import sys

    (tmp_path / "afile").write_text("mine")
    with pytest.raises(nnrun.RunDirectoryError, match="is a file, not a directory"):
        nnrun.train(XOR, out_dir=tmp_path / "afile", quiet=True)
    from nnrun.runtime.checkpoint import CheckpointError
    from nnrun.runtime.data import DataError
    from nnrun.runtime.data_fit import DataFitError
    from nnrun.runtime.train import TrainingError

    assert (nnrun.DataError, nnrun.DataFitError, nnrun.CheckpointError, nnrun.TrainingError) == (
        DataError, DataFitError, CheckpointError, TrainingError)
    assert {"DataError", "RunDirectoryError", "TrainingError"} <= set(nnrun.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        nnrun.Nope  # noqa: B018
    light = subprocess.run([sys.executable, "-c", "import sys, nnrun; "
                            "print('nnrun.runtime.train' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "False"


def test_npz_data_gives_the_input_shape_to_a_spec_object_too(tmp_path, monkeypatch):
    """A Spec built in Python reads its data paths from the working directory, as YAML text
    does; its npz file's header gives model.input_shape."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez("d.npz", x=rng.random((20, 1, 4, 4)), y=rng.integers(0, 2, 20))
    spec = nnrun.Spec.model_validate({"data": {"dataset": "npz", "path": "d.npz"},
                                      "model": {"layers": [{"type": "flatten"},
                                                           {"type": "dense", "units": 2}]}})
    assert nnrun.compile(spec).lowered.graph.inputs[0].type.shape == ("B", 1, 4, 4)


def test_a_loss_whose_labels_are_all_ignored_is_zero_not_minus_zero():
    model = nnrun.compile({"model": {"input_shape": [3], "layers": [{"type": "dense",
                                                                      "units": 3}]},
                           "loss": {"type": "cross_entropy", "ignore_index": 9}})
    loss, grads = model.loss_and_grads(model.init_params(), np.ones((2, 3)), np.array([9, 9]))
    assert loss == 0 and not np.signbit(loss)
    assert all(not grad.any() for grad in grads.values())


# --- an audit of the API's arguments ---------------------------------------------------------

@pytest.mark.parametrize("x", [
    [[1.0, 2.0], [3.0]],                        # ragged: NumPy's own message leaked
    np.array([["0.5", "1"]]),                    # strings were parsed
    np.array([[None, None]]),                    # objects became NaN
    np.zeros((1, 2), "datetime64[s]"),           # dates became numbers
])
def test_x_that_is_not_numbers_is_a_type_error(x):
    model = nnrun.compile(XOR)
    with pytest.raises(TypeError, match=r"x must be an array of numbers \[N, 2\]"):
        model.forward(model.init_params(), x)


def test_a_ragged_parameter_is_a_type_error():
    model = nnrun.compile(XOR)
    params = model.init_params()
    params["dense_1.weight"] = [[1.0, 2.0], [3.0]]
    with pytest.raises(TypeError, match="got a list of rows of unequal lengths"):
        model.forward(params, np.zeros((1, 2)))


@pytest.mark.parametrize("options, error, words", [
    ({"out_dir": ""}, ValueError, "out_dir is an empty path, not the current directory"),
    ({"out_dir": 5}, TypeError, "out_dir must be a directory path"),
    ({"resume": "a", "out_dir": "b"}, ValueError, "resume continues a run in its own directory"),
    ({"out_dir": "b", "allow_changes": True}, ValueError, "allow_changes applies to resume only"),
    ({"overrides": 5}, TypeError, "overrides must be 'path=value' strings"),
    # the API audit: pathlib's own TypeError, and a false "leave out out_dir"
    ({"resume": 3}, TypeError, "resume is the run directory to continue, got int"),
    ({"resume": False, "out_dir": "b"}, TypeError, "resume is the run directory to continue"),
    # an unset variable would have resumed whatever run the current directory is
    ({"resume": ""}, ValueError, "resume is an empty path, not the current directory"),
    # as --distributed-timeout (session 44: the API had none)
    ({"distributed_timeout": 30}, ValueError, "distributed_timeout applies to distributed=True"),
    ({"distributed": True, "distributed_timeout": 0}, ValueError,
     r"distributed_timeout must be a number of seconds > 0 \(e.g. 300\), got 0"),
    ({"distributed": True, "distributed_timeout": float("nan")}, ValueError, "got nan"),
    ({"distributed": True, "distributed_timeout": "30"}, ValueError, "got '30'"),
])
def test_train_refuses_what_the_command_refuses(tmp_path, monkeypatch, options, error, words):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=words):
        nnrun.train(XOR, quiet=True, epochs=1, **options)
    assert list(tmp_path.iterdir()) == []  # nothing written, the current directory least


@pytest.mark.parametrize("call, name", [
    (lambda: nnrun.compile(XOR, graph="no"), "graph"),
    (lambda: nnrun.train(XOR, quiet="false"), "quiet"),
    (lambda: nnrun.train(XOR, quiet=True, distributed="no"), "distributed"),
    (lambda: nnrun.train(XOR, quiet=True, graph=None), "graph"),
    (lambda: nnrun.train(XOR, quiet=True, resume="r", allow_changes="yes"), "allow_changes"),
])
def test_a_flag_that_is_no_bool_is_a_type_error(tmp_path, monkeypatch, call, name):
    """The API audit: graph="no" was truthy, and turned on what it meant to turn off."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match=f"{name} must be True or False, got "):
        call()
    assert list(tmp_path.iterdir()) == []


def test_train_takes_numpy_integers_and_no_overrides(tmp_path):
    summary = nnrun.train(XOR, out_dir=tmp_path / "run", quiet=True, epochs=1,
                          threads=np.int64(1), overrides=None)
    assert summary["epochs_run"] == 1


@pytest.mark.parametrize("backend", [5, ["numpy"]])
def test_a_backend_that_is_no_name_is_a_type_error(backend):
    with pytest.raises(TypeError, match="backend must be a backend's name"):
        nnrun.compile(XOR, backend=backend)


def test_load_spec_text_takes_text_and_every_error_a_run_raises_is_exported():
    with pytest.raises(TypeError, match="load_spec_text reads YAML text"):
        nnrun.load_spec_text(5)
    for name in ("SpecChangeError", "MemoryLimitError", "DistributedError"):
        assert name in nnrun.__all__ and issubclass(getattr(nnrun, name), Exception)


def test_calls_from_several_threads_take_turns():
    """The executors' buffers are overwritten by the next call: four threads calling forward
    at once mixed up one another's results (39 of 120 wrong in the audit), without an error."""
    from concurrent.futures import ThreadPoolExecutor

    model = nnrun.compile(QUICKSTART)
    params = model.init_params()
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(64, 1, 8, 8)) for _ in range(4)]
    expected = [model.forward(params, x) for x in inputs]

    def calls(index):
        return [model.forward(params, inputs[index]) for _ in range(15)]

    with ThreadPoolExecutor(4) as pool:
        for index, results in enumerate(pool.map(calls, range(4))):
            for result in results:
                np.testing.assert_array_equal(result, expected[index])


@pytest.mark.parametrize("call, words", [
    (lambda: nnrun.load_spec(None), "load_spec reads a spec file: give its path, got NoneType"),
    (lambda: nnrun.load_spec(QUICKSTART.read_text()), "this is YAML text: give "
                                                      "nnrun.load_spec_text"),
    (lambda: nnrun.load_spec_data(["model"]), "load_spec_data takes a spec as a dict"),
    (lambda: nnrun.load_run(None), "run_dir must be a run directory's path, got NoneType"),
])
def test_arguments_of_the_wrong_type_are_named(call, words):
    """The API audit: these raised pathlib's, dict()'s or the OS's own errors ("File name too
    long", with the whole YAML as the name)."""
    with pytest.raises(TypeError, match=words):
        call()


def test_a_missing_parameter_prints_as_its_line():
    """The API audit: KeyError shows its text quoted; the documented line is what prints."""
    model = nnrun.compile(XOR)
    params = model.init_params()
    params.pop("dense_1.bias")
    with pytest.raises(KeyError) as missing:
        model.forward(params, np.zeros((1, 2)))
    assert str(missing.value).startswith("params lacks 'dense_1.bias'; the model's are ")
    assert "checkpoint" not in str(missing.value)
    # the predict audit: a checkpoint's own arrays (np.load of best.npz) name them params/NAME
    stored = {f"params/{name}": value for name, value in model.init_params().items()}
    with pytest.raises(KeyError) as missing:
        model.forward(stored, np.zeros((1, 2)))
    assert str(missing.value).endswith("(a checkpoint's arrays are named params/NAME: load it "
                                       "with nnrun.load_run(run_dir).params)")


def test_a_batch_too_big_for_the_memory_is_a_memory_limit_error(monkeypatch):
    """The API audit: forward and loss_and_grads ran into NumPy's MemoryError (or the kernel's
    out-of-memory kill); the commands' check now comes first, once per batch size."""
    model = nnrun.compile(QUICKSTART)
    params = model.init_params()
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", "100KB")
    x = np.zeros((2000, 1, 8, 8), np.float32)
    with pytest.raises(nnrun.MemoryLimitError, match=r"Model\.forward: the model needs about "
                                                     r".* at batch size 2000.*pass fewer "
                                                     "samples at a time"):
        model.forward(params, x)
    with pytest.raises(nnrun.MemoryLimitError, match=r"Model\.loss_and_grads"):
        model.loss_and_grads(params, x, np.zeros(2000, np.int64))
    monkeypatch.delenv("NNRUN_MEMORY_LIMIT")
    assert model.forward(params, x[:4]).shape == (4, 10)


def test_a_run_predicts_only_finite_inputs_as_the_command_does(tmp_path):
    """The API audit: run.predict returned NaN for NaN inputs (and for 1e300 in a float32
    model), where `nnrun predict` refuses them."""
    nnrun.train(XOR, out_dir=tmp_path / "run", quiet=True, epochs=1)
    run = nnrun.load_run(tmp_path / "run")
    for bad in (np.nan, 1e300):
        with pytest.raises(ValueError, match=r"x must hold finite float32 numbers \(sample 1"):
            run.predict(np.array([[0.0, 1.0], [bad, 0.0]]))
    assert run.predict(np.array([[0.0, 1.0]])).shape == (1, 1)
    assert run.predict(np.array([[0.0, 1.0]]), preprocess=np.bool_(False)).shape == (1, 1)
    with pytest.raises(TypeError, match="preprocess must be True or False, got 'no'"):
        run.predict(np.array([[0.0, 1.0]]), preprocess="no")
    with pytest.raises(TypeError, match="graph must be True or False, got 'off'"):
        nnrun.load_run(tmp_path / "run", graph="off")


def test_loss_and_grads_is_held_to_its_own_memory_not_the_training_steps(monkeypatch):
    """The fourth review: held to the training step's estimate (Adam's state included), a
    gradcheck that fits was refused as "Model.loss_and_grads"."""
    from nnrun.runtime.memory import estimate_bytes, loss_and_grads_bytes

    model = nnrun.compile(QUICKSTART, overrides=["optimizer.type=adam"])
    own, step = loss_and_grads_bytes(model, 4), estimate_bytes(model, 4)
    assert own < step
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", str((own + step) // 2))
    params = model.init_params()
    model.loss_and_grads(params, np.zeros((4, 1, 8, 8), np.float32), np.zeros(4, np.int64))


def test_the_callers_parameters_are_not_counted_twice_against_what_is_left(monkeypatch):
    """The fuzz audit: under `ulimit -v`, gradcheck's own check passed, then loss_and_grads
    counted the parameters gradcheck had made both in its estimate and as memory taken, and
    refused as "Model.loss_and_grads". A budget (NNRUN_MEMORY_LIMIT) counts them once."""
    from nnrun.runtime import memory

    model = nnrun.compile(QUICKSTART)
    params = model.init_params()
    given = sum(value.nbytes for value in params.values())
    needed = memory.loss_and_grads_bytes(model, 4)
    left = needed - given // 2  # what the parameters' allocation left: short of the estimate
    for name in ("_address_space_limit", "_cgroup_limit"):
        monkeypatch.setattr(memory, name, lambda: None)
    monkeypatch.setattr(memory, "_meminfo_available", lambda: (left, "MemAvailable"))
    x, y = np.zeros((4, 1, 8, 8), np.float32), np.zeros(4, np.int64)
    model.loss_and_grads(params, x, y)
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", str(left))
    with pytest.raises(nnrun.MemoryLimitError, match=r"Model\.loss_and_grads"):
        nnrun.compile(QUICKSTART).loss_and_grads(params, x, y)


def test_the_api_refuses_what_is_not_finite_in_the_models_dtype_without_numpy_warnings():
    """1e300 passed the finiteness check and overflowed in the cast: NumPy's warnings printed,
    and a loss of inf or NaN outputs came back (the API audit)."""
    import warnings

    model = nnrun.compile(str(SPECS / "csv-regression.yaml"))
    params = model.init_params(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="y_true must hold finite float32 numbers"):
            model.loss_and_grads(params, np.zeros((3, 3), "float32"), [0.0, 1e300, 0.0])
        with pytest.raises(ValueError, match="x must hold finite float32 numbers"):
            model.forward(params, np.full((2, 3), 1e300))


def test_a_batch_too_big_is_a_memory_limit_error_before_its_copy_is_made():
    """A float64 x of 10^8 samples: NumPy's MemoryError from the cast to float32."""
    model = nnrun.compile(str(SPECS / "quickstart.yaml"))
    huge = np.broadcast_to(np.float64(0.5), (10**8, 1, 8, 8))
    with pytest.raises(nnrun.MemoryLimitError, match="Model.forward: the model needs about"):
        model.forward(model.init_params(seed=0), huge)


def test_interrupted_is_exported():
    from nnrun.runtime.interrupts import Interrupted

    assert nnrun.Interrupted is Interrupted and "Interrupted" in nnrun.__all__


def test_trainings_from_two_threads_take_turns_and_leave_the_thread_counts_as_they_were(
        tmp_path, monkeypatch):
    """Overlapping, each set the process's thread counts and put back what it had found: the
    one that left last put back the other's (the API audit)."""
    import threading
    import time

    from threadpoolctl import threadpool_info

    from nnrun.backends import base
    from nnrun.runtime import train as training

    def counts():
        return base.workers(), sorted({pool["num_threads"] for pool in threadpool_info()})

    real = training.train

    def slow(*args, **kwargs):  # long enough for the calls to overlap, were they let
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train", slow)
    before = counts()
    runs = [threading.Thread(target=nnrun.train, args=(XOR,),
                             kwargs={"out_dir": tmp_path / f"run{threads}", "quiet": True,
                                     "threads": threads, "epochs": 3})
            for threads in (1, 2)]
    for run in runs:
        run.start()
        time.sleep(0.1)
    for run in runs:
        run.join()
    assert counts() == before
    assert (tmp_path / "run1" / "summary.json").exists()
    assert (tmp_path / "run2" / "summary.json").exists()


def test_run_predict_prepares_a_batch_at_a_time_and_refuses_outputs_that_do_not_fit(
        tmp_path, monkeypatch):
    """Run.predict casts and preprocesses one batch at a time (session 44; before, the whole
    input, cast and preprocessed, was held beside it): float64 inputs whose copies would not
    have fit predict the same outputs as float32 ones; a MemoryLimitError, not NumPy's
    MemoryError, where the outputs themselves would not fit."""
    spec = nnrun.load_spec_text("data: {dataset: digits, limit: 16}\nmodel: {layers: [{type: "
                                "flatten}, {type: dense, units: 10}]}\ntrain: {epochs: 1}\n")
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    run = nnrun.load_run(tmp_path / "run")
    x = np.random.default_rng(0).integers(0, 17, (4096, 1, 8, 8))
    expected = run.predict(x.astype("float32"))
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", "1.5MB")  # x in float64 is 2 MB, cast 1 MB more
    assert np.array_equal(run.predict(x.astype("float64")), expected)
    monkeypatch.setenv("NNRUN_MEMORY_LIMIT", "100kB")  # the outputs alone are 160 kB
    with pytest.raises(nnrun.MemoryLimitError,
                       match="Run.predict: 4,096 samples need about .* for their outputs"):
        run.predict(x.astype("float64"))


def test_a_sample_not_finite_in_a_later_batch_is_named_by_its_number(tmp_path):
    """Prepared a batch at a time, the first sample not finite keeps its number in the input,
    in Run.predict and in `nnrun predict` (whose output file is then not written)."""
    from nnrun.runtime.evaluate import predict_run

    spec = nnrun.load_spec_text("data: {dataset: digits, limit: 16}\nmodel: {layers: [{type: "
                                "flatten}, {type: dense, units: 10}]}\ntrain: {epochs: 1}\n")
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    x = np.zeros((2500, 1, 8, 8))
    x[2345, 0, 3, 3] = 1e300  # finite in float64, not once cast to float32
    with pytest.raises(ValueError, match=r"x must hold finite float32 numbers \(sample 2345 "):
        nnrun.load_run(tmp_path / "run").predict(x)
    np.savez(tmp_path / "x.npz", x=x)
    with pytest.raises(nnrun.DataError, match=r"x\.npz: x must hold finite float32 numbers "
                                              r"\(sample 2345 is NaN, inf or too large"):
        predict_run(tmp_path / "run", tmp_path / "x.npz", tmp_path / "out.npy")
    assert not (tmp_path / "out.npy").exists()


def test_params_are_cast_to_the_model_s_dtype_and_checked_as_x_is():
    """The API audit: float64 weights in a float32 model gave other outputs than the same
    values in float32 (some kernels computed in float64), 1e300 in a bias printed NumPy's
    overflow warning and gave inf, and an x whose products overflow printed warnings too."""
    import warnings

    model = nnrun.compile(str(QUICKSTART))
    params = model.init_params(seed=0)
    x = np.random.default_rng(0).normal(size=(4, 1, 8, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wide = {name: value.astype(np.float64) for name, value in params.items()}
        np.testing.assert_array_equal(model.forward(params, x), model.forward(wide, x))
        for bad in (1e300, np.nan, np.inf):
            with pytest.raises(ValueError, match=r"params\['dense_2.bias'\] must hold finite "
                                                 r"float32 numbers"):
                model.forward({**params, "dense_2.bias": np.full(10, bad)}, x)
        huge = np.full((2, 1, 8, 8), 3e38, np.float32)
        assert not np.isfinite(model.forward(params, huge)).all()
        loss, _ = model.loss_and_grads(params, huge, np.zeros(2, np.int64))
        assert not np.isfinite(loss)


def test_the_spec_loaders_take_one_override_as_compile_does_and_refuse_deep_data():
    """The API audit: load_spec(path, "optimizer.lr=0.5") split the string into 16 --set
    arguments, one per character; load_spec_data of data nested 500 deep leaked a
    RecursionError."""
    assert nnrun.load_spec(QUICKSTART, "optimizer.lr=0.5").spec.optimizer.lr == 0.5
    text = QUICKSTART.read_text()
    assert nnrun.load_spec_text(text, overrides="seed=7").spec.seed == 7
    with pytest.raises(TypeError, match="overrides go as overrides"):
        nnrun.load_spec_text(text, ["seed=7"])
    for depth in (400, 5000):  # deep enough for the checks, then for the copy (the review)
        deep: list = []
        for _ in range(depth):
            deep = [deep]
        with pytest.raises(nnrun.SpecError, match="nested too deeply"):
            nnrun.load_spec_data({"name": deep})


@pytest.mark.parametrize("option, value", [("epochs", 0), ("batch_size", 0), ("seed", -1),
                                           ("epochs", "2"), ("batch_size", True)])
def test_train_refuses_what_the_command_refuses_as_a_usage_error(tmp_path, option, value):
    """The API audit: epochs=0 raised 'SpecError: --set:1:1: error: --set train.epochs=0',
    an argument the caller never wrote, and epochs="2" was taken as 2; the command's
    --epochs 0 is a usage error."""
    with pytest.raises(ValueError, match=rf"{option} must be a whole number >= "):
        nnrun.train(QUICKSTART, out_dir=tmp_path / "run", quiet=True, **{option: value})
    assert not (tmp_path / "run").exists()


def test_an_empty_path_is_not_the_current_directory(tmp_path, monkeypatch):
    """The command refuses `nnrun eval ""`; the API took "" for '.' and loaded the run there."""
    nnrun.train(XOR, quiet=True, epochs=1, out_dir=tmp_path / "run")
    monkeypatch.chdir(tmp_path / "run")
    with pytest.raises(ValueError, match="run_dir is an empty path, not the current directory"):
        nnrun.load_run("")
    with pytest.raises(ValueError, match="spec is an empty path"):
        nnrun.compile("")


@pytest.mark.parametrize("path", ["{name}.yaml", "my dir: v2/spec.yaml", "specs/a: b.yml"])
def test_a_missing_spec_file_is_not_taken_for_yaml_text(tmp_path, monkeypatch, path):
    """An f-string without its f, or a directory named with ': ', is a missing file."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(nnrun.SpecError, match="cannot read file: No such file"):
        nnrun.compile(path)


def test_load_run_of_a_missing_path_or_a_file_says_which(tmp_path):
    """Both said "no spec.yaml", where the command says the path does not exist."""
    (tmp_path / "spec.yaml").write_text(XOR.read_text())
    for path, words in ((tmp_path / "nosuch", "(no such directory)"),
                        (tmp_path / "spec.yaml", "(it is a file)")):
        with pytest.raises(nnrun.RunDirectoryError, match=re.escape(words)):
            nnrun.load_run(path)


def test_a_spec_of_no_file_says_its_init_from_and_data_path_relative_to_the_current_directory(
        tmp_path, monkeypatch):
    """nnrun.compile(dict) said 'relative to the spec file' of an init_from it could not find
    and of the data.path that was to give input_shape; a spec file still says so."""
    import yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs").mkdir()
    init_from = {"data": {"dataset": "npz", "path": "d.npz"},
                 "model": {"input_shape": [3], "init_from": "w.npz",
                           "layers": [{"type": "dense", "units": 2, "init_from": "l.npz"}]}}
    no_shape = {"data": {"dataset": "npz", "path": "missing.npz"},
                "model": {"layers": [{"type": "dense", "units": 2}]}}
    shape_said = ("{}: no such file (data.path is relative to {}): the model's input shape is "
                  "read from it; fix data.path, or give model.input_shape")

    def said(spec) -> list[str]:
        with pytest.raises(nnrun.SpecError) as excinfo:
            nnrun.compile(spec)
        return [diagnostic.message for diagnostic in excinfo.value.diagnostics]

    def of_no_file(data) -> list[list[str]]:  # a dict, a Spec, YAML text
        text = yaml.safe_dump(data, sort_keys=False)
        return [said(spec) for spec in (data, nnrun.Spec.model_validate(data),
                                        nnrun.load_spec_text(text))]

    missing = [f"{tmp_path / name}: no such file (init_from is relative to the current "
               "directory)" for name in ("w.npz", "l.npz")]
    assert of_no_file(init_from) == [missing] * 3
    assert of_no_file(no_shape) == [[shape_said.format(tmp_path / "missing.npz",
                                                       "the current directory")]] * 3
    for name, data in (("i.yaml", init_from), ("n.yaml", no_shape)):
        (tmp_path / "specs" / name).write_text(yaml.safe_dump(data, sort_keys=False))
    assert said("specs/i.yaml") == [f"{Path('specs') / name}: no such file (init_from is "
                                    "relative to the spec file)" for name in ("w.npz", "l.npz")]
    assert said("specs/n.yaml") == [shape_said.format(Path("specs") / "missing.npz",
                                                      "the spec file")]


def test_load_run_of_a_dangling_or_looping_checkpoint_link_is_a_checkpoint_error(tmp_path):
    """A raw FileNotFoundError (or OSError) came out of zipfile: the API's errors are
    CheckpointError for a checkpoint that cannot be read (a hostile-input audit)."""
    run = tmp_path / "run"
    nnrun.train(XOR, out_dir=run, quiet=True, epochs=1)
    (run / "best.npz").unlink()
    (run / "best.npz").symlink_to(tmp_path / "nowhere.npz")
    with pytest.raises(nnrun.CheckpointError, match="No such file or directory; check the path"):
        nnrun.load_run(run)
    (run / "best.npz").unlink()
    (run / "best.npz").symlink_to(run / "best.npz")
    with pytest.raises(nnrun.CheckpointError, match="a loop of symbolic links"):
        nnrun.load_run(run)


def test_a_dict_spec_with_an_integer_of_thousands_of_digits_is_a_spec_error(tmp_path):
    """train.epochs = 10**5000 in a dict raised a raw ValueError from json (Python's limit on
    an integer's decimal digits); in a file it is a positioned error."""
    import yaml

    spec = yaml.safe_load(XOR.read_text())
    spec["train"]["epochs"] = 10**5000
    with pytest.raises(nnrun.SpecError, match="train.epochs: an integer of about 5,001 digits, "
                                              "far more than any setting takes"):
        nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()
    del spec["train"]["epochs"]
    spec["model"]["layers"][0][10**5000] = 1  # as a key: the path of a problem holds it
    with pytest.raises(nnrun.SpecError,
                       match=r"model.layers\[0\]: a key of an integer far longer"):
        nnrun.compile(spec)


def test_the_apis_errors_name_its_parameters_not_the_commands_options(tmp_path):
    """nnrun.train(out_dir=...) over a run was told to "use --resume ... or choose another
    --out", options its caller never wrote; the command keeps its options."""
    from click.testing import CliRunner

    from nnrun.cli import main
    from nnrun.runtime.run_dir import RunDirectoryError

    spec = {"data": {"dataset": "xor"}, "model": {"input_shape": [2], "layers": [
        {"type": "dense", "units": 2}]}, "train": {"epochs": 1}}
    nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    with pytest.raises(RunDirectoryError) as again:
        nnrun.train(spec, out_dir=tmp_path / "run", quiet=True)
    assert str(again.value).endswith("use resume=RUN_DIR to continue it or choose another out_dir")
    with pytest.raises(RunDirectoryError) as missing:
        nnrun.train(spec, resume=tmp_path / "none", quiet=True)
    assert "resume=RUN_DIR takes the directory of a run (its out_dir)" in str(missing.value)
    (tmp_path / "s.yaml").write_text("data: {dataset: xor}\nmodel:\n  input_shape: [2]\n  layers: "
                                     "[{type: dense, units: 2}]\ntrain: {epochs: 1}\n")
    said = CliRunner().invoke(main, ["train", str(tmp_path / "s.yaml"), "--out",
                                     str(tmp_path / "run")])
    assert "use --resume to continue it or choose another --out" in said.output
    (tmp_path / "run" / "best.npz").unlink()
    with pytest.raises(RunDirectoryError, match=r"the run has last.npz: checkpoint='last'\)"):
        nnrun.load_run(tmp_path / "run", checkpoint="best")
    said = CliRunner().invoke(main, ["eval", str(tmp_path / "run"), "--checkpoint", "best"])
    assert "the run has last.npz: --checkpoint last)" in said.output
    (tmp_path / "run" / "summary.json").write_text("{bad")
    with pytest.raises(RunDirectoryError, match="name one with checkpoint='best' or 'last'"):
        nnrun.load_run(tmp_path / "run")


def test_an_option_is_written_as_the_command_line_or_the_api_gives_it():
    from nnrun.runtime.options import TRAIN_PARAMETERS, named_as_parameters, option

    assert option("--set", "model.init_from=/a b/last.npz") == \
        "--set 'model.init_from=/a b/last.npz'"
    assert option("--checkpoint", "best", "last") == "--checkpoint best or last"
    assert option("--out", "NEW_DIR", placeholder=True) == "--out NEW_DIR"
    with named_as_parameters(TRAIN_PARAMETERS):
        assert option("--set", "dtype=float64") == "overrides='dtype=float64'"
        assert option("--out", "NEW_DIR", placeholder=True) == "out_dir=NEW_DIR"
        assert option("--allow-changes") == "allow_changes=True"
        assert option("--resume", "a b") == "resume='a b'"  # not resume=RUN_DIR='a b'


@pytest.mark.parametrize("checkpoint, error", [("bogus", ValueError), (3, TypeError),
                                               ("Best", ValueError)])
def test_load_run_refuses_a_checkpoint_of_neither_name_as_an_argument_error(tmp_path,
                                                                           checkpoint, error):
    """The API audit: checkpoint='bogus' or 3 was a RunDirectoryError, where the command's
    --checkpoint bogus is a usage error (README: argument errors are ValueError/TypeError)."""
    with pytest.raises(error, match="no checkpoint .*; a run has 'best' and 'last'"):
        nnrun.load_run(tmp_path, checkpoint=checkpoint)


def test_trains_errors_name_its_parameters_where_the_command_names_options(tmp_path):
    """The API audit: a divergence told `--resume a --allow-changes` or `--out b`, and
    init_from beyond float32 `--set dtype=float64`, where README says the API's errors name
    its parameters."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "reg.npz", x=rng.standard_normal((64, 5)),
             y=rng.standard_normal((64, 1)))
    spec = {"data": {"dataset": "npz", "path": str(tmp_path / "reg.npz"), "normalize": "none"},
            "model": {"layers": [{"type": "dense", "units": 1}]}, "loss": "mse",
            "train": {"epochs": 30, "batch_size": 8}}
    for lr, out, said in [(50.0, "a", f"resume from it with resume='{tmp_path / 'a'}' and "
                                      "allow_changes=True once the spec is changed)"),
                          (1e18, "b", f"(out_dir='{tmp_path / 'b'}' starts over)")]:
        with pytest.raises(nnrun.TrainingError) as raised:
            nnrun.train({**spec, "optimizer": {"type": "sgd", "lr": lr}},
                        out_dir=tmp_path / out, quiet=True)
        assert str(raised.value).endswith(said) and "--" not in str(raised.value), raised.value
    np.savez(tmp_path / "big.npz", weight=np.full((5, 1), 1e300))
    big = {**spec, "model": {"layers": [{"type": "dense", "units": 1,
                                         "init_from": str(tmp_path / "big.npz")}]}}
    with pytest.raises(nnrun.CheckpointError, match="or train with overrides='dtype=float64'"):
        nnrun.train(big, out_dir=tmp_path / "c", quiet=True)


def test_torch_tensors_that_require_grad_or_are_bfloat16_are_taken_as_arrays():
    """The API audit: they were torch's own RuntimeError (numpy() of a tensor that requires
    grad) or "rows of unequal lengths" (bfloat16, which NumPy cannot hold)."""
    torch = pytest.importorskip("torch")
    model = nnrun.compile(XOR)
    params = model.init_params(seed=0)
    x = np.array([[0.0, 1.0], [1.0, 1.0]])
    expected = model.forward(params, x)
    as_tensors = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    np.testing.assert_array_equal(model.forward(as_tensors, torch.tensor(x, requires_grad=True)),
                                  expected)
    rows = [torch.tensor(row, requires_grad=True) for row in x]  # a list of them (the review)
    np.testing.assert_array_equal(model.forward(params, rows), expected)
    halves = torch.tensor(x, dtype=torch.bfloat16)  # 0 and 1 are exact in bfloat16
    np.testing.assert_array_equal(model.forward(params, halves), expected)
    loss, _ = model.loss_and_grads(params, x, torch.tensor([[1.0], [0.0]], requires_grad=True))
    assert loss == model.loss_and_grads(params, x, np.array([[1.0], [0.0]]))[0]


def test_a_column_of_labels_is_told_to_ravel_not_to_argmax():
    """The API audit: [N, 1] labels for one perceptron output were told "one-hot rows? give
    y_true.argmax(1)", which makes every label 0."""
    text = ("model:\n  input_shape: [2]\n  layers:\n    - {type: dense, units: 1, "
            "activation: step}\nloss: perceptron\n")
    model = nnrun.compile(nnrun.load_spec_text(text))
    raised, said = _error(lambda: model.loss_and_grads(model.init_params(), np.zeros((4, 2)),
                                                       np.array([[0], [0], [0], [1]])))
    assert raised is ValueError and said.endswith("got shape [4, 1] (a column? give "
                                                  "y_true.ravel())")


def test_an_override_given_where_load_spec_text_takes_a_name_is_refused():
    """The API audit: load_spec_text(text, "optimizer.lr=0.5") named the text so and ignored
    the override (load_spec takes overrides second); with_overrides of a path was an
    AttributeError."""
    text = QUICKSTART.read_text()
    raised, said = _error(lambda: nnrun.load_spec_text(text, "optimizer.lr=0.5"))
    assert raised is TypeError and said.endswith("give it as overrides='optimizer.lr=0.5'")
    assert nnrun.load_spec_text(text, overrides="optimizer.lr=0.5").spec.optimizer.lr == 0.5
    from nnrun.compiler.frontend import with_overrides
    raised, said = _error(lambda: with_overrides(str(QUICKSTART), ["seed=1"]))
    assert raised is TypeError and "with_overrides takes a spec as load_spec" in said


def test_a_masked_array_with_masked_values_is_refused_not_read_under_its_mask():
    """The API audit: np.ma arrays were read with the values their mask hides."""
    model = nnrun.compile(XOR)
    x = np.ma.masked_array([[0.0, 1.0], [1.0, 1.0]], mask=[[0, 1], [0, 0]])
    raised, said = _error(lambda: model.forward(model.init_params(), x))
    assert raised is TypeError and "it holds masked values; fill them first" in said
    unmasked = np.ma.masked_array([[0.0, 1.0]], mask=False)
    assert model.forward(model.init_params(), unmasked).shape == (1, 1)
