"""Running a graph on a backend.

`Executor` is the reference: each node's plain forward, every value a new array, freed after
its last use. `PlannedExecutor` runs an optimized graph on the static memory plan: every value
and scratch buffer has its place in one arena allocated once per batch size, nodes write into
their places (`forward_into`), and updated state (parameters, optimizer state) lives in buffers
the executor owns and updates in place. In the steady state a step allocates nothing.

Both take feeds by name and return (outputs, updates) by name. The planned executor's results
are views of its own buffers, valid until its next run; a state array it returned may be fed
back as it is (it is then not copied).
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import numpy as np

from nnrun.backends import base
from nnrun.compiler.ir import BATCH, Graph
from nnrun.compiler.ops import REGISTRY, SLICED
from nnrun.compiler.passes.batch_segments import batch_axis, batch_role, scratch_types
from nnrun.compiler.passes.liveness import last_uses
from nnrun.compiler.passes.memory_plan import MemoryPlan, plan_memory, sliced_bytes, state_layout

from .memory import available_memory


class Executor:
    def __init__(self, graph: Graph, backend):
        self.graph = graph
        self.backend = backend
        self.plan = [(REGISTRY[node.op].forward, node, [id(v) for v in frees])
                     for node, frees in zip(graph.nodes, last_uses(graph))]

    def run(self, feeds: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """feeds: every input, param and state by name -> (outputs, updates) by name."""
        env = {id(leaf): feeds[leaf.name] for leaf in self.graph.leaves() if leaf.name in feeds}
        be, xp = self.backend, self.backend.xp
        for forward, node, frees in self.plan:
            result = forward(be, node.attrs, *(env[id(v)] for v in node.inputs))
            # Update ops return a tuple (new param, *new state) even when it has one entry.
            results = result if isinstance(result, tuple) else (result,)
            for value, array in zip(node.outputs, results):
                env[id(value)] = xp.asarray(array)
            for value_id in frees:
                env.pop(value_id, None)
        outputs = {name: env[id(v)] for name, v in self.graph.outputs.items()}
        updates = {name: env[id(v)] for name, v in self.graph.updates.items()}
        return outputs, updates


class PlannedExecutor:
    def __init__(self, graph: Graph, backend, max_plans: int = 2):
        self.graph = graph
        self.backend = backend
        self.layout = state_layout(graph)
        self.max_plans = max_plans  # an epoch's last, smaller batch gets a plan of its own
        self.programs: dict[int, _Program] = {}
        # The kind of threads each first run chose, by (batch, workers), kept when a plan is
        # let go for memory and made again. A training step's choice is by workers alone, for
        # every batch size's plan: its first run is the full batch's (in a run and when it is
        # resumed), and a later plan (the epoch's last, smaller batch) then neither counts
        # again nor copies the state to undo its run. An evaluation's plans choose each for
        # itself: a run's validation batches come first there, a new process's test batches.
        self.threads: dict = {}
        xp = backend.xp
        self.state_buffer = xp.empty(max(self.layout.nbytes, 1), dtype=xp.uint8)
        self.state = {name: _view(self.state_buffer, place)  # views of one buffer, by name
                      for name, place in self.layout.places.items()}

    def plan(self, batch: int) -> MemoryPlan:
        return self.program(batch).plan

    def run(self, feeds: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        program = self.program(self.batch_size(feeds))
        self.load_state(feeds)
        return program.run(feeds)

    def batch_size(self, feeds) -> int:
        for leaf in self.graph.inputs:
            if leaf.type.shape and leaf.type.shape[0] == BATCH and leaf.name in feeds:
                return int(feeds[leaf.name].shape[0])
        return 1

    def program(self, batch: int) -> "_Program":
        program = self.programs.get(batch)
        if program is None:
            if len(self.programs) >= self.max_plans:
                self.programs.pop(next(iter(self.programs)))
            plan = plan_memory(self.graph, batch, segments=self.backend.host_threads)
            if self.programs and plan.arena_bytes > available_memory(self.backend)[0]:
                self.programs.clear()  # the other batch size's arena goes first: planned again
            program = self.programs[batch] = _Program(self.graph, self.backend, plan, self.state,
                                                        self.threads)
        return program

    def load_state(self, feeds) -> None:
        """Updated state lives in the executor's buffer; a fed array that is not already that
        buffer's view is copied in (the first step, a resume, a pruning mask applied)."""
        for name, target in self.state.items():
            fed = feeds[name]
            if fed is not target:
                if tuple(fed.shape) != target.shape:
                    raise ValueError(f"{name}: fed shape {tuple(fed.shape)}, expected "
                                     f"{target.shape}")
                self.backend.xp.copyto(target, fed)


