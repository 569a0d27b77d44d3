"""nnrun: a declarative neural-network compiler and runner.

    import nnrun
    model = nnrun.compile("spec.yaml")
    params = model.init_params(seed=0)
    y = model.forward(params, x)      # the last layer's outputs, after its activation
    loss, grads = model.loss_and_grads(params, x, y_true)
    result = nnrun.train("spec.yaml", backend="numpy", out_dir="runs/x")
    run = nnrun.load_run("runs/x")   # a trained run: its final checkpoint and preprocessing
    y = run.predict(raw_x)           # raw_x as the dataset gives it
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import contextmanager
from numbers import Integral, Real
from os import PathLike
from pathlib import Path

__version__ = "0.1.0"


def _source(spec, overrides=()):
    """A SourceSpec from a path, a Spec, a SourceSpec or a mapping (the YAML's data), with
    `overrides` applied."""
    from nnrun.compiler.frontend import (SourceSpec, load_spec, load_spec_data,
                                         with_overrides, yaml_text_not_a_path)
    from nnrun.compiler.schema import Spec

    from nnrun.compiler.loader import override_list

    overrides = override_list(overrides)
    if isinstance(spec, Mapping):
        return load_spec_data(spec, overrides)
    if not isinstance(spec, (Spec, SourceSpec, str, PathLike)):
        raise TypeError(f"spec must be a file path, a Spec, a SourceSpec or a mapping "
                        f"(nnrun.load_spec_text reads YAML text), got {type(spec).__name__}")
    if isinstance(spec, Spec):
        from nnrun.compiler.frontend import source_spec
        from nnrun.compiler.loader import Loaded

        # The plain data stands in for the YAML, so a run directory's spec.yaml is complete.
        spec = source_spec(spec, Loaded("<spec>", spec.model_dump(mode="json", exclude_none=True), {}))
    if isinstance(spec, SourceSpec):
        return with_overrides(spec, overrides)
    _refuse_empty("spec", spec, "give a spec file's path")
    if yaml_text_not_a_path(spec):
        raise TypeError("spec is YAML text, not a file path: give nnrun.load_spec_text(text)")
    return load_spec(Path(spec), overrides)


def compile(spec, backend: str = "numpy", overrides=(), graph: bool = True):  # noqa: A001
    """A Model from a spec file path, a Spec, or a SourceSpec. graph=False: on a GPU, the
    training step runs uncaptured (the planned executor) rather than as one CUDA graph."""
    from nnrun.runtime.model import Model, check_flags

    check_flags(graph=graph)
    source = _source(spec, overrides)
    with _backend_as_parameter():
        return Model(source, backend, graph=graph)


@contextmanager
def _backend_as_parameter():
    """The backends' "use --backend numpy" (the layer below cannot know who called it) as the
    API's parameter, backend='numpy'."""
    from nnrun.backends import BackendUnavailable

    try:
        yield
    except BackendUnavailable as error:
        raise BackendUnavailable(str(error).replace("--backend numpy", "backend='numpy'")) \
            from None


def train(spec, backend: str = "numpy", out_dir=None, overrides=(), epochs: int | None = None,
          batch_size: int | None = None, seed: int | None = None, distributed: bool = False,
          threads: int | None = None, distributed_timeout: float | None = None, **options):
    """Trains and returns the run's summary (also written to OUT_DIR/summary.json).
    `epochs`, `batch_size` and `seed` override the spec's, and `threads` sets the CPU
    kernels' threads, as the command's options do; distributed=True: this process is one rank
    of an MPI job (docs/distributed.md), whose ranks wait `distributed_timeout` seconds
    (default 300) for each other before they take one for dead."""
    from nnrun.compiler.loader import training_overrides
    from nnrun.runtime.model import check_flags
    from nnrun.notices import silenced
    from nnrun.runtime.options import TRAIN_PARAMETERS, named_as_parameters
    from nnrun.runtime.threads import thread_limit
    from nnrun.runtime.train import train as run_training

    if "ranks" in options and not hasattr(options["ranks"], "is_root"):  # the tests' own ranks
        raise TypeError("ranks is not an option: distributed=True joins this process's MPI job")
    for name, value, least in (("threads", threads, 1), ("epochs", epochs, 1),
                               ("batch_size", batch_size, 1), ("seed", seed, 0),
                               ("max_steps", options.get("max_steps"), 1)):
        _check_count(name, value, least)
    check_flags(distributed=distributed, **{name: options[name] for name in
                                             ("quiet", "allow_changes", "graph") if name in options})
    _check_run_options(out_dir, options)
    distributed_timeout = _checked_distributed_timeout(distributed_timeout, distributed)
    overrides = training_overrides(overrides, epochs, batch_size, seed)
    with silenced(options.get("quiet", False)):  # the spec's errors before MPI starts (its
        source = _ranks_source(spec, overrides, distributed)  # signal guard is then held)
    if distributed:
        from nnrun.runtime.distributed import DEFAULT_TIMEOUT_S, connect

        with _backend_as_parameter():
            options["ranks"] = connect(backend, distributed_timeout or DEFAULT_TIMEOUT_S)
    # the thread settings are the process's; quiet silences their warning too; errors name
    # this function's parameters, not the command's options
    with _ONE_TRAINING, silenced(options.get("quiet", False)), thread_limit(threads), \
            named_as_parameters(TRAIN_PARAMETERS), _backend_as_parameter():
        return run_training(source, backend=backend, out_dir=out_dir, **options)


def _ranks_source(spec, overrides, distributed: bool):
    """_source, whose errors every rank of a data-parallel job meets alike before the ranks
    meet: rank 0 raises them at once, a further rank after the delay that lets rank 0's end
    the job (as the command's are reported once, by rank 0)."""
    try:
        return _source(spec, overrides)
    except Exception:
        from nnrun.runtime.launcher import launched_rank, wait_for_rank_0

        if distributed and launched_rank() > 0:
            wait_for_rank_0()
        raise


def _check_count(name: str, value, least: int) -> None:
    """A count the command takes as an integer option (None: not given); what it refuses as a
    usage error is a ValueError. 1.0 is a whole number, but a float: its type is named."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be a whole number >= {least} given as an int, not the "
                         f"{type(value).__name__} {value!r}")
    if value < least:
        raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")


# Calls of train from several threads take turns: each sets the process's thread counts (BLAS's
# and nnrun's workers) and puts them back, which overlapping calls would leave mixed up.
_ONE_TRAINING = threading.RLock()


def _check_run_options(out_dir, options: dict) -> None:
    """What the command refuses as a usage error, the API as a ValueError (or TypeError)."""
    if out_dir is not None and not isinstance(out_dir, (str, PathLike)):
        raise TypeError(f"out_dir must be a directory path, got {type(out_dir).__name__}")
    _refuse_empty("out_dir", out_dir, "give a directory name (None: runs/<name>/<time>)")
    resume = options.get("resume")
    if resume is not None and not isinstance(resume, (str, PathLike)):
        raise TypeError(f"resume is the run directory to continue, got {type(resume).__name__}"
                        " (None: a new run)")
    _refuse_empty("resume", resume, "give the run directory to continue (None: a new run)")
    if resume is not None and out_dir is not None:
        raise ValueError("resume continues a run in its own directory; leave out out_dir")
    if options.get("allow_changes") and resume is None:
        raise ValueError("allow_changes applies to resume only")


def _checked_distributed_timeout(timeout, distributed: bool) -> float | None:
    """As the command's --distributed-timeout: seconds > 0 (inf waits for good), with
    distributed=True only; a float (a Fraction or a NumPy number too), as the ranks' watcher
    process is given it."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, Real) or not timeout > 0:
        raise ValueError(f"distributed_timeout must be a number of seconds > 0 (e.g. 300), "
                         f"got {timeout!r}")
    if not distributed:
        raise ValueError("distributed_timeout applies to distributed=True only")
    try:
        return float(timeout)
    except OverflowError:  # an integer past float's range: waits for good, as inf does
        return float("inf")


def _refuse_empty(name: str, path, advice: str) -> None:
    """An empty path (an unset variable, say) would name the current directory: refused, as the
    command refuses `--out ""`."""
    if isinstance(path, str) and not path.strip():
        raise ValueError(f"{name} is an empty path, not the current directory; {advice}")


def load_run(run_dir, checkpoint: str | None = None, backend: str = "numpy",
             graph: bool = True, preprocess: bool = True):
    """A trained run directory: `.predict(x)` applies the training's preprocessing to raw inputs,
    then the checkpoint ("best", "last"; default: the one `train` reported). preprocess=False
    (`--no-preprocessing`): no preprocessing is loaded; inputs are fed as they are."""
    from nnrun.runtime.evaluate import load_run as load
    from nnrun.runtime.model import check_flags
    from nnrun.runtime.options import LOAD_RUN_PARAMETERS, named_as_parameters

    if not isinstance(run_dir, (str, PathLike)):
        raise TypeError(f"run_dir must be a run directory's path, got {type(run_dir).__name__}")
    # what the command's --checkpoint refuses as a usage error, before the run loads
    if checkpoint is not None and checkpoint not in ("best", "last"):
        kind = ValueError if isinstance(checkpoint, str) else TypeError
        raise kind(f"no checkpoint {checkpoint!r}; a run has 'best' and 'last'")
    _refuse_empty("run_dir", run_dir, "give a run directory (runs/<name>/<time>)")
    check_flags(graph=graph, preprocess=preprocess)
    with named_as_parameters(LOAD_RUN_PARAMETERS), _backend_as_parameter():
        return load(Path(run_dir), checkpoint, backend, preprocess=preprocess, graph=graph)


# The rest of the API, imported when first asked for: `import nnrun` loads no third-party
# module, so that the command starts (and answers Ctrl-C, entry.py) at once.
_LAZY = {"load_spec": "nnrun.compiler.frontend",
         "load_spec_text": "nnrun.compiler.frontend",
         "load_spec_data": "nnrun.compiler.frontend",
         "with_overrides": "nnrun.compiler.frontend",
         "SourceSpec": "nnrun.compiler.frontend",
         "Spec": "nnrun.compiler.schema",
         "SpecError": "nnrun.compiler.diagnostics",
         "Diagnostic": "nnrun.compiler.diagnostics",
         "BackendUnavailable": "nnrun.backends",
         # what a run can raise beyond a spec's errors
         "DataError": "nnrun.runtime.data.errors",
         "DataFitError": "nnrun.runtime.data_fit",
         "RunDirectoryError": "nnrun.runtime.run_dir",
         "CheckpointError": "nnrun.runtime.checkpoint",
         "TrainingError": "nnrun.runtime.train",
         "SpecChangeError": "nnrun.runtime.spec_changes",
         "MemoryLimitError": "nnrun.runtime.memory",
         "DistributedError": "nnrun.runtime.distributed",
         "Interrupted": "nnrun.runtime.interrupts"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nnrun' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["compile", "train", "load_run", "load_spec", "load_spec_text", "load_spec_data", "Spec",
           "SpecError", "Diagnostic", "BackendUnavailable", "DataError", "DataFitError",
           "RunDirectoryError", "CheckpointError", "TrainingError", "SpecChangeError",
           "MemoryLimitError", "DistributedError", "Interrupted"]
