"""The `nnrun` command as the benchmark scripts run it: this interpreter's, whether or not its
environment's bin/ is on PATH (an unactivated venv: `.venv/bin/python benchmarks/...`)."""

from __future__ import annotations

import subprocess
import sys


def run_nnrun(*args: str, **options) -> subprocess.CompletedProcess:
    """`nnrun ARGS...` through `python -m nnrun`; `options` as subprocess.run's (check=True)."""
    return subprocess.run([sys.executable, "-m", "nnrun", *args], check=True, **options)
