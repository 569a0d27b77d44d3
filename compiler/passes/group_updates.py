"""One optimizer update for every parameter: the per-parameter update nodes that share an
update rule become one update_group node, placed where the last of them was (every gradient
is computed by then). The memory plan lays its parameters, gradients and optimizer state out
as consecutive pieces of flat buffers."""

from __future__ import annotations

from ..ir import Graph
from ..ops.optim import UPDATE_OPS, UpdateGroupAttrs
from .rewrite import Rewriter


def group_updates(graph: Graph) -> Graph:
    groups: dict = {}
    for node in graph.nodes:
        if node.op in UPDATE_OPS:
            groups.setdefault((node.op, node.attrs, node.inputs[2], node.inputs[3]), []).append(node)
    last = {id(members[-1]): key for key, members in groups.items()}
    grouped = {id(n) for members in groups.values() for n in members}
    rewriter = Rewriter(graph)
    for node in graph.nodes:
        if id(node) not in grouped:
            rewriter.keep(node)
        elif id(node) in last:
            _emit_group(rewriter, last[id(node)], groups[last[id(node)]])
    return rewriter.result()


def _emit_group(rewriter: Rewriter, key, members) -> None:
    op, attrs, lr, step = key
    slots = len(members[0].inputs) - 4
    inputs = ([m.inputs[0] for m in members] + [m.inputs[1] for m in members] + [lr, step]
              + [m.inputs[4 + k] for k in range(slots) for m in members])
    group_attrs = UpdateGroupAttrs(op, attrs, len(members), slots)
    outputs = rewriter.emit("update_group", inputs, group_attrs, None)
    count = len(members)
    for i, member in enumerate(members):
        rewriter.replace(member.outputs[0], outputs[i])
        for k in range(slots):
            rewriter.replace(member.outputs[1 + k], outputs[count + k * count + i])
