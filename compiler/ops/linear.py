"""Matrix product, bias, and the elementwise arithmetic that gradients are built from."""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import BATCH, TensorType
from ..shapes import ShapeError, per_sample, size_of
from . import REGISTRY, SUMMED, NoAttrs, OpDef, register
from .common import (all_same, channel_sums_into, channel_sums_scratch, onnx_op, ones_vector,
                     same_as_first)


@dataclass(frozen=True)
class MatmulAttrs:
    transpose_a: bool = False
    transpose_b: bool = False


def _matmul_shape(attrs, a: TensorType, b: TensorType) -> TensorType:
    if a.rank != 2 or b.rank != 2:
        # the layer adds what fixes it (lower.py: a flatten before it, or of its inputs)
        raise ShapeError(f"dense expects a vector sample, got shape {per_sample(a)}")
    m, k = a.shape[::-1] if attrs.transpose_a else a.shape
    k2, n = b.shape[::-1] if attrs.transpose_b else b.shape
    if k != k2:
        raise ShapeError(f"matmul inner sizes differ: {k} and {k2}")
    return TensorType((m, n), a.dtype)


def _matmul_forward(be, attrs, a, b):
    return (a.T if attrs.transpose_a else a) @ (b.T if attrs.transpose_b else b)


def _matmul_vjp(gb, node, g):
    a, b = node.inputs
    if node.attrs.transpose_a or node.attrs.transpose_b:
        raise NotImplementedError("gradients of transposed matmul are not needed by any layer")
    return (gb.emit("matmul", g, b, attrs=MatmulAttrs(transpose_b=True)),
            gb.emit("matmul", a, g, attrs=MatmulAttrs(transpose_a=True)))


def _matmul_flops(attrs, inputs, output) -> int:
    a, b = inputs
    return 2 * b.shape[0] * b.shape[1]


def _matmul_into(be, attrs, out, a, b):
    # One product: on NumPy a large one runs on more than one thread, BLAS's or nnrun's workers
    # (backends/numpy_backend.py).
    left, right = a.T if attrs.transpose_a else a, b.T if attrs.transpose_b else b
    be.matmul_into(left, right, out[0])


def _matmul_batch_role(attrs, inputs, outputs):
    """A sum over the batch when both sides hold it on the contracted axis (a dense layer's
    weight gradient). A product whose rows are samples is not cut: BLAS may round a row
    otherwise when it gets fewer rows, and the weights would then depend on the thread count."""
    a, b = inputs
    a_inner, b_inner = (0 if attrs.transpose_a else 1), (1 if attrs.transpose_b else 0)
    return SUMMED if a.shape[a_inner] == BATCH and b.shape[b_inner] == BATCH else None


def _matmul_onnx(ox, node):
    a, b = ox.inputs(node)
    a = ox.emit("Transpose", a) if node.attrs.transpose_a else a
    b = ox.emit("Transpose", b) if node.attrs.transpose_b else b
    return ox.emit("MatMul", a, b)


register(OpDef("matmul", MatmulAttrs, _matmul_shape, _matmul_forward, _matmul_vjp,
               flops=_matmul_flops, doc="a @ b (optionally transposed): dense layers",
               forward_into=_matmul_into, batch_role=_matmul_batch_role, onnx=_matmul_onnx))


def _bias_add_shape(attrs, x: TensorType, b: TensorType) -> TensorType:
    if b.rank != 1 or x.rank < 2 or x.shape[1] != b.shape[0]:
        raise ShapeError(f"bias of shape {list(b.shape)} does not match channels of {per_sample(x)}")
    return x


def _channel_view(xp, b, rank):
    return b.reshape((1, -1) + (1,) * (rank - 2))


def _bias_add_forward(be, attrs, x, b):
    return x + _channel_view(be.xp, b, x.ndim)


def _bias_add_vjp(gb, node, g):
    return g, gb.emit("bias_add_grad", g)


@dataclass(frozen=True)
class BiasGradAttrs:
    # g laid out [channels, *spatial, B] (compiler/passes/batch_last_layers.py)
    batch_last: bool = False


def _bias_add_grad_shape(attrs, g: TensorType) -> TensorType:
    return TensorType((g.shape[0 if attrs.batch_last else 1],), g.dtype)


def _bias_add_grad_forward(be, attrs, g):
    if attrs.batch_last:
        return g.reshape(g.shape[0], -1) @ ones_vector(be, size_of(g.shape[1:]), g.dtype)
    over_batch = ones_vector(be, g.shape[0], g.dtype) @ g.reshape(g.shape[0], -1)
    if g.ndim == 2:
        return over_batch
    return over_batch.reshape(g.shape[1], -1) @ ones_vector(be, size_of(g.shape[2:]), g.dtype)


def _bias_add_into(be, attrs, out, x, b):
    be.bias_add_into(x, b, out[0])