class _Program:
    """One batch size's plan: its arena, and each node bound to its output and scratch views.
    Only the fed inputs (and views of them) change from run to run."""

    def __init__(self, graph: Graph, backend, plan: MemoryPlan, state: dict,
                 threads: dict | None = None):
        self.graph, self.backend, self.plan, self.state = graph, backend, plan, state
        self.threads = {} if threads is None else threads  # see PlannedExecutor.threads
        # what a choice of threads is kept under: the workers, with the batch size where the
        # graph updates no state (nothing to undo)
        self.choice = (lambda count: count) if graph.updates else \
            (lambda count: (plan.batch, count))
        xp = backend.xp
        self.arena = xp.empty(max(plan.arena_bytes, 1), dtype=xp.uint8)
        self.env = {key: _view(self.arena, place) for key, place in plan.values.items()}
        self.env.update({id(leaf): state[leaf.name] for leaf in graph.leaves()
                         if leaf.name in state})
        self.env.update({key: state[name] for key, name in plan.in_place.items()})
        self.fed = [(id(leaf), leaf.name) for leaf in graph.leaves() if leaf.name not in state]
        self.dynamic = {key for key, _ in self.fed}  # fed anew each run, or views of those
        self.node_steps = [self._step(node, self.env, self._scratch(position), self.dynamic)
                           for position, node in enumerate(graph.nodes)]
        self.steps = [step for steps in self.node_steps for step in steps]
        self.sliced_steps: dict[int, list] = {}  # by worker count: segments run by slices

    def _scratch(self, position) -> tuple:
        return tuple(_view(self.arena, place) for place in self.plan.scratch[position])

    def _step(self, node, env, scratch, dynamic: set) -> list:
        """The node as a list of calls step(env) (none for a view made once here), its outputs
        and scratch the buffers in `env` and `scratch` (a segment's slice binds its own)."""
        op, be = REGISTRY[node.op], self.backend
        inputs = _reader(id(v) for v in node.inputs)
        if op.view:
            if not dynamic.intersection(id(v) for v in node.inputs):  # a view made once
                env[id(node.output)] = op.forward(be, node.attrs, *inputs(env))
                return []
            dynamic.add(id(node.output))
            return [_view_step(op.forward, be, node.attrs, inputs, id(node.output))]
        outputs = tuple(env[id(v)] for v in node.outputs)
        if op.forward_into is None:
            return [_copy_step(op.forward, be, node.attrs, inputs, outputs)]
        buffers = (*outputs, *scratch)
        if op.bind is not None:
            bound = op.bind(be, node.attrs, buffers,
                            *(None if id(v) in dynamic else env[id(v)] for v in node.inputs))
            if bound is not None:
                return [lambda env: bound(*inputs(env))]
        function, attrs = op.forward_into, node.attrs
        if (op.batch_parallel and _batch_first(node)
                and all(b.ndim and b.shape[0] == self.plan.batch for b in buffers)
                and sum(b.nbytes for b in buffers) >= base.PARALLEL_MIN_BYTES):
            batched = [bool(v.type.shape) and v.type.shape[0] == BATCH for v in node.inputs]
            return [lambda env: self._run_split(function, attrs, inputs(env), buffers, batched)]
        return [self._call(node, function, env, scratch)]

    def _call(self, node, function, env, scratch):
        """A step calling function(be, attrs, (*outputs, *scratch), *inputs)."""
        be, attrs, inputs = self.backend, node.attrs, _reader(id(v) for v in node.inputs)
        buffers = (*(env[id(v)] for v in node.outputs), *scratch)
        return lambda env: function(be, attrs, buffers, *inputs(env))

    def run(self, feeds) -> tuple[dict, dict]:
        xp, env = self.backend.xp, self.env
        for key, name in self.fed:
            env[key] = feeds.get(name)
        count = base.workers()
        if count > 1 and self.choice(count) not in self.threads:
            self._first_run(count, env, feeds)
        else:
            self._run_steps(count, self.threads.get(self.choice(count), base.WORKER_THREADS),
                            env)
        for name, value in self.plan.copied_updates.items():
            xp.copyto(self.state[name], env[id(value)])
        outputs = {name: env[id(v)] for name, v in self.graph.outputs.items()}
        return outputs, {name: self.state[name] for name in self.graph.updates}

    def _run_steps(self, count: int, kind: str, env) -> None:
        steps = self.steps
        # A step on BLAS's threads runs node by node: a segment's slices would take the cores
        # BLAS's busy-waiting threads hold (the same numbers either way).
        if (count > 1 and self.plan.segments and self.plan.batch >= count
                and kind == base.WORKER_THREADS):
            steps = self.sliced_steps.get(count) or self._sliced(count)
        saved = self.backend.begin_short_buffers()  # NumPy's per-call buffers kept small
        threads = base.swap_step_threads(kind)
        try:
            for step in steps:
                step(env)
        finally:
            base.swap_step_threads(threads)
            self.backend.end_short_buffers(saved)

    def _first_run(self, count: int, env, feeds) -> None:
        """The first run at `count` threads (of the executor, or of this batch size's plan:
        PlannedExecutor.threads), on nnrun's workers, counts the work that chooses the threads.
        Where that choice is BLAS's threads, whose products round otherwise, the run is undone
        (what it wrote over the state put back) and run again on them: every run at a thread
        count then rounds alike, and a resumed run, or `nnrun eval` in a new process, gives the
        numbers of a run that never stopped. Not in a data-parallel step: its reductions would
        run twice on this rank, and once on a rank of one thread; nor on a device, whose
        products take no host threads (and whose run may be being captured)."""
        xp = self.backend.xp
        again = self.backend.rank_count() == 1 and self.backend.host_threads
        written = ({name: self._undo_copy(name, feeds) for name in set(self.plan.in_place.values())}
                   if again else {})
        before = base.work_counters()
        self._run_steps(count, base.WORKER_THREADS, env)
        kind = self.threads[self.choice(count)] = _threads_for(before, base.work_counters())
        if again and kind != base.WORKER_THREADS:
            for name, value in written.items():
                xp.copyto(self.state[name], value)
            self._run_steps(count, kind, env)

    def _undo_copy(self, name: str, feeds):
        """The state's values before the run: the array it was just loaded from where that is
        apart from the executor's buffers and arena (the first step's initial values, a resume's
        checkpoint), which the run leaves alone; otherwise a copy."""
        xp, fed = self.backend.xp, feeds.get(name)
        if fed is None or any(xp.may_share_memory(fed, buffer)
                              for buffer in (self.state[name].base, self.arena)):
            return xp.copy(self.state[name])
        return fed

    def _sliced(self, count: int) -> list:
        """The step with each batch segment run as one call over `count` slices of the batch
        (compiler/passes/batch_segments.py)."""
        steps, done = [], 0
        for segment in self.plan.segments:
            steps += [step for steps in self.node_steps[done:segment.start] for step in steps]
            nbytes = sliced_bytes(self.graph, segment, self.plan.batch)
            steps.append(_SegmentRun(self, segment, slice_count(count, nbytes, len(segment))))
            done = segment.stop
        steps += [step for steps in self.node_steps[done:] for step in steps]
        self.sliced_steps[count] = steps
        return steps

    def _run_split(self, function, attrs, arrays, buffers, batched) -> None:
        """A batch_parallel op on slices of its batch axis, one per worker."""
        be = self.backend
        if base.workers() < 2:
            function(be, attrs, buffers, *arrays)
            return

        def part(rows: slice) -> None:
            function(be, attrs, tuple(b[rows] for b in buffers),
                     *[a[rows] if is_batch else a for a, is_batch in zip(arrays, batched)])

        be.run_in_slices(part, self.plan.batch, sum(b.nbytes for b in buffers), site=function)


