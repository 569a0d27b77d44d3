"""The CuPy backend's raw kernels (backends/raw_kernels.py), checked without a GPU.

Each kernel family's C source is compiled with g++ under a prelude whose FOR_EACH_THREAD runs
every thread index in turn; a NumPy backend whose fused members run the kernels' launch plans
through ctypes (as the CuPy backend runs them on the device) must then agree with the generic
code, op by op, over random shapes and every configuration the kernels cover. Where nvcc or
NVRTC is at hand, the CUDA form of every source compiles for compute_90."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from kernel_emulation import needs_gcc, run_plan

from nnrun.backends import raw_kernels
from nnrun.backends.numpy_backend import NumpyBackend
from nnrun.compiler.ops import REGISTRY
from nnrun.compiler.ops.common import array_type
from nnrun.compiler.ops.linear import BiasActivationAttrs
from nnrun.compiler.ops.loss import CrossEntropyAttrs
from nnrun.compiler.ops.optim import AdamAttrs, SgdAttrs
from nnrun.compiler.ops.pool import PoolAttrs, PoolGradAttrs

DTYPES = ("float32", "float64")
# The C library's exp, log, tanh and pow may differ from NumPy's in the last bit.
CLOSE = {"float32": 2e-6, "float64": 1e-14}


_run = run_plan


class EmulatedBackend(NumpyBackend):
    """The CuPy backend's overrides, with the kernels run on the CPU by _run."""

    def activation_into(self, activation, alpha, x, out):
        _run(raw_kernels.activation_plan(activation, alpha, x, None, out[0]))

    def bias_activation_into(self, activation, alpha, x, b, out):
        _run(raw_kernels.activation_plan(activation, alpha, x, b, out[0]))

    def optimizer_update_into(self, rule, attrs, out, p, g, lr, step, *state):
        _run(raw_kernels.update_plan(rule, attrs, out[:1 + len(state)], p, g, lr, step, *state))

    def max_pool_index_into(self, padded, kernel, stride, dilation, positions, out):
        _run(raw_kernels.pool_plan("max_pool_index", padded, *out[:2], kernel, stride, dilation))

    def max_pool_grad_index_into(self, g, index, kernel, stride, dilation, starts, target,
                                 positions):
        _run(raw_kernels.pool_plan("max_pool_grad_index", target, g, index, kernel, stride,
                                   dilation))

    def im2col_into(self, x, kernel, stride, dilation, cols):
        _run(raw_kernels.columns_plan("im2col", x, cols, kernel, stride, dilation))
        return cols

    def batch_columns_into(self, x, kernel, stride, dilation, cols):
        _run(raw_kernels.columns_plan("im2col", x, cols, kernel, stride, dilation, layout=1))
        return cols

    def col2im_into(self, cols, kernel, stride, dilation, x):
        _run(raw_kernels.columns_plan("col2im", x, cols, kernel, stride, dilation))
        return x

    def softmax_cross_entropy_into(self, attrs, logits, labels, starts, out):
        _run(raw_kernels.cross_entropy_plan(attrs, logits, labels, out, None,
                                            _workspace(logits.dtype)))

    def softmax_cross_entropy_grad_into(self, attrs, g, logits, labels, starts, out):
        _run(raw_kernels.cross_entropy_plan(attrs, logits, labels, out, g,
                                            _workspace(logits.dtype)))


def _workspace(dtype):
    return np.full(2 * raw_kernels.PARTS, np.nan), np.full(2, np.nan, dtype=dtype)


GENERIC, EMULATED = NumpyBackend(), EmulatedBackend()


def _into(backend, name, attrs, inputs, in_place=()):
    """op.forward_into on `backend` into dirty buffers; `in_place`: output positions that are
    written over the input at the same position in `inputs` + offset (updates)."""
    op = REGISTRY[name]
    types = [array_type(a) for a in inputs]
    shapes = op.shape(attrs, *types)
    shapes = shapes if isinstance(shapes, tuple) else (shapes,)
    outputs = [np.full(t.shape, 7, dtype=t.dtype) for t in shapes]
    for output, source in in_place:
        outputs[output] = inputs[source]
    scratch = [np.full(t.shape, 7, dtype=t.dtype)
               for t in (op.scratch(attrs, *types) if op.scratch else ())]
    op.forward_into(backend, attrs, (*outputs, *scratch), *inputs)
    return outputs


