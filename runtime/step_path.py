"""Which executor runs a model's graph: a captured CUDA graph, the uncaptured planned executor,
or the reference executor (docs/architecture.md, "Whole-step capture on a GPU").

On a backend whose planned and captured paths have not been verified on its device
(`check_first_step`, CuPy), the first run at each batch size is a self-check: the graph once
on the reference executor and once on the chosen path, from copies of the same state and
feeds. When the chosen path raises, or its outputs or updates differ beyond the tolerance, one
warning line says so and the next path takes over: captured, then planned, then reference.
Entries that a nudge of the batch at rounding level moves beyond the tolerance on NumPy alone
are not compared (runtime/agreement.py, `rounding_sensitive`): two correct executors
differ there as much.
"""

from __future__ import annotations

from typing import Any, Callable

from nnrun.backends import CaptureUnavailable
from nnrun.notices import warn

from .agreement import named_results, relative_difference

TOLERANCE = 1e-4  # relative, float32: as check-backends
DESCRIPTIONS = {"captured": "a captured CUDA graph",
                "planned": "the uncaptured planned executor",
                "reference": "the reference executor"}


def step_paths(backend, graph: bool, warn=warn) -> list[str]:
    """The paths to try, best first. A reason capture cannot work here, known ahead, is said
    in one line (with graph=False, or on a backend without graphs, nothing is said)."""
    paths = ["planned", "reference"]
    if not graph:
        return paths
    try:
        capture = backend.graph_capture()
    except Exception as error:  # noqa: BLE001 - CaptureUnavailable, or any failure to set up
        reason = error if isinstance(error, CaptureUnavailable) else _described(error)
        warn(f"no CUDA-graph capture ({reason}); using {DESCRIPTIONS['planned']}")
        return paths
    return paths if capture is None else ["captured", *paths]


class CheckedStep:
    """An executor (run(feeds) -> outputs, updates) that picks its path: for the training step,
    and for the forward and evaluation graphs."""

    def __init__(self, paths: list[str], build: Callable[[str], Any], check: bool,
                 what: str = "the training step", warn=warn, sensitive=None, agree=None):
        """build(path) -> that path's executor; check: the self-check at each new batch size;
        what: the graph, for the warning lines; sensitive(host feeds) -> {result name: mask}
        of the entries not to compare; agree(ok) -> whether every rank of a data-parallel job
        is ok (alone: ok)."""
        self.paths, self.build, self.check, self.warn = list(paths), build, check, warn
        self.agree = agree or (lambda ok: ok)
        self.sensitive = sensitive or (lambda feeds: {})
        self.what = what
        self.fallbacks: list[str] = []  # each path dropped, and why (check-backends fails)
        self.checked_batches: set[tuple] = set()
        self._reference = None
        self.executor = self._built()

    @property
    def path(self) -> str:
        return self.paths[0]

    @property
    def state(self) -> dict:
        return getattr(self.executor, "state", {})

    def held_bytes(self) -> int:
        return getattr(self.executor, "held_bytes", lambda: 0)()

    def run(self, feeds: dict) -> tuple[dict, dict]:
        key = _batch_key(feeds)
        if not self.check or self.path == "reference" or key in self.checked_batches:
            return self.executor.run(feeds)
        result = self._checked_run(feeds)
        self.checked_batches.add(key)
        # The check's copies and the reference executor's values are gone now; a device's
        # pool would keep their memory cached (on LeNet-5 at batch 1024, as much again as
        # the step's own) for the rest of the run.
        self.backend.release_cached_memory()
        return result

    def _checked_run(self, feeds: dict) -> tuple[dict, dict]:
        be = self.backend
        pristine = {name: be.xp.array(value, copy=True) for name, value in feeds.items()}
        want = self._reference_executor().run(dict(pristine))
        wanted = named_results(want, be.to_host)
        skip = None  # the entries rounding alone moves: found only when something differs

        def difference_from(have_host):
            nonlocal skip
            if _first_difference(wanted, have_host, {}) is None:
                return None
            if skip is None:
                skip = self.sensitive({name: be.to_host(v) for name, v in pristine.items()})
            return _first_difference(wanted, have_host, skip)

        while self.path != "reference":
            try:
                have = self.executor.run(dict(pristine))
                difference = difference_from(named_results(have, be.to_host))
            except Exception as error:  # noqa: BLE001 - any failure of an unverified path
                difference = f"raised {_described(error)}"
            else:
                if difference is not None:
                    difference = f"differs from the reference executor ({difference})"
            difference = self._agreed(difference, "failed on another rank")
            if difference is None:
                return have
            self._fall_back(f"{difference} on its first run")
        self.executor = self._reference
        return want

    def _fall_back(self, why: str) -> None:
        self._drop_path(why)
        self.executor = self._built()

    def _drop_path(self, why: str) -> None:
        """The next path takes over from the current one, which `why` says failed."""
        failed = self.paths.pop(0)
        self.fallbacks.append(f"{self.what} on {DESCRIPTIONS[failed]} {why}")
        self.warn(f"{self.fallbacks[-1]}; using {DESCRIPTIONS[self.path]}")

    def _built(self):
        """The current path's executor; a path that fails to build falls back too."""
        while self.path != "reference":
            try:
                executor, failure = self.build(self.path), None
            except Exception as error:  # noqa: BLE001 - any failure of an unverified path
                if not self.check:
                    raise
                executor, failure = None, f"could not be built ({_described(error)})"
            failure = self._agreed(failure, "could not be built on another rank")
            if failure is None:
                return executor
            self._drop_path(failure)
        return self._reference_executor()

    def _agreed(self, failure: str | None, elsewhere: str) -> str | None:
        """In a data-parallel run, every rank's step runs the same collectives and must take
        the same path: a path that fails on one rank is dropped on all (`elsewhere` saying
        why on those where it worked). Alone, `failure` as it is."""
        if not self.check or self.agree(failure is None):
            return failure
        return failure or elsewhere

    def _reference_executor(self):
        """The reference executor, built once: the check's measure and the last path."""
        if self._reference is None:
            self._reference = self.build("reference")
        return self._reference

    @property
    def backend(self):
        return self.executor.backend


def _batch_key(feeds: dict) -> tuple:
    x = feeds.get("x")
    return tuple(x.shape) if x is not None else ()


def _first_difference(want: dict, have: dict, skip: dict) -> str | None:
    """The first output or updated state beyond the tolerance, as 'name: difference', leaving
    out the entries masked in `skip`."""
    for name, value in want.items():
        if name not in have:
            if name.startswith("output "):
                continue  # an output the optimized graph does not keep
            return f"{name}: missing"
        difference = relative_difference(value, have[name], skip=skip.get(name))
        if not difference <= TOLERANCE:
            return f"{name}: relative difference {difference:.1e} > {TOLERANCE:.0e}"
    return None


def _described(error: Exception) -> str:
    """An exception in one line: its type and its message's first line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
