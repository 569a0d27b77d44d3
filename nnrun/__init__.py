"""nnrun: a declarative neural-network compiler and runner.

    import nnrun
    model = nnrun.compile("spec.yaml")
    params = model.init_params(seed=0)
    y = model.forward(params, x)
    loss, grads = model.loss_and_grads(params, x, y_true)
    result = nnrun.train("spec.yaml", backend="numpy", out_dir="runs/x")
"""

from __future__ import annotations

from pathlib import Path

from nnrun.compiler.diagnostics import Diagnostic, SpecError
from nnrun.compiler.frontend import SourceSpec, load_spec, load_spec_text, with_overrides
from nnrun.compiler.schema import Spec

__version__ = "0.1.0"


def _source(spec, overrides=()) -> SourceSpec:
    """A SourceSpec from a path, a Spec or a SourceSpec, with `overrides` applied."""
    if isinstance(spec, Spec):
        from nnrun.compiler.loader import Loaded

        # The plain data stands in for the YAML, so a run directory's spec.yaml is complete.
        spec = SourceSpec(spec, Loaded("<spec>", spec.model_dump(mode="json", exclude_none=True), {}))
    if isinstance(spec, SourceSpec):
        return with_overrides(spec, overrides)
    return load_spec(Path(spec), overrides)


def compile(spec, backend: str = "numpy", overrides=()):  # noqa: A001 - the API's name
    """A Model from a spec file path, a Spec, or a SourceSpec."""
    from nnrun.runtime.model import Model

    return Model(_source(spec, overrides), backend)


def train(spec, backend: str = "numpy", out_dir=None, overrides=(), **options):
    """Trains and returns the run's summary (also written to OUT_DIR/summary.json)."""
    from nnrun.runtime.train import train as run_training

    return run_training(_source(spec, overrides), backend=backend, out_dir=out_dir, **options)


__all__ = ["compile", "train", "load_spec", "load_spec_text", "Spec", "SpecError", "Diagnostic"]
