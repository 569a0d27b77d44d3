"""The planned executor's training step captured as one device graph per batch size, replayed
each step (docs/architecture.md, "Whole-step capture").

Every buffer a planned step touches is fixed by its memory plan, except the fed inputs (the
batch, the rate, the step count, the dropout key): each gets a fixed buffer of its own, into
which a run copies what it is fed, on the device, before the replay. State fed from outside
(the first step, a resume, a pruning mask) is copied into the executor's state buffer as the
planned executor does. Warm-up runs come first, uncaptured (kernels compiled, constants
cached); they update the state, which is then put back as it was.
"""

from __future__ import annotations

from typing import Any

from .executor import PlannedExecutor

WARMUP_RUNS = 2
MAX_GRAPHS = 2  # as the planned executor's plans: an epoch's last, smaller batch has its own


class CapturedExecutor:
    def __init__(self, planned: PlannedExecutor, capture, warmup_runs: int = WARMUP_RUNS):
        """capture: the backend's graph_capture() (warm(run), capture(run) -> .launch())."""
        self.planned, self.capture, self.warmup_runs = planned, capture, warmup_runs
        self.backend, self.state = planned.backend, planned.state
        self.steps: dict[int, _CapturedStep] = {}

    def run(self, feeds: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        batch = self.planned.batch_size(feeds)
        step = self.steps.get(batch)
        if step is None:
            step = self._captured(batch, feeds)
        self.planned.load_state(feeds)
        step.load(feeds)
        step.graph.launch()
        return dict(step.outputs), dict(step.updates)

    def held_bytes(self) -> int:
        """Memory the graphs hold in pools of their own (what the captured kernels allocated)."""
        return sum(getattr(step.graph, "held_bytes", lambda: 0)() for step in self.steps.values())

    def _captured(self, batch: int, feeds) -> "_CapturedStep":
        if len(self.steps) >= MAX_GRAPHS:
            self.steps.pop(next(iter(self.steps)))
        program = self.planned.program(batch)
        xp = self.backend.xp
        fixed = {name: xp.empty_like(feeds[name]) for _, name in program.fed if name in feeds}
        step = _CapturedStep(fixed, program)
        step.load(feeds)
        self.planned.load_state(feeds)
        saved = self.planned.state_buffer.copy()
        for _ in range(self.warmup_runs):
            self.capture.warm(lambda: program.run(fixed))
        xp.copyto(self.planned.state_buffer, saved)

        def captured_run():
            step.outputs, step.updates = program.run(fixed)

        step.graph = self.capture.capture(captured_run)
        self.steps[batch] = step
        return step


class _CapturedStep:
    """One batch size's graph, the fixed buffers it reads its inputs from, and the buffers
    its outputs and updates are in."""

    def __init__(self, fixed: dict, program):
        # The program's arena is memory the graph writes: held here, it outlives the planned
        # executor's own cache of programs.
        self.fixed, self.program = fixed, program
        self.graph = None
        self.outputs: dict = {}
        self.updates: dict = {}

    def load(self, feeds) -> None:
        for name, buffer in self.fixed.items():
            fed = feeds[name]
            if tuple(fed.shape) != buffer.shape or fed.dtype != buffer.dtype:
                raise ValueError(f"{name}: fed {fed.dtype}{list(fed.shape)}, but the captured "
                                 f"step reads {buffer.dtype}{list(buffer.shape)}")
            if fed is not buffer:
                buffer[...] = fed