# Each slice of a segment calls every node of it from Python, about 20 us a call under the GIL,
# which the slices take in turn. One slice per thread made many cores slower than two: at 16
# threads LeNet-5's 5-node segments ran as 16 slices of 8 samples, 20 KiB a node per slice,
# and 16 slices one after another took 43% longer than one (18.7 against 13.1 ms a step).
MIN_NODE_SLICE_BYTES = 512 << 10


def slice_count(workers: int, nbytes: int, nodes: int) -> int:
    """How many slices a segment of `nodes` nodes writing `nbytes` runs as with `workers`
    threads: one per thread, but no more than leave each node a slice of MIN_NODE_SLICE_BYTES,
    and two at least (what two threads always took). The same for a given batch and thread
    count, so a run's numbers are too."""
    return max(2, min(workers, nbytes // (nodes * MIN_NODE_SLICE_BYTES)))


class _SegmentRun:
    """One batch segment as a step. Its SLICED nodes, and the per-sample part of its SUMMED
    nodes that have one (OpDef.batch_parts), are bound once per slice of the batch, each slice
    to views of its rows in every batched buffer (and to scratch of its own where a scratch
    buffer has no batch axis); run, the slices go to the workers where that pays, else one
    after the other here (the same calls either way, so the same numbers). The sums then run
    on the whole batch, as without slices: a sum over the batch taken in two halves would round
    otherwise than one taken at once, and a gradient that is nearly zero (a bias before batch
    normalisation) would then change sign with the thread count."""

    def __init__(self, program: _Program, segment: range, count: int):
        graph = program.graph
        nodes = {p: graph.nodes[p] for p in segment}
        sliced = [p for p in segment if batch_role(nodes[p]) == SLICED]
        parted = [p for p in segment if p not in sliced and REGISTRY[nodes[p].op].batch_parts]
        self.parted = set(parted)
        self.count, self.rows = count, base.batch_bounds(program.plan.batch, count)
        defined = {id(v) for p in sliced for v in nodes[p].outputs}
        # fed values (or views of them) read here but defined before: cut anew each run
        self.refreshed = {id(v): batch_axis(v.type) for p in sliced + parted
                          for v in nodes[p].inputs
                          if id(v) in program.dynamic and id(v) not in defined}
        in_slices = sorted(sliced + parted)
        self.envs = [self._slice_env(program, in_slices, rows) for rows in self.rows]
        self.slice_steps = [self._slice_steps(program, in_slices, env, index)
                            for index, env in enumerate(self.envs)]
        # then on the whole batch: the sums, and the views the rest of the step may read
        self.after = []
        for p in segment:
            if p in parted:
                whole = REGISTRY[nodes[p].op].batch_parts[1]
                self.after.append(program._call(nodes[p], whole, program.env,
                                                program._scratch(p)))
            elif p not in sliced or REGISTRY[nodes[p].op].view:
                self.after += program.node_steps[p]
        self.site = (id(program), segment.start)
        self.nbytes = sliced_bytes(graph, segment, program.plan.batch)

    def _slice_env(self, program, positions, rows) -> dict:
        env = {}
        for position in positions:
            node = program.graph.nodes[position]
            for value in (*node.inputs, *node.outputs):
                key = id(value)
                if key not in self.refreshed and key in program.env:
                    env[key] = _rows_of(program.env[key], batch_axis(value.type), rows)
        return env

    def _slice_steps(self, program, positions, env, index) -> list:
        dynamic, steps = set(self.refreshed), []
        for position in positions:
            node = program.graph.nodes[position]
            scratch = self._scratch(program, position, index)
            if position not in self.parted:
                steps += program._step(node, env, scratch, dynamic)
            else:  # the per-sample part of a sum
                each_slice = REGISTRY[node.op].batch_parts[0]
                steps.append(program._call(node, each_slice, env, scratch))
        return steps

    def _scratch(self, program, position, index) -> tuple:
        node, xp = program.graph.nodes[position], program.backend.xp
        types = scratch_types(node)  # symbolic: which of them have a batch axis
        return tuple(_rows_of(buffer, batch_axis(type_), self.rows[index])
                     if batch_axis(type_) is not None
                     else buffer if index == 0 else xp.empty_like(buffer)
                     for buffer, type_ in zip(program._scratch(position), types))

    def __call__(self, env) -> None:
        for key, axis in self.refreshed.items():
            for own, rows in zip(self.envs, self.rows):
                own[key] = _rows_of(env[key], axis, rows)
        base.count_split(self.nbytes)
        if base.splitting() or not base.split_where_it_pays(
                self._run_slices, self.count, self.rows[-1].stop, site=self.site):
            self._run_slices(slice(0, self.count))
        for step in self.after:
            step(env)

    def _run_slices(self, part: slice) -> None:
        for index in range(part.start, part.stop):
            env = self.envs[index]
            for step in self.slice_steps[index]:
                step(env)


def _rows_of(array, axis: int | None, rows: slice):
    if axis is None:
        return array
    return array[(slice(None),) * axis + (rows,)]


# A step runs its kernels and large products on nnrun's workers when its kernels large enough
# to split move at least this many bytes per flop of its large products; otherwise the products
# dominate, and run faster on BLAS's own threads (kernels then stay on one thread). Measured at
# 2 threads, training steps: LeNet-5 at batch 128 (0.32 bytes per flop) took 11.9 ms on the
# workers, 12.8 ms on BLAS's threads; the MLP at batch 1024 (0.0023) 10.0 ms against 8.3 ms.
WORKERS_MIN_BYTES_PER_FLOP = 0.03


def _threads_for(before: tuple[int, int], after: tuple[int, int]) -> str:
    """The kind of threads for a step, from the work counted during its first run."""
    split_bytes, product_flops = (a - b for a, b in zip(after, before))
    if split_bytes >= WORKERS_MIN_BYTES_PER_FLOP * product_flops:
        return base.WORKER_THREADS
    return base.BLAS_THREADS


def _reader(keys):
    """env -> the arrays at `keys`, as a tuple (the steps' inputs)."""
    keys = tuple(keys)
    if len(keys) == 1:
        (key,) = keys
        return lambda env: (env[key],)
    return itemgetter(*keys) if keys else lambda env: ()


def _view_step(forward, be, attrs, inputs, output):
    def step(env):
        env[output] = forward(be, attrs, *inputs(env))

    return step


def _copy_step(forward, be, attrs, inputs, outputs):
    """An op without a forward_into: its result copied into its planned buffers."""
    def step(env):
        result = forward(be, attrs, *inputs(env))
        for target, array in zip(outputs, result if isinstance(result, tuple) else (result,)):
            be.xp.copyto(target, array)

    return step


def _batch_first(node) -> bool:
    """Every value of the node that has the batch axis has it first (not batch-last values,
    compiler/passes/batch_last_layers.py): a split along axis 0 is then a split of the batch."""
    return all(BATCH not in v.type.shape or v.type.shape[0] == BATCH
               for v in (*node.inputs, *node.outputs))


def _view(arena, place):
    return (arena[place.offset:place.offset + place.nbytes].view(np.dtype(place.dtype))
            .reshape(place.shape))
