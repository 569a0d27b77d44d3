"""Training runs on the CuPy path under tests/strict_cupy.py, which refuses what CuPy refuses
where NumPy lets it pass (a NumPy call on a device array, a host array in a cupy call) and
counts every copy between host and device. What issue 8 asks of the step is checked here
without a GPU: no read to the host per step (metrics stay on the device until an epoch's end or
a progress refresh), the batches gathered on the device, and nothing in the captured step that a
CUDA graph cannot hold (a transfer while capturing raises)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import strict_cupy
from invoking import assert_ok, invoke
from kernel_emulation import described, needs_gcc
from stepping import train_steps

import nnrun

pytestmark = needs_gcc
SPECS = Path(__file__).resolve().parents[2] / "specs"

# Class labels with early stopping, dropout (LeNet-5 on digits' shape), label maps (pixel
# accuracy, mean IoU, ignore_index), real-valued targets from a csv, batchnorm with AdamW, a
# residual block with Adam, augmentation, pruning, 1-D convolutions with top-k accuracy.
RUNS = {
    "quickstart.yaml": ["data.limit=256"],
    "lenet5.yaml": ["data.dataset=digits", "model.input_shape=[1, 8, 8]", "data.limit=128",
                    "model.layers[0].padding=same", "model.layers[2].padding=same"],
    "fcn-segmentation.yaml": ["data.limit=24"],
    "csv-regression.yaml": [],
    # float64: its dense biases before batchnorm have no gradient but rounding noise, which
    # Adam scales up to steps of lr, so float32 runs that sum in another order drift apart
    "spirals-mlp.yaml": ["data.limit=256", "dtype=float64"],
    "residual-block.yaml": ["data.limit=128"],
    "digits-augmented.yaml": ["data.limit=128"],
    "mnist-mlp-pruned.yaml": ["data.limit=128", "train.pruning.start_epoch=1",
                              "train.pruning.end_epoch=1"],
    "mnist1d-cnn.yaml": ["data.limit=256", "train.metrics=[accuracy, {type: top_k_accuracy, k: 3}]"],
    # batchnorm on feature maps (compiler/passes/batch_statistics.py), on digits' shape
    "fashion-mnist-cnn.yaml": ["data.dataset=digits", "model.input_shape=[1, 8, 8]",
                               "data.limit=128", "dtype=float64"],
}


def _train(spec: str, overrides: list[str], out_dir: Path, backend: str) -> dict:
    return nnrun.train(str(SPECS / spec), backend=backend, out_dir=out_dir, quiet=True,
                       overrides=["train.epochs=1", *overrides])


# The uncaptured step too, except where the stand-in's kernels (C run thread by thread) are slow.
CASES = [(spec, captured) for spec in RUNS for captured in (True, False)
         if captured or spec != "fcn-segmentation.yaml"]


@pytest.mark.parametrize(("spec", "captured"), CASES,
                         ids=[f"{spec}-{'captured' if c else 'uncaptured'}" for spec, c in CASES])
def test_a_run_under_strict_cupy_gives_numpys_metrics(spec, captured, monkeypatch, tmp_path):
    on_numpy = _train(spec, RUNS[spec], tmp_path / "numpy", "numpy")
    strict_cupy.install(monkeypatch, capture=captured)
    on_cupy = _train(spec, RUNS[spec], tmp_path / "cupy", "cupy")
    assert on_cupy["step_path"] == ("captured" if captured else "planned")
    numbers = {k: v for k, v in on_numpy["final"].items() if isinstance(v, float)}
    assert numbers
    for name, value in numbers.items():
        np.testing.assert_allclose(on_cupy["final"][name], value, rtol=1e-3, atol=1e-4,
                                   err_msg=name)


MULTI_LABEL = """
data: {dataset: npz, path: m.npz, validation_split: 0.25}
model:
  layers: [{type: dense, units: 8, activation: relu}, {type: dense, units: 4}]
