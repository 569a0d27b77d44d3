"""`nnrun export --format onnx`: an inference graph, its weights and the input preprocessing as one
ONNX model.

The export walks the same op graph that `predict` runs (the model's forward graph, inference
mode). Each op's ONNX form sits beside its record in compiler/ops (`OpDef.onnx`, or
`OpDef.onnx_refusal` saying why it has none); this file only names values, turns parameters into
initializers, puts the preprocessing in front and declares inputs and outputs. The `onnx`
package is imported only here, and only when a model is built (the `nnrun[onnx]` extra).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .ir import BATCH, Graph, Node, Value
from .ops import RANGE_KEEPING, REGISTRY

OPSET = 17  # ONNX 1.12 (2022): onnxruntime >= 1.13, and most converters and runtimes since
INPUT_NAME = "input"  # raw samples [batch, *input_shape], before the preprocessing
OUTPUT_NAME = "prediction"  # the last layer's output after its activation, as `predict` gives
BATCH_DIM = "batch"  # the symbolic batch axis of the input and the output
EXTRA_HINT = "pip install 'nnrun[onnx]'"


PROTOBUF_BYTES = 2**31  # one protobuf message (a serialized model) is shorter than this
ONNX_MOST_BYTES = PROTOBUF_BYTES - 2**20  # its initializers: less room for the graph itself


class ExportError(Exception):
    """The graph cannot be exported: one line naming the op, its layer and the reason."""


class MissingExtra(ExportError):
    pass


@dataclass(frozen=True)
class InputPreprocessing:
    """What `predict` does to raw inputs before the model sees them, as plain arrays:
    (x - shift) / scale (shift subtracted in float64, as the data pipeline does), then a fixed
    permutation of each sample's flattened features."""

    shift: np.ndarray | None = None
    scale: np.ndarray | None = None
    permutation: np.ndarray | None = None


def onnx_module():
    try:
        import onnx
    except ImportError:
        raise MissingExtra(f"ONNX export needs the onnx extra: {EXTRA_HINT}") from None
    return onnx


def require_extra() -> None:
    """Both packages of the extra, checked before any work is done."""
    onnx_module()
    _onnxruntime("ONNX export needs onnxruntime to check the model")


def _onnxruntime(missing: str):
    """onnxruntime, or MissingExtra (`missing`: what needs it). Out of memory (an address-space
    limit, ulimit -v) its import or its session fails with the system's words: a MemoryError
    then, not advice to install what is installed, nor an internal error."""
    try:
        import onnxruntime
    except ImportError as error:
        if _out_of_memory(error):
            raise MemoryError(str(error)) from None
        raise MissingExtra(f"{missing}: {EXTRA_HINT}") from None
    return onnxruntime


def _out_of_memory(error: Exception) -> bool:
    """The system's or onnxruntime's words for an allocation that failed (ENOMEM is 12)."""
    return bool(re.search(r"cannot allocate memory|failed to allocate memory|failed to map "
                          r"segment|out of memory|error code: 12\b", str(error), re.IGNORECASE))


class OnnxBuilder:
    """What an op's lowering emits through: `ox.inputs(node)` gives the ONNX names of its
    inputs, `ox.emit` adds an ONNX node, `ox.constant` an initializer, `ox.refuse` stops the
    export with a reason."""

    def __init__(self, onnx, dtype: str):
        self.onnx = onnx
        self.dtype = np.dtype(dtype)
        self.nodes: list = []
        self.initializers: list = []
        self.names: dict[Value, str] = {}
        self.taken: set[str] = set()
        self.prefix = ""  # the layer being lowered: names its nodes and values
        self.node: Node | None = None

    def inputs(self, node: Node) -> list[str]:
        return [self.names[value] for value in node.inputs]

    def emit(self, op_type: str, *inputs: str, outputs: int = 1, **attributes) -> Any:
        names = [self._fresh(f"{self.prefix}{op_type}") for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(
            op_type, list(inputs), names, name=self._fresh(f"{self.prefix}{op_type}_node"),
            **attributes))
        return names[0] if outputs == 1 else tuple(names)

    def constant(self, values, dtype: str | None = None, name: str = "") -> str:
        """An initializer: a float array in the graph's dtype unless `dtype` says otherwise."""
        array = np.asarray(values, dtype=dtype or self.dtype)
        unique = self._fresh(name or f"{self.prefix}constant")
        self.initializers.append(self.onnx.numpy_helper.from_array(array, unique))
        return unique

    def ints(self, values) -> str:
        return self.constant(list(values), "int64")

    def refuse(self, reason: str):
        raise ExportError(_refusal_text(self.node, reason))

    def _fresh(self, name: str) -> str:
        candidate, count = name, 1
        while candidate in self.taken:
            count += 1
            candidate = f"{name}_{count}"
        self.taken.add(candidate)
        return candidate


