"""Batch segments (compiler/passes/batch_segments.py): runs of nodes that the planned executor
runs once per slice of the batch, the slices on the worker threads. A slice computes each of its
samples with the same calls as the whole batch would, and sums over the batch are taken on the
whole batch after the slices, so segments change no number: on batches too small for a
kernel's own split, the weights are those of one worker, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from plans import assert_places_apart, value_places
from stepping import train_steps

import nnrun
from nnrun.backends import base, numpy_backend
from nnrun.compiler.ops import SLICED, SUMMED, conv
from nnrun.compiler.passes import batch_segments as segments_pass
from nnrun.compiler.passes import optimize
from nnrun.compiler.passes.batch_segments import (batch_role, batch_segments, segment_spans,
                                                  widened)
from nnrun.compiler.passes.liveness import LiveRange, live_ranges
from nnrun.compiler.passes.memory_plan import plan_memory
from nnrun.runtime.executor import _SegmentRun
from nnrun.runtime.gradcheck import random_batch
from nnrun.runtime.model import Model
from nnrun.runtime.threads import thread_limit

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.yaml")) + sorted(
    (ROOT / "benchmarks" / "workloads").glob("*.yaml"))
LENET = ROOT / "benchmarks/workloads/lenet5.yaml"


@pytest.fixture
def segments_always_split(monkeypatch):
    """Every segment run by slices (however small), the slices on the workers; the kernels' and
    large products' own splits kept off (docs/architecture.md: those may round otherwise at
    another thread count, where BLAS's kernels give a product's rows or columns other numbers in
    a call, or on a thread, that gets fewer of them: OpenBLAS on AMD's Zen, measured)."""
    monkeypatch.setattr(segments_pass, "SEGMENT_MIN_BYTES", 0)
    monkeypatch.setattr(base.SPLIT_COSTS, "worth_splitting", lambda key: True)
    for module, name in ((base, "PARALLEL_MIN_BYTES"), (base, "PARALLEL_MIN_FLOPS"),
                         (numpy_backend, "PARALLEL_MIN_FLOPS")):
        monkeypatch.setattr(module, name, 1 << 62)


def _ops(graph, segment):
    return [graph.nodes[p].op for p in segment]


def test_lenet_forward_and_backward_convolutions_are_one_segment_each():
    model = nnrun.compile(str(LENET))
    step = model.step_executor.graph
    segments = batch_segments(step)
    forward, backward = segments[0], segments[-1]  # between them: the dense layers' own
    assert _ops(step, forward)[:2] == ["im2col", "conv_columns"]
    assert _ops(step, forward).count("im2col") == 2 and "matmul" not in _ops(step, forward)
    assert all(batch_role(step.nodes[p]) == SUMMED for p in backward
               if step.nodes[p].op == "matmul")
    # the second convolution's input gradient takes one product over the batch (batch-last
    # columns), which a slice would round otherwise: it parts the backward pass in two
    assert _ops(step, backward)[-1] == "conv_grad_weight_columns"
    assert "conv2d_grad_input" not in _ops(step, backward)
    roles = {step.nodes[p].op: batch_role(step.nodes[p]) for p in backward}
    assert roles["conv_grad_weight_columns"] == SUMMED and roles["bias_add_grad"] == SUMMED
    assert roles["max_pool_grad_index"] == SLICED
    inference = batch_segments(model.forward_executor.graph)[0]
    assert _ops(model.forward_executor.graph, inference)[-1] == "reshape"


def test_what_is_not_cut_by_samples_stays_out():
    """The loss and batch normalisation see the whole batch; a dense layer's product stays
    whole too (BLAS may round a product's rows otherwise when it gets fewer of them)."""
    model = nnrun.compile(str(ROOT / "specs/fashion-mnist-cnn.yaml"))
    graph = model.step_executor.graph
    inside = {graph.nodes[p].op for segment in batch_segments(graph) for p in segment
              if batch_role(graph.nodes[p]) == SLICED}
    assert inside.isdisjoint({"softmax_cross_entropy", "softmax_cross_entropy_grad",
                              "batch_norm_train", "channel_mean", "matmul", "update_group"})
    assert {"im2col", "conv_columns", "max_pool_index", "gelu_cdf", "gelu_grad_cdf"} <= inside


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_segments_on_three_workers_give_one_workers_weights_bit_for_bit(
        path, segments_always_split):
    results, ran = [], []
    for workers in (1, 3):
        model = nnrun.compile(str(path))
        x, y = random_batch(model, 10, np.random.default_rng(2))
        with thread_limit(workers):
            results.append(train_steps(model, x, y, steps=3))
        programs = model.step_executor.programs.values()
        ran.append(any(isinstance(step, _SegmentRun) for program in programs
                       for steps in program.sliced_steps.values() for step in steps))
    assert ran == [False, bool(batch_segments(model.step_executor.graph))]
    np.testing.assert_array_equal(results[0][0], results[1][0])
    for name, value in results[0][1].items():
        np.testing.assert_array_equal(value, results[1][1][name], err_msg=name)


