"""Every op in the registry, checked from its entry in cases.py (STYLE.md section 7):
shape rule against forward, forward against a reference, the vjp-built gradient graph against
central differences, update ops against torch.optim, and NumPy against CuPy."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from nnrun.backends import get_backend
from nnrun.compiler.builder import GraphBuilder
from nnrun.compiler.ir import TensorType
from nnrun.compiler.ops import REGISTRY, attrs_text, conv
from nnrun.compiler.verify import verify
from nnrun.runtime.executor import Executor

from .cases import CASES, UPDATE_ATTRS, input_type, state_slots

try:
    import torch
except ImportError:
    torch = None

NAMES = sorted(REGISTRY)
GRADIENT_NAMES = sorted(name for name, op in REGISTRY.items() if op.vjp is not None)
EPS = 1e-6
GRAD_RTOL, GRAD_ATOL = 1e-5, 1e-7
needs_torch = pytest.mark.skipif(torch is None,
                                 reason="torch is not installed (pip install nnrun[torch])")

numpy_backend = get_backend("numpy")


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def run_forward(be, name, attrs, inputs):
    # A copy, so that a generator input is not advanced for the next user of the same inputs.
    return as_tuple(REGISTRY[name].forward(be, attrs, *copy.deepcopy(inputs)))


def named_cases(names):
    return [pytest.param(name, c, id=f"{name}[{c.label or 'default'}]")
            for name in names for c in CASES.get(name, [])]


# --- completeness ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_op_is_complete(name):
    op = REGISTRY[name]
    assert CASES.get(name), f"op '{name}' has no case in tests/ops/cases.py"
    assert op.doc.strip(), f"op '{name}' has no doc"
    assert op.shape is not None and op.forward is not None
    if op.vjp is not None:
        assert any(c.check_grad for c in CASES[name]), f"op '{name}' has no gradient test"


def test_cases_name_registered_ops():
    assert set(CASES) <= set(REGISTRY), f"cases for unknown ops: {set(CASES) - set(REGISTRY)}"


def test_case_attrs_are_the_ops_attrs():
    """Each case's attrs are its op's frozen dataclass: hashable, and printable in text form."""
    for name, cases in CASES.items():
        for c in cases:
            assert isinstance(c.attrs, REGISTRY[name].attrs), (name, c.label)
            hash(c.attrs)
            attrs_text(c.attrs)


# --- shape rule, forward -----------------------------------------------------------------------

@pytest.mark.parametrize("name, case", named_cases(NAMES))
def test_shape_rule_matches_forward(name, case):
    op = REGISTRY[name]
    inputs = case.make_inputs()
    types = as_tuple(op.shape(case.attrs, *(input_type(a) for a in inputs)))
    outputs = run_forward(numpy_backend, name, case.attrs, inputs)
    assert len(types) == len(outputs)
    for expected, array in zip(types, outputs):
        assert expected == TensorType(tuple(np.shape(array)), str(array.dtype)), (expected, array)


@pytest.mark.parametrize("name, case", named_cases(NAMES))
def test_forward_matches_reference(name, case):
    outputs = run_forward(numpy_backend, name, case.attrs, case.make_inputs())
    expected = as_tuple(case.reference(case.attrs, *case.make_inputs()))
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def _to_float32(value):
    if isinstance(value, np.ndarray) and value.dtype == np.float64:
        return value.astype(np.float32)
    return value


@pytest.mark.parametrize("name, case", named_cases(NAMES))
def test_float32_stays_float32(name, case):
    """With float32 inputs the outputs are float32 (what the shape rule says) and close to the
    float64 result: no silent promotion to float64, no precision lost beyond float32's."""
    op = REGISTRY[name]
    inputs = tuple(_to_float32(a) for a in case.make_inputs())
    types = as_tuple(op.shape(case.attrs, *(input_type(a) for a in inputs)))
    outputs = run_forward(numpy_backend, name, case.attrs, inputs)
    expected = run_forward(numpy_backend, name, case.attrs, case.make_inputs())
    for declared, got, want in zip(types, outputs, expected):
        if declared.dtype == "int64":  # positions (max_pool_index) are the same in float32
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, want)
            continue
        assert declared.dtype == "float32"
        assert got.dtype == np.float32, f"float32 inputs give {got.dtype}"
        if name != "dropout_mask":  # float32 draws differ from float64 draws
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _single_node_graph(name, attrs, inputs):
    gb = GraphBuilder()
    values = [gb.input(f"in{i}", input_type(a)) for i, a in enumerate(inputs)]
    outputs = as_tuple(gb.emit(name, *values, attrs=attrs))
    feeds = {f"in{i}": a for i, a in enumerate(inputs)}
    return gb, gb.graph.nodes[-1], outputs, feeds


