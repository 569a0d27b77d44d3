"""Random cases for the fused kernels, shared by the CPU emulation (tests/backends/
test_raw_kernels.py) and the GPU tests (tests/backends/test_cupy_kernels.py): each case runs an
op's forward_into (the planned executor's form) on two backends and compares the outputs."""

from __future__ import annotations

import numpy as np

from nnrun.compiler.ops import REGISTRY
from nnrun.compiler.ops.common import array_type
from nnrun.compiler.ops.linear import BiasActivationAttrs
from nnrun.compiler.ops.loss import CrossEntropyAttrs
from nnrun.compiler.ops.optim import AdagradAttrs, AdamAttrs, RmsPropAttrs, SgdAttrs
from nnrun.compiler.ops.pool import PoolAttrs, PoolGradAttrs

DTYPES = ("float32", "float64")
# The device's (or C library's) exp, log, tanh and pow may differ from NumPy's in the last bit.
CLOSE = {"float32": 2e-6, "float64": 1e-13}

ACTIVATIONS = [("relu", 0.0), ("leaky_relu", 0.01), ("leaky_relu", 0.3), ("leaky_relu", 1.5),
               ("sigmoid", 0.0), ("tanh", 0.0)]
SGD_CONFIGS = [SgdAttrs(), SgdAttrs(weight_decay=1e-2), SgdAttrs(momentum=0.9),
               SgdAttrs(momentum=0.9, nesterov=True, weight_decay=1e-3),
               SgdAttrs(momentum=0.5, weight_decay=0.1)]
ADAM_CONFIGS = [AdamAttrs(), AdamAttrs(weight_decay=1e-2), AdamAttrs(decoupled=True),
                AdamAttrs(beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05, decoupled=True)]
RMSPROP_CONFIGS = [RmsPropAttrs(), RmsPropAttrs(momentum=0.9),
                   RmsPropAttrs(alpha=0.9, eps=1e-6, momentum=0.5, weight_decay=0.01)]
ADAGRAD_CONFIGS = [AdagradAttrs(), AdagradAttrs(eps=1e-8, weight_decay=0.1)]
UPDATES = ([("sgd_update", a) for a in SGD_CONFIGS] + [("adam_update", a) for a in ADAM_CONFIGS]
           + [("rmsprop_update", a) for a in RMSPROP_CONFIGS]
           + [("adagrad_update", a) for a in ADAGRAD_CONFIGS])
CROSS_ENTROPY_CONFIGS = [CrossEntropyAttrs(), CrossEntropyAttrs(label_smoothing=0.1),
                         CrossEntropyAttrs(ignore_index=255),
                         CrossEntropyAttrs(label_smoothing=0.2, ignore_index=-1)]


def run_into(backend, name, attrs, inputs, in_place=()):
    """op.forward_into on `backend` into dirty buffers, host arrays out. `in_place`: (output,
    input) positions: that output is written over that input (the planned executor's updates)."""
    op = REGISTRY[name]
    types = [array_type(a) for a in inputs]
    inputs = [backend.from_host(a.copy()) for a in inputs]
    shapes = op.shape(attrs, *types)
    shapes = shapes if isinstance(shapes, tuple) else (shapes,)
    outputs = [backend.xp.full(t.shape, 7, dtype=t.dtype) for t in shapes]
    for output, source in in_place:
        outputs[output] = inputs[source]
    scratch = [backend.xp.full(t.shape, 7, dtype=t.dtype)
               for t in (op.scratch(attrs, *types) if op.scratch else ())]
    op.forward_into(backend, attrs, (*outputs, *scratch), *inputs)
    return [backend.to_host(o) for o in outputs]


def compare_into(reference, candidate, name, attrs, inputs, exact=False, in_place=()):
    want = run_into(reference, name, attrs, inputs, in_place)
    got = run_into(candidate, name, attrs, inputs, in_place)
    for position, (a, b) in enumerate(zip(got, want)):
        assert_close(a, b, exact, f"{name} {attrs} output {position}")


def assert_close(got, want, exact, message):
    if exact or not np.issubdtype(want.dtype, np.floating):
        np.testing.assert_array_equal(got, want, err_msg=message)
        return
    rtol = CLOSE[str(want.dtype)]
    atol = rtol * float(np.abs(want).max(initial=1))  # to scale: p - step cancels digits
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=message)


def odd_shape(rng, rank):
    return tuple(int(n) for n in rng.integers(1, 8, rank))


# --- the cases: (op name, attrs, inputs, exact where the kernel keeps the generic order, in_place)


def activation_cases(activation, alpha, dtype):
    rng = np.random.default_rng(0)
    exact = activation in ("relu", "leaky_relu")
    for rank in (2, 3, 4, 2, 3, 4):
        x = (rng.standard_normal(odd_shape(rng, rank)) * 4).astype(dtype)
        x.reshape(-1)[::5] = 0  # the kinks, and sigmoid's branch point
        b = rng.standard_normal(x.shape[1]).astype(dtype)
        fused = BiasActivationAttrs(activation, alpha)
        yield "bias_activation", fused, [x, b], exact, ()
        yield activation, fused.activation_attrs(), [x], exact, ()


