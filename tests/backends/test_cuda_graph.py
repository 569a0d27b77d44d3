"""Whole-step CUDA-graph capture on CuPy (backends/cuda_graph.py, runtime/captured.py): cuBLAS
called directly under capture against cupy.matmul, and captured, uncaptured and NumPy training
steps on every shipped spec (and tests/backends/gpu_specs). Runs with `pytest -m gpu` on a
machine with CuPy and a CUDA device (benchmarks/gpu.sh); skips elsewhere. Timings are
printed (`-s`), never asserted."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import nnrun

pytestmark = pytest.mark.gpu

SPECS = (sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.yaml"))
         + sorted((Path(__file__).resolve().parent / "gpu_specs").glob("*.yaml")))
STEPS = 5
BATCH = 16


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_into_under_capture_matches_cupy_matmul(cupy_backend, dtype):
    import cupy
    from test_gemm_layout import ops_layouts

    capture = cupy_backend.graph_capture()
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for name, a, b, out in ops_layouts(cupy, np.random.default_rng(0), dtype):
        expected = cupy.asnumpy(cupy.matmul(a, b))

        def product():
            cupy_backend.matmul_into(a, b, out)

        capture.warm(product)  # cuBLAS called directly, uncaptured
        np.testing.assert_allclose(cupy.asnumpy(out), expected, rtol=tolerance,
                                   atol=tolerance, err_msg=f"{name} (uncaptured)")
        out[...] = 0
        graph = capture.capture(product)
        assert not np.any(cupy.asnumpy(out)), f"{name}: capture must not run the product"
        graph.launch()
        np.testing.assert_allclose(cupy.asnumpy(out), expected, rtol=tolerance,
                                   atol=tolerance, err_msg=f"{name} (replayed)")


def _weights(model, x, y) -> dict:
    state = model.train_state()
    for step in range(1, STEPS + 1):
        _, updates = model.step_executor.run(model.step_feeds(state, x, y, 0.01, step, step))
        state.update(updates)
    return {name: np.array(model.backend.to_host(v), copy=True) for name, v in state.items()}


@pytest.mark.parametrize("spec_path", SPECS, ids=[p.stem for p in SPECS])
def test_captured_uncaptured_and_numpy_steps_agree(cupy_backend, spec_path, capsys):
    """Five steps on each path from the same weights and batch: the same weights within 1e-8
    of their largest magnitude (or of 1, for weights that stay near 0: spirals-mlp's dense
    biases before batchnorm, whose gradient is only rounding noise, stay near 1e-11), and the
    captured path kept (no fallback). In float64: in float32, Adam scales such noise to steps
    of the full rate, so another summation order moves those weights apart by up to the rate;
    float32 gradients are compared op by op by test_cupy_kernels.py's check-backends test."""
    from nnrun.runtime.gradcheck import random_batch
    from nnrun.runtime.model import Model

    source = nnrun.compile(spec_path, overrides=["dtype=float64"]).source
    on_cpu = Model(source, "numpy")
    x, y = random_batch(on_cpu, BATCH, np.random.default_rng(0))
    expected = _weights(on_cpu, x, y)
    captured, uncaptured = Model(source, cupy_backend), Model(source, cupy_backend, graph=False)
    paths = {}
    for label, model in (("captured", captured), ("planned", uncaptured)):
        weights = _weights(model, x, y)
        paths[label] = model.step_path
        for name, value in expected.items():
            scale = max(np.abs(value).max(), 1.0)
            difference = np.abs(weights[name] - value).max() / scale
            assert difference < 1e-8, f"{label}: {name} differs by {difference:.1e}"
    warnings = capsys.readouterr().err.strip()
    print(f"{spec_path.stem}: paths {paths}{'; ' + warnings if warnings else ''}")
    assert paths == {"captured": "captured", "planned": "planned"}, warnings


def test_self_check_falls_back_from_a_broken_kernel_on_cupy(cupy_backend, capsys):
    """A matrix product off by 1% in the planned and captured steps of a dense network (its
    reference executor multiplies with `@`): both fall back, with one line each, and the run
    goes on on the reference executor."""
    from nnrun.backends.cupy_backend import CupyBackend
    from nnrun.runtime.gradcheck import random_batch
    from nnrun.runtime.model import Model

    class BrokenMatmul(CupyBackend):
        def matmul_into(self, a, b, out):
            super().matmul_into(a, b, out)
            out *= 1.01

    model = Model(nnrun.compile(SPECS[0].parent / "mnist-mlp.yaml").source, BrokenMatmul())
    x, y = random_batch(model, BATCH, np.random.default_rng(0))
    _weights(model, x, y)
    assert model.step_path == "reference"
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


@pytest.mark.parametrize("spec_name", ["lenet5", "mnist-mlp"])
def test_replay_time_is_printed(cupy_backend, spec_name):
    from nnrun.runtime.bench import bench
    from nnrun.runtime.model import Model

    source = nnrun.compile(SPECS[0].parent / f"{spec_name}.yaml").source
    times = {}
    for graph in (True, False):
        started = time.perf_counter()
        result = bench(Model(source, cupy_backend, graph=graph), 128, steps=30)
        times[result["step_path"]] = (result["train_step_ms"],
                                      round(time.perf_counter() - started, 1))
    print(f"{spec_name} batch 128 train step ms (and bench seconds): {times}")
