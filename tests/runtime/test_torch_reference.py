"""nnrun against PyTorch: losses and gradients of whole models, batchnorm in both modes, and a few
steps of every optimizer (with clipping) through the compiled training-step graph.

Each model is written twice: once as a spec, once as a torch.nn.Module. nnrun's initial
parameters are copied into the torch model (dense weights transposed: nnrun stores [in, out],
torch [out, in]); then losses, gradients and updated weights must agree.

The schedule tests at the end need no torch.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import nnrun
from nnrun.runtime.executor import Executor
from nnrun.runtime.schedules import learning_rate

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch
nn = torch.nn
F = torch.nn.functional

TOLERANCE = {"float32": 1e-4, "float64": 1e-10}
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}


def rel_error(actual, expected, floor: float = 1e-12) -> float:
    """max |actual - expected| relative to max |expected| (so tiny entries do not dominate),
    or to `floor` where that is larger (for values that should be zero)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(float(np.max(np.abs(expected))) if expected.size else 0.0, floor)
    return float(np.max(np.abs(actual - expected))) / scale if expected.size else 0.0


def assert_close(actual, expected, tolerance, what="", floor: float = 1e-12):
    error = rel_error(actual, expected, floor)
    assert error < tolerance, f"{what}: relative error {error:.3g} >= {tolerance:g}"


# --- mapping nnrun parameter names onto a torch module ----------------------------------------


def name_map(layers: dict) -> dict:
    """{nnrun name: (torch tensor, transpose)} from {nnrun layer name: (torch module, kind)}."""
    result = {}
    for layer, (module, kind) in layers.items():
        if kind == "dense":
            result[f"{layer}.weight"] = (module.weight, True)
            if module.bias is not None:
                result[f"{layer}.bias"] = (module.bias, False)
        elif kind == "conv":
            result[f"{layer}.weight"] = (module.weight, False)
            if module.bias is not None:
                result[f"{layer}.bias"] = (module.bias, False)
        elif kind == "bn":
            result[f"{layer}.gamma"] = (module.weight, False)
            result[f"{layer}.beta"] = (module.bias, False)
            result[f"{layer}.running_mean"] = (module.running_mean, False)
            result[f"{layer}.running_var"] = (module.running_var, False)
        else:  # pragma: no cover - a mistake in this file
            raise ValueError(kind)
    return result


def copy_into_torch(mapping: dict, params: dict) -> None:
    assert set(mapping) == set(params), (sorted(mapping), sorted(params))
    with torch.no_grad():
        for name, (tensor, transpose) in mapping.items():
            value = params[name].T if transpose else params[name]
            assert tuple(tensor.shape) == value.shape, name
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def torch_value(mapping: dict, name: str, grad: bool = False) -> np.ndarray:
    tensor, transpose = mapping[name]
    value = (tensor.grad if grad else tensor).detach().numpy()
    return value.T if transpose else value


# --- models: spec text and torch module -------------------------------------------------------


def spec_text(layers: str, input_shape, loss="cross_entropy", optimizer=None, dtype="float32"):
    optimizer = optimizer or {"type": "sgd", "lr": 0.1}
    return (f"seed: 7\ndtype: {dtype}\nmodel:\n  input_shape: {json.dumps(list(input_shape))}\n"
            f"  init: he_uniform\n  layers:\n{layers}\nloss: {json.dumps(loss)}\n"
            f"optimizer: {json.dumps(optimizer)}\n")


MLP_LAYERS = """\
    - {type: dense, units: 32, activation: relu}
    - {type: dense, units: 16, activation: tanh}
    - {type: dense, units: 12, activation: sigmoid}
    - {type: dense, units: 5}
"""


class Mlp(nn.Module):
    def __init__(self, outputs=5, final=None):
        super().__init__()
        self.d1, self.d2 = nn.Linear(20, 32), nn.Linear(32, 16)
        self.d3, self.d4 = nn.Linear(16, 12), nn.Linear(12, outputs)
        self.final = final

    def names(self):
        return name_map({"dense_1": (self.d1, "dense"), "dense_2": (self.d2, "dense"),
                         "dense_3": (self.d3, "dense"), "dense_4": (self.d4, "dense")})

    def forward(self, x):
        return self.d4(torch.sigmoid(self.d3(torch.tanh(self.d2(torch.relu(self.d1(x)))))))


