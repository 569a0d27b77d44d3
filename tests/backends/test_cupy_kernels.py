"""The CuPy backend's own kernels on a GPU (backends/cupy_kernels.py): each against the
generic code on CuPy over random shapes and every configuration they cover, the self-check
catching a broken kernel, replay inside a captured CUDA graph with new per-step scalars, and
`check-backends` on every spec. Runs with `pytest -m gpu`; skips without CuPy or a device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kernel_cases import (ACTIVATIONS, CROSS_ENTROPY_CONFIGS, DTYPES, UPDATES,
                          activation_cases, assert_backends_agree, compare_columns, compare_into, cross_entropy_cases,
                          pool_cases, update_cases)

import nnrun
from nnrun.backends import raw_kernels
from nnrun.compiler.ops.linear import BiasActivationAttrs
from nnrun.compiler.ops.loss import CrossEntropyAttrs
from nnrun.compiler.ops.optim import AdamAttrs

pytestmark = pytest.mark.gpu
SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.yaml"))
@pytest.fixture(scope="module")
def backends(cupy_backend):
    """(the generic code on CuPy, the CuPy backend with its kernels, cupy_kernels)."""
    from nnrun.backends import cupy_kernels

    return cupy_kernels.generic_backend(), cupy_backend, cupy_kernels


def _compare_all(backends, cases, exact=None):
    generic, kernels_backend, cupy_kernels = backends
    for name, attrs, inputs, exact_here, in_place in cases:
        compare_into(generic, kernels_backend, name, attrs, inputs,
                     exact_here if exact is None else exact, in_place)
    refused = [key for key, trusted in cupy_kernels._VERDICTS.items() if not trusted]
    assert not refused, f"kernels that fell back to the generic code: {refused}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation, alpha", ACTIVATIONS)
def test_bias_activation_kernel_on_cupy(activation, alpha, dtype, backends):
    _compare_all(backends, activation_cases(activation, alpha, dtype), exact=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule, attrs", UPDATES)
def test_optimizer_update_kernel_on_cupy(rule, attrs, dtype, backends):
    _compare_all(backends, update_cases(rule, attrs, dtype), exact=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rank", [1, 2])
def test_max_pool_kernels_on_cupy(rank, dtype, backends):
    # not bit for bit: the generic gradient's scatter-add runs in atomics' order on CuPy
    _compare_all(backends, pool_cases(rank, dtype), exact=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("attrs", CROSS_ENTROPY_CONFIGS)
def test_softmax_cross_entropy_kernels_on_cupy(attrs, dtype, backends):
    _compare_all(backends, cross_entropy_cases(attrs, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rank", [1, 2])
def test_column_kernels_on_cupy(rank, dtype, backends):
    generic, kernels_backend, cupy_kernels = backends
    compare_columns(generic, kernels_backend, rank, dtype, exact=True)
    assert all(cupy_kernels._VERDICTS.values())


def test_a_broken_kernel_is_caught_by_its_self_check(backends, monkeypatch, capfd):
    generic, kernels_backend, cupy_kernels = backends
    monkeypatch.setattr(cupy_kernels, "_VERDICTS", {})
    monkeypatch.setattr(cupy_kernels, "_MODULES", {})
    broken = raw_kernels.BIAS_ACTIVATION.replace("(T)0 : z;", "(T)0 : z * (T)1.01;")
    assert broken != raw_kernels.BIAS_ACTIVATION
    monkeypatch.setitem(raw_kernels.SOURCES, "bias_activation", broken)
    x = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    b = np.zeros(5, np.float32)
    for _ in range(2):
        compare_into(generic, kernels_backend, "bias_activation", BiasActivationAttrs("relu"),
                     [x, b], exact=True)  # the generic code ran
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 1 and "bias_activation" in lines[0] and "disagrees" in lines[0], lines


def test_kernels_replay_in_a_captured_graph_with_new_scalars(backends):
    """Bias + activation, pooling, the loss and its gradient, and Adam captured once as a CUDA
    graph; replayed with another learning rate and step count (device arrays), the results are
    those of an uncaptured run with the new values."""
    import cupy

    _, be, cupy_kernels = backends
    rng = np.random.default_rng(1)
    x = cupy.asarray(rng.standard_normal((16, 6, 8, 8)), dtype=cupy.float32)
    b = cupy.asarray(rng.standard_normal(6), dtype=cupy.float32)
    labels = cupy.asarray(rng.integers(0, 6, (16, 4, 4)), dtype=cupy.int64)
    p = cupy.asarray(rng.standard_normal(1000), dtype=cupy.float32)
    g_param = cupy.asarray(rng.standard_normal(1000), dtype=cupy.float32)
    m, v = cupy.zeros_like(p), cupy.zeros_like(p)
    lr, step = cupy.asarray(0.01, cupy.float32), cupy.asarray(1, cupy.float32)
    incoming = cupy.asarray(1.0, cupy.float32)  # d loss / d loss, a graph input too
    act = cupy.empty_like(x)
    y, index = cupy.empty((16, 6, 4, 4), cupy.float32), cupy.empty((16, 6, 4, 4), cupy.int64)
    row, picked = cupy.empty((16, 1, 4, 4), cupy.float32), cupy.empty((16, 4, 4), cupy.float32)
    positions = cupy.empty((16, 4, 4), cupy.int64)
    log_probs, target = cupy.empty_like(y), cupy.empty_like(y)
    loss, grad = cupy.empty((), cupy.float32), cupy.empty_like(y)
    new = [cupy.empty_like(p) for _ in range(5)]
    ce, adam = CrossEntropyAttrs(label_smoothing=0.1), AdamAttrs(decoupled=True,
                                                                 weight_decay=0.01)

    def step_work():
        be.bias_activation_into("relu", 0.0, x, b, (act,))
        be.max_pool_index_into(act, (2, 2), (2, 2), (1, 1), None, (y, index))
        scratch = (log_probs, target, row, positions, picked)
        be.softmax_cross_entropy_into(ce, y, labels, None, (loss, *scratch))
        be.softmax_cross_entropy_grad_into(ce, incoming, y, labels, None, (grad, *scratch))
        be.optimizer_update_into("adam_update", adam, new, p, g_param, lr, step, m, v)

    step_work()  # the self-checks, outside the capture
    assert all(cupy_kernels._VERDICTS.values()) and len(cupy_kernels._VERDICTS) >= 4
    current = cupy.cuda.get_current_stream()
    current.synchronize()
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        step_work()
        graph = stream.end_capture()
    lr.fill(0.5)
    step.fill(7)
    incoming.fill(3.0)
    graph.launch()  # on the current stream, after the fills
    current.synchronize()
    replayed = [cupy.asnumpy(a) for a in (act, y, index, loss, grad, *new[:3])]
    step_work()
    cupy.cuda.get_current_stream().synchronize()
    for got, want in zip(replayed, [cupy.asnumpy(a) for a in (act, y, index, loss, grad,
                                                              *new[:3])]):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_check_backends_passes_on_every_spec(spec, backends):
    from nnrun.runtime.check_backends import check_backends

    model = nnrun.compile(str(spec))
    assert_backends_agree(check_backends(model.source, "cupy", batch_size=8))
    assert all(backends[2]._VERDICTS.values())
