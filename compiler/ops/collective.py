"""Ops that combine the ranks of a data-parallel run (docs/distributed.md). The reduction
itself is the backend's (`be.allreduce_mean`: MPI on CPUs, NCCL on GPUs); in a single process
it leaves its input as it is, so these ops are then the identity."""

from __future__ import annotations

from ..ir import TensorType
from ..shapes import size_of
from . import NoAttrs, OpDef, register


def _allreduce_mean_shape(attrs, *grads: TensorType):
    return tuple(grads)


def _pieces(flat, arrays):
    """Consecutive runs of `flat`, one view shaped as each of `arrays`."""
    offset = 0
    for array in arrays:
        yield flat[offset:offset + array.size].reshape(array.shape)
        offset += array.size


def _allreduce_mean_forward(be, attrs, *grads):
    flat = be.xp.concatenate([g.reshape(-1) for g in grads])
    be.allreduce_mean(flat)
    return tuple(_pieces(flat, grads))


def _allreduce_mean_scratch(attrs, *grads: TensorType):
    return (TensorType((sum(size_of(g.shape) for g in grads),), grads[0].dtype),)


def _allreduce_mean_into(be, attrs, out, *grads):
    # Every gradient is copied into one flat buffer so that the ranks exchange it in a single
    # all-reduce: one message per step, not one per parameter.
    xp = be.xp
    *outputs, flat = out
    for piece, g in zip(_pieces(flat, grads), grads):
        xp.copyto(piece, g)
    be.allreduce_mean(flat)
    for target, piece in zip(outputs, _pieces(flat, outputs)):
        xp.copyto(target, piece)


register(OpDef("allreduce_mean", NoAttrs, _allreduce_mean_shape, _allreduce_mean_forward, None,
               forward_into=_allreduce_mean_into,
               scratch=_allreduce_mean_scratch,
               doc="each input averaged over the ranks of a data-parallel run, in one all-reduce"))
