"""Max and average pooling (1-D and 2-D) over the same im2col windows as convolution."""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import TensorType
from ..shapes import ShapeError, per_sample
from . import OpDef, register
from .conv import pad_pairs, unpad, window_shape


@dataclass(frozen=True)
class PoolAttrs:
    kernel: tuple = (2, 2)
    stride: tuple = (2, 2)
    pad: tuple = (0, 0)
    dilation: tuple = (1, 1)


def _pool_shape(attrs, x: TensorType) -> TensorType:
    rank = len(attrs.kernel)
    if x.rank != rank + 2:
        raise ShapeError(
            f"{rank}-D pooling expects a [channels, {'length' if rank == 1 else 'height, width'}] "
            f"sample, got shape {per_sample(x)}",
            "use the pooling layer that matches the data (maxpool1d for [C, L], maxpool2d for [C, H, W])",
        )
    for k, (lo, hi) in zip(attrs.kernel, pad_pairs(attrs.pad)):
        if max(lo, hi) * 2 > k:
            raise ShapeError(f"padding {max(lo, hi)} is more than half the pool size {k}",
                             "use padding <= pool_size / 2")
    return TensorType((x.shape[0], x.shape[1], *window_shape(attrs, x, attrs.kernel, "pool")),
                      x.dtype)


def _padded(xp, x, attrs, fill):
    pairs = pad_pairs(attrs.pad)
    if not any(lo or hi for lo, hi in pairs):
        return x
    return xp.pad(x, ((0, 0), (0, 0), *pairs), constant_values=fill)


def _windows(be, attrs, x, fill):
    """[B, C, K, *out]: the K values of every pooling window, along axis 2."""
    cols = be.im2col(_padded(be.xp, x, attrs, fill), attrs.kernel, attrs.stride, attrs.dilation)
    return cols.reshape(*x.shape[:2], -1, *cols.shape[2 + len(attrs.kernel):])


def _scatter_windows(be, attrs, x, per_window):
    """Adds [B, C, K, *out] window values back onto x's positions."""
    cols = per_window.reshape(*x.shape[:2], *attrs.kernel, *per_window.shape[3:])
    padded = (x.shape[0], x.shape[1],
              *(n + lo + hi for n, (lo, hi) in zip(x.shape[2:], pad_pairs(attrs.pad))))
    return unpad(be.col2im(cols, padded, attrs.kernel, attrs.stride, attrs.dilation), attrs.pad)


def _max_pool_forward(be, attrs, x):
    return _windows(be, attrs, x, -be.xp.inf).max(axis=2)


def _max_pool_grad(be, attrs, g, x):
    xp = be.xp
    windows = _windows(be, attrs, x, -xp.inf)
    # The whole gradient goes to the first maximum of each window, as in PyTorch.
    first_max = windows.argmax(axis=2)[:, :, None]
    positions = xp.arange(windows.shape[2]).reshape(-1, *(1,) * len(attrs.kernel))
    return _scatter_windows(be, attrs, x, (positions == first_max) * g[:, :, None])


def _avg_pool_forward(be, attrs, x):
    # Padding counts as zeros in the mean (PyTorch's count_include_pad=True).
    return _windows(be, attrs, x, 0).mean(axis=2)


def _avg_pool_grad(be, attrs, g, x):
    xp = be.xp
    size = 1
    for k in attrs.kernel:
        size *= k
    share = g[:, :, None] / size
    return _scatter_windows(be, attrs, x, xp.broadcast_to(share, (*g.shape[:2], size, *g.shape[2:])))


def _grad_vjp(grad_op):
    def vjp(gb, node, g):
        return (gb.emit(grad_op, g, node.inputs[0], attrs=node.attrs),)

    return vjp


def _input_shape(attrs, g, x):
    return x


for _rank in (1, 2):
    for _kind, _forward, _grad, _doc in (
        ("max", _max_pool_forward, _max_pool_grad, "maximum of each window"),
        ("avg", _avg_pool_forward, _avg_pool_grad, "mean of each window (padding counts as 0)"),
    ):
        _name = f"{_kind}_pool{_rank}d"
        register(OpDef(_name, PoolAttrs, _pool_shape, _forward, _grad_vjp(f"{_name}_grad"),
                       doc=_doc))
        register(OpDef(f"{_name}_grad", PoolAttrs, _input_shape, _grad, None, is_gradient=True,
                       doc=f"gradient of {_name}: g routed back to the window positions"))
