"""GraphBuilder: emits nodes into a Graph, running each op's shape rule as it goes."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

from .ir import Graph, Node, Origin, TensorType, Value
from .ops import REGISTRY
from .shapes import ShapeError


class CompileError(Exception):
    """A shape rule or a lowering check failed at a known place in the spec."""

    def __init__(self, origin: Origin | None, message: str):
        super().__init__(message)
        self.origin = origin
        self.message = message
        self.warnings: list[CompileWarning] = []  # found before the error, still worth showing


@dataclass
class CompileWarning:
    origin: Origin | None
    message: str


@dataclass
class GraphBuilder:
    graph: Graph = field(default_factory=Graph)
    origin: Origin | None = None
    warnings: list[CompileWarning] = field(default_factory=list)

    def input(self, name: str, type_: TensorType) -> Value:
        value = Value(type_, name=name)
        self.graph.inputs.append(value)
        return value

    def param(self, name: str, type_: TensorType) -> Value:
        value = Value(type_, name=name)
        self.graph.params.append(value)
        return value

    def state(self, name: str, type_: TensorType) -> Value:
        value = Value(type_, name=name)
        self.graph.state.append(value)
        return value

    @contextmanager
    def at(self, origin: Origin | None):
        """Nodes emitted inside carry `origin`; errors inside are reported there."""
        saved, self.origin = self.origin, origin
        try:
            yield
        finally:
            self.origin = saved

    def emit(self, op_name: str, *inputs: Value, attrs=None):
        op = REGISTRY[op_name]
        attrs = attrs if attrs is not None else op.attrs()
        try:
            types = op.shape(attrs, *(v.type for v in inputs))
        except ShapeError as error:
            raise CompileError(self.origin, str(error)) from None
        several = isinstance(types, tuple)
        outputs = tuple(Value(t) for t in (types if several else (types,)))
        self.graph.nodes.append(Node(op_name, tuple(inputs), attrs, outputs, self.origin))
        return outputs if several else outputs[0]

    def warn(self, message: str) -> None:
        self.warnings.append(CompileWarning(self.origin, message))
