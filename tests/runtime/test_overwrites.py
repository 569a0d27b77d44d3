"""Values written over (OpDef.overwrites, compiler/passes/memory_plan.py): an elementwise op
takes the place of an input that no later node reads, so that the data stays in the cache and
the arena is smaller. The numbers are those of the plain executor (test_compiled_step.py);
here, where the plan does it and where it must not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnrun
from nnrun.backends.numpy_backend import NumpyBackend
from nnrun.compiler.builder import GraphBuilder
from nnrun.compiler.ir import BATCH, TensorType
from nnrun.compiler.ops import REGISTRY, SLICED
from nnrun.compiler.ops.linear import ScaleAttrs
from nnrun.compiler.passes import batch_segments as segments_pass
from nnrun.compiler.passes import memory_plan
from nnrun.compiler.passes.liveness import live_ranges
from nnrun.compiler.passes.memory_plan import plan_memory

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
MLP = ROOT / "benchmarks/workloads/mlp.yaml"


def test_a_dense_layers_bias_goes_into_a_place_of_its_own():
    """Added in place, a broadcast bias makes NumPy allocate a buffer at each call (the step
    allocates nothing: issue 7); copied into another place and added there, it does not, and
    runs as fast. The product's place is free again once the bias is added."""
    graph = nnrun.compile(str(MLP)).forward_executor.graph
    plan = plan_memory(graph, 128)
    biased = [node for node in graph.nodes if node.op in ("bias_activation", "bias_add")]
    assert len(biased) == 3
    for node in biased:
        assert id(node.output) not in plan.overwrites
        assert plan.values[id(node.output)] != plan.values[id(node.inputs[0])]
    # the arena: the first layer's product and activation, side by side; the later ones fit
    assert plan.arena_bytes == 2 * memory_plan._aligned(128 * 256 * 4)


@pytest.mark.parametrize("segments", [False, True], ids=["node-by-node", "segments"])
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_a_value_is_written_over_only_when_nothing_reads_it_afterwards(path, segments,
                                                                       monkeypatch):
    """Written over only by the node that reads it last, with the output's type; in a batch
    segment, never when a node that runs after the slices (a sum) reads it or a view of it."""
    if segments:
        monkeypatch.setattr(segments_pass, "SEGMENT_MIN_BYTES", 0)
    model = nnrun.compile(str(path))
    for graph in (model.step_executor.graph, model.forward_executor.graph):
        plan = plan_memory(graph, 6)
        ranges = live_ranges(graph)
        viewed = {id(n.output): id(n.inputs[0]) for n in graph.nodes if REGISTRY[n.op].view}
        segment_of = {p: s for s in plan.segments for p in s}
        for position, node in enumerate(graph.nodes):
            output = node.outputs[0]
            if id(output) not in plan.overwrites:
                continue
            op = REGISTRY[node.op]
            over = [node.inputs[i] for i in op.overwrites
                    if plan.values.get(id(node.inputs[i])) == plan.values[id(output)]]
            assert over, node.op
            value = over[0]
            assert ranges[id(value)].end == position and value.type == output.type
            for p in segment_of.get(position, ()):
                reader = graph.nodes[p]
                reads = {id(v) for v in reader.inputs} | {viewed.get(id(v)) for v in reader.inputs}
                if id(value) in reads:
                    assert segments_pass.batch_role(reader) == SLICED, reader.op


def test_no_place_is_taken_over_a_value_that_a_segments_sum_reads_through_a_view(monkeypatch):
    """digits-augmented's second convolution: relu_grad reads the forward activation last in
    node order, but the weight gradient of the next dense layer, a sum run after the slices,
    reads it too (as its reshape); writing over it would change that gradient."""
    monkeypatch.setattr(segments_pass, "SEGMENT_MIN_BYTES", 0)
    graph = nnrun.compile(str(ROOT / "specs/digits-augmented.yaml")).step_executor.graph
    plan = plan_memory(graph, 10)
    activations = [n.output for n in graph.nodes if n.op == "bias_activation"]
    over = set(plan.overwrites.values())
    reshaped = [n for n in graph.nodes if n.op == "reshape" and n.inputs[0] is activations[1]]
    assert reshaped and id(activations[1]) not in over