@pytest.mark.parametrize("name, case", named_cases(NAMES))
def test_executor_runs_op(name, case):
    """One node through the Executor gives what the forward gives (a tuple of one included)."""
    inputs = case.make_inputs()
    gb, _, outputs, feeds = _single_node_graph(name, case.attrs, inputs)
    for k, value in enumerate(outputs):
        gb.graph.outputs[f"out{k}"] = value
    verify(gb.graph)
    results, _ = Executor(gb.graph, numpy_backend).run(copy.deepcopy(feeds))
    for k, want in enumerate(run_forward(numpy_backend, name, case.attrs, inputs)):
        got = results[f"out{k}"]
        assert got.shape == outputs[k].type.shape, (
            f"output {k}: executor gives shape {got.shape}, the shape rule "
            f"{outputs[k].type.shape}")
        np.testing.assert_array_equal(got, want)


# --- gradients ---------------------------------------------------------------------------------

def numeric_gradient(name, attrs, inputs, position, g):
    """Central differences of sum(forward(inputs) * g) with respect to inputs[position]."""
    def objective(x):
        shifted = list(inputs)
        shifted[position] = x
        (y,) = run_forward(numpy_backend, name, attrs, tuple(shifted))
        return float(np.sum(y * g))

    x = inputs[position]
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += EPS
        minus[index] -= EPS
        grad[index] = (objective(plus) - objective(minus)) / (2 * EPS)
    return grad


@pytest.mark.parametrize("name, case", [p for p in named_cases(GRADIENT_NAMES)
                                        if p.values[1].check_grad])
def test_vjp_matches_finite_differences(name, case):
    op = REGISTRY[name]
    inputs = case.make_inputs()
    gb, node, (output,), feeds = _single_node_graph(name, case.attrs, inputs)
    g = np.random.default_rng(1).standard_normal(output.type.shape)
    grads = op.vjp(gb, node, gb.input("g", output.type))
    assert len(grads) == len(inputs), "the vjp must return one gradient (or None) per input"
    for i, grad in enumerate(grads):
        if i in case.differentiable:
            assert grad is not None, f"no gradient for input {i}"
            assert grad.type == node.inputs[i].type, f"gradient {i} has type {grad.type}"
            gb.graph.outputs[f"d{i}"] = grad
        else:
            assert grad is None, f"input {i} is not differentiable, but the vjp returns {grad}"
    verify(gb.graph)
    results, _ = Executor(gb.graph, numpy_backend).run({**copy.deepcopy(feeds), "g": g})
    for i in case.differentiable:
        expected = numeric_gradient(name, case.attrs, inputs, i, g)
        np.testing.assert_allclose(results[f"d{i}"], expected, rtol=GRAD_RTOL, atol=GRAD_ATOL,
                                   err_msg=f"gradient of input {i}")


# --- update ops against torch ------------------------------------------------------------------

def _torch_optimizer(name, attrs, lr):
    optim = torch.optim
    if name == "sgd_update":
        return optim.SGD, dict(lr=lr, momentum=attrs.momentum, nesterov=attrs.nesterov,
                               weight_decay=attrs.weight_decay)
    if name == "adam_update":
        cls = optim.AdamW if attrs.decoupled else optim.Adam
        return cls, dict(lr=lr, betas=(attrs.beta1, attrs.beta2), eps=attrs.eps,
                         weight_decay=attrs.weight_decay)
    if name == "rmsprop_update":
        return optim.RMSprop, dict(lr=lr, alpha=attrs.alpha, eps=attrs.eps,
                                   momentum=attrs.momentum, weight_decay=attrs.weight_decay)
    return optim.Adagrad, dict(lr=lr, eps=attrs.eps, weight_decay=attrs.weight_decay)


@needs_torch
@pytest.mark.torch
@pytest.mark.parametrize("name, attrs", [pytest.param(name, attrs, id=f"{name}[{attrs}]")
                                         for name, attrs_list in UPDATE_ATTRS.items()
                                         for attrs in attrs_list])