WIDE_CONVOLUTION = """\
name: wide
seed: 0
model:
  input_shape: [32, 32, 32]
  layers:
    - {type: conv2d, filters: 4, kernel_size: 3, padding: 1, activation: relu}
    - {type: conv2d, filters: 4, kernel_size: 3, padding: 1}
    - {type: global_avgpool}
    - {type: dense, units: 3}
optimizer: {type: adam, lr: 0.01}
"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_weight_gradient_that_recomputes_its_columns_runs_by_slices(
        dtype, monkeypatch, segments_always_split):
    """The perf audit: with columns over 1 MiB a sample (the first convolution's, 32 channels
    by 9 by 32x32), a convolution's weight gradient (conv2d_grad_weight, columns rebuilt chunk
    by chunk) ran on one thread at any thread count (a 3x3 convolution at batch 8: 2.9x
    PyTorch's step). Its per-sample products now run with the slices, their sum on the whole
    batch after them: at 1 and 3 workers (a chunk of 2 samples, so chunks and slices part the
    batch differently) the weights are the same bit for bit, and the reference executor's to
    rounding."""
    monkeypatch.setattr(conv, "COLUMN_CHUNK_BYTES", 2 * 32 * 9 * 1024 * np.dtype(dtype).itemsize)
    results = []
    for workers in (1, 3):
        model = nnrun.compile(nnrun.load_spec_text(WIDE_CONVOLUTION, overrides=[
            f"dtype={dtype}"]))
        graph = model.step_executor.graph
        weight_grads = [p for p, node in enumerate(graph.nodes)
                        if node.op == "conv2d_grad_weight"]
        assert len(weight_grads) == 1 and all(
            batch_role(graph.nodes[p]) == SUMMED for p in weight_grads)
        assert all(any(p in segment for segment in batch_segments(graph)) for p in weight_grads)
        x, y = random_batch(model, 10, np.random.default_rng(3))
        with thread_limit(workers):
            results.append(train_steps(model, x, y, steps=3))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    for name, value in results[0][1].items():
        np.testing.assert_array_equal(value, results[1][1][name], err_msg=name)
    reference = Model(model.source, "numpy", optimized=False)
    expected = train_steps(reference, x, y, steps=3)[1]
    tolerance = 1e-4 if dtype == "float32" else 1e-10
    for name, value in expected.items():  # an entry near 0 to the largest one's rounding
        np.testing.assert_allclose(results[0][1][name], value, rtol=tolerance,
                                   atol=tolerance * np.abs(value).max(), err_msg=name)


def test_inference_by_segments_gives_the_same_predictions(segments_always_split):
    model = nnrun.compile(str(LENET))
    x, _ = random_batch(model, 9, np.random.default_rng(5))
    params = model.init_params(0)
    predictions = []
    for workers in (1, 2):
        with thread_limit(workers):
            predictions.append(np.array(model.forward(params, x)))
    np.testing.assert_array_equal(predictions[0], predictions[1])


@pytest.mark.parametrize("chunk_bytes", [conv.COLUMN_CHUNK_BYTES, 150_000])
def test_inference_convolutions_take_their_columns_by_chunks(chunk_bytes, monkeypatch,
                                                             segments_always_split):
    """Forward-only, LeNet-5's convolutions stay conv2d ops that build their columns a chunk
    of samples at a time (150 kB: one sample for the first, two for the second, a short last
    chunk in a slice of 3): the reference executor's predictions, bit for bit, at 1 and 3
    workers (slices of 3, 4 and 4 samples), in float32 and float64; the plan holds a chunk's
    columns, not the batch's, and never more than the batch's."""
    monkeypatch.setattr(conv, "COLUMN_CHUNK_BYTES", chunk_bytes)
    for dtype in ("float32", "float64"):
        model = nnrun.compile(str(LENET), overrides=[f"dtype={dtype}"])
        graph = model.forward_executor.graph
        assert [n.op for n in graph.nodes if "conv" in n.op or "im2col" in n.op] == ["conv2d"] * 2
        x, _ = random_batch(model, 11, np.random.default_rng(6))
        params = model.init_params(0)
        reference = Model(model.source, "numpy", optimized=False).forward(params, x)
        for workers in (1, 3):
            with thread_limit(workers):
                np.testing.assert_array_equal(model.forward(params, x), reference)
        program = model.forward_executor.programs[11]
        assert any(isinstance(step, _SegmentRun) for step in program.sliced_steps[3])
    for batch in (1, 128):
        plan = plan_memory(nnrun.compile(str(LENET)).forward_executor.graph, batch=batch)
        columns = [scratch[0].nbytes for node, scratch in zip(graph.nodes, plan.scratch)
                   if node.op == "conv2d"]
        whole = [25 * 784 * 4 * batch, 150 * 100 * 4 * batch]
        assert all(c <= min(w, 2 * chunk_bytes) for c, w in zip(columns, whole)), columns


@pytest.mark.parametrize("path", [LENET, ROOT / "specs/fashion-mnist-cnn.yaml",
                                  ROOT / "specs/residual-block.yaml",
                                  ROOT / "specs/fcn-segmentation.yaml"], ids=lambda p: p.stem)
def test_a_segments_places_never_overlap_while_any_slice_may_use_them(path,
                                                                    segments_always_split):
    """The slices of a segment run at the same time: a place the node order would free and
    reuse inside the segment must stay its own until the segment ends, scratch included."""
    graph = optimize(nnrun.compile(str(path)).train_step.graph)
    plan = plan_memory(graph, batch=6)
    assert plan.segments == batch_segments(graph) and plan.segments
    spans = segment_spans(plan.segments)
    ranges = widened(live_ranges(graph), spans)
    places = value_places(graph, plan, ranges)
    for position, scratch in enumerate(plan.scratch):
        live = LiveRange(*spans.get(position, (position, position)))
        places += [(place, live) for place in scratch]
    assert_places_apart(places)


def test_widened_ranges_cover_the_segments_they_reach_into():
    spans = segment_spans([range(3, 6)])
    ranges = widened({1: LiveRange(0, 4), 2: LiveRange(4, 4), 3: LiveRange(5, 9),
                      4: LiveRange(-1, 2), 5: LiveRange(0, 10)}, spans)
    assert ranges == {1: LiveRange(0, 5), 2: LiveRange(3, 5), 3: LiveRange(3, 9),
                      4: LiveRange(-1, 2), 5: LiveRange(0, 10)}


def test_segments_too_small_to_pay_for_a_wake_up_run_node_by_node_and_cost_no_memory():
    graph = optimize(nnrun.compile(str(LENET)).train_step.graph)
    small, large = plan_memory(graph, batch=2), plan_memory(graph, batch=128)
    assert small.segments == [] and len(large.segments) >= 2
    assert all(s in batch_segments(graph) for s in large.segments)


def test_a_backend_without_host_threads_plans_no_segments_and_shares_their_places():
    from nnrun.backends.numpy_backend import NumpyBackend
    from nnrun.runtime.executor import PlannedExecutor

    class OneStream(NumpyBackend):  # as the CuPy backend: one stream orders the launches
        host_threads = False

    graph = nnrun.compile(str(LENET)).forward_executor.graph
    with_threads = PlannedExecutor(graph, NumpyBackend()).plan(128)
    on_one_stream = PlannedExecutor(graph, OneStream()).plan(128)
    assert with_threads.segments and not on_one_stream.segments
    assert on_one_stream.arena_bytes < with_threads.arena_bytes
    assert on_one_stream.arena_bytes == plan_memory(graph, 128, segments=False).arena_bytes


def test_a_step_on_blas_threads_runs_node_by_node(monkeypatch):
    """The MLP at batch 1024 runs its products on BLAS's threads (runtime/executor.py
    _threads_for): its segments would take the cores BLAS's busy-waiting threads hold."""
    runs, run_segment = [], _SegmentRun.__call__

    def counted(self, env):
        runs.append(base.current_step_threads())
        run_segment(self, env)

    monkeypatch.setattr(_SegmentRun, "__call__", counted)
    model = nnrun.compile(str(ROOT / "benchmarks/workloads/mlp.yaml"))
    x, y = random_batch(model, 1024, np.random.default_rng(0))
    feeds = model.step_feeds(model.train_state(), x, y, 1e-6, 1, 0)
    with thread_limit(2):
        for _ in range(4):
            model.step_executor.run(feeds)
    (program,) = model.step_executor.programs.values()
    assert program.threads == {2: base.BLAS_THREADS}
    assert runs and set(runs) == {base.WORKER_THREADS}  # the first run only, which counts


def test_many_threads_cut_a_segment_into_slices_worth_their_calls():
    """Each slice calls every node of its segment from Python, under the GIL: at 16 threads
    LeNet-5's segments ran as 16 slices of 8 samples (20 KiB a node for the smallest), and the
    step took 43% longer than on one slice. A slice now holds MIN_NODE_SLICE_BYTES a node, two
    slices at least, one per thread at most."""
    from nnrun.runtime.executor import MIN_NODE_SLICE_BYTES, slice_count

    assert slice_count(2, 0, 5) == 2  # two threads split as before
    assert slice_count(16, 5 * MIN_NODE_SLICE_BYTES * 3, 5) == 3
    assert slice_count(16, 10**12, 5) == 16
    model = nnrun.compile(str(LENET))
    x, y = random_batch(model, 128, np.random.default_rng(0))
    with thread_limit(16):
        train_steps(model, x, y, steps=1)
    (program,) = model.step_executor.programs.values()
    counts = [step.count for step in program.sliced_steps[16] if isinstance(step, _SegmentRun)]
    assert len(counts) == 3 and max(counts) < 16 and min(counts) == 2
