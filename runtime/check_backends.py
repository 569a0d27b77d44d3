"""`nnrun check-backends`: one training step through two backends, op by op.

The reference backend (NumPy) runs the step graph and keeps every value. Each op then runs on
the candidate backend with the reference's own inputs, so a difference is the op's, not one
carried in from an earlier op: the first op whose output differs beyond tolerance is the one to
look at. Two graphs are checked, each op as the executors run it:

- the plain step graph (forward, loss, backward, update), each op's `forward`;
- the optimized step graph, each op's `forward_into` where it has one (the kernels the
  memory-planned executor runs), written into fresh buffers.

Then the whole step runs on the candidate's own executor, and its loss and updated state are
compared with the reference's: what a training run on that backend would compute. Values that
a nudge of the batch at rounding level already moves beyond tolerance on NumPy alone
(`rounding_sensitive`: a bias before a batchnorm, whose gradient is rounding noise that Adam
turns into a full step) are listed apart, not compared.

Op by op likewise: the entries of an op's output that a nudge of its inputs at rounding level
moves beyond tolerance (a sum that cancels, such as a bias gradient of rounding noise) are not
compared.

Dropout's masks come from a counter-based hash that every backend computes alike
(compiler/ops/norm.py), so they are compared like any other output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nnrun.backends import get_backend
from nnrun.compiler.ir import Graph, Node, TensorType
from nnrun.compiler.ops import REGISTRY
from nnrun.compiler.ops.common import array_type
from nnrun.compiler.passes import optimize
from nnrun.compiler.passes.dead_code import eliminate_dead_code

from .agreement import relative_difference, rounding_sensitive, sensitive_entries
from .gradcheck import random_batch
from .model import Model


@dataclass
class OpDifference:
    position: int
    op: str
    layer: str  # "" for the loss and the optimizer
    where: str  # the spec path, e.g. "model.layers[2]"
    output: str  # "%14"
    shape: tuple
    difference: float  # max |candidate - reference| / max(max |reference|, tiny)

    def describe(self) -> str:
        layer = f" of layer {self.layer} ({self.where})" if self.layer else ""
        return (f"op {self.position} '{self.op}'{layer}, output {self.output} "
                f"{list(self.shape)}: relative difference {self.difference:.2e}")


@dataclass
class GraphCheck:
    name: str
    ops: list[OpDifference] = field(default_factory=list)

    def failures(self, tolerance: float) -> list[OpDifference]:
        return [d for d in self.ops if d.difference > tolerance]

    def largest(self) -> OpDifference | None:
        return max(self.ops, key=lambda d: d.difference) if self.ops else None


@dataclass
class BackendCheck:
    reference: str
    candidate: str
    executor: str  # the candidate's path for the whole step: captured, planned or reference
    batch_size: int
    dtype: str
    tolerance: float
    graphs: list[GraphCheck]
    whole_step: dict[str, float]  # output or updated state name -> relative difference
    # name -> how many of its entries are not compared (rounding-sensitive, see above)
    rounding_sensitive: dict[str, int] = field(default_factory=dict)
    # what did not run as the candidate's default path would: a path of the whole step that
    # failed its first-step check (captured -> planned), a kernel that failed its self-check.
    # Its results then agree, through the slower code that took over; the check still fails.
    fallbacks: list[str] = field(default_factory=list)

    @property
    def first_failure(self) -> tuple[GraphCheck, OpDifference] | None:
        for graph in self.graphs:
            failures = graph.failures(self.tolerance)
            if failures:
                return graph, failures[0]
        return None

    @property
    def whole_step_failures(self) -> dict[str, float]:
        return {k: v for k, v in self.whole_step.items() if v > self.tolerance}

    @property
    def agree(self) -> bool:
        return self.first_failure is None and not self.whole_step_failures and not self.fallbacks

    def as_json(self) -> dict:
        first = self.first_failure
        return {
            "reference": self.reference, "candidate": self.candidate,
            "executor": self.executor, "batch_size": self.batch_size, "dtype": self.dtype,
            "tolerance": self.tolerance, "agree": self.agree,
            "first_difference": None if first is None else {"graph": first[0].name,
                                                             **_op_json(first[1])},
            "graphs": {g.name: [_op_json(d) for d in g.ops] for g in self.graphs},
            "whole_step": {name: _json_number(v) for name, v in self.whole_step.items()},
            "rounding_sensitive": self.rounding_sensitive,
            "fallbacks": self.fallbacks,
        }


def _op_json(d: OpDifference) -> dict:
    return {"position": d.position, "op": d.op, "layer": d.layer, "where": d.where,
            "output": d.output, "shape": list(d.shape),
            "difference": _json_number(d.difference)}


def _json_number(value: float) -> float | None:
    """JSON has no infinity (Python would write `Infinity`, which strict parsers refuse): an
    array that differs in shape, in an integer entry or where it is not finite is `null`."""
    return value if np.isfinite(value) else None


def check_backends(source, candidate="cupy", batch_size: int = 8, tolerance: float = 1e-4,
                   seed: int = 0) -> BackendCheck:
    """`source`: a checked spec. `candidate`: a backend name or a backend object (tests pass a
    deliberately broken one). NumPy's reference executor is the reference."""
    model = Model(source, "numpy", optimized=False)
    other = get_backend(candidate) if isinstance(candidate, str) else candidate
    x, y = random_batch(model, batch_size, np.random.default_rng(seed))
    feeds = _first_step_feeds(model, x, y, seed)
    step = eliminate_dead_code(model.train_step.graph)
    graphs = [GraphCheck("step graph", _compare_ops(step, feeds, model.backend, other, False,
                                                    tolerance)),
              GraphCheck("optimized step", _compare_ops(optimize(step), feeds, model.backend,
                                                        other, True, tolerance))]
    candidate_model = Model(source, other)
    want = _run_step(model, x, y, seed)
    first = {**{f"output {name}": value for name, value in want[0].items()}, **want[1]}
    sensitive = {_whole_step_name(name): mask for name, mask in
                 rounding_sensitive(model.train_step.graph, feeds, tolerance, first).items()}
    whole = _compare_whole_step(want, candidate_model, x, y, seed, sensitive)
    return BackendCheck(model.backend.name, other.name,
                        candidate_model.step_path, batch_size,
                        model.spec.dtype, tolerance, graphs, whole,
                        {name: int(mask.sum()) for name, mask in sorted(sensitive.items())},
                        [*candidate_model.step_fallbacks, *other.failed_kernels()])


