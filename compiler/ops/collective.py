"""Ops that combine the ranks of a data-parallel run (docs/distributed.md). The reduction
itself is the backend's (`be.allreduce_mean`: MPI on CPUs, NCCL on GPUs); in a single process
it leaves its input as it is, so these ops are then the identity."""

from __future__ import annotations

from ..ir import TensorType
from ..shapes import size_of
from . import NoAttrs, OpDef, register


def _allreduce_mean_shape(attrs, *grads: TensorType):
    return tuple(grads)


def _allreduce_mean_forward(be, attrs, *grads):
    xp = be.xp
    flat = xp.concatenate([g.reshape(-1) for g in grads])
    be.allreduce_mean(flat)
    results, offset = [], 0
    for g in grads:
        results.append(flat[offset:offset + g.size].reshape(g.shape))
        offset += g.size
    return tuple(results)


def _allreduce_mean_scratch(attrs, *grads: TensorType):
    return (TensorType((sum(size_of(g.shape) for g in grads),), grads[0].dtype),)


def _allreduce_mean_into(be, attrs, out, *grads):
    # Every gradient is copied into one flat buffer so that the ranks exchange it in a single
    # all-reduce: one message per step, not one per parameter.
    xp = be.xp
    *outputs, flat = out
    offset = 0
    for g in grads:
        xp.copyto(flat[offset:offset + g.size].reshape(g.shape), g)
        offset += g.size
    be.allreduce_mean(flat)
    offset = 0
    for target in outputs:
        xp.copyto(target, flat[offset:offset + target.size].reshape(target.shape))
        offset += target.size


register(OpDef("allreduce_mean", NoAttrs, _allreduce_mean_shape, _allreduce_mean_forward, None,
               is_gradient=True, forward_into=_allreduce_mean_into,
               scratch=_allreduce_mean_scratch,
               doc="each input averaged over the ranks of a data-parallel run, in one all-reduce"))
