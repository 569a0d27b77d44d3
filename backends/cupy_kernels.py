"""The CuPy backend's own kernels (their C source and launch plans: raw_kernels.py).

Each kernel family is compiled with NVRTC on first use, once per element type and device, and
each configuration (dtype, activation, optimizer settings, pooling window, loss options) is
trusted only after a self-check: the kernel and the generic code (backends/fused.py) run on
small random inputs of that configuration and must agree. A kernel that fails to compile, to
run or to agree is named in one line on stderr, and the generic code runs for that
configuration from then on. A launch allocates nothing and reads every per-step scalar from
device memory, so that a captured CUDA graph replays it; no self-check runs during a capture
(the generic code runs instead, that once).

Every `run_*` function returns True when its kernel did the work, False when the caller must
run the generic code (a configuration not covered, non-contiguous buffers, a failed check).
"""

from __future__ import annotations

import cupy
import numpy as np

from . import raw_kernels
from .base import ArrayBackend, refuse_during_capture, window_count
from nnrun.notices import warn

BLOCK = 256
MAX_BLOCKS = 1 << 16  # a grid-stride loop covers the rest
OPTIONS = ("--fmad=false",)  # no fused multiply-add: the generic code's roundings
TOLERANCE = {"float32": 2e-5, "float64": 1e-11}  # the self-check's, relative
DTYPES = ("float32", "float64")

# The backend members the CuPy backend overrides with these kernels.
KERNEL_OVERRIDES = ("im2col_into", "batch_columns_into", "col2im_into", "activation_into",
                    "bias_activation_into", "optimizer_update_into", "max_pool_index_into",
                    "max_pool_grad_index_into", "softmax_cross_entropy_into",
                    "softmax_cross_entropy_grad_into", "softmax_cross_entropy_with_grad_into")

_MODULES: dict = {}
_VERDICTS: dict = {}
_WORKSPACES: dict = {}


def _function(family: str, dtype: str, index: str, name: str):
    key = (family, dtype, index, cupy.cuda.Device().id)
    if key not in _MODULES:
        _MODULES[key] = cupy.RawModule(code=raw_kernels.source(family, dtype, index=index),
                                       options=OPTIONS)
    return _MODULES[key].get_function(name)


def _launch(plan) -> None:
    for family, dtype, name, threads, args in plan:
        index, args = raw_kernels.index_form(threads, args)
        blocks = max(1, min((threads + BLOCK - 1) // BLOCK, MAX_BLOCKS))
        _function(family, dtype, index, name)((blocks,), (BLOCK,), args)


def _workspace(dtype):
    """The cross-entropy's partial sums (double) and its two scalars (loss, gradient scale)."""
    key = (str(dtype), cupy.cuda.Device().id)
    if key not in _WORKSPACES:
        refuse_during_capture(cupy.cuda.get_current_stream().is_capturing(),
                              "the cross-entropy's workspace")
        _WORKSPACES[key] = (cupy.empty(2 * raw_kernels.PARTS, dtype=cupy.float64),
                            cupy.empty(2, dtype=dtype))
    return _WORKSPACES[key]


def _plain(*arrays) -> bool:
    """Arrays a raw kernel can index flat: C-contiguous, float32 or float64 for the first."""
    return str(arrays[0].dtype) in DTYPES and all(a.flags.c_contiguous for a in arrays)


# --- the self-check -----------------------------------------------------------------------


def trusted(key: tuple, trial) -> bool:
    """Whether the kernel of `key` (family, dtype, configuration...) may run. The first time:
    `trial()` runs it and the generic code on small inputs and returns (got, want) arrays."""
    verdict = _VERDICTS.get(key)
    if verdict is not None:
        return verdict
    if cupy.cuda.get_current_stream().is_capturing():
        return False
    try:
        problem = _disagreement(key[1], *trial())
    except Exception as error:  # a compile or launch error: reported, never raised
        message = (str(error).strip() or "?").splitlines()[0]
        problem = f"failed: {type(error).__name__}: {message}"
    if problem:
        warn(f"CuPy kernel {key[0]} {key[1:]} {problem}; using the generic code instead")
    _VERDICTS[key] = problem is None
    return problem is None


def failed_self_checks() -> list[str]:
    """The kernels this process found wrong on its device (the generic code runs instead):
    what `nnrun check-backends` fails on, though their ops then agree."""
    return [f"CuPy kernel {key[0]} {key[1:]} failed its self-check; the generic code runs "
            "instead" for key, verdict in _VERDICTS.items() if not verdict]


def _disagreement(dtype: str, got, want) -> str | None:
    rtol = TOLERANCE[dtype]
    for position, (a, b) in enumerate(zip(got, want)):
        a, b = cupy.asnumpy(a), cupy.asnumpy(b)
        atol = rtol * float(np.abs(b).max(initial=1))  # to scale: an update's p - step cancels
        if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True):
            difference = np.abs(a.astype(np.float64) - b).max() if a.shape == b.shape else "shape"
            return f"disagrees with the generic code (output {position}, largest difference " \
                   f"{difference})"
    return None


def _random(shape, dtype, seed=0, scale=3.0):
    return cupy.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, dtype=dtype)