def test_update_matches_torch_optim(name, attrs):
    """Three steps from zero state, step counting from 1, against torch.optim in float64."""
    rng = np.random.default_rng(0)
    lr, param = 0.05, rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(3)]
    cls, kwargs = _torch_optimizer(name, attrs, lr)
    tensor = torch.tensor(param, requires_grad=True)
    optimizer = cls([tensor], **kwargs)
    state = [np.zeros_like(param) for _ in range(state_slots(name, attrs))]
    for step, grad in enumerate(grads, start=1):
        tensor.grad = torch.tensor(grad)
        optimizer.step()
        param, *state = REGISTRY[name].forward(numpy_backend, attrs, param, grad, np.array(lr),
                                               np.array(float(step)), *state)
        np.testing.assert_allclose(param, tensor.detach().numpy(), rtol=1e-12, atol=1e-14,
                                   err_msg=f"step {step}")


def _clip_inputs():
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape) for shape in ((3, 4), (4,), (2, 3, 2))]


@needs_torch
@pytest.mark.torch
@pytest.mark.parametrize("limit", [0.5, 100.0], ids=["clipped", "unclipped"])
def test_global_norm_and_clip_by_norm_match_torch(limit):
    from nnrun.compiler.ops.optim import ClipAttrs
    grads = _clip_inputs()
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for tensor, g in zip(tensors, grads):
        tensor.grad = torch.tensor(g)
    total = torch.nn.utils.clip_grad_norm_(tensors, max_norm=limit)
    (norm,) = run_forward(numpy_backend, "global_norm", ClipAttrs(), grads)
    np.testing.assert_allclose(norm, total.item(), rtol=1e-13)
    for tensor, g in zip(tensors, grads):
        (clipped,) = run_forward(numpy_backend, "clip_by_norm", ClipAttrs(limit), (g, norm))
        np.testing.assert_allclose(clipped, tensor.grad.numpy(), rtol=1e-13)


@needs_torch
@pytest.mark.torch
def test_clip_by_value_matches_torch():
    from nnrun.compiler.ops.optim import ClipAttrs
    grads = _clip_inputs()
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for tensor, g in zip(tensors, grads):
        tensor.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_value_(tensors, clip_value=0.7)
    for tensor, g in zip(tensors, grads):
        (clipped,) = run_forward(numpy_backend, "clip_by_value", ClipAttrs(0.7), (g,))
        np.testing.assert_array_equal(clipped, tensor.grad.numpy())


# --- dropout -----------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_mask_statistics(rate):
    from nnrun.compiler.ops.norm import RateAttrs
    x = np.zeros((200, 100))
    (mask,) = run_forward(numpy_backend, "dropout_mask", RateAttrs(rate),
                          (x, np.random.default_rng(7)))
    kept = mask != 0
    assert set(np.unique(mask)) <= {0.0, 1 / (1 - rate)}
    assert abs(kept.mean() - (1 - rate)) < 0.02
    assert abs(mask.mean() - 1) < 0.05  # inverted dropout keeps the expectation


# --- the naive references agree with torch (so the torch-less fallback is trustworthy) ----------

