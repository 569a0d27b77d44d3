"""A stride-1 convolution's input gradient on long rows, taken as a convolution of g with the
reversed kernel, a chunk of samples at a time (compiler/ops/conv.py): against PyTorch, and
its planned form against its plain one whatever the chunk."""

from __future__ import annotations

import numpy as np
import pytest

from nnrun.backends import get_backend
from nnrun.compiler.ir import TensorType
from nnrun.compiler.ops import REGISTRY, conv
from nnrun.compiler.ops.conv import ConvAttrs

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
numpy_backend = get_backend("numpy")

# (label, attrs, x shape, w shape): rows of at least AS_CONVOLUTION_MIN values
LONG_ROWS = [
    ("3x3 same", ConvAttrs((1, 1), (1, 1), (1, 1)), (3, 2, 20, 18), (4, 2, 3, 3)),
    ("asymmetric pad, dilation", ConvAttrs((1, 1), ((2, 0), (1, 2)), (2, 1)), (2, 3, 17, 19),
     (2, 3, 2, 3)),
    ("no pad, 1x1", ConvAttrs((1, 1), (0, 0), (1, 1)), (2, 3, 16, 16), (5, 3, 1, 1)),
    ("1-D, pad (3,1)", ConvAttrs((1,), ((3, 1),), (1,)), (2, 3, 300), (4, 3, 4)),
    # padding beyond d(k-1) would crop g: the batch-last form instead
    ("over-padded", ConvAttrs((1, 1), (3, 3), (1, 1)), (2, 2, 16, 16), (3, 2, 3, 3)),
]


def _inputs(x_shape, w_shape, attrs):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    g_shape = REGISTRY[f"conv{len(w_shape) - 2}d"].forward(numpy_backend, attrs, x, w).shape
    return rng.standard_normal(g_shape), x, w


def _torch_grad_input(attrs, g, x, w):
    pads = [p if isinstance(p, int) else tuple(p) for p in attrs.pad]
    pad_list = [side for pair in reversed([(p, p) if isinstance(p, int) else p for p in pads])
                for side in pair]
    xt = torch.tensor(x, requires_grad=True)
    conv_nd = torch.nn.functional.conv1d if w.ndim == 3 else torch.nn.functional.conv2d
    y = conv_nd(torch.nn.functional.pad(xt, pad_list), torch.tensor(w), stride=attrs.stride,
                dilation=attrs.dilation)
    y.backward(torch.tensor(g))
    return xt.grad.numpy()


def _planned(name, attrs, g, x, w):
    op = REGISTRY[name]
    types = [TensorType(a.shape, a.dtype.name) for a in (g, x, w)]
    scratch = [np.full(t.shape, 7, dtype=t.dtype) for t in op.scratch(attrs, *types)]
    gx = np.full(x.shape, 7, dtype=x.dtype)
    op.forward_into(numpy_backend, attrs, (gx, *scratch), g, x, w)
    return gx


@pytest.mark.parametrize("label, attrs, x_shape, w_shape", LONG_ROWS)
def test_input_gradient_on_long_rows_matches_torch(label, attrs, x_shape, w_shape):
    g, x, w = _inputs(x_shape, w_shape, attrs)
    name = f"conv{len(w_shape) - 2}d_grad_input"
    want = _torch_grad_input(attrs, g, x, w)
    plain = REGISTRY[name].forward(numpy_backend, attrs, g, x, w)
    np.testing.assert_allclose(plain, want, rtol=1e-12, atol=1e-12, err_msg=label)
    np.testing.assert_allclose(_planned(name, attrs, g, x, w), want, rtol=1e-12, atol=1e-12,
                               err_msg=label)


@pytest.mark.parametrize("chunk_samples", [1, 2])
@pytest.mark.parametrize("label, attrs, x_shape, w_shape", LONG_ROWS[:4])
def test_input_gradient_by_chunks_of_samples_matches_plain_form(label, attrs, x_shape, w_shape,
                                                               chunk_samples, monkeypatch):
    """Five samples in chunks of one or two (a short last chunk): the plain form's numbers,
    bit for bit, in float32."""
    g, x, w = (np.concatenate([a, -a, a[:1] * 0.5]).astype(np.float32) if i < 2
               else a.astype(np.float32)
               for i, a in enumerate(_inputs(x_shape, w_shape, attrs)))
    per_sample = w[:, 0].size * x[0, 0].size * 4  # columns of F*K rows, x's positions
    monkeypatch.setattr(conv, "COLUMN_CHUNK_BYTES", per_sample * chunk_samples)
    name = f"conv{len(w_shape) - 2}d_grad_input"
    types = [TensorType(a.shape, "float32") for a in (g, x, w)]
    assert REGISTRY[name].scratch(attrs, *types)[1].shape[0] == chunk_samples, label
    want = REGISTRY[name].forward(numpy_backend, attrs, g, x, w)
    np.testing.assert_array_equal(_planned(name, attrs, g, x, w), want, err_msg=label)


def test_fcn_input_gradient_holds_no_batch_of_columns():
    """At the FCN workload's shape ([16, 16, 64, 64] from 16 filters of 3x3) the input
    gradient's scratch is a chunk of columns, not the batch's 39 MB of them."""
    attrs = ConvAttrs((1, 1), (1, 1), (1, 1))
    g = x = TensorType((16, 16, 64, 64), "float32")
    w = TensorType((16, 16, 3, 3), "float32")
    scratch = REGISTRY["conv2d_grad_input"].scratch(attrs, g, x, w)
    nbytes = sum(4 * int(np.prod(t.shape)) for t in scratch)
    assert nbytes <= conv.COLUMN_CHUNK_BYTES + (1 << 20), nbytes