# --- bias + activation --------------------------------------------------------------------


def run_activation(activation, alpha, x, b, y) -> bool:
    """y = activation(x + b) (b along axis 1), or activation(x) when b is None."""
    arrays = (x, y) if b is None else (x, b, y)
    if activation not in raw_kernels.ACTIVATIONS or not _plain(*arrays) or (b is not None
                                                                      and x.ndim < 2):
        return False
    dtype = str(x.dtype)
    key = ("bias_activation", dtype, activation, float(alpha), b is not None, min(x.ndim, 3))
    if not trusted(key, lambda: _activation_trial(activation, alpha, dtype, b is not None,
                                                  x.ndim)):
        return False
    _launch(raw_kernels.activation_plan(activation, alpha, x, b, y))
    return True


def _activation_trial(activation, alpha, dtype, with_bias, rank):
    shape = (3, 5, 4, 7)[:max(rank, 1)] if rank else ()
    x = _random(shape, dtype)
    b = _random(shape[1:2], dtype, seed=1) if with_bias else None
    got, want = cupy.empty_like(x), cupy.empty_like(x)
    _launch(raw_kernels.activation_plan(activation, alpha, x, b, got))
    if with_bias:  # into the pre-activation first
        generic_backend().bias_activation_into(activation, alpha, x, b, (want, cupy.empty_like(x)))
    else:
        generic_backend().activation_into(activation, alpha, x, (want,))
    return [got], [want]


# --- optimizer updates over flat buffers ----------------------------------------------------


def run_update(rule, attrs, out, p, g, lr, step, *state) -> bool:
    """One update of flat (or any C-contiguous) parameters and their optimizer state."""
    if len(state) != _slots(rule, attrs):  # also a rule without a kernel
        return False
    news = out[:1 + len(state)]
    arrays = (p, g, lr, step, *state, *news)
    if not _plain(*arrays) or any(a.dtype != p.dtype for a in arrays):
        return False
    dtype = str(p.dtype)
    if not trusted((rule, dtype, attrs), lambda: _update_trial(rule, attrs, dtype)):
        return False
    _launch(raw_kernels.update_plan(rule, attrs, news, p, g, lr, step, *state))
    return True


def _slots(rule, attrs) -> int | None:
    """Optimizer state tensors per parameter; None for a rule without a kernel."""
    momentum = int(bool(getattr(attrs, "momentum", 0)))
    return {"sgd_update": momentum, "adam_update": 2, "rmsprop_update": 1 + momentum,
            "adagrad_update": 1}.get(rule)


def _update_trial(rule, attrs, dtype):
    n = 1001
    p, g = _random(n, dtype, 0, 1.0), _random(n, dtype, 1, 1.0)
    state = [cupy.abs(_random(n, dtype, 2 + k, 0.1)) for k in range(_slots(rule, attrs))]
    lr, step = cupy.asarray(0.01, dtype=dtype), cupy.asarray(3, dtype=dtype)
    got = [cupy.empty_like(p) for _ in range(1 + len(state))]
    want = [cupy.empty_like(p) for _ in range(3 + len(state))]
    _launch(raw_kernels.update_plan(rule, attrs, got, p, g, lr, step, *state))
    generic_backend().optimizer_update_into(rule, attrs, want, p, g, lr, step, *state)
    return got, want[:len(got)]


# --- max pooling with its argmax --------------------------------------------------------------


def run_max_pool_index(padded, kernel, stride, dilation, y, index) -> bool:
    return _run_pool("max_pool_index", (padded, y, index), kernel, stride, dilation)