def _refusal_text(node: Node, reason: str) -> str:
    where = f"layer {node.origin.where()}" if node.origin else "the graph"
    return f"cannot export {where} to ONNX: op '{node.op}': {reason}"


def export_graph(graph: Graph, params: dict[str, np.ndarray], dtype: str,
                 preprocessing: InputPreprocessing | None = None, name: str = "nnrun",
                 probes: dict[str, Value] | None = None):
    """The forward graph as an onnx.ModelProto: input INPUT_NAME (raw samples), output
    OUTPUT_NAME, parameters as initializers under their nnrun names (conv2d_1.weight, ...).
    `probes` (output name -> value) adds those values as outputs, to find where two runs
    part (layer_outputs)."""
    onnx = onnx_module()
    weights = sum(np.asarray(array).size for array in params.values()) * np.dtype(dtype).itemsize
    if weights >= ONNX_MOST_BYTES:
        raise ExportError(f"the model's weights take {weights / 2**30:.1f} GB, and an ONNX file "
                          "(one protobuf message) holds at most 2 GB; make the model smaller")
    ox = OnnxBuilder(onnx, dtype)
    (x,) = [value for value in graph.inputs if value.name == "x"]
    probes = probes or {}
    ox.taken.update((INPUT_NAME, OUTPUT_NAME, *probes))
    ox.names[x] = _preprocess(ox, INPUT_NAME, x, preprocessing or InputPreprocessing())
    for value in (*graph.params, *graph.state):
        ox.names[value] = ox.constant(params[value.name], name=value.name)
    for node in graph.nodes:
        _lower_node(ox, node)
    output = graph.outputs[OUTPUT_NAME]
    ox.prefix = ""
    ox.nodes.append(onnx.helper.make_node("Identity", [ox.names[output]], [OUTPUT_NAME],
                                          name="prediction_node"))
    for probe, value in probes.items():
        ox.nodes.append(onnx.helper.make_node("Identity", [ox.names[value]], [probe],
                                              name=ox._fresh(f"{probe}_node")))
    return _model(ox, x, {OUTPUT_NAME: output, **probes}, name)


def _lower_node(ox: OnnxBuilder, node: Node) -> None:
    op = REGISTRY[node.op]
    if op.onnx is None:
        raise ExportError(_refusal_text(
            node, op.onnx_refusal or "it has no ONNX lowering yet (OpDef.onnx in compiler/ops)"))
    ox.node = node
    ox.prefix = f"{node.origin.layer}/" if node.origin and node.origin.layer else ""
    names = op.onnx(ox, node)
    for value, onnx_name in zip(node.outputs, (names,) if isinstance(names, str) else names):
        ox.names[value] = onnx_name


def _preprocess(ox: OnnxBuilder, x: str, value: Value, pre: InputPreprocessing) -> str:
    ox.prefix = "preprocessing/"
    if pre.shift is not None:
        # As Normalizer.apply: the shift subtracted in float64, the result cast, then divided.
        wide = ox.emit("Cast", x, to=ox.onnx.TensorProto.DOUBLE)
        centred = ox.emit("Sub", wide, ox.constant(pre.shift, "float64", "preprocessing/shift"))
        x = ox.emit("Cast", centred, to=_elem_type(ox.onnx, ox.dtype))
        x = ox.emit("Div", x, ox.constant(pre.scale, name="preprocessing/scale"))
    if pre.permutation is not None:
        sample = value.type.shape[1:]
        flat = ox.emit("Flatten", x, axis=1) if len(sample) > 1 else x
        x = ox.emit("Gather", flat, ox.constant(pre.permutation, "int64",
                                                "preprocessing/permutation"), axis=1)
        if len(sample) > 1:
            x = ox.emit("Reshape", x, ox.ints((0, *sample)))
    return x