loss: {type: binary_cross_entropy, ignore_index: 255}
train: {epochs: 2, batch_size: 16, metrics: [accuracy, mean_iou, mae]}
"""


@pytest.mark.parametrize("captured", [True, False], ids=["captured", "uncaptured"])
def test_several_labels_a_sample_give_numpys_metrics(captured, monkeypatch, tmp_path):
    """Each output a 0/1 label of its own: the confusion matrix of two classes, on the device."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (96, 4))
    y[rng.random(y.shape) < 0.1] = 255
    np.savez(tmp_path / "m.npz", x=rng.random((96, 6)).astype("f4"), y=y)
    (tmp_path / "m.yaml").write_text(MULTI_LABEL)
    on_numpy = nnrun.train(str(tmp_path / "m.yaml"), out_dir=tmp_path / "numpy", quiet=True)
    strict_cupy.install(monkeypatch, capture=captured)
    on_cupy = nnrun.train(str(tmp_path / "m.yaml"), backend="cupy", out_dir=tmp_path / "cupy",
                          quiet=True)
    for name, value in on_numpy["final"].items():
        if isinstance(value, float):
            np.testing.assert_allclose(on_cupy["final"][name], value, rtol=1e-3, atol=1e-4,
                                       err_msg=name)


# Ops no shipped spec runs (ELU and softplus in float32, reflect and replicate padding, nearest
# and long linear upsampling, mae and huber): tests/backends/gpu_specs, which the GPU tests run
# too (test_cupy_backend.py, test_cuda_graph.py).
GPU_SPECS = sorted((Path(__file__).resolve().parent / "gpu_specs").glob("*.yaml"))


@pytest.mark.parametrize("captured", [True, False], ids=["captured", "uncaptured"])
@pytest.mark.parametrize("path", GPU_SPECS, ids=lambda path: path.stem)
def test_steps_of_ops_no_shipped_spec_runs_give_numpys_weights(path, captured, monkeypatch):
    from nnrun.runtime.gradcheck import random_batch
    from nnrun.runtime.model import Model

    source = nnrun.compile(str(path)).source
    on_numpy = Model(source, "numpy")
    x, y = random_batch(on_numpy, 16, np.random.default_rng(0))
    _, expected = train_steps(on_numpy, x, y, steps=3)
    strict_cupy.install(monkeypatch, capture=captured)
    on_cupy = Model(source, "cupy", graph=captured)
    _, weights = train_steps(on_cupy, x, y, steps=3)
    assert on_cupy.step_path == ("captured" if captured else "planned")
    for name, value in expected.items():
        scale = max(np.abs(value).max(), 1.0)
        assert np.abs(weights[name] - value).max() / scale < 1e-5, name


def test_nothing_is_copied_between_host_and_device_per_step(monkeypatch, tmp_path):
    """Twice the steps: the same reads to the host and the same copies to the device: not the
    batch, nor the small values fed to each step (the rate, the step count, the dropout key),
    which go to the device once an epoch (StepScalars)."""
    counts = {}
    for limit in (256, 512):
        strict_cupy.install(monkeypatch, capture=True)
        result = _train("quickstart.yaml", [f"data.limit={limit}", "train.batch_size=32",
                                            "data.validation_split=0.25"],
                        tmp_path / str(limit), "cupy")
        assert result["step_path"] == "captured"
        transfers = strict_cupy.TRANSFERS
        counts[limit] = transfers.total("to host"), transfers.total("to device")
    assert counts[512] == counts[256], counts


def test_the_strict_stand_in_refuses_what_cupy_refuses(monkeypatch):
    strict_cupy.install(monkeypatch, capture=False)
    import cupy

    on_device = cupy.zeros(3, dtype=np.float32)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(on_device)
    with pytest.raises(TypeError, match="Unsupported type"):
        cupy.add(on_device, np.ones(3, dtype=np.float32))
    with pytest.raises(TypeError, match="Unsupported type"):
        on_device += np.ones(3, dtype=np.float32)
    with pytest.raises(AttributeError):
        on_device.ctypes  # noqa: B018
    with pytest.raises(TypeError, match="int32"):
        cupy.add.at(cupy.zeros(3, dtype=np.int64), cupy.asarray([0, 1]), 1)
    view = on_device[1:]
    assert view.base is on_device  # as CuPy's: the optimizer's flat buffers rely on it
    stream = cupy.cuda.Stream()
    with stream:
        stream.capturing = True
        with pytest.raises(strict_cupy.CaptureError, match="during stream capture"):
            float(on_device[0])
        stream.capturing = False