MLP2_LAYERS = """\
    - {type: dense, units: 24, activation: {type: leaky_relu, alpha: 0.1}}
    - {type: dense, units: 16, activation: elu}
    - {type: dense, units: 12, activation: gelu}
    - {type: dense, units: 8, activation: softplus}
    - {type: dense, units: 5}
"""


class Mlp2(nn.Module):
    def __init__(self):
        super().__init__()
        self.ds = nn.ModuleList([nn.Linear(a, b) for a, b in
                                 ((20, 24), (24, 16), (16, 12), (12, 8), (8, 5))])

    def names(self):
        return name_map({f"dense_{i + 1}": (d, "dense") for i, d in enumerate(self.ds)})

    def forward(self, x):
        d = self.ds
        x = F.leaky_relu(d[0](x), 0.1)
        x = F.elu(d[1](x))
        x = F.gelu(d[2](x))
        x = F.softplus(d[3](x))
        return d[4](x)


LENET_LAYERS = """\
    - {type: conv2d, filters: 6, kernel_size: 5, padding: 2, activation: relu}
    - {type: maxpool2d, pool_size: 2}
    - {type: conv2d, filters: 16, kernel_size: 5, activation: relu}
    - {type: maxpool2d, pool_size: 2}
    - {type: flatten}
    - {type: dense, units: 120, activation: relu}
    - {type: dropout, rate: 0.2}
    - {type: dense, units: 84, activation: relu}
    - {type: dense, units: 10}
"""


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.d1, self.d2, self.d3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)
        self.drop = nn.Dropout(0.2)

    def names(self):
        return name_map({"conv2d_1": (self.c1, "conv"), "conv2d_2": (self.c2, "conv"),
                         "dense_1": (self.d1, "dense"), "dense_2": (self.d2, "dense"),
                         "dense_3": (self.d3, "dense")})

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.c1(x)), 2)
        x = F.max_pool2d(torch.relu(self.c2(x)), 2)
        x = torch.relu(self.d1(x.flatten(1)))
        return self.d3(torch.relu(self.d2(self.drop(x))))


CNN1D_LAYERS = """\
    - {type: conv1d, filters: 4, kernel_size: 5, stride: 2, padding: 2, activation: relu}
    - {type: conv1d, filters: 6, kernel_size: 3, dilation: 2, padding: 2, activation: tanh}
    - {type: maxpool1d, pool_size: 2, padding: 1}
    - {type: conv1d, filters: 5, kernel_size: 4, padding: same, activation: relu}
    - {type: conv1d, filters: 5, kernel_size: 3, stride: 2, padding: same, padding_mode: reflect}
    - {type: avgpool1d, pool_size: 3, stride: 2, padding: 1}
    - {type: maxpool1d, pool_size: 2, stride: 1}
    - {type: flatten}
    - {type: dense, units: 10}
"""
# lengths: 40 -conv(k5,s2,p2)-> 20 -conv(k3,d2,p2)-> 20 -maxpool(2,p1)-> 11 -conv same k4-> 11
# (pads 1 before, 2 after) -conv same k3 s2-> 6 (pads 1, 1; reflect) -avgpool(3,s2,p1)-> 3
# -maxpool(2,s1)-> 2; 5 channels * 2 = 10 features