def _elem_type(onnx, dtype) -> int:
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _model(ox: OnnxBuilder, x: Value, outputs: dict[str, Value], name: str):
    onnx, helper = ox.onnx, ox.onnx.helper
    graph = helper.make_graph(
        ox.nodes, name,
        [helper.make_tensor_value_info(INPUT_NAME, _elem_type(onnx, ox.dtype), _dims(x))],
        [helper.make_tensor_value_info(output_name, _elem_type(onnx, value.type.dtype),
                                       _dims(value)) for output_name, value in outputs.items()],
        ox.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="nnrun", doc_string=f"{name}, exported by nnrun")
    # The oldest IR version that OPSET needs, so that older runtimes load the file.
    model.ir_version = 8
    return model


def _dims(value: Value) -> list:
    return [BATCH_DIM if d == BATCH else d for d in value.type.shape]


def layer_outputs(graph: Graph) -> dict[str, Value]:
    """Each layer's output (its last node's), by layer name, in the graph's order."""
    outputs: dict[str, Value] = {}
    for node in graph.nodes:
        if node.origin and node.origin.layer:
            outputs.pop(node.origin.layer, None)  # keeps the order of the layers' ends
            outputs[node.origin.layer] = node.outputs[0]
    return outputs


def check_model(model) -> None:
    """onnx's own checker, with shape inference (full_check)."""
    onnx = onnx_module()
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        first = str(error).strip().splitlines()[0]
        raise ExportError(f"the exported model fails onnx.checker ({first}); this is a bug in "
                          "nnrun's ONNX lowerings, please report it") from None


def run_onnxruntime(model, x: np.ndarray) -> np.ndarray:
    """The model's prediction for raw inputs `x`, computed by onnxruntime on the CPU."""
    return run_onnxruntime_outputs(model, x, [OUTPUT_NAME])[0]


def run_onnxruntime_outputs(model, x: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    """The model's named outputs for raw inputs `x`, computed by onnxruntime on the CPU."""
    onnxruntime = _onnxruntime("checking the export needs onnxruntime")
    try:
        session = onnxruntime.InferenceSession(model.SerializeToString(),
                                               providers=["CPUExecutionProvider"])
        return session.run(outputs, {INPUT_NAME: x})
    except Exception as error:  # onnxruntime's own (Fail, RuntimeException) derive from it
        if _out_of_memory(error):
            raise MemoryError(str(error).strip().splitlines()[-1]) from None
        raise


def output_scale(graph: Graph) -> float:
    """The scale below which outputs are compared absolutely: 1 for probabilities (a sigmoid or
    softmax, then maybe a flatten, pooling or upsampling), whose natural scale it is (a
    saturated sigmoid's outputs near 1e-34 carry its logits' rounding, 1e-7 of the logit, as
    their relative error), 0 otherwise."""
    producers = {value: node for node in graph.nodes for value in node.outputs}
    node = producers.get(graph.outputs[OUTPUT_NAME])
    while node is not None and node.op in RANGE_KEEPING:
        node = producers.get(node.inputs[0])
    return 1.0 if node is not None and node.op in ("sigmoid", "softmax") else 0.0


def relative_error(result: np.ndarray, reference: np.ndarray,
                   least_scale: float = 0.0) -> float:
    """max |result - reference| / max |reference|: the largest difference, relative to the
    output's scale (an output near zero is compared at that scale, not its own), or to
    `least_scale` where that is larger."""
    if not reference.size:
        return 0.0
    scale = max(float(np.max(np.abs(reference))), least_scale)
    difference = float(np.max(np.abs(result.astype(np.float64) - reference)))
    return difference / scale if scale > 0 else difference
