"""The seam between ops and backends: the ops use only what compiler/ops/backend.py declares,
and every backend provides all of it."""

import re
from pathlib import Path

import pytest

from nnrun.backends.numpy_backend import NumpyBackend
from nnrun.compiler.ops.backend import MEMBERS

OPS = Path(__file__).resolve().parents[2] / "compiler" / "ops"


def test_ops_use_only_the_protocol():
    used = {m for path in OPS.glob("*.py") for m in re.findall(r"\bbe\.(\w+)", path.read_text())}
    assert used <= set(MEMBERS), used - set(MEMBERS)


def test_numpy_backend_has_every_member():
    backend = NumpyBackend()
    assert all(hasattr(backend, member) for member in MEMBERS)


def test_cupy_backend_has_every_member():
    cupy_backend = pytest.importorskip("nnrun.backends.cupy_backend",
                                       reason="CuPy is not installed")
    assert all(hasattr(cupy_backend.CupyBackend, member) for member in MEMBERS)