class Cnn1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(1, 4, 5, stride=2, padding=2)
        self.c2 = nn.Conv1d(4, 6, 3, dilation=2, padding=2)
        self.c3 = nn.Conv1d(6, 5, 4)
        self.c4 = nn.Conv1d(5, 5, 3, stride=2)
        self.d1 = nn.Linear(10, 10)

    def names(self):
        return name_map({"conv1d_1": (self.c1, "conv"), "conv1d_2": (self.c2, "conv"),
                         "conv1d_3": (self.c3, "conv"), "conv1d_4": (self.c4, "conv"),
                         "dense_1": (self.d1, "dense")})

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.tanh(self.c2(x))
        x = F.max_pool1d(x, 2, padding=1)
        x = torch.relu(self.c3(F.pad(x, (1, 2))))  # 'same', even kernel: 1 before, 2 after
        x = self.c4(F.pad(x, (1, 1), mode="reflect"))
        x = F.avg_pool1d(x, 3, stride=2, padding=1)  # count_include_pad=True
        x = F.max_pool1d(x, 2, stride=1)
        return self.d1(x.flatten(1))


RESIDUAL_LAYERS = """\
    - {type: conv2d, name: stem, filters: 8, kernel_size: 3, padding: 1}
    - {type: batchnorm, name: bn_a}
    - {type: relu, name: act_a}
    - {type: conv2d, name: conv_b, filters: 8, kernel_size: 3, padding: 1, use_bias: false}
    - {type: batchnorm, name: bn_b, momentum: 0.8, eps: 0.001}
    - {type: add, name: sum, inputs: [act_a, bn_b]}
    - {type: relu, name: act_sum}
    - {type: conv2d, name: side, filters: 4, kernel_size: 1, inputs: input}
    - {type: concat, name: cat, inputs: [act_sum, side]}
    - {type: global_avgpool, name: gap}
    - {type: dense, name: out, units: 5}
"""


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(8, momentum=0.1, eps=1e-5)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(8, momentum=0.2, eps=1e-3)
        self.side = nn.Conv2d(3, 4, 1)
        self.out = nn.Linear(12, 5)

    def names(self):
        return name_map({"stem": (self.stem, "conv"), "bn_a": (self.bn_a, "bn"),
                         "conv_b": (self.conv_b, "conv"), "bn_b": (self.bn_b, "bn"),
                         "side": (self.side, "conv"), "out": (self.out, "dense")})

    def forward(self, x):
        a = torch.relu(self.bn_a(self.stem(x)))
        s = torch.relu(a + self.bn_b(self.conv_b(a)))
        cat = torch.cat([s, self.side(x)], dim=1)
        return self.out(cat.mean(dim=(2, 3)))


MODELS = {
    "mlp": (MLP_LAYERS, (20,), Mlp),
    "mlp_more_activations": (MLP2_LAYERS, (20,), Mlp2),
    "lenet5": (LENET_LAYERS, (1, 28, 28), LeNet),
    "cnn1d": (CNN1D_LAYERS, (1, 40), Cnn1d),
    "residual": (RESIDUAL_LAYERS, (3, 8, 8), Residual),
}


def random_batch(input_shape, batch=6, classes=5, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *input_shape)).astype(dtype)
    y = rng.integers(0, classes, batch)
    return x, y


def randomize_batchnorm(params: dict, seed: int = 1) -> dict:
    """Non-trivial gamma, beta and running statistics, so eval mode tests something."""
    rng = np.random.default_rng(seed)
    params = dict(params)
    for name, value in params.items():
        if name.endswith((".gamma", ".running_var")):
            params[name] = rng.uniform(0.5, 1.5, value.shape).astype(value.dtype)
        elif name.endswith((".beta", ".running_mean")):
            params[name] = rng.uniform(-0.5, 0.5, value.shape).astype(value.dtype)
    return params


def compare_loss_and_grads(model, params, torch_model, x, y, torch_loss, tolerance):
    loss, grads = model.loss_and_grads(params, x, y)
    mapping = torch_model.names()
    copy_into_torch(mapping, params)
    torch_model.zero_grad()
    expected = torch_loss(torch_model(torch.from_numpy(x)))
    expected.backward()
    assert_close(loss, expected.item(), tolerance, "loss")
    trainable = {name for name in params if not name.endswith((".running_mean", ".running_var"))}
    assert set(grads) == trainable
    for name in sorted(grads):
        assert grads[name].dtype == params[name].dtype, name
        assert_close(grads[name], torch_value(mapping, name, grad=True), tolerance, name)
    return loss


