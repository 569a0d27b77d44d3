"""backends/cupy_kernels.py and the CuPy backend, run unchanged on the CPU: `cupy` is a
stand-in (NumPy, with RawModule compiled by g++, tests/kernel_emulation.py). This checks the
Python around the kernels (launch plans, self-checks, fallbacks, the one warning line) and
whole training steps through every kernel, which the GPU run then only has to confirm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stepping import train_steps
from kernel_cases import assert_backends_agree
from kernel_emulation import install_fake_cupy, needs_gcc

import nnrun
from nnrun.backends import raw_kernels
from nnrun.backends.numpy_backend import NumpyBackend
from nnrun.compiler.ops.optim import AdagradAttrs, AdamAttrs
from nnrun.runtime.gradcheck import random_batch
from nnrun.runtime.model import Model

pytestmark = needs_gcc
SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.fixture
def emulated(monkeypatch):
    fake, kernels, backend_module = install_fake_cupy(monkeypatch)
    monkeypatch.setattr(kernels, "_VERDICTS", {})
    monkeypatch.setattr(kernels, "_BACKEND", {})
    backend = backend_module.CupyBackend()
    backend.graph_capture = lambda: None  # whole-step capture is not emulated: uncaptured steps
    return fake, kernels, backend


STEPS = [  # spec, overrides, the planned executor (else the reference), kernels it must use
    ("lenet5.yaml", [], True, {"max_pool_index", "max_pool_grad_index", "cross_entropy",
                               "im2col", "sgd_update", "bias_activation"}),
    ("fcn-segmentation.yaml", ["optimizer={type: adamw, lr: 0.003}"], True,
     {"cross_entropy", "bias_activation", "adam_update"}),
    ("residual-block.yaml", ["optimizer={type: sgd, lr: 0.01, momentum: 0.9, nesterov: true}"],
     True, {"sgd_update", "bias_activation"}),
    ("vanishing-gradients.yaml", [], True, {"bias_activation", "cross_entropy", "sgd_update"}),
    ("mnist1d-cnn.yaml", [], True, {"cross_entropy", "adam_update", "im2col", "col2im"}),
    # RMSprop and Adagrad divide g by its own size: a net without batchnorm, whose biases'
    # gradients would be rounding noise that they blow up to a full step of either sign
    ("mnist1d-mlp.yaml",
     ["optimizer={type: rmsprop, lr: 0.01, momentum: 0.9, weight_decay: 0.01}"], True,
     {"rmsprop_update"}),
    ("xor-mlp.yaml", ["optimizer={type: adagrad, lr: 0.1, weight_decay: 0.001}"], True,
     {"adagrad_update"}),
    # plain forwards: their convolutions and pools call im2col and col2im
    ("lenet5.yaml", [], False, {"im2col", "col2im"}),
]


@pytest.mark.parametrize("spec, overrides, optimized, families", STEPS,
                         ids=[f"{s[0]}-{'planned' if s[2] else 'reference'}" for s in STEPS])
def test_training_steps_through_the_kernels_follow_numpy(spec, overrides, optimized, families,
                                                         emulated, capsys):
    _, kernels, backend = emulated
    compiled = nnrun.compile(str(SPECS / spec), overrides=overrides)
    on_numpy = Model(compiled.source, "numpy")
    on_kernels = Model(compiled.source, backend, optimized=optimized)
    x, y = random_batch(compiled, 8, np.random.default_rng(0))
    losses_numpy, weights_numpy = train_steps(on_numpy, x, y, 3)
    losses_kernels, weights_kernels = train_steps(on_kernels, x, y, 3)
    np.testing.assert_allclose(losses_kernels, losses_numpy, rtol=1e-5)
    for name, value in weights_numpy.items():
        scale = float(np.abs(value).max(initial=1e-12))
        assert np.abs(weights_kernels[name] - value).max() <= 1e-4 * scale, name
    assert capsys.readouterr().err == ""
    used = {key[0] for key, trusted in kernels._VERDICTS.items() if trusted}
    assert families <= used, families - used
    assert all(kernels._VERDICTS.values())


def _adam_inputs(rng, size=33):
    p, g = (rng.standard_normal(size).astype(np.float32) for _ in range(2))
    m, v = np.zeros(size, np.float32), np.abs(rng.standard_normal(size)).astype(np.float32)
    return p, g, np.asarray(0.01, np.float32), np.asarray(2, np.float32), m, v


def test_a_kernel_that_disagrees_is_named_once_and_replaced(emulated, monkeypatch, capsys):
    _, kernels, backend = emulated
    broken = raw_kernels.ADAM_UPDATE.replace("new_m[i] = first;", "new_m[i] = first * (T)1.5;")
    monkeypatch.setitem(raw_kernels.SOURCES, "adam_update", broken)
    rng = np.random.default_rng(0)
    inputs = _adam_inputs(rng)
    for _ in range(2):
        out = [np.empty(33, np.float32) for _ in range(5)]
        backend.optimizer_update_into("adam_update", AdamAttrs(), out, *inputs)
        want = [np.empty(33, np.float32) for _ in range(5)]
        NumpyBackend().optimizer_update_into("adam_update", AdamAttrs(), want, *inputs)
        for got, expected in zip(out[:3], want[:3]):
            np.testing.assert_array_equal(got, expected)  # the generic code ran
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert "adam_update" in lines[0] and "disagrees" in lines[0] and "generic" in lines[0]


def test_a_kernel_that_does_not_compile_is_named_once_and_replaced(emulated, monkeypatch,
                                                                    capsys):
    _, kernels, backend = emulated
    monkeypatch.setitem(raw_kernels.SOURCES, "bias_activation", "this is not C")
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    b = np.ones(3, np.float32)
    for _ in range(2):
        y = np.empty_like(x)
        backend.bias_activation_into("relu", 0.0, x, b, (y,))
        np.testing.assert_array_equal(y, np.maximum(x + b, 0))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "bias_activation" in lines[0] and "failed" in lines[0], lines


def test_no_self_check_during_a_capture(emulated, capsys):
    fake, kernels, backend = emulated
    x = np.random.default_rng(2).standard_normal((4, 3, 5)).astype(np.float32)
    y = np.empty_like(x)
    fake.capturing = True
    assert not kernels.run_activation("tanh", 0.0, x, None, y)  # unchecked: the caller's code
    assert kernels._VERDICTS == {}
    fake.capturing = False
    assert kernels.run_activation("tanh", 0.0, x, None, y)  # checked now, then trusted
    fake.capturing = True
    assert kernels.run_activation("tanh", 0.0, x, None, y)  # a checked kernel captures
    fake.capturing = False
    np.testing.assert_allclose(y, np.tanh(x), rtol=2e-6)
    assert capsys.readouterr().err == ""


def test_arrays_kept_beyond_a_step_are_never_first_made_in_a_capture(emulated):
    """They would come from the graph's own memory pool and outlive it: the capture fails
    instead (made in the warm-up, they are found in the capture)."""
    from nnrun.compiler.ops.common import cached_constant

    fake, kernels, backend = emulated
    fake.capturing = True
    with pytest.raises(RuntimeError, match="'ones' was first made during a CUDA-graph capture"):
        cached_constant(backend, ("ones", 7, "emulated"), lambda: np.ones(7))
    with pytest.raises(RuntimeError, match="workspace was first made during a CUDA-graph"):
        kernels._workspace(np.dtype("float16"))
    fake.capturing = False
    made = cached_constant(backend, ("ones", 7, "emulated"), lambda: np.ones(7))
    fake.capturing = True
    assert cached_constant(backend, ("ones", 7, "emulated"), lambda: None) is made
    fake.capturing = False


def test_the_gpu_tests_capture_replay_holds_in_emulation(emulated):
    """tests/backends/test_cupy_kernels.py's capture test, with the stand-in's capture: it
    records kernel launches only, so the replay matches only if the captured step was all
    kernels (no generic array call inside), reading lr, step and g from device arrays."""
    import test_cupy_kernels

    _, kernels, backend = emulated
    test_cupy_kernels.test_kernels_replay_in_a_captured_graph_with_new_scalars(
        (kernels.generic_backend(), backend, kernels))


def test_what_the_kernels_do_not_cover_runs_the_generic_code(emulated):
    _, kernels, _ = emulated
    x = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    assert not kernels.run_activation("gelu", 0.0, x, None, np.empty_like(x))
    assert not kernels.run_activation("relu", 0.0, x[:, ::2], None, np.empty((4, 3), np.float32))
    assert not kernels.run_activation("relu", 0.0, x.astype(np.float16), None,
                                      np.empty((4, 6), np.float16))
    p = np.zeros(5, np.float16)
    lr = np.asarray(0.1, np.float16)
    assert not kernels.run_update("adagrad_update", AdagradAttrs(), (p, p), p, p, lr, lr, p)
    assert not kernels.run_columns("im2col", np.zeros((1, 1, 3, 3, 3), np.float32),
                                   np.zeros((1, 1, 2, 2, 2, 2, 2, 2), np.float32), (2, 2, 2),
                                   (1, 1, 1), (1, 1, 1))
    assert kernels._VERDICTS == {}


@pytest.mark.parametrize("spec", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_check_backends_passes_on_every_spec(spec, emulated, capsys):
    """`nnrun check-backends SPEC` with the kernels: every op (plain and planned) and the whole
    step agree with NumPy."""
    from nnrun.runtime.check_backends import check_backends

    _, kernels, backend = emulated
    model = nnrun.compile(str(spec))
    assert_backends_agree(check_backends(model.source, backend, batch_size=4))
    assert all(kernels._VERDICTS.values()) and capsys.readouterr().err == ""


def test_the_self_checks_reference_has_no_kernel_of_its_own(emulated):
    """Every member the CuPy backend overrides with a kernel is generic again in the backend
    the self-checks (and the GPU tests and benchmark) compare with."""
    from nnrun.backends.base import ArrayBackend

    _, kernels, backend = emulated
    own = {name for name in vars(type(backend)) if name.endswith("_into")
           and name not in ("erf_into", "take_into", "matmul_into")}
    assert own == set(kernels.KERNEL_OVERRIDES)
    generic = kernels.generic_backend()
    assert all(getattr(type(generic), name) is getattr(ArrayBackend, name) for name in own)


def test_a_gpu_step_never_splits_over_host_threads(emulated, monkeypatch):
    """On one CUDA stream host threads would only reorder the launches (and break a stream
    capture): with several --threads, no batch segment and no kernel is handed to a worker."""
    from nnrun.backends import base
    from nnrun.compiler.passes import batch_segments as segments_pass
    from nnrun.runtime.threads import thread_limit

    _, _, backend = emulated
    monkeypatch.setattr(segments_pass, "SEGMENT_MIN_BYTES", 0)
    monkeypatch.setattr(base, "PARALLEL_MIN_BYTES", 0)
    handed = []
    monkeypatch.setattr(base, "_split_over_workers", lambda task, parts: handed.append(task))
    compiled = nnrun.compile(str(SPECS / "lenet5.yaml"))
    model = Model(compiled.source, backend)
    x, y = random_batch(compiled, 8, np.random.default_rng(0))
    with thread_limit(3):
        train_steps(model, x, y, 2)
    assert handed == []


@pytest.mark.parametrize("spec", ["lenet5.yaml", "vanishing-gradients.yaml",
                                  "fcn-segmentation.yaml"])
def test_gradcheck_through_the_kernels(spec, emulated, capsys):
    """`nnrun gradcheck SPEC --backend cupy`: float64 through the kernels, the same verdicts
    and nearly the same errors as on NumPy (the same weights, batch and entries)."""
    from nnrun.runtime.gradcheck import gradcheck

    _, kernels, backend = emulated
    compiled = nnrun.compile(str(SPECS / spec), overrides=["dtype=float64"])
    on_numpy = gradcheck(Model(compiled.source, "numpy"), batch=2, samples=3)
    on_kernels = gradcheck(Model(compiled.source, backend), batch=2, samples=3)
    assert [r.name for r in on_kernels] == [r.name for r in on_numpy]
    for numpy_check, kernel_check in zip(on_numpy, on_kernels):
        assert kernel_check.worst_relative_error <= 1e-5, kernel_check
        assert kernel_check.kinks == numpy_check.kinks, kernel_check.name
    assert kernels._VERDICTS and all(kernels._VERDICTS.values())  # the kernels ran, in float64
    assert capsys.readouterr().err == ""


def test_the_kernel_benchmark_runs_each_kernel(emulated):
    """benchmarks/cupy_kernels.py (run by gpu.sh) at small sizes: every workload calls its
    member on the generic code and on the kernel, and the kernel is the one used."""
    import importlib.util

    fake, kernels, backend = emulated
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "cupy_kernels.py"
    spec = importlib.util.spec_from_file_location("cupy_kernels_benchmark", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    generic = kernels.generic_backend()
    workloads = benchmark._workloads(fake, batches=(2,), sizes=(50,))
    assert len(workloads) == 14
    for label, run in workloads:
        run(generic)
        assert benchmark._launches(kernels, lambda: run(backend)) > 0, label