def test_the_stand_ins_graph_refuses_a_launch_unlike_its_first(monkeypatch):
    """A real graph replays its capture: a scalar or a shape the step's Python passes anew at
    each step stays at its first value there. The stand-in runs the Python at every launch, so
    it compares each launch's calls with the first's; the values in device memory may change."""
    backend = strict_cupy.install(monkeypatch, capture=True)
    import cupy

    kernels = backend.cupy_kernels
    x = cupy.asarray(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))
    b = cupy.zeros(3, np.float32)
    y, rate = cupy.empty_like(x), cupy.asarray(np.float32(0.5))
    settings = iter([(0.1, 2.0, 2), (0.1, 2.0, 2), (0.1, 3.0, 2), (0.2, 2.0, 2), (0.1, 2.0, 1)])
    for alpha in (0.1, 0.2):  # self-checked before the capture
        assert kernels.run_activation("leaky_relu", alpha, x, b, y)

    def step():
        alpha, scale, rows = next(settings)
        kernels.run_activation("leaky_relu", alpha, x, b, y)
        cupy.multiply(y[:rows], scale, out=y[:rows])
        y[...] = y * rate

    graph = strict_cupy.FakeGraphCapture().capture(step)
    graph.launch()
    rate[...] = 0.25  # the device's values: read at each replay
    graph.launch()
    with pytest.raises(strict_cupy.CaptureError, match=r"launch 3 .* differs .* at call 4: "
                       r"\('cupy.multiply', .*3.0.*against .*2.0"):
        graph.launch()
    with pytest.raises(strict_cupy.CaptureError, match=r"launch 4 .* at call 1: "
                       r"\('kernel .*0.2.*against .*0.1"):
        graph.launch()
    with pytest.raises(strict_cupy.CaptureError, match=r"launch 5 .* call 2: .*slice., None, 1"):
        graph.launch()
    # a NaN passed again is the value it was (NaN != NaN would be a false alarm)
    for nan in (float("nan"), np.float32("nan")):
        assert described(nan) == described(nan) != described(np.float32(0))


def test_the_other_commands_run_under_strict_cupy(monkeypatch, tmp_path):
    """eval, predict, bench and check-backends on the CuPy path give NumPy's numbers."""
    spec = SPECS / "quickstart.yaml"
    run = tmp_path / "run"
    _train("quickstart.yaml", ["data.limit=128"], run, "numpy")
    samples = tmp_path / "samples.npz"
    np.savez(samples, x=np.random.default_rng(0).uniform(0, 16, (5, 1, 8, 8)))
    on_numpy = {
        "eval": assert_ok(invoke("eval", run, "--format", "json")).stdout,
        "predict": assert_ok(invoke("predict", run, samples, "--out", tmp_path / "numpy.npy")),
    }
    strict_cupy.install(monkeypatch, capture=True)
    on_cupy = assert_ok(invoke("eval", run, "--format", "json", "--backend", "cupy")).stdout
    for name, value in json.loads(on_numpy["eval"]).items():
        if isinstance(value, float):
            np.testing.assert_allclose(json.loads(on_cupy)[name], value, rtol=1e-4, err_msg=name)
    assert_ok(invoke("predict", run, samples, "--out", tmp_path / "cupy.npy", "--backend", "cupy"))
    np.testing.assert_allclose(np.load(tmp_path / "cupy.npy"), np.load(tmp_path / "numpy.npy"),
                               rtol=1e-4, atol=1e-6)
    bench = json.loads(assert_ok(invoke("bench", spec, "--backend", "cupy", "--steps", "2",
                                        "--format", "json")).stdout)
    assert bench["backend"] == "cupy" and bench["step_path"] == "captured", bench
    assert "agree" in assert_ok(invoke("check-backends", spec, "--set", "data.limit=64")).stdout


