"""GraphBuilder: emits nodes into a Graph, running each op's shape rule as it goes."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

from .ir import Graph, Node, Origin, TensorType, Value
from .ops import REGISTRY
from .shapes import ShapeError, looks_channel_last, size_of

# Values in one tensor (per sample for the batch's values): 2**48 float32 values are 1 PiB.
MAX_VALUES = 2**48


class CompileError(Exception):
    """A shape rule or a lowering check failed at a known place in the spec."""

    def __init__(self, origin: Origin | None, message: str, of_shapes: bool = False):
        super().__init__(message)
        self.origin = origin
        self.message = message
        self.of_shapes = of_shapes  # a shape rule failed: the layers before shaped its input
        self.warnings: list[CompileWarning] = []  # found before the error, still worth showing
        self.lowered = None  # the model lowered up to the error (compiler/lower.py)
        self.more: list[CompileError] = []  # errors of branches beside it (compiler/lower.py)


@dataclass
class CompileWarning:
    origin: Origin | None
    message: str
    of_shapes: bool = False  # a window's geometry: its input's shape, the layers before made


@dataclass
class GraphBuilder:
    graph: Graph = field(default_factory=Graph)
    origin: Origin | None = None
    warnings: list[CompileWarning] = field(default_factory=list)
    # How an op's ShapeError becomes a diagnostic of the layer being lowered: the spec field
    # of each op attribute, and the layer's own advice for a wrong input shape.
    fields: dict[str, str] = field(default_factory=dict)
    input_hint: str = ""

    def input(self, name: str, type_: TensorType) -> Value:
        self._check_size(type_.shape[1:], "each input sample")
        value = Value(type_, name=name)
        self.graph.inputs.append(value)
        return value

    def param(self, name: str, type_: TensorType) -> Value:
        self._check_size(type_.shape, f"parameter {name}")
        value = Value(type_, name=name)
        self.graph.params.append(value)
        return value

    def state(self, name: str, type_: TensorType) -> Value:
        value = Value(type_, name=name)
        self.graph.state.append(value)
        return value

    @contextmanager
    def at(self, origin: Origin | None, fields: dict[str, str] | None = None,
           input_hint: str = ""):
        """Nodes emitted inside carry `origin`; errors inside are reported there, or at the
        field that `fields` gives for the op attribute at fault; `input_hint` is added to
        errors about the input's shape."""
        saved = self.origin, self.fields, self.input_hint
        self.origin, self.fields, self.input_hint = origin, fields or {}, input_hint
        try:
            yield
        finally:
            self.origin, self.fields, self.input_hint = saved

    def emit(self, op_name: str, *inputs: Value, attrs=None):
        op = REGISTRY[op_name]
        attrs = attrs if attrs is not None else op.attrs()
        types = self.shape(op_name, attrs, *(v.type for v in inputs), reads=inputs[0])
        several = isinstance(types, tuple)
        for type_ in types if several else (types,):
            self._check_size(type_.shape[1:], "each sample of its output")
        outputs = tuple(Value(t) for t in (types if several else (types,)))
        self.graph.nodes.append(Node(op_name, tuple(inputs), attrs, outputs, self.origin))
        return outputs if several else outputs[0]

    def shape(self, op_name: str, attrs, *types: TensorType, reads: Value):
        """The op's output type(s) for inputs of `types`; a shape error is reported as emit's
        (`reads`: the value of its first input, whose layers before it a hint may name)."""
        try:
            return REGISTRY[op_name].shape(attrs, *types)
        except ShapeError as error:
            raise CompileError(self._error_origin(error), self._error_message(error, reads),
                               of_shapes=True) from None

    def _check_size(self, shape, what: str) -> None:
        """Sizes no machine holds are errors here, before any array library sees them (NumPy
        would overflow its 64-bit sizes)."""
        values = size_of(shape)
        if values > MAX_VALUES:
            # in full while it reads as a number, not a page of digits (a units: of 5,000 digits)
            count = f"{values:,}" if values < 10**30 else f"a {len(str(values))}-digit number of"
            raise CompileError(self.origin, f"{what} would hold {count} values, more than "
                                            f"any machine can ({MAX_VALUES:,} at most); make "
                                            "it smaller")

    def _error_origin(self, error: ShapeError) -> Origin | None:
        """The field at fault; where it is a list of one entry per axis, the axis's entry (a
        single value for every axis is found as the field itself)."""
        field_name = self.fields.get(error.attribute)
        if not field_name or not self.origin:
            return self.origin
        axis = () if error.axis is None else (error.axis,)
        return self.origin.at_field(field_name, *axis)

    def _error_message(self, error: ShapeError, reads: Value) -> str:
        # an input no node made: the model's samples, with no layer before it to change
        made = any(reads is output for node in self.graph.nodes for output in node.outputs)
        text = error.text(shrunk_before=self._shrunk_before(reads))
        sample = list(reads.type.shape[1:])
        if not made and error.attribute is not None and len(sample) >= 3 \
                and looks_channel_last(sample):  # [8, 8, 1] read as 8 channels of 8 x 1
            moved = [sample[-1], *sample[:-1]]
            text = (f"{error.message}; the samples look channel-last ({sample}, read as "
                    f"{sample[0]} channels of {' x '.join(map(str, sample[1:]))}): give them "
                    f"as {moved} (numpy.moveaxis(x, -1, 1) in the file, or input_shape: "
                    f"{moved} where the spec declares it); if they are not, "
                    f"{error.own_hint or error.hint}")
        if error.attribute is not None or not self.input_hint:
            return text
        return f"{text}{', or ' if error.hint else '; '}{self.input_hint}"

    def _shrunk_before(self, value: Value) -> bool:
        """Whether a node that `value` depends on made a spatial axis smaller (a pool, a
        stride, a window without padding): a layer that could be removed to make it larger."""
        producers = {id(output): node for node in self.graph.nodes for output in node.outputs}
        waiting, seen = [value], set()
        while waiting:
            node = producers.get(id(waiting.pop()))
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if _shrinks(node):
                return True
            waiting.extend(node.inputs)
        return False

    def warn(self, message: str) -> None:
        self.warnings.append(CompileWarning(self.origin, message))

    def warn_of_shapes(self, message: str) -> None:
        """A warning of the input's shape at the layer (the overrides that shaped it are named
        with it, as with a shape error)."""
        self.warnings.append(CompileWarning(self.origin, message, of_shapes=True))


def _shrinks(node) -> bool:
    """Whether the node's output has a spatial axis smaller than its input's."""
    if not node.inputs or not node.outputs:
        return False
    before, after = node.inputs[0].type.shape, node.outputs[0].type.shape
    return len(before) == len(after) >= 3 and any(
        out < size for out, size in zip(after[2:], before[2:]))