def _compare_ops(graph: Graph, feeds: dict, reference, candidate, into: bool,
                 tolerance: float) -> list:
    graph.renumber()
    env = {id(leaf): feeds[leaf.name] for leaf in graph.leaves() if leaf.name in feeds}
    results = []
    for position, node in enumerate(graph.nodes):
        inputs = [env[id(v)] for v in node.inputs]
        forward = REGISTRY[node.op].forward

        def run(arrays: dict) -> dict:
            return dict(enumerate(_as_tuple(forward(reference, node.attrs, *arrays.values()))))

        expected = run(dict(enumerate(inputs)))
        sensitive = sensitive_entries(run, dict(enumerate(inputs)), tolerance, first=expected)
        got = _run_on(candidate, node, inputs, into)
        for index, (value, have) in enumerate(zip(node.outputs, got)):
            want = expected[index]
            results.append(_difference(position, node, value, want, have, sensitive.get(index)))
            env[id(value)] = want
    return results


def _run_on(backend, node: Node, inputs: list, into: bool) -> tuple:
    """The node's op on `backend`, fed copies of the reference's inputs; host arrays out."""
    op = REGISTRY[node.op]
    arrays = [backend.from_host(np.array(a, copy=True)) for a in inputs]
    if into and op.forward_into is not None and not op.view:
        types = [array_type(a) for a in arrays]
        outputs = [backend.xp.empty(tuple(ref.shape), dtype=ref.dtype)
                   for ref in _output_shapes(op, node, types)]
        scratch = [backend.xp.empty(t.shape, dtype=t.dtype)
                   for t in (op.scratch(node.attrs, *types) if op.scratch else ())]
        op.forward_into(backend, node.attrs, (*outputs, *scratch), *arrays)
        result = tuple(outputs)
    else:
        result = _as_tuple(op.forward(backend, node.attrs, *arrays))
    return tuple(np.asarray(backend.to_host(r)) for r in result)


def _output_shapes(op, node: Node, types: list) -> list[TensorType]:
    shapes = op.shape(node.attrs, *types)
    return list(shapes) if isinstance(shapes, tuple) else [shapes]


def _as_tuple(result) -> tuple:
    return result if isinstance(result, tuple) else (result,)


def _difference(position: int, node: Node, value, want, have, skip) -> OpDifference:
    origin = node.origin
    return OpDifference(position, node.op, origin.layer if origin else "",
                        origin.path if origin else "", value.ref(), tuple(np.shape(want)),
                        relative_difference(want, have, skip=skip))


def _compare_whole_step(reference: tuple, candidate: Model, x, y, seed: int,
                        skip: dict) -> dict:
    """The candidate's training step on its own executor, from the state and batch of the
    reference's (`reference`: its _run_step): the loss, the gradient norms logged, and every
    updated parameter and optimizer state (without the rounding-sensitive entries in `skip`,
    name -> mask)."""
    want, want_updates = reference
    have, have_updates = _run_step(candidate, x, y, seed)
    names = [n for n in want if n == "loss" or n.startswith("grad_norm")]
    differences = {n: relative_difference(want[n], have[n], skip=skip.get(n)) for n in names}
    differences.update({n: relative_difference(want_updates[n], have_updates[n],
                                               skip=skip.get(n)) for n in want_updates})
    return differences


def _whole_step_name(name: str) -> str:
    return name[len("output "):] if name.startswith("output ") else name


def _first_step_feeds(model: Model, x, y, seed: int) -> dict:
    return model.step_feeds(model.train_state(seed), x, y, lr=0.01, step=1, seed=seed)


def _run_step(model: Model, x, y, seed: int) -> tuple[dict, dict]:
    """The first training step on the model's own executor: outputs and updates, on the host."""
    def copy(array):
        return np.array(model.backend.to_host(array), copy=True)

    outputs, updates = model.step_executor.run(_first_step_feeds(model, x, y, seed))
    return ({k: copy(v) for k, v in outputs.items()}, {k: copy(v) for k, v in updates.items()})