def run_max_pool_grad_index(g, index, kernel, stride, dilation, target) -> bool:
    return _run_pool("max_pool_grad_index", (target, g, index), kernel, stride, dilation)


def _run_pool(name, arrays, kernel, stride, dilation) -> bool:
    """arrays: (the input, the output, the index) of the forward, (the gradient's target, the
    incoming gradient, the index) of the gradient: pool_plan's order."""
    first, second, index = arrays
    if (len(kernel) not in (1, 2) or not _plain(second, index, first)
            or index.dtype != cupy.int64 or first.dtype != second.dtype):
        return False
    dtype = str(second.dtype)
    window = (tuple(kernel), tuple(stride), tuple(dilation))
    part = slice(None, 2) if name == "max_pool_index" else slice(2, None)
    if not trusted((name, dtype, *window), lambda: _pool_trial(dtype, *window)[part]):
        return False
    _launch(raw_kernels.pool_plan(name, *arrays, kernel, stride, dilation))
    return True


def _trial_sizes(kernel, stride, dilation):
    """A trial input's spatial sizes (two windows along each axis, and a remainder) and the
    output's."""
    spatial = [d * (k - 1) + 1 + 2 * s + 1 for k, s, d in zip(kernel, stride, dilation)]
    return spatial, [window_count(n, k, s, d) for n, k, s, d in zip(spatial, kernel, stride,
                                                                    dilation)]


def _pool_trial(dtype, kernel, stride, dilation):
    """(kernel's y and index, generic's), then (kernel's gradient, generic's)."""
    spatial, out = _trial_sizes(kernel, stride, dilation)
    x = cupy.asarray(np.round(np.random.default_rng(0).uniform(-2, 2, (2, 3, *spatial)), 1),
                     dtype=dtype)  # few levels: ties
    y, index = cupy.empty((2, 3, *out), dtype=dtype), cupy.empty((2, 3, *out), dtype=cupy.int64)
    _launch(raw_kernels.pool_plan("max_pool_index", x, y, index, kernel, stride, dilation))
    want_y, want_index = cupy.empty_like(y), cupy.empty_like(index)
    work = (cupy.empty(y.shape, dtype=cupy.int32), cupy.empty(y.shape, dtype=cupy.int32),
            cupy.empty(y.shape, dtype=bool))
    positions = generic_backend().pool_positions(x.shape, out, kernel, stride, dilation)
    generic_backend().max_pool_index_into(x, kernel, stride, dilation, positions,
                                          (want_y, want_index, *work))
    g = _random(y.shape, dtype, 3)
    got_grad, want_grad = cupy.empty_like(x), cupy.empty_like(x)
    _launch(raw_kernels.pool_plan("max_pool_grad_index", got_grad, g, want_index, kernel,
                                  stride, dilation))
    starts = cupy.arange(2, dtype=cupy.int64).reshape(2, 1, *(1,) * len(out)) * x[0].size
    starts = cupy.ascontiguousarray(cupy.broadcast_to(starts, y.shape))
    generic_backend().max_pool_grad_index_into(g, want_index, kernel, stride, dilation, starts,
                                               want_grad, cupy.empty_like(want_index))
    return [y, index], [want_y, want_index], [got_grad], [want_grad]


# --- convolution columns ---------------------------------------------------------------------


def run_columns(name, x, cols, kernel, stride, dilation, layout=0) -> bool:
    """im2col (x -> cols, `layout` 0: [B, C, *kernel, *out], 1: [C, *kernel, B, *out]) or
    col2im (cols [B, C, *kernel, *out] -> x); in layout 0, x and cols may end with an axis of
    `inner` values per element (the batch-last layout)."""
    rank = len(kernel)
    inner = x.ndim == rank + 3
    if (rank not in (1, 2) or x.ndim not in (rank + 2, rank + 3) or (inner and layout != 0)
            or cols.ndim != x.ndim + rank or not _plain(x, cols) or cols.dtype != x.dtype):
        return False
    dtype = str(x.dtype)
    key = (name, dtype, tuple(kernel), tuple(stride), tuple(dilation), layout, inner)
    if not trusted(key, lambda: _columns_trial(name, dtype, kernel, stride, dilation, layout,
                                               inner)):
        return False
    _launch(raw_kernels.columns_plan(name, x, cols, kernel, stride, dilation, layout))
    return True


