"""The CuPy backend against NumPy on whole models (per-op checks are in tests/ops).
Runs with `pytest -m gpu` on a machine with CuPy and a CUDA device; skips elsewhere."""

import json
from pathlib import Path

import numpy as np
import pytest

import nnrun

pytestmark = pytest.mark.gpu

SPEC = """
data: {dataset: digits, validation_split: 0.1}
model:
  layers:
    - {type: conv2d, filters: 8, kernel_size: 3, padding: same, activation: relu}
    - {type: batchnorm}
    - {type: maxpool2d, pool_size: 2}
    - {type: conv2d, filters: 8, kernel_size: 3, padding: 1, padding_mode: reflect, activation: gelu}
    - {type: global_avgpool}
    - {type: dense, units: 10}
optimizer: {type: adam, lr: 0.003, clip_grad_norm: 5.0}
train: {epochs: 2, batch_size: 32}
"""


def test_loss_and_grads_match_numpy(cupy_backend):
    source = nnrun.load_spec_text(SPEC)
    on_cpu, on_gpu = nnrun.compile(source), nnrun.compile(source, backend="cupy")
    params = on_cpu.init_params()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 16)
    loss_cpu, grads_cpu = on_cpu.loss_and_grads(params, x, y)
    loss_gpu, grads_gpu = on_gpu.loss_and_grads(params, x, y)
    assert abs(loss_cpu - loss_gpu) <= 1e-5 * max(1.0, abs(loss_cpu))
    for name, grad in grads_cpu.items():
        scale = np.abs(grad).max() + 1e-12
        assert np.abs(grads_gpu[name] - grad).max() / scale < 1e-4, name


def test_gradcheck_on_cupy(cupy_backend):
    """`nnrun gradcheck --backend cupy`: the float64 gradients on the GPU against finite
    differences, with NumPy's verdicts."""
    from nnrun.runtime.gradcheck import gradcheck

    source = nnrun.load_spec_text(SPEC + "dtype: float64\n")
    on_cpu = gradcheck(nnrun.compile(source), batch=3, samples=4)
    on_gpu = gradcheck(nnrun.compile(source, backend="cupy"), batch=3, samples=4)
    for cpu, gpu in zip(on_cpu, on_gpu):
        assert gpu.worst_relative_error <= 1e-5 and gpu.kinks == cpu.kinks, gpu


def test_training_on_cupy_follows_numpy(cupy_backend, tmp_path):
    runs = {}
    for backend in ("numpy", "cupy"):
        summary = nnrun.train(nnrun.load_spec_text(SPEC), backend=backend,
                              out_dir=tmp_path / backend, quiet=True)
        rows = [json.loads(line) for line in (tmp_path / backend / "metrics.jsonl").open()]
        runs[backend] = (summary, rows)
    assert runs["cupy"][0]["backend"] == "cupy"
    first_cpu, first_gpu = runs["numpy"][1][0], runs["cupy"][1][0]
    assert abs(first_cpu["train_loss"] - first_gpu["train_loss"]) < 1e-3 * first_cpu["train_loss"]
    # Float32 sums run in another order on the GPU, so later epochs drift slightly apart.
    accuracy = {b: runs[b][0]["final"]["test_accuracy"] for b in runs}
    assert abs(accuracy["cupy"] - accuracy["numpy"]) <= 0.02


@pytest.mark.parametrize("spec_text", [SPEC, """
model:
  input_shape: [1, 28, 28]
  layers:
    - {type: conv2d, filters: 6, kernel_size: 5, padding: 2, activation: relu}
    - {type: maxpool2d, pool_size: 2}
    - {type: conv2d, filters: 16, kernel_size: 5, activation: relu}
    - {type: maxpool2d, pool_size: 2}
    - {type: flatten}
    - {type: dense, units: 84, activation: relu}
    - {type: dense, units: 10}
loss: cross_entropy
optimizer: {type: sgd, lr: 0.05, momentum: 0.9}
"""], ids=["digits-cnn", "lenet5"])
def test_planned_step_on_cupy_matches_numpy(cupy_backend, spec_text):
    """The memory-planned executor (on CuPy captured as a CUDA graph by default, after its
    first-step self-check): three training steps on CuPy against NumPy's."""
    from nnrun.runtime.gradcheck import random_batch
    from nnrun.runtime.model import Model

    source = nnrun.load_spec_text(spec_text)
    models = {"numpy": Model(source, "numpy"), "cupy": Model(source, "cupy", optimized=True)}
    x, y = random_batch(models["numpy"], 16, np.random.default_rng(0))
    weights = {}
    for name, model in models.items():
        state = model.train_state()
        for step in range(1, 4):
            _, updates = model.step_executor.run(model.step_feeds(state, x, y, 0.05, step, 0))
            state.update(updates)
        weights[name] = {k: model.backend.to_host(v).copy() for k, v in state.items()}
    for name, value in weights["numpy"].items():
        scale = np.abs(value).max() + 1e-12
        assert np.abs(weights["cupy"][name] - value).max() / scale < 1e-4, name


# the shipped specs, and specs of the ops none of them runs (ELU and softplus in float32,
# reflect and replicate padding, nearest and long linear upsampling, mae and huber)
SPECS = (sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.yaml"))
         + sorted((Path(__file__).resolve().parent / "gpu_specs").glob("*.yaml")))


@pytest.mark.parametrize("spec_path", SPECS, ids=[p.stem for p in SPECS])
def test_check_backends_agrees_on_every_spec(cupy_backend, spec_path):
    """check-backends on each shipped spec (and tests/backends/gpu_specs): every op (plain and
    optimized kernels) and the whole step on CuPy's executor within 1e-4 of NumPy's."""
    from nnrun.runtime.check_backends import check_backends

    report = check_backends(nnrun.compile(spec_path).source, cupy_backend, batch_size=8)
    first = report.first_failure
    assert first is None, f"{first[0].name}: {first[1].describe()}"
    assert not report.whole_step_failures, report.whole_step_failures
    assert not report.fallbacks, report.fallbacks  # the captured step and every kernel held


def test_several_labels_a_sample_on_cupy_give_numpys_metrics(cupy_backend, tmp_path):
    """binary_cross_entropy with y [N, k]: each output a label of its own (runtime/metrics.py's
    predicted_labels and its confusion matrix of two classes, on the device)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (96, 4))
    y[rng.random(y.shape) < 0.1] = 255
    np.savez(tmp_path / "m.npz", x=rng.random((96, 6)).astype("f4"), y=y)
    (tmp_path / "m.yaml").write_text("""
data: {dataset: npz, path: m.npz, validation_split: 0.25}
model:
  layers: [{type: dense, units: 8, activation: relu}, {type: dense, units: 4}]
loss: {type: binary_cross_entropy, ignore_index: 255}
train: {epochs: 2, batch_size: 16, metrics: [accuracy, mean_iou, mae]}
""")
    finals = [nnrun.train(str(tmp_path / "m.yaml"), backend=backend, out_dir=tmp_path / backend,
                          quiet=True)["final"] for backend in ("numpy", "cupy")]
    for name, value in finals[0].items():
        if isinstance(value, float):
            np.testing.assert_allclose(finals[1][name], value, rtol=1e-3, atol=1e-4, err_msg=name)
