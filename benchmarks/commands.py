"""The `nnrun` command as the benchmark scripts run it: this interpreter's, whether or not its
environment's bin/ is on PATH (an unactivated venv: `.venv/bin/python benchmarks/...`)."""

from __future__ import annotations

import subprocess
import sys


def run_nnrun(*args: str, **options) -> subprocess.CompletedProcess:
    """`nnrun ARGS...` through `python -m nnrun`; `options` as subprocess.run's. A command that
    fails ends the script with its own error line (shown even where its output was captured)
    and its exit status, not a traceback."""
    result = subprocess.run([sys.executable, "-m", "nnrun", *args], **options)
    if result.returncode:
        said = (result.stderr or "").strip() if isinstance(result.stderr, str) else ""
        command = " ".join(["nnrun", *args])
        sys.stderr.write(f"{said}\n" if said else f"`{command}` failed (exit "
                                                  f"{result.returncode})\n")
        raise SystemExit(result.returncode)
    return result