def _compare(name, attrs, inputs, exact=False, in_place=()):
    want = _into(GENERIC, name, attrs, [a.copy() for a in inputs], in_place)
    got = _into(EMULATED, name, attrs, [a.copy() for a in inputs], in_place)
    for position, (a, b) in enumerate(zip(got, want)):
        message = f"{name} {attrs} output {position}"
        if exact or not np.issubdtype(b.dtype, np.floating):
            np.testing.assert_array_equal(a, b, err_msg=message)
        else:
            rtol = CLOSE[str(b.dtype)]
            # relative to the array's scale: p - step cancels digits
            atol = rtol * float(np.abs(b).max(initial=1))
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=message)


def _odd_shape(rng, rank):
    return tuple(int(n) for n in rng.integers(1, 8, rank))


@needs_gcc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation, alpha", [("relu", 0.0), ("leaky_relu", 0.01),
                                               ("leaky_relu", 0.3), ("leaky_relu", 1.5),
                                               ("sigmoid", 0.0), ("tanh", 0.0)])
def test_bias_activation_kernel(activation, alpha, dtype):
    rng = np.random.default_rng(0)
    for rank in (2, 3, 4, 2, 3, 4):
        x = (rng.standard_normal(_odd_shape(rng, rank)) * 4).astype(dtype)
        x.reshape(-1)[::5] = 0  # the kinks, and sigmoid's branch point
        b = rng.standard_normal(x.shape[1]).astype(dtype)
        exact = activation in ("relu", "leaky_relu")
        _compare("bias_activation", BiasActivationAttrs(activation, alpha), [x, b], exact)
        attrs = BiasActivationAttrs(activation, alpha).activation_attrs()
        _compare(activation, attrs, [x], exact)


SGD_CONFIGS = [SgdAttrs(), SgdAttrs(weight_decay=1e-2), SgdAttrs(momentum=0.9),
               SgdAttrs(momentum=0.9, nesterov=True, weight_decay=1e-3),
               SgdAttrs(momentum=0.5, weight_decay=0.1)]
ADAM_CONFIGS = [AdamAttrs(), AdamAttrs(weight_decay=1e-2), AdamAttrs(decoupled=True),
                AdamAttrs(beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05, decoupled=True)]


@needs_gcc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule, attrs", [("sgd_update", a) for a in SGD_CONFIGS]
                         + [("adam_update", a) for a in ADAM_CONFIGS])
def test_optimizer_update_kernel(rule, attrs, dtype):
    rng = np.random.default_rng(1)
    slots = 2 if rule == "adam_update" else int(bool(attrs.momentum))
    for size, step in ((1, 1), (37, 2), (1001, 7)):
        p, g = (rng.standard_normal(size).astype(dtype) for _ in range(2))
        state = [np.abs(rng.standard_normal(size)).astype(dtype) for _ in range(slots)]
        lr, count = np.asarray(0.05, dtype=dtype), np.asarray(step, dtype=dtype)
        inputs = [p, g, lr, count, *state]
        exact = dtype == "float64" and rule == "sgd_update"
        _compare(rule, attrs, inputs, exact)
        # The planned executor updates in place: outputs over the param and state inputs.
        _compare(rule, attrs, inputs, exact, in_place=[(0, 0)] + [(1 + k, 4 + k)
                                                                   for k in range(slots)])


def _pool_configs(rank, rng, count=12):
    for _ in range(count):
        kernel = tuple(int(k) for k in rng.integers(1, 4, rank))
        stride = tuple(int(s) for s in rng.integers(1, 4, rank))
        dilation = tuple(int(d) for d in rng.integers(1, 3, rank))
        pad = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
        spatial = tuple(d * (k - 1) + 1 + int(rng.integers(0, 9))
                        for k, d in zip(kernel, dilation))
        yield PoolAttrs(kernel, stride, pad, dilation), (int(rng.integers(1, 4)),
                                                         int(rng.integers(1, 4)), *spatial)


