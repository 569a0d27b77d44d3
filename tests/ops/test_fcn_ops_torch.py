"""Transposed convolution and upsampling against PyTorch in float64, on random shapes, strides,
paddings, output paddings and dilations: the forward, and the gradients of both inputs through
the graph the op's VJP builds (what training runs), against torch autograd."""

from __future__ import annotations

import numpy as np
import pytest

from nnrun.backends import get_backend
from nnrun.compiler.builder import GraphBuilder
from nnrun.compiler.ops import REGISTRY
from nnrun.compiler.ops.conv import ConvTransposeAttrs
from nnrun.compiler.ops.resize import UpsampleAttrs
from nnrun.runtime.executor import Executor

from .cases import input_type

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.torch
numpy_backend = get_backend("numpy")


def vjp_results(name, attrs, inputs, g):
    """y and the gradient of sum(y * g) w.r.t. each input, from the VJP-built graph."""
    gb = GraphBuilder()
    values = [gb.input(f"in{i}", input_type(a)) for i, a in enumerate(inputs)]
    y = gb.emit(name, *values, attrs=attrs)
    grads = REGISTRY[name].vjp(gb, gb.graph.nodes[-1], gb.input("g", y.type))
    gb.graph.outputs["y"] = y
    for i, grad in enumerate(grads):
        gb.graph.outputs[f"d{i}"] = grad
    feeds = {f"in{i}": a for i, a in enumerate(inputs)}
    results, _ = Executor(gb.graph, numpy_backend).run({**feeds, "g": g})
    return results["y"], [results[f"d{i}"] for i in range(len(inputs))]


def random_transpose_config(rng, rank):
    stride = tuple(int(s) for s in rng.integers(1, 4, rank))
    kernel = tuple(int(k) for k in rng.integers(1, 5, rank))
    dilation = tuple(int(d) for d in rng.integers(1, 3, rank))
    extra = tuple(int(rng.integers(0, s)) for s in stride)
    spatial = tuple(int(n) for n in rng.integers(1, 6, rank))
    # out = (n-1)s - 2p + d(k-1) + 1 + extra must stay >= 1
    pad = tuple(int(rng.integers(0, ((n - 1) * s + d * (k - 1) + e) // 2 + 1))
                for n, s, k, d, e in zip(spatial, stride, kernel, dilation, extra))
    channels, filters = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    x = rng.standard_normal((int(rng.integers(1, 4)), channels, *spatial))
    w = rng.standard_normal((channels, filters, *kernel))
    return ConvTransposeAttrs(stride, pad, extra, dilation), x, w


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("seed", range(12))
def test_conv_transpose_matches_torch_on_random_geometry(rank, seed):
    rng = np.random.default_rng([rank, seed])
    attrs, x, w = random_transpose_config(rng, rank)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    transpose = F.conv_transpose1d if rank == 1 else F.conv_transpose2d
    expected = transpose(xt, wt, stride=attrs.stride, padding=attrs.pad,
                         output_padding=attrs.output_padding, dilation=attrs.dilation)
    g = rng.standard_normal(tuple(expected.shape))
    dx, dw = torch.autograd.grad(expected, (xt, wt), torch.tensor(g))
    y, (gx, gw) = vjp_results(f"conv{rank}d_transpose", attrs, (x, w), g)
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx, dx.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gw, dw.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("seed", range(6))
def test_upsample_matches_torch_on_random_sizes(mode, rank, seed):
    rng = np.random.default_rng([rank, seed, mode == "nearest"])
    scale = tuple(int(s) for s in rng.integers(1, 5, rank))
    x = rng.standard_normal((int(rng.integers(1, 3)), int(rng.integers(1, 4)),
                             *(int(n) for n in rng.integers(1, 7, rank))))
    torch_mode = mode if mode == "nearest" or rank == 1 else "bilinear"
    options = {} if mode == "nearest" else {"align_corners": False}
    xt = torch.tensor(x, requires_grad=True)
    expected = F.interpolate(xt, scale_factor=tuple(float(s) for s in scale), mode=torch_mode,
                             **options)
    g = rng.standard_normal(tuple(expected.shape))
    (dx,) = torch.autograd.grad(expected, (xt,), torch.tensor(g))
    attrs = UpsampleAttrs(scale, "bilinear" if torch_mode == "bilinear" else mode)
    y, (gx,) = vjp_results(f"upsample{rank}d", attrs, (x,), g)
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx, dx.numpy(), rtol=1e-10, atol=1e-12)