def test_check_backends_fails_where_the_default_path_fell_back(monkeypatch):
    """The CuPy audit: a kernel wrong only inside the captured graph made the first-step check
    drop capture for the planned executor, whose results agree, and check-backends said "ok"
    (exit 0); so did a kernel that failed its self-check. Both are what a user asks it about."""
    spec = SPECS / "quickstart.yaml"
    backend = strict_cupy.install(monkeypatch, capture=True)
    import cupy

    kernels = backend.cupy_kernels
    launch = kernels._launch

    def wrong_while_capturing(plan):
        launch(plan)
        if cupy.cuda.get_current_stream().is_capturing():
            for *_, name, _, args in plan:
                if name == "bias_activation":
                    args[2].__imul__(1.01)

    monkeypatch.setattr(kernels, "_launch", wrong_while_capturing)
    result = invoke("check-backends", spec, "--set", "data.limit=64")
    assert result.exit_code == 1, result.output
    assert ("fell back:                   the training step on a captured CUDA graph differs "
            "from the reference executor") in result.stdout
    assert "every result agrees, but through the slower code that took over" in result.stdout
    report = json.loads(invoke("check-backends", spec, "--format", "json").stdout)
    assert not report["agree"] and report["executor"] == "planned"
    assert len(report["fallbacks"]) == 1
    monkeypatch.setattr(kernels, "_launch", launch)
    monkeypatch.setattr(kernels, "_VERDICTS", {})
    monkeypatch.setattr(kernels, "_disagreement",
                        lambda dtype, got, want: "disagrees with the generic code (broken)")
    report = json.loads(invoke("check-backends", spec, "--format", "json").stdout)
    assert not report["agree"] and report["first_difference"] is None
    assert any(line.startswith("CuPy kernel bias_activation ('float32', 'relu'") and
               line.endswith("failed its self-check; the generic code runs instead")
               for line in report["fallbacks"]), report["fallbacks"]


def test_cupy_without_a_device_names_the_extra_of_each_driver(monkeypatch):
    """CuPy built for CUDA 13 on a CUDA 12 driver finds no device: the line said only to run
    on a machine with a GPU."""
    backend = strict_cupy.install(monkeypatch, capture=False)
    import cupy

    def no_device():
        raise cupy.cuda.runtime.CUDARuntimeError("cudaErrorInsufficientDriver")

    monkeypatch.setattr(cupy.cuda.runtime, "getDeviceCount", no_device)
    from nnrun.backends import BackendUnavailable

    with pytest.raises(BackendUnavailable) as caught:
        backend.CupyBackend()
    message = str(caught.value)
    assert "cudaErrorInsufficientDriver" in message and "\n" not in message
    assert "'nnrun[cuda13]' for CUDA 13" in message and "'nnrun[cuda12]' for CUDA 12" in message


def test_the_free_device_memory_counts_what_cupys_pool_keeps_cached(monkeypatch):
    """The device's free memory counts the pool's cached blocks as used, though CuPy's own
    allocations take them: a program planned for another batch size cleared others for it."""
    backend = strict_cupy.install(monkeypatch, capture=False)
    import cupy

    pool = cupy.get_default_memory_pool()
    monkeypatch.setattr(pool, "total_bytes", lambda: 5 << 20)
    monkeypatch.setattr(pool, "used_bytes", lambda: 2 << 20)
    free, _ = cupy.cuda.runtime.memGetInfo()
    assert backend.CupyBackend().free_device_bytes() == free + (3 << 20)


def test_the_python_api_takes_and_gives_numpy_arrays_on_the_cupy_path(monkeypatch):
    """DESIGN.md section 7: NumPy arrays in and out, whatever the backend."""
    from nnrun.runtime.gradcheck import random_batch

    spec = str(SPECS / "quickstart.yaml")
    on_numpy = nnrun.compile(spec)
    strict_cupy.install(monkeypatch, capture=True)
    on_cupy = nnrun.compile(spec, backend="cupy")
    params = on_cupy.init_params(seed=0)
    assert all(type(value) is np.ndarray for value in params.values())
    x, y = random_batch(on_numpy, 3, np.random.default_rng(1))
    x = x.astype(np.float32)
    outputs = on_cupy.forward(params, x)
    assert type(outputs) is np.ndarray
    np.testing.assert_allclose(outputs, on_numpy.forward(on_numpy.init_params(seed=0), x),
                               rtol=1e-5, atol=1e-6)
    loss, grads = on_cupy.loss_and_grads(params, x, y)
    expected_loss, expected = on_numpy.loss_and_grads(on_numpy.init_params(seed=0), x, y)
    assert type(loss) is float and abs(loss - expected_loss) < 1e-5
    for name, grad in grads.items():
        assert type(grad) is np.ndarray
        np.testing.assert_allclose(grad, expected[name], rtol=1e-4, atol=1e-6, err_msg=name)
