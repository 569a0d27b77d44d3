"""benchmarks/vs_torch.py compares IEEE float32 on both sides on CUDA: PyTorch's default lets
cuDNN compute convolutions in TF32, while nnrun's CuPy step computes in float32 (the H200
table of docs/benchmarks.md let PyTorch's convolutions use TF32). The switch is set and read
without a GPU, each case in its own process (the setting is global to PyTorch)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "vs_torch.py"


def _precision_after(tf32: bool) -> str:
    code = ("import importlib.util, torch\n"
            f"spec = importlib.util.spec_from_file_location('vs_torch', {str(SCRIPT)!r})\n"
            "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
            f"print(module._torch_float32(torch, {tf32}))\n")
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


def test_both_sides_compute_in_ieee_float32_by_default():
    assert _precision_after(tf32=False) == "conv ieee, matmul ieee"


def test_torch_tf32_keeps_pytorchs_defaults_and_says_so():
    assert _precision_after(tf32=True) == "conv tf32, matmul ieee"
