"""The graph IR: typed values, nodes that define them, and graphs of nodes in topological order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BATCH = "B"  # the symbolic batch size in shapes

Dim = int | str


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def concrete(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else d for d in self.shape)

    def text(self) -> str:
        short = {"float32": "f32", "float64": "f64", "int64": "i64", "bool": "bool", "rng": "rng"}
        return f"{short.get(self.dtype, self.dtype)}[{','.join(str(d) for d in self.shape)}]"


@dataclass(frozen=True)
class Origin:
    """Where a node came from in the spec, so that any later error can point at the YAML."""

    path: str  # e.g. "model.layers[3]"
    layer: str = ""  # e.g. "conv2d_2"
    keys: tuple = ()  # the YAML node to point at, e.g. ("model", "layers", 3, "kernel_size")

    @classmethod
    def of_layer(cls, index: int, name: str = "") -> "Origin":
        """`model.layers[index]`, the layer called `name`."""
        return cls(f"model.layers[{index}]", name, ("model", "layers", index))

    def at_field(self, *keys) -> "Origin":
        return Origin(self.path, self.layer, (*self.keys, *keys))

    def where(self) -> str:
        return f"{self.path} ({self.layer})" if self.layer else self.path


@dataclass(eq=False)
class Value:
    type: TensorType
    name: str = ""  # set for graph inputs and parameters: "x", "conv2d_1.weight"
    index: int = -1  # stable number in the text form, given by Graph.renumber

    def ref(self) -> str:
        return f"%{self.name}" if self.name else f"%{self.index}"

    def __repr__(self) -> str:
        return f"{self.ref()}:{self.type.text()}"


@dataclass(eq=False)
class Node:
    op: str
    inputs: tuple[Value, ...]
    attrs: Any
    outputs: tuple[Value, ...]
    origin: Origin | None = None

    @property
    def output(self) -> Value:
        (value,) = self.outputs
        return value


@dataclass(eq=False)
class Graph:
    """inputs: fed per call (x, y, lr, ...); params: trainable weights; state: buffers and optimizer
    state carried between calls; outputs: named results; updates: new values for params/state."""

    inputs: list[Value] = field(default_factory=list)
    params: list[Value] = field(default_factory=list)
    state: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    outputs: dict[str, Value] = field(default_factory=dict)
    updates: dict[str, Value] = field(default_factory=dict)

    def leaves(self) -> list[Value]:
        return [*self.inputs, *self.params, *self.state]

    def leaf(self, name: str) -> Value:
        for value in self.leaves():
            if value.name == name:
                return value
        raise KeyError(name)

    def renumber(self) -> None:
        counter = 0
        for node in self.nodes:
            for value in node.outputs:
                value.index = counter
                counter += 1
