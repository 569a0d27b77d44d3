"""padding_mode: circular (PyTorch's, compared with it) and random (fixed, seeded values around
every sample), in conv1d and conv2d: lowering, forward, gradients, the compiled step, training."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nnrun
from nnrun.compiler.lower import padding_seed
from nnrun.compiler.printer import graph_text
from nnrun.compiler.ops.shape import random_border
from nnrun.runtime.model import Model


def spec(layers: str, input_shape, seed: int = 7, loss: str = "cross_entropy") -> str:
    return (f"seed: {seed}\ndtype: float64\nmodel:\n  input_shape: {json.dumps(input_shape)}\n"
            f"  init: he_uniform\n  layers:\n{layers}\nloss: {loss}\n"
            "optimizer: {type: sgd, lr: 0.1}\n")


CIRCULAR_2D = """\
    - {type: conv2d, filters: 3, kernel_size: [3, 5], stride: [2, 1], padding: [1, 2], padding_mode: circular, activation: tanh}
    - {type: conv2d, filters: 2, kernel_size: 4, padding: same, padding_mode: circular}
    - {type: flatten}
    - {type: dense, units: 4}
"""
CIRCULAR_1D = """\
    - {type: conv1d, filters: 3, kernel_size: 5, padding: 6, padding_mode: circular, activation: relu}
    - {type: conv1d, filters: 2, kernel_size: 3, stride: 2, padding: 1, padding_mode: circular}
    - {type: flatten}
    - {type: dense, units: 4}
"""


def _torch_circular_model(rank: int):
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional
    if rank == 2:
        first = nn.Conv2d(2, 3, (3, 5), stride=(2, 1), padding=(1, 2), padding_mode="circular")
        second = nn.Conv2d(3, 2, 4)  # same with an even kernel pads (1, 2): F.pad, as TF does
        dense = nn.Linear(2 * 3 * 6, 4)

        def forward(x):
            x = torch.tanh(first(x))
            return dense(second(F.pad(x, (1, 2, 1, 2), mode="circular")).flatten(1))
    else:
        # padding 6 is wider than the 5-long input: PyTorch refuses it, so the circular
        # padding is written out as a concatenation, which wraps around as far as needed.
        first = nn.Conv1d(2, 3, 5)
        second = nn.Conv1d(3, 2, 3, stride=2, padding=1, padding_mode="circular")
        dense = nn.Linear(2 * 7, 4)

        def forward(x):
            wrapped = torch.cat([x[..., 4:], x, x, x, x[..., :1]], dim=-1)  # 1+5 | 5 | 5+1
            return dense(second(torch.relu(first(wrapped))).flatten(1))
    modules = {"conv{}d_1".format(rank): first, "conv{}d_2".format(rank): second,
               "dense_1": dense}
    return torch, modules, forward


@pytest.mark.torch
@pytest.mark.parametrize("rank, layers, input_shape", [(2, CIRCULAR_2D, [2, 6, 6]),
                                                       (1, CIRCULAR_1D, [2, 5])])
def test_circular_padding_agrees_with_torch(rank, layers, input_shape):
    torch, modules, forward = _torch_circular_model(rank)
    model = nnrun.compile(nnrun.load_spec_text(spec(layers, input_shape)))
    assert "mode=circular" in graph_text(model.lowered.graph)
    params = model.init_params(seed=1)
    for module in modules.values():
        module.double()
    with torch.no_grad():
        for layer, module in modules.items():
            weight = params[f"{layer}.weight"]
            module.weight.copy_(torch.from_numpy(weight.T if layer == "dense_1" else weight))
            module.bias.copy_(torch.from_numpy(params[f"{layer}.bias"]))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, *input_shape))
    y = np.array([0, 3, 1])
    loss, grads = model.loss_and_grads(params, x, y)
    out = forward(torch.from_numpy(x))
    np.testing.assert_allclose(model.forward(params, x), out.detach().numpy(), rtol=1e-10,
                               atol=1e-12)
    torch_loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y))
    torch_loss.backward()
    assert loss == pytest.approx(torch_loss.item(), rel=1e-10)
    for layer, module in modules.items():
        weight_grad = module.weight.grad.numpy()
        np.testing.assert_allclose(grads[f"{layer}.weight"],
                                   weight_grad.T if layer == "dense_1" else weight_grad,
                                   rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(grads[f"{layer}.bias"], module.bias.grad.numpy(),
                                   rtol=1e-9, atol=1e-12)


RANDOM_2D = """\
    - {type: conv2d, filters: 2, kernel_size: 3, padding: 2, padding_mode: random, name: first}
    - {type: conv2d, filters: 2, kernel_size: 3, padding: 1, padding_mode: random, name: second}
    - {type: flatten}
    - {type: dense, units: 3}
