"""Back-propagation as a graph transformation: walk the nodes backwards and emit, for each,
the ops of its gradient rule; gradients reaching one value from several uses are added."""

from __future__ import annotations

from .builder import CompileError, GraphBuilder
from .ir import Value
from .ops import REGISTRY


def append_backward(gb: GraphBuilder, loss: Value, wrt: list[Value]) -> dict[str, Value]:
    """Emits d loss / d v for every v in `wrt` into gb's graph; returns them by value name."""
    grads = backward(gb, loss, wrt)
    return {v.name: grads[id(v)] for v in wrt if id(v) in grads}


def backward(gb: GraphBuilder, loss: Value, wrt: list[Value]) -> dict[int, Value]:
    """As append_backward, for values with or without a name: gradients by id(value)."""
    needed = _values_on_path(gb, wrt)
    grads: dict[int, Value] = {id(loss): gb.emit("ones_like", loss)}
    for node in reversed(list(gb.graph.nodes)):
        incoming = [grads.get(id(v)) for v in node.outputs]
        if all(g is None for g in incoming) or not any(id(v) in needed for v in node.inputs):
            continue
        op = REGISTRY[node.op]
        if op.vjp is None:
            raise CompileError(node.origin, f"op '{node.op}' has no gradient rule"
                               " (gradient, update and pass-emitted ops have none)")
        with gb.at(node.origin):
            input_grads = op.vjp(gb, node, incoming[0] if len(incoming) == 1 else incoming)
        for value, grad in zip(node.inputs, input_grads):
            if grad is not None and id(value) in needed:
                grads[id(value)] = _accumulate(gb, grads.get(id(value)), grad)
    return grads


def _values_on_path(gb: GraphBuilder, wrt: list[Value]) -> set[int]:
    """Values that depend on some `wrt` value: only their gradients are worth computing."""
    depends = {id(v) for v in wrt}
    for node in gb.graph.nodes:
        if any(id(v) in depends for v in node.inputs):
            depends.update(id(v) for v in node.outputs)
    return depends


def _accumulate(gb: GraphBuilder, existing: Value | None, grad: Value) -> Value:
    return grad if existing is None else gb.emit("add", existing, grad)