def update_cases(rule, attrs, dtype):
    """Per-parameter updates, new arrays and in place (the update group's flat form is the
    same call on one long array)."""
    rng = np.random.default_rng(1)
    momentum = int(bool(getattr(attrs, "momentum", 0)))
    slots = {"sgd_update": momentum, "adam_update": 2, "rmsprop_update": 1 + momentum,
             "adagrad_update": 1}[rule]
    for size, step in ((1, 1), (37, 2), (1001, 7), (4099, 100)):
        p, g = (rng.standard_normal(size).astype(dtype) for _ in range(2))
        state = [np.abs(rng.standard_normal(size)).astype(dtype) for _ in range(slots)]
        inputs = [p, g, np.asarray(0.05, dtype=dtype), np.asarray(step, dtype=dtype), *state]
        exact = dtype == "float64" and rule != "adam_update"  # no pow: the same roundings
        yield rule, attrs, inputs, exact, ()
        yield rule, attrs, inputs, exact, [(0, 0)] + [(1 + k, 4 + k) for k in range(slots)]


def pool_configs(rank, rng, count=12):
    """Random windows (kernel, stride, dilation, padding) and input shapes, odd sizes."""
    for _ in range(count):
        kernel = tuple(int(k) for k in rng.integers(1, 4, rank))
        stride = tuple(int(s) for s in rng.integers(1, 4, rank))
        dilation = tuple(int(d) for d in rng.integers(1, 3, rank))
        pad = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
        spatial = tuple(d * (k - 1) + 1 + int(rng.integers(0, 9))
                        for k, d in zip(kernel, dilation))
        yield PoolAttrs(kernel, stride, pad, dilation), (int(rng.integers(1, 4)),
                                                         int(rng.integers(1, 4)), *spatial)


def pool_cases(rank, dtype):
    """Max pooling with its argmax and its gradient: exact, ties and overlapping windows
    included (the gather-form gradient adds in the scatter's order)."""
    from nnrun.backends.numpy_backend import NumpyBackend

    rng = np.random.default_rng(2 + rank)
    for attrs, shape in pool_configs(rank, rng):
        x = np.round(rng.uniform(-2, 2, shape), 1).astype(dtype)  # few levels: ties
        yield "max_pool_index", attrs, [x], True, ()
        with_nan = x.copy()
        with_nan.reshape(-1)[::7] = np.nan  # a nan maximum, its position as the generic one's
        yield "max_pool_index", attrs, [with_nan], True, ()
        y, index = run_into(NumpyBackend(), "max_pool_index", attrs, [x])
        g = rng.standard_normal(y.shape).astype(dtype)
        grad_attrs = PoolGradAttrs(attrs.kernel, attrs.stride, attrs.pad, attrs.dilation,
                                   shape[2:])
        yield "max_pool_grad_index", grad_attrs, [g, index], True, ()
        yield f"avg_pool{rank}d", attrs, [x], True, ()  # through im2col


def cross_entropy_cases(attrs, dtype):
    rng = np.random.default_rng(4)
    for rank in (2, 3, 4, 2, 3, 4):
        batch, classes, *spatial = odd_shape(rng, rank)
        classes += 1
        logits = (rng.standard_normal((batch, classes, *spatial)) * 5).astype(dtype)
        labels = rng.integers(0, classes, (batch, *spatial))
        if attrs.ignore_index is not None:
            labels.reshape(-1)[rng.random(labels.size) < 0.3] = attrs.ignore_index
        g = np.asarray(rng.uniform(0.5, 2), dtype=dtype)
        yield "softmax_cross_entropy", attrs, [logits, labels], False, ()
        yield "softmax_cross_entropy_grad", attrs, [g, logits, labels], False, ()


def compare_columns(reference, candidate, rank, dtype, exact=True):
    """im2col in both layouts and col2im, member by member; and both again on the batch-last
    layout (one sample whose elements are runs of B values)."""
    rng = np.random.default_rng(5 + rank)
    for attrs, shape in pool_configs(rank, rng):
        window = (attrs.kernel, attrs.stride, attrs.dilation)
        out = [(n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(shape[2:], *window)]
        runs = (int(rng.integers(2, 6)),)
        layouts = [("im2col_into", shape, (*shape[:2], *attrs.kernel, *out)),
                   ("batch_columns_into", shape, (shape[1], *attrs.kernel, shape[0], *out)),
                   ("im2col_into", (1, *shape[1:], *runs), (1, shape[1], *attrs.kernel, *out,
                                                            *runs))]
        for member, x_shape, cols_shape in layouts:
            x = rng.standard_normal(x_shape).astype(dtype)
            results = [_columns_on(b, member, x, cols_shape, window) for b in (candidate,
                                                                              reference)]
            assert_close(*results, exact, f"{member} {attrs} {x_shape}")
        for x_shape in (shape, (1, *shape[1:], *runs)):
            extra = x_shape[2 + rank:]
            cols = rng.standard_normal((*x_shape[:2], *attrs.kernel, *out, *extra)).astype(dtype)
            results = [_columns_on(b, "col2im_into", cols, x_shape, window)
                       for b in (candidate, reference)]
            assert_close(*results, exact, f"col2im {attrs} {x_shape}")


def _columns_on(backend, member, source, shape, window):
    """backend.<member>(source, *window, a new buffer of `shape` filled with nan)."""
    result = backend.xp.full(shape, np.nan, dtype=source.dtype)
    getattr(backend, member)(backend.from_host(source), *window, result)
    return backend.to_host(result)


def assert_backends_agree(report):
    """A check-backends report agrees, every op and the whole step (values that rounding alone
    moves, such as a bias before a training-mode batchnorm, are left out by check-backends
    itself: runtime/agreement.py)."""
    assert report.first_failure is None, report.first_failure
    assert not report.whole_step_failures, report.whole_step_failures