def _bias_add_grad_scratch(attrs, g):
    return () if attrs.batch_last else channel_sums_scratch(g)


def _bias_add_grad_into(be, attrs, out, g):
    if attrs.batch_last:
        be.matmul_into(g.reshape(g.shape[0], -1), ones_vector(be, size_of(g.shape[1:]), g.dtype),
                       out[0])
        return
    channel_sums_into(be, g, out[0], out[1:])


def _bias_add_grad_batch_role(attrs, inputs, outputs):
    return SUMMED if not attrs.batch_last and inputs[0].shape[0] == BATCH else None


def _bias_add_onnx(ox, node):
    x, b = ox.inputs(node)
    rank = node.inputs[0].type.rank
    if rank > 2:  # [C] as [C, 1, ...]: broadcast over the spatial axes
        b = ox.emit("Reshape", b, ox.ints((-1, *(1,) * (rank - 2))))
    return ox.emit("Add", x, b)


register(OpDef("bias_add", NoAttrs, _bias_add_shape, _bias_add_forward, _bias_add_vjp,
               doc="x + b, b broadcast along axis 1 (features or channels)",
               forward_into=_bias_add_into, batch_parallel=True, onnx=_bias_add_onnx))
register(OpDef("bias_add_grad", BiasGradAttrs, _bias_add_grad_shape, _bias_add_grad_forward, None,
               doc="sum of g over every axis but 1 (but 0 when batch_last)",
               forward_into=_bias_add_grad_into, scratch=_bias_add_grad_scratch,
               batch_role=_bias_add_grad_batch_role))


# bias_add followed by an activation whose gradient needs only the activation's output (or
# whose gradient reads the same signs from the output): one op, one buffer, no pre-activation
# kept for the backward pass. Only the fusion pass emits it.
FUSABLE_ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")


@dataclass(frozen=True)
class BiasActivationAttrs:
    activation: str = "relu"
    alpha: float = 0.0  # leaky_relu's slope

    def activation_attrs(self):
        from .activation import AlphaAttrs

        return AlphaAttrs(self.alpha) if self.activation == "leaky_relu" else NoAttrs()


def _bias_activation_forward(be, attrs, x, b):
    activation = REGISTRY[attrs.activation]
    return activation.forward(be, attrs.activation_attrs(), _bias_add_forward(be, None, x, b))


def _bias_activation_scratch(attrs, x, b):
    if attrs.activation == "relu":
        return ()  # computed in place
    activation = REGISTRY[attrs.activation]
    extra = activation.scratch(attrs.activation_attrs(), x) if activation.scratch else ()
    return (x, *extra)  # the pre-activation, then the activation's own scratch


def _bias_activation_into(be, attrs, out, x, b):
    be.bias_activation_into(attrs.activation, attrs.alpha, x, b, out)


register(OpDef("bias_activation", BiasActivationAttrs, _bias_add_shape, _bias_activation_forward,
               None, forward_into=_bias_activation_into,
               scratch=_bias_activation_scratch, batch_parallel=True,
               doc="activation(x + b): bias_add and an activation fused by the fusion pass"))


def _binary_into(ufunc_name):
    def into(be, attrs, out, x, y):
        getattr(be.xp, ufunc_name)(x, y, out=out[0])

    return into


register(OpDef("add", NoAttrs, all_same, lambda be, a, x, y: x + y,
               lambda gb, node, g: (g, g), doc="x + y, equal shapes",
               forward_into=_binary_into("add"), onnx=onnx_op("Add"), overwrites=(0, 1)))
register(OpDef("mul", NoAttrs, all_same, lambda be, a, x, y: x * y,
               lambda gb, node, g: (gb.emit("mul", g, node.inputs[1]),
                                    gb.emit("mul", g, node.inputs[0])),
               doc="x * y elementwise, equal shapes", forward_into=_binary_into("multiply"),
               onnx=onnx_op("Mul"), overwrites=(0, 1)))


@dataclass(frozen=True)
class ScaleAttrs:
    factor: float = 1.0


register(OpDef("scale", ScaleAttrs, same_as_first, lambda be, a, x: x * a.factor,
               lambda gb, node, g: (gb.emit("scale", g, attrs=node.attrs),),
               doc="x * factor",
               forward_into=lambda be, a, out, x: be.xp.multiply(x, a.factor, out=out[0]),
               overwrites=(0,),
               onnx=lambda ox, node: ox.emit("Mul", *ox.inputs(node),
                                             ox.constant(node.attrs.factor))))

register(OpDef("ones_like", NoAttrs, lambda a, x: x, lambda be, a, x: be.xp.ones_like(x),
               lambda gb, node, g: (None,), doc="1 everywhere: the seed gradient d loss / d loss",
               forward_into=lambda be, a, out, x: out[0].fill(1),
               onnx_refusal="the seed of back-propagation; an inference graph has none"))