"""


def _pads(model) -> list:
    return [node for node in model.lowered.graph.nodes if node.op == "pad"]


def test_random_padding_is_seeded_per_layer_and_fixed():
    model = nnrun.compile(nnrun.load_spec_text(spec(RANDOM_2D, [1, 4, 4])))
    first, second = _pads(model)
    assert first.attrs.seed == padding_seed(7, "first") != second.attrs.seed
    again = nnrun.compile(nnrun.load_spec_text(spec(RANDOM_2D, [1, 4, 4])))
    other_seed = nnrun.compile(nnrun.load_spec_text(spec(RANDOM_2D, [1, 4, 4], seed=8)))
    assert [n.attrs.seed for n in _pads(again)] == [first.attrs.seed, second.attrs.seed]
    assert _pads(other_seed)[0].attrs.seed != first.attrs.seed
    params = model.init_params(seed=0)
    x = np.random.default_rng(1).standard_normal((5, 1, 4, 4))
    out = model.forward(params, x)
    np.testing.assert_array_equal(out, again.forward(params, x))
    # A sample's output does not depend on the rest of its batch.
    np.testing.assert_allclose(model.forward(params, x[2:3]), out[2:3], rtol=1e-12)
    assert not np.allclose(out, other_seed.forward(params, x))


def test_random_padding_puts_the_documented_values_around_each_sample():
    layers = "    - {type: conv2d, filters: 1, kernel_size: 1, padding: 1, padding_mode: random, use_bias: false}\n"
    model = nnrun.compile(nnrun.load_spec_text(spec(layers, [1, 2, 3], loss="mse")))
    params = {"conv2d_1.weight": np.ones((1, 1, 1, 1))}  # a 1x1 kernel of 1 shows the padding
    x = np.full((2, 1, 2, 3), 5.0)
    out = model.forward(params, x)
    border = random_border(_pads(model)[0].attrs.seed, (1, 4, 5), "float64")
    expected = np.broadcast_to(border, (2, 1, 4, 5)).copy()
    expected[:, :, 1:3, 1:4] = 5.0
    np.testing.assert_array_equal(out, expected)
    assert border.std() > 0.3  # N(0, 1) values, not zeros


def test_random_padding_passes_no_gradient_to_its_values_and_trains_compiled():
    # The input gradient is the zeros mode's: the padded values are constants.
    random = nnrun.compile(nnrun.load_spec_text(spec(RANDOM_2D, [1, 4, 4])))
    params = random.init_params(seed=0)
    x = np.random.default_rng(2).standard_normal((4, 1, 4, 4))
    y = np.array([0, 1, 2, 1])
    loss, grads = random.loss_and_grads(params, x, y)
    reference = Model(random.source, optimized=False)
    ref_loss, ref_grads = reference.loss_and_grads(params, x, y)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-9, atol=1e-12)
    from nnrun.runtime.gradcheck import gradcheck

    assert all(r.worst_relative_error < 1e-6 for r in gradcheck(random, batch=3, samples=6))


@pytest.mark.parametrize("mode", ["circular", "random"])
def test_new_padding_modes_train_on_digits(tmp_path, mode):
    pytest.importorskip("sklearn")
    text = f"""
data: {{dataset: digits, limit: 200, validation_split: 0.2}}
model:
  layers:
    - {{type: conv2d, filters: 4, kernel_size: 3, padding: same, padding_mode: {mode}, activation: relu}}
    - {{type: conv1d, filters: 2, kernel_size: 3, padding: 1, padding_mode: {mode}, inputs: reshape_1}}
    - {{type: flatten}}
    - {{type: dense, units: 10}}
train: {{epochs: 1, batch_size: 50}}
"""
    text = text.replace("    - {type: conv1d", "    - {type: reshape, shape: [4, 64]}\n    - {type: conv1d")
    summary = nnrun.train(nnrun.load_spec_text(text), out_dir=tmp_path / "run", quiet=True)
    assert np.isfinite(summary["final"]["val_loss"])