def _columns_trial(name, dtype, kernel, stride, dilation, layout, inner):
    spatial, out = _trial_sizes(kernel, stride, dilation)
    runs = (5,) if inner else ()
    x = _random((2, 3, *spatial, *runs), dtype)
    window = (kernel, stride, dilation)
    generic = generic_backend()
    if name == "col2im":
        cols = _random((2, 3, *kernel, *out, *runs), dtype, seed=1)
        got, want = cupy.empty_like(x), cupy.empty_like(x)
        _launch(raw_kernels.columns_plan("col2im", got, cols, *window))
        generic.col2im_into(cols, *window, want)
        return [got], [want]
    shape = (2, 3, *kernel, *out, *runs) if layout == 0 else (3, *kernel, 2, *out)
    got, want = cupy.empty(shape, dtype=dtype), cupy.empty(shape, dtype=dtype)
    _launch(raw_kernels.columns_plan("im2col", x, got, *window, layout))
    (generic.im2col_into if layout == 0 else generic.batch_columns_into)(x, *window, want)
    return [got], [want]


# --- softmax cross-entropy -------------------------------------------------------------------


def run_cross_entropy(attrs, logits, labels, out, g=None) -> bool:
    """The mean loss into out[0] (g None), or its gradient for the incoming g (0-d); the rows'
    sums go to the scratch out[1:4]."""
    if (logits.ndim < 2 or not _plain(logits, labels, *out[:4]) or labels.dtype != cupy.int64
            or any(a.dtype != logits.dtype for a in (*out[:4], *(() if g is None else (g,))))):
        return False
    dtype = str(logits.dtype)
    key = ("cross_entropy", dtype, attrs, min(logits.ndim, 3))
    if not trusted(key, lambda: _cross_entropy_trial(attrs, dtype, logits.ndim)):
        return False
    _launch_cross_entropy(attrs, logits, labels, out, g)
    return True


def _launch_cross_entropy(attrs, logits, labels, out, g) -> None:
    _launch(raw_kernels.cross_entropy_plan(attrs, logits, labels, out, g,
                                           _workspace(logits.dtype)))


def _cross_entropy_trial(attrs, dtype, rank):
    batch, classes, spatial = 5, 7, (3, 4)[:max(rank - 2, 0)]
    logits = _random((batch, classes, *spatial), dtype)
    labels_host = np.random.default_rng(1).integers(0, classes, (batch, *spatial))
    if attrs.ignore_index is not None:
        labels_host.reshape(-1)[::3] = attrs.ignore_index
    labels = cupy.asarray(labels_host, dtype=cupy.int64)
    g = cupy.asarray(0.75, dtype=dtype)
    row = (batch, 1, *spatial)
    got, want = [], []
    for incoming in (None, g):
        result = cupy.empty(() if incoming is None else logits.shape, dtype=dtype)
        scratch = (cupy.empty_like(logits), cupy.empty_like(logits), cupy.empty(row, dtype),
                   cupy.empty(labels.shape, cupy.int64), cupy.empty(labels.shape, dtype),
                   cupy.empty(row, dtype), cupy.empty(labels.shape, bool))
        scratch = scratch if attrs.ignore_index is not None else scratch[:5]
        _launch_cross_entropy(attrs, logits, labels, (result, *scratch), incoming)
        got.append(result.copy())
        expected = cupy.empty_like(result)
        starts = (cupy.arange(batch).reshape(-1, *(1,) * len(spatial)) * classes
                  * int(np.prod(spatial)) + cupy.arange(int(np.prod(spatial))).reshape(spatial))
        starts = cupy.ascontiguousarray(starts.astype(cupy.int64))
        generic = generic_backend()
        if incoming is None:
            generic.softmax_cross_entropy_into(attrs, logits, labels, starts,
                                               (expected, *scratch))
        else:
            generic.softmax_cross_entropy_grad_into(attrs, g, logits, labels, starts,
                                                    (expected, *scratch))
        want.append(expected)
    return got, want


_BACKEND: dict = {}


def generic_backend():
    """The CuPy backend with every member of KERNEL_OVERRIDES the generic code's: the self-checks'
    reference (a generic member that calls another, as bias + activation does, must not reach
    a kernel), and the tests' and benchmark's."""
    if "generic" not in _BACKEND:
        from .cupy_backend import CupyBackend

        members = {member: getattr(ArrayBackend, member) for member in KERNEL_OVERRIDES}
        _BACKEND["generic"] = type("GenericCupyBackend", (CupyBackend,), members)()
    return _BACKEND["generic"]