@pytest.mark.parametrize("gradient, written_over", [("tanh_grad", False), ("relu_grad", True)])
def test_a_value_read_at_an_input_the_op_does_not_allow_is_not_written_over(gradient,
                                                                            written_over):
    """tanh_grad(g, y) may write over y only: given y as g too, its first product would be
    taken over the value it has just overwritten. relu_grad allows both of its inputs."""
    gb = GraphBuilder()
    x = gb.input("x", TensorType((BATCH, 5), "float32"))
    y = gb.emit("tanh", gb.emit("scale", x, attrs=ScaleAttrs(2.0)))
    gb.graph.outputs["dy"] = gb.emit(gradient, y, y)
    plan = plan_memory(gb.graph, 4)
    assert (id(gb.graph.outputs["dy"]) in plan.overwrites) == written_over


@pytest.mark.parametrize("shape", [(7,), (3, 5), (128, 6, 14, 14), (40000,), (3, 70001)])
def test_relu_into_gives_maximum_with_zero(shape):
    """NumpyBackend.relu_into takes its zeros from a block a chunk at a time: any size, in
    place or not, contiguous or not, NaN and infinities as np.maximum(x, 0)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[:4] = [np.nan, np.inf, -np.inf, 0.0]
    want = np.maximum(x, 0)
    be = NumpyBackend()
    y = np.full_like(x, 7)
    be.relu_into(x, y)
    np.testing.assert_array_equal(y, want)
    in_place = x.copy()
    be.relu_into(in_place, in_place)
    np.testing.assert_array_equal(in_place, want)
    if x.ndim > 1:
        strided = np.full_like(x.swapaxes(0, -1), 7)
        be.relu_into(x.swapaxes(0, -1), strided)
        np.testing.assert_array_equal(strided, want.swapaxes(0, -1))


def test_bias_add_over_its_input_gives_the_bias_added_elsewhere():
    be = NumpyBackend()
    rng = np.random.default_rng(1)
    for shape in [(5, 3), (4, 3, 6, 6), (2, 3, 9)]:
        x, b = rng.standard_normal(shape), rng.standard_normal(shape[1])
        want = np.empty_like(x)
        be.bias_add_into(x, b, want)
        in_place = x.copy()
        be.bias_add_into(in_place, b, in_place)
        np.testing.assert_array_equal(in_place, want)
        np.testing.assert_array_equal(want, x + b.reshape(-1, *(1,) * (x.ndim - 2)))


def test_planning_a_long_chain_asks_each_nodes_batch_role_a_bounded_number_of_times(tmp_path,
                                                                                      monkeypatch):
    """Every overwrite asked the roles of its whole segment again: 2,500 layers took 90 s of
    validate (a hostile-input audit)."""
    def asked_roles(layers: int) -> int:
        spec = tmp_path / f"chain{layers}.yaml"
        spec.write_text("model:\n  input_shape: [64]\n  layers:\n"
                        + "    - {type: relu}\n" * layers + "    - {type: dense, units: 2}\n"
                        + "loss: mse\n")
        graph = nnrun.compile(str(spec)).step_executor.graph
        calls = []
        role = segments_pass.batch_role
        monkeypatch.setattr(segments_pass, "batch_role", lambda node: calls.append(1) or role(node))
        monkeypatch.setattr(segments_pass, "SEGMENT_MIN_BYTES", 0)
        plan = plan_memory(graph, 8)
        monkeypatch.undo()
        assert plan.segments and plan.overwrites  # the case at issue: chains in segments
        return len(calls) / len(graph.nodes)

    assert asked_roles(400) < 1.2 * asked_roles(100)