@needs_gcc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rank", [1, 2])
def test_max_pool_kernels(rank, dtype):
    """Forward and gradient, bit for bit: the gather-form gradient adds each position's
    windows in the scatter's order, overlapping windows and ties included."""
    rng = np.random.default_rng(2 + rank)
    for attrs, shape in _pool_configs(rank, rng):
        x = np.round(rng.uniform(-2, 2, shape), 1).astype(dtype)  # few levels: ties
        _compare("max_pool_index", attrs, [x], exact=True)
        y, index = _into(GENERIC, "max_pool_index", attrs, [x])
        g = rng.standard_normal(y.shape).astype(dtype)
        grad_attrs = PoolGradAttrs(attrs.kernel, attrs.stride, attrs.pad, attrs.dilation,
                                   shape[2:])
        _compare("max_pool_grad_index", grad_attrs, [g, index], exact=True)


@needs_gcc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("attrs", [CrossEntropyAttrs(), CrossEntropyAttrs(label_smoothing=0.1),
                                   CrossEntropyAttrs(ignore_index=255),
                                   CrossEntropyAttrs(label_smoothing=0.2, ignore_index=-1)])
def test_softmax_cross_entropy_kernels(attrs, dtype):
    rng = np.random.default_rng(4)
    for rank in (2, 3, 4, 2, 3, 4):
        batch, classes, *spatial = _odd_shape(rng, rank)
        classes += 1
        logits = (rng.standard_normal((batch, classes, *spatial)) * 5).astype(dtype)
        labels = rng.integers(0, classes, (batch, *spatial))
        if attrs.ignore_index is not None:
            labels.reshape(-1)[rng.random(labels.size) < 0.3] = attrs.ignore_index
        g = np.asarray(rng.uniform(0.5, 2), dtype=dtype)
        _compare("softmax_cross_entropy", attrs, [logits, labels])
        _compare("softmax_cross_entropy_grad", attrs, [g, logits, labels])


@needs_gcc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rank", [1, 2])
def test_column_kernels(rank, dtype):
    """im2col in both layouts and col2im, bit for bit (copies, and sums in the generic
    order), on their own and inside the ops that use them."""
    rng = np.random.default_rng(5 + rank)
    for attrs, shape in _pool_configs(rank, rng):
        window = (attrs.kernel, attrs.stride, attrs.dilation)
        x = rng.standard_normal(shape).astype(dtype)
        out = [(n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(shape[2:], *window)]
        for member, layout in (("im2col_into", (*shape[:2], *attrs.kernel, *out)),
                               ("batch_columns_into", (shape[1], *attrs.kernel, shape[0], *out))):
            got, want = np.full(layout, np.nan, dtype), np.full(layout, np.nan, dtype)
            getattr(EMULATED, member)(x, *window, got)
            getattr(GENERIC, member)(x, *window, want)
            np.testing.assert_array_equal(got, want, err_msg=f"{member} {attrs}")
        cols = rng.standard_normal((*shape[:2], *attrs.kernel, *out)).astype(dtype)
        got, want = np.full(shape, np.nan, dtype), np.full(shape, np.nan, dtype)
        EMULATED.col2im_into(cols, *window, got)
        GENERIC.col2im_into(cols, *window, want)
        np.testing.assert_array_equal(got, want, err_msg=f"col2im {attrs}")
        _compare(f"avg_pool{rank}d", attrs, [x], exact=True)


def test_every_family_is_covered_here():
    covered = {"bias_activation", "sgd_update", "adam_update", "max_pool_index",
               "max_pool_grad_index", "cross_entropy", "columns"}
    assert set(raw_kernels.SOURCES) == covered


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", sorted(raw_kernels.SOURCES))
def test_cuda_sources_compile_for_compute_90(family, dtype, tmp_path):
    """nvcc (to a cubin for sm_90, through ptxas), else NVRTC (to PTX), else skip."""
    source = raw_kernels.source(family, dtype)
    if shutil.which("nvcc"):
        path = tmp_path / f"{family}.cu"
        path.write_text(source)
        result = subprocess.run(["nvcc", "-arch=sm_90", "--cubin", "-fmad=false", str(path),
                                 "-o", str(tmp_path / f"{family}.cubin")],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(source, f"{family}.cu", [], [])
    try:
        nvrtc.compileProgram(program, ["--gpu-architecture=compute_90", "--fmad=false"])
    except Exception as error:
        pytest.fail(f"{error}\n{nvrtc.getProgramLog(program)}")
    finally:
        nvrtc.destroyProgram(program)


def _nvrtc():
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as error:  # no CuPy, or no NVRTC library beside it
        pytest.skip(f"neither nvcc nor NVRTC is available ({type(error).__name__})")
    return nvrtc
