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


@pytest.mark.parametrize("layer, input_shape", [
    ("{type: conv2d_transpose, filters: 3, kernel_size: 4, stride: 2, padding: 1, "
     "activation: relu}", [2, 5, 6]),
    ("{type: conv1d_transpose, filters: 2, kernel_size: 3, stride: 3, padding: 1, "
     "output_padding: 2, dilation: 2}", [3, 7]),
])
def test_the_torch_side_of_a_transposed_convolution_has_nnruns_shapes(layer, input_shape):
    """Transposed convolutions are mapped (the FCN's upsampling; an audit timed them with a
    copy of this script): the same parameters and output shape on both sides."""
    import importlib.util

    import torch

    import nnrun

    loaded = importlib.util.spec_from_file_location("vs_torch", SCRIPT)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    text = f"model:\n  input_shape: {input_shape}\n  layers:\n    - {layer}\nloss: mse\n"
    model = nnrun.compile(nnrun.load_spec_text(text))
    net = module.torch_model(model)
    assert sorted(p.numel() for p in net.parameters()) == \
        sorted(int(a.size) for a in model.init_params().values())
    y = net(torch.zeros(4, *input_shape))
    assert list(y.shape[1:]) == list(model.lowered.layers[-1].output.type.shape[1:])