@pytest.mark.parametrize("which", sorted(MODELS))
def test_cross_entropy_loss_and_gradients_match_torch(which):
    layers, input_shape, module = MODELS[which]
    classes = 10 if which in ("lenet5", "cnn1d") else 5
    model = nnrun.compile(nnrun.load_spec_text(spec_text(layers, input_shape)))
    params = randomize_batchnorm(model.init_params(3))
    torch.manual_seed(0)
    torch_model = module().eval()
    x, y = random_batch(input_shape, classes=classes)
    compare_loss_and_grads(model, params, torch_model, x, y,
                           lambda out: F.cross_entropy(out, torch.from_numpy(y)), 1e-4)
    # the forward pass agrees too (no final activation here: predictions are the logits)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    assert_close(model.forward(params, x), expected, 1e-4, "forward")


class GlobalPools(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(8, 3)

    def names(self):
        return name_map({"c": (self.conv, "conv"), "head": (self.head, "dense")})

    def forward(self, x):
        h = self.conv(x)
        return self.head(torch.cat([h.amax((2, 3)), h.mean((2, 3))], 1))


def test_global_pools_match_torch_through_the_planned_step():
    """Global pools reduce each channel at once (one operation per window offset took 5x
    PyTorch's step over 64x64 inputs); the max's gradient goes to the first maximum."""
    model = nnrun.compile(nnrun.load_spec_text(spec_text("""\
    - {type: conv2d, filters: 4, kernel_size: 3, padding: same, name: c}
    - {type: global_maxpool, name: gm, inputs: c}
    - {type: global_avgpool, name: ga, inputs: c}
    - {type: concat, inputs: [gm, ga]}
    - {type: dense, units: 3, name: head}
""", (3, 9, 7))))
    params = model.init_params(0)
    x, y = random_batch((3, 9, 7), batch=5, classes=3)
    torch_loss = lambda out: F.cross_entropy(out, torch.from_numpy(y))  # noqa: E731
    compare_loss_and_grads(model, params, GlobalPools(), x, y, torch_loss, 1e-5)


def test_float64_gradients_match_torch_closely():
    model = nnrun.compile(nnrun.load_spec_text(spec_text(RESIDUAL_LAYERS, (3, 8, 8),
                                                         dtype="float64")))
    params = randomize_batchnorm(model.init_params(3))
    assert all(value.dtype == np.float64 for value in params.values())
    torch_model = Residual().double().eval()
    x, y = random_batch((3, 8, 8), dtype="float64")
    compare_loss_and_grads(model, params, torch_model, x, y,
                           lambda out: F.cross_entropy(out, torch.from_numpy(y)), 1e-10)


# --- other losses -----------------------------------------------------------------------------


def _mlp_with_head(units, activation=None):
    head = f"    - {{type: dense, units: {units}" + (f", activation: {activation}}}\n"
                                                      if activation else "}\n")
    return MLP_LAYERS.rsplit("    - {type: dense, units: 5}", 1)[0] + head


LOSS_CASES = {
    # name: (loss spec, output units, final activation, targets(rng, batch), torch loss(out, y))
    "mse": ({"type": "mse"}, 3, None, lambda rng, n: rng.standard_normal((n, 3)),
            lambda out, y: F.mse_loss(out, y)),
    "mse_scaled": ({"type": "mse", "scale": 0.5}, 1, None, lambda rng, n: rng.standard_normal(n),
                   lambda out, y: 0.5 * F.mse_loss(out, y.reshape(-1, 1))),
    "binary_cross_entropy": ({"type": "binary_cross_entropy"}, 1, "sigmoid",
                             lambda rng, n: rng.integers(0, 2, n).astype(np.float64),
                             lambda out, y: F.binary_cross_entropy_with_logits(
                                 out, y.reshape(-1, 1))),
    "huber": ({"type": "huber", "delta": 0.3, "scale": 2.0}, 3, None,
              lambda rng, n: rng.standard_normal((n, 3)),
              lambda out, y: 2.0 * F.huber_loss(out, y, delta=0.3)),
    "mae": ({"type": "mae"}, 3, None, lambda rng, n: rng.standard_normal((n, 3)),
            lambda out, y: F.l1_loss(out, y)),
    "label_smoothing": ({"type": "cross_entropy", "label_smoothing": 0.1}, 5, None,
                        lambda rng, n: rng.integers(0, 5, n),
                        lambda out, y: F.cross_entropy(out, y, label_smoothing=0.1)),
    "cross_entropy_after_softmax": ("cross_entropy", 5, "softmax",
                                    lambda rng, n: rng.integers(0, 5, n),
                                    lambda out, y: F.cross_entropy(out, y)),
}


@pytest.mark.parametrize("case", sorted(LOSS_CASES))
def test_other_losses_match_torch(case):
    loss_spec, units, activation, targets, torch_loss = LOSS_CASES[case]
    text = spec_text(_mlp_with_head(units, activation), (20,), loss=loss_spec)
    model = nnrun.compile(nnrun.load_spec_text(text))
    params = model.init_params(5)
    torch_model = Mlp(outputs=units).eval()  # logits: the fused activation is not applied
    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, 20)).astype(np.float32)
    y = targets(rng, 8)
    y_torch = torch.from_numpy(y if y.dtype == np.int64 else y.astype(np.float32))
    compare_loss_and_grads(model, params, torch_model, x, y, lambda out: torch_loss(out, y_torch),
                           1e-4)
    if activation:  # predictions still apply the fused activation
        with torch.no_grad():
            logits = torch_model(torch.from_numpy(x))
            expected = torch.sigmoid(logits) if activation == "sigmoid" else logits.softmax(1)
        assert_close(model.forward(params, x), expected.numpy(), 1e-5, "prediction")