@needs_torch
@pytest.mark.torch
def test_naive_conv_and_pool_references_match_torch():
    from . import cases
    rng = np.random.default_rng(3)
    for rank, configs in cases.CONV_CONFIGS.items():
        for label, attrs, x_shape, w_shape in configs:
            x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
            y = cases.conv_torch(attrs, x, w)
            g = rng.standard_normal(y.shape)
            np.testing.assert_allclose(cases.conv_naive(attrs, x, w), y, rtol=1e-10, atol=1e-12)
            dx, dw = cases.conv_torch(attrs, x, w, g)
            np.testing.assert_allclose(cases.conv_grad_input_naive(attrs, g, x, w), dx,
                                       rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(cases.conv_grad_weight_naive(attrs, g, x, w), dw,
                                       rtol=1e-10, atol=1e-12)
    for rank, configs in cases.POOL_CONFIGS.items():
        for label, attrs, x_shape in configs:
            x = cases.distinct(rng, *x_shape)
            for kind in ("max", "avg"):
                if not cases._torch_pool_supported(kind, attrs):
                    continue
                y = cases.pool_torch(kind, attrs, x)
                g = rng.standard_normal(y.shape)
                np.testing.assert_allclose(cases.pool_naive(kind, attrs, x), y, rtol=1e-12)
                np.testing.assert_allclose(cases.pool_grad_naive(kind, attrs, g, x),
                                           cases.pool_torch(kind, attrs, x, g), rtol=1e-12,
                                           atol=1e-14)


# --- NumPy against CuPy ------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("name, case", named_cases(NAMES))
def test_cupy_matches_numpy(name, case, cupy_backend):
    inputs = case.make_inputs()
    expected = run_forward(numpy_backend, name, case.attrs, inputs)
    device_inputs = tuple(cupy_backend.from_host(a) for a in inputs)
    got = as_tuple(REGISTRY[name].forward(cupy_backend, case.attrs, *device_inputs))
    cupy_backend.synchronize()
    assert len(got) == len(expected)
    for device_array, want in zip(got, expected):
        array = cupy_backend.to_host(device_array)
        assert array.shape == want.shape and array.dtype == want.dtype
        # dropout's masks too: both backends hash the same (index, key) counters
        np.testing.assert_allclose(array, want, rtol=1e-10, atol=1e-12)


@needs_torch
@pytest.mark.torch
@pytest.mark.parametrize("rank", [1, 2])
def test_max_pool_ties_route_to_the_first_maximum_as_torch(rank):
    """The finite-difference tests dodge ties; here windows tie, as they do after a relu."""
    from . import cases
    name = f"max_pool{rank}d_grad"
    for label, attrs, x_shape in cases.POOL_CONFIGS[rank]:
        x = np.round(np.random.default_rng(0).uniform(0, 1.5, size=x_shape))  # few levels
        g = np.random.default_rng(1).standard_normal(cases.pool_torch("max", attrs, x).shape)
        (got,) = run_forward(numpy_backend, name, attrs, (g, x))
        np.testing.assert_allclose(got, cases.pool_torch("max", attrs, x, g), rtol=1e-12,
                                   err_msg=label)


# --- forward_into: the planned executor's form of each forward ---------------------------------

INTO_NAMES = sorted(name for name, op in REGISTRY.items() if op.forward_into is not None)


def _buffers(types):
    return tuple(np.full(t.shape, 7, dtype=t.dtype) for t in types)  # garbage, not zeros


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, case", named_cases(INTO_NAMES))
def test_forward_into_matches_forward_bit_for_bit(name, case, dtype):
    """Written into preallocated (dirty) buffers, the result is exactly the plain forward's."""
    op = REGISTRY[name]
    inputs = tuple(a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a
                   for a in case.make_inputs())
    types = [input_type(a) for a in inputs]
    outputs = _buffers(as_tuple(op.shape(case.attrs, *types)))
    scratch = _buffers(op.scratch(case.attrs, *types) if op.scratch else ())
    op.forward_into(numpy_backend, case.attrs, (*outputs, *scratch), *copy.deepcopy(inputs))
    for got, want in zip(outputs, run_forward(numpy_backend, name, case.attrs, inputs)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["elu_grad", "leaky_relu_grad"])
@pytest.mark.parametrize("alpha", [0.5, 2.0, 1e30])
def test_blended_gradients_choose_exactly_where_g_times_alpha_overflows(name, alpha):
    """The gradients that blend their two choices (each term the value or zero) multiply by
    alpha after the mask: g * alpha overflowing where x > 0, for a finite g, gave inf * 0 =
    NaN where the plain forward gives g (the review of ELU's blend)."""
    from nnrun.compiler.ops.activation import AlphaAttrs

    rng = np.random.default_rng(0)
    x = rng.standard_normal(4096).astype(np.float32)
    g = (rng.standard_normal(4096) * 10.0 ** rng.integers(-30, 39, 4096)).astype(np.float32)
    g[:3], x[:3] = [3e38, -2.3e38, 1.0], [1.0, 2.0, -1.0]
    op, attrs = REGISTRY[name], AlphaAttrs(alpha)
    types = [input_type(g), input_type(x)]
    outputs = _buffers(as_tuple(op.shape(attrs, *types)))
    with np.errstate(over="ignore", invalid="ignore"):
        op.forward_into(numpy_backend, attrs, (*outputs, *_buffers(op.scratch(attrs, *types))),
                        g, x)
        (want,) = run_forward(numpy_backend, name, attrs, (g, x))
    assert not np.isnan(outputs[0]).any()
    np.testing.assert_array_equal(outputs[0], want)


@pytest.mark.parametrize("chunk_samples", [1, 2])
@pytest.mark.parametrize("name, case", named_cases(["conv1d", "conv2d"]))
def test_convolution_by_chunks_of_samples_matches_forward(name, case, chunk_samples,
                                                          monkeypatch):
    """A convolution builds its columns a chunk of samples at a time (the last chunk may be
    shorter): the plain forward's numbers, bit for bit, whatever the chunk."""
    inputs = tuple(a.astype(np.float32) for a in case.make_inputs())
    x, w = inputs
    x = np.concatenate([x, x[:1] * 0.5, -x])  # 2B + 1 samples: a short last chunk
    types = [input_type(a) for a in (x, w)]
    out = REGISTRY[name].shape(case.attrs, *types).shape
    per_sample = w[0].size * int(np.prod(out[2:])) * 4
    monkeypatch.setattr(conv, "COLUMN_CHUNK_BYTES", per_sample * chunk_samples)
    scratch = REGISTRY[name].scratch(case.attrs, *types)
    assert scratch[0].shape[0] == chunk_samples
    (y,) = _buffers([TensorType(out, "float32")])
    REGISTRY[name].forward_into(numpy_backend, case.attrs, (y, *_buffers(scratch)), x, w)
    (want,) = run_forward(numpy_backend, name, case.attrs, (x, w))
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("chunk_samples", [1, 2])
@pytest.mark.parametrize("name, case", named_cases(["conv1d_grad_weight", "conv2d_grad_weight"]))
def test_weight_gradient_by_chunks_of_samples_matches_forward(name, case, chunk_samples,
                                                              monkeypatch):
    """A recomputed convolution's weight gradient builds its columns by chunks of samples
    too: each sample's product, then one sum over the batch, bit for bit the plain form's."""
    g, x, w = (a.astype(np.float32) for a in case.make_inputs())
    g, x = np.concatenate([g, g[:1] * 0.5, -g]), np.concatenate([x, x[:1] * 0.5, -x])
    types = [input_type(a) for a in (g, x, w)]
    per_sample = w[0].size * int(np.prod(g.shape[2:])) * 4
    monkeypatch.setattr(conv, "COLUMN_CHUNK_BYTES", per_sample * chunk_samples)
    scratch = REGISTRY[name].scratch(case.attrs, *types)
    assert scratch[0].shape[0] == chunk_samples
    (gw,) = _buffers([TensorType(w.shape, "float32")])
    REGISTRY[name].forward_into(numpy_backend, case.attrs, (gw, *_buffers(scratch)), g, x, w)
    (want,) = run_forward(numpy_backend, name, case.attrs, (g, x, w))
    np.testing.assert_array_equal(gw, want)


@pytest.mark.parametrize("name, case", named_cases(sorted(n for n in INTO_NAMES
                                                          if n.endswith("update") or
                                                          n == "update_group")))
def test_updates_into_their_own_inputs(name, case):
    """The planned executor updates parameters and optimizer state in place: outputs that are
    the param and state inputs themselves give the same numbers."""
    op = REGISTRY[name]
    inputs = [a.copy() for a in case.make_inputs()]
    expected = run_forward(numpy_backend, name, case.attrs, tuple(inputs))
    types = [input_type(a) for a in inputs]
    if name == "update_group":
        n = case.attrs.count
        aliased = [*inputs[:n], *inputs[2 * n + 2:]]
    else:
        aliased = [inputs[0], *inputs[4:]]
    scratch = _buffers(op.scratch(case.attrs, *types) if op.scratch else ())
    op.forward_into(numpy_backend, case.attrs, (*aliased, *scratch), *inputs)
    for got, want in zip(aliased, expected):
        np.testing.assert_array_equal(got, want)


OVERWRITING = sorted(name for name, op in REGISTRY.items() if op.overwrites)


def test_only_ops_written_into_buffers_declare_overwrites():
    assert {"relu", "relu_grad", "add"} <= set(OVERWRITING)  # bias ops: a broadcast in place
    # would allocate (backends/fused.py bias_add_into)
    for name in OVERWRITING:
        op = REGISTRY[name]
        assert op.forward_into is not None and not op.view, name


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, case", named_cases(OVERWRITING))
def test_ops_write_their_output_over_the_inputs_they_declare(name, case, dtype):
    """OpDef.overwrites: the memory plan may give the output the place of such an input; the
    op must then give the numbers it gives into a buffer of its own."""
    op = REGISTRY[name]
    inputs = tuple(a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a
                   for a in case.make_inputs())
    (want,) = as_tuple(run_forward(numpy_backend, name, case.attrs, inputs))
    types = [input_type(a) for a in inputs]
    for index in op.overwrites:
        if inputs[index].shape != want.shape or inputs[index].dtype != want.dtype:
            continue  # the plan overwrites only an input of the output's type
        own = [a.copy() if isinstance(a, np.ndarray) else a for a in inputs]
        scratch = _buffers(op.scratch(case.attrs, *types) if op.scratch else ())
        op.forward_into(numpy_backend, case.attrs, (own[index], *scratch), *own)
        np.testing.assert_array_equal(own[index], want, err_msg=f"over input {index}")
