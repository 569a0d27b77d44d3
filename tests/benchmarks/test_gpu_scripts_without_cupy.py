"""The GPU benchmark scripts, run where CuPy is missing, stop with nnrun's one line that says so
(and the extra to install), not a traceback."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = [("vs_torch.py", ["--backend", "cupy", "--steps", "1", "--repetitions", "1"]),
           ("step_paths.py", ["--backend", "cupy"]),
           ("cupy_kernels.py", []),
           ("node_times.py", [str(BENCHMARKS / "workloads" / "mlp.yaml"), "--backend", "cupy"])]


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
@pytest.mark.parametrize(("script", "arguments"), SCRIPTS, ids=[s for s, _ in SCRIPTS])
def test_a_gpu_benchmark_without_cupy_is_one_line(script, arguments, tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *arguments],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "NNRUN_DATA_DIR": str(tmp_path)})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "needs CuPy, which is not installed" in lines[0] and "nnrun[cuda13]" in lines[0]
    # an option it offers is one the script has (the review: cupy_kernels has no --backend)
    assert ("--backend numpy" in lines[0]) == (script != "cupy_kernels.py")