# --- the training step ------------------------------------------------------------------------


def train_step_feeds(model, state: dict, x, y, lr: float, step: int, rng=None) -> dict:
    dtype = model.spec.dtype
    feeds = dict(state)
    feeds.update(x=np.asarray(x, dtype=dtype), lr=np.asarray(lr, dtype=dtype),
                 step=np.asarray(step, dtype=dtype))
    feeds["y"] = y.astype(np.int64) if model.spec.loss.type == "cross_entropy" else y
    if any(value.name == "rng" for value in model.train_step.graph.inputs):
        feeds["rng"] = rng or np.random.default_rng(0)
    return feeds


def initial_state(model, params: dict) -> dict:
    state = dict(params)
    for name, param in model.train_step.optimizer_state.items():
        state[name] = np.zeros_like(params[param])
    return state


def test_batchnorm_train_mode_step_matches_torch():
    """One SGD step in train mode: batch statistics in the forward pass and its gradient,
    running statistics updated with nnrun momentum m = 1 - torch momentum, unbiased variance."""
    lr = 0.1
    # momentum: the first step is still p - lr * g (the buffer starts as g), and the test does not
    # depend on plain SGD's single-output update
    optimizer = {"type": "sgd", "lr": lr, "momentum": 0.9}
    model = nnrun.compile(nnrun.load_spec_text(spec_text(RESIDUAL_LAYERS, (3, 8, 8),
                                                         optimizer=optimizer)))
    params = randomize_batchnorm(model.init_params(3))
    x, y = random_batch((3, 8, 8), batch=6)
    executor = Executor(model.train_step.graph, model.backend)
    outputs, updates = executor.run(train_step_feeds(model, initial_state(model, params), x, y,
                                                     lr, 1))

    torch_model = Residual().train()
    mapping = torch_model.names()
    copy_into_torch(mapping, params)
    loss = F.cross_entropy(torch_model(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    assert_close(outputs["loss"], loss.item(), 1e-4, "train-mode loss")
    assert set(updates) == set(params) | set(model.train_step.optimizer_state)
    for name in sorted(params):
        if name.endswith((".running_mean", ".running_var")):
            expected = torch_value(mapping, name)  # torch updated its buffers in forward
            assert not np.allclose(expected, params[name])
        else:
            expected = torch_value(mapping, name) - lr * torch_value(mapping, name, grad=True)
        assert updates[name].dtype == np.float32, name
        # stem.bias starts at zero and feeds a batchnorm: its gradient is zero up to rounding
        assert_close(updates[name], expected, 1e-4, name, floor=1e-2)
    assert np.abs(updates["stem.bias"]).max() < 1e-6


# --- optimizers: 5 steps give the same weights ------------------------------------------------

OPT_LAYERS = """\
    - {type: dense, units: 8, activation: tanh}
    - {type: dense, units: 6, activation: relu}
    - {type: dense, units: 3}
"""


class OptNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.d1, self.d2, self.d3 = nn.Linear(5, 8), nn.Linear(8, 6), nn.Linear(6, 3)

    def names(self):
        return name_map({"dense_1": (self.d1, "dense"), "dense_2": (self.d2, "dense"),
                         "dense_3": (self.d3, "dense")})

    def forward(self, x):
        return self.d3(torch.relu(self.d2(torch.tanh(self.d1(x)))))


O = torch.optim
OPTIMIZERS = {
    # name: (nnrun optimizer spec, torch optimizer factory)
    "sgd": ({"type": "sgd", "lr": 0.1}, lambda p: O.SGD(p, lr=0.1)),
    "sgd_momentum": ({"type": "sgd", "lr": 0.1, "momentum": 0.9},
                     lambda p: O.SGD(p, lr=0.1, momentum=0.9)),
    "sgd_nesterov": ({"type": "sgd", "lr": 0.1, "momentum": 0.8, "nesterov": True},
                     lambda p: O.SGD(p, lr=0.1, momentum=0.8, nesterov=True)),
    "sgd_weight_decay": ({"type": "sgd", "lr": 0.1, "weight_decay": 0.05},
                         lambda p: O.SGD(p, lr=0.1, weight_decay=0.05)),
    "sgd_momentum_weight_decay": ({"type": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
                                  lambda p: O.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01)),
    "adam": ({"type": "adam", "lr": 0.01}, lambda p: O.Adam(p, lr=0.01)),
    "adam_options": ({"type": "adam", "lr": 0.02, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6,
                      "weight_decay": 0.1},
                     lambda p: O.Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    "adamw": ({"type": "adamw", "lr": 0.01}, lambda p: O.AdamW(p, lr=0.01)),
    "adamw_decay": ({"type": "adamw", "lr": 0.01, "weight_decay": 0.3},
                    lambda p: O.AdamW(p, lr=0.01, weight_decay=0.3)),
    "rmsprop": ({"type": "rmsprop", "lr": 0.01}, lambda p: O.RMSprop(p, lr=0.01)),
    "rmsprop_momentum": ({"type": "rmsprop", "lr": 0.01, "momentum": 0.9, "alpha": 0.9},
                         lambda p: O.RMSprop(p, lr=0.01, momentum=0.9, alpha=0.9)),
    "adagrad": ({"type": "adagrad", "lr": 0.1}, lambda p: O.Adagrad(p, lr=0.1)),
    "sgd_clip_grad_norm": ({"type": "sgd", "lr": 0.1, "momentum": 0.9, "clip_grad_norm": 0.05},
                           lambda p: O.SGD(p, lr=0.1, momentum=0.9)),
    "adam_clip_grad_norm": ({"type": "adam", "lr": 0.01, "clip_grad_norm": 0.05},
                            lambda p: O.Adam(p, lr=0.01)),
    "sgd_clip_grad_value": ({"type": "sgd", "lr": 0.1, "clip_grad_value": 0.02},
                            lambda p: O.SGD(p, lr=0.1)),
    "rmsprop_clip_grad_value": ({"type": "rmsprop", "lr": 0.01, "clip_grad_value": 0.02},
                                lambda p: O.RMSprop(p, lr=0.01)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("which", sorted(OPTIMIZERS))
def test_five_optimizer_steps_give_torch_weights(which, dtype):
    optimizer_spec, make_torch_optimizer = OPTIMIZERS[which]
    model = nnrun.compile(nnrun.load_spec_text(spec_text(OPT_LAYERS, (5,), optimizer=optimizer_spec,
                                                         dtype=dtype)))
    params = model.init_params(2)
    state = initial_state(model, params)
    executor = Executor(model.train_step.graph, model.backend)

    torch_model = OptNet().to(TORCH_DTYPE[dtype])
    mapping = torch_model.names()
    copy_into_torch(mapping, params)
    torch_optimizer = make_torch_optimizer(list(torch_model.parameters()))
    lr = optimizer_spec["lr"]
    rng = np.random.default_rng(4)
    clip_active = False
    for step in range(1, 6):
        x = rng.standard_normal((10, 5)).astype(dtype)
        y = rng.integers(0, 3, 10)
        _, updates = executor.run(train_step_feeds(model, state, x, y, lr, step))
        state.update(updates)

        torch_optimizer.zero_grad()
        F.cross_entropy(torch_model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        if "clip_grad_norm" in optimizer_spec:
            norm = nn.utils.clip_grad_norm_(torch_model.parameters(),
                                            optimizer_spec["clip_grad_norm"])
            clip_active |= float(norm) > optimizer_spec["clip_grad_norm"]
        if "clip_grad_value" in optimizer_spec:
            limit = optimizer_spec["clip_grad_value"]
            clip_active |= any(bool((p.grad.abs() > limit).any()) for p in torch_model.parameters())
            nn.utils.clip_grad_value_(torch_model.parameters(), limit)
        torch_optimizer.step()

    if "clip" in which:
        assert clip_active, "the clipping limit is too loose to test anything"
    for name in sorted(params):
        assert state[name].dtype == np.dtype(dtype), name
        assert not np.array_equal(state[name], params[name]), f"{name} never moved"
        assert_close(state[name], torch_value(mapping, name), TOLERANCE[dtype], name)


@pytest.mark.parametrize("which", ["adam", "adamw_decay"])
def test_adam_float32_updates_are_as_close_to_exact_as_torchs(which):
    """Adam's bias corrections in float64, as PyTorch takes them from Python floats: in float32,
    1 - 0.999^t was 1e-5 off in the first steps, and three steps moved the weights 2.5x further
    from the exact (float64) movement than PyTorch's float32 does (the worst weight's)."""
    optimizer_spec, make_torch_optimizer = OPTIMIZERS[which]
    model = nnrun.compile(nnrun.load_spec_text(spec_text(OPT_LAYERS, (5,),
                                                         optimizer=optimizer_spec)))
    params = model.init_params(2)
    state = initial_state(model, params)
    executor = Executor(model.train_step.graph, model.backend)
    torch_runs = {}
    for dtype in ("float32", "float64"):
        torch_model = OptNet().to(TORCH_DTYPE[dtype])
        copy_into_torch(torch_model.names(), {name: value.astype(dtype)
                                              for name, value in params.items()})
        torch_runs[dtype] = (torch_model, make_torch_optimizer(list(torch_model.parameters())))
    rng = np.random.default_rng(5)
    for step in range(1, 4):
        x, y = rng.standard_normal((10, 5)).astype(np.float32), rng.integers(0, 3, 10)
        _, updates = executor.run(train_step_feeds(model, state, x, y, optimizer_spec["lr"],
                                                   step))
        state.update(updates)
        for dtype, (torch_model, torch_optimizer) in torch_runs.items():
            torch_optimizer.zero_grad()
            F.cross_entropy(torch_model(torch.from_numpy(x.astype(dtype))),
                            torch.from_numpy(y)).backward()
            torch_optimizer.step()

    def moved(name, dtype):
        return torch_value(torch_runs[dtype][0].names(), name).astype(np.float64) - params[name]

    ours = max(rel_error(state[name].astype(np.float64) - params[name], moved(name, "float64"))
               for name in params)
    torchs = max(rel_error(moved(name, "float32"), moved(name, "float64")) for name in params)
    assert ours <= 1.5 * torchs, (ours, torchs)


def test_optimizer_state_names_and_shapes():
    model = nnrun.compile(nnrun.load_spec_text(spec_text(
        OPT_LAYERS, (5,), optimizer={"type": "rmsprop", "lr": 0.01, "momentum": 0.5})))
    state = model.train_step.optimizer_state
    params = model.init_params(0)
    assert set(state.values()) == set(params)
    assert {name.rsplit(".", 1)[1] for name in state} == {"square_avg", "momentum"}
    assert all(name.startswith("opt/") for name in state)


# --- schedules (no torch needed, but kept with the optimizer tests) ---------------------------


def _optimizer(schedule: dict, lr: float = 0.1):
    text = spec_text(OPT_LAYERS, (5,), optimizer={"type": "sgd", "lr": lr, "schedule": schedule})
    return nnrun.load_spec_text(text).spec.optimizer


def _rates(optimizer, epochs: int, steps: int) -> list[list[float]]:
    return [[learning_rate(optimizer, e, s, steps, epochs) for s in range(steps)]
            for e in range(epochs)]


def test_constant_schedule():
    rates = _rates(_optimizer({"type": "constant"}), 4, 3)
    assert rates == [[0.1] * 3] * 4


def test_constant_schedule_with_warmup_is_linear_per_step():
    rates = _rates(_optimizer({"type": "constant", "warmup_epochs": 2}), 4, 4)
    flat = [r for row in rates for r in row]
    expected = [0.1 * k / 8 for k in range(1, 9)] + [0.1] * 8
    np.testing.assert_allclose(flat, expected, rtol=1e-12)
    assert flat[7] == pytest.approx(0.1)


def test_step_schedule():
    rates = _rates(_optimizer({"type": "step", "step_epochs": 2, "gamma": 0.5}), 6, 3)
    for epoch, row in enumerate(rates):
        expected = 0.1 * [1, 1, 0.5, 0.5, 0.25, 0.25][epoch]
        np.testing.assert_allclose(row, [expected] * 3, rtol=1e-12)


def test_step_schedule_counts_epochs_from_end_of_warmup():
    optimizer = _optimizer({"type": "step", "step_epochs": 2, "gamma": 0.1, "warmup_epochs": 1})
    rates = _rates(optimizer, 5, 2)
    np.testing.assert_allclose(rates[0], [0.05, 0.1], rtol=1e-12)
    np.testing.assert_allclose([row[0] for row in rates[1:]], [0.1, 0.1, 0.01, 0.01], rtol=1e-12)


def test_exponential_schedule():
    rates = _rates(_optimizer({"type": "exponential", "gamma": 0.9}, lr=0.2), 5, 2)
    np.testing.assert_allclose([row[1] for row in rates], [0.2, 0.18, 0.162, 0.1458, 0.13122],
                               rtol=1e-12)


def test_cosine_schedule():
    rates = _rates(_optimizer({"type": "cosine", "min_lr": 0.01}), 4, 2)
    # min + (base - min) * (1 + cos(pi * e / 4)) / 2 for e = 0..3
    expected = [0.1, 0.01 + 0.09 * (1 + math.sqrt(0.5)) / 2, 0.055,
                0.01 + 0.09 * (1 - math.sqrt(0.5)) / 2]
    np.testing.assert_allclose([row[0] for row in rates], expected, rtol=1e-12)
    assert all(row[0] == row[1] for row in rates)  # changes once per epoch
    assert min(r for row in rates for r in row) > 0.01


def test_cosine_schedule_with_warmup():
    rates = _rates(_optimizer({"type": "cosine", "warmup_epochs": 1}), 5, 2)
    np.testing.assert_allclose(rates[0], [0.05, 0.1], rtol=1e-12)
    # the cosine spans the 4 epochs after the warm-up
    np.testing.assert_allclose([row[0] for row in rates[1:]],
                               [0.1, 0.1 * (1 + math.sqrt(0.5)) / 2, 0.05,
                                0.1 * (1 - math.sqrt(0.5)) / 2], rtol=1e-12)
