"""Training-step time of nnrun and PyTorch, side by side in one process.

Both train the same spec's architecture on the same random batch with SGD (momentum 0.9); each
side is warmed up, then timed over the same number of steps, alternating rounds so that both
see the same machine load. `--backend numpy` compares with PyTorch on the CPU, `--backend cupy`
with PyTorch on CUDA (both synchronised before the clock stops). Prints a table and, with
--json, one JSON object.

    python benchmarks/vs_torch.py specs/lenet5.yaml specs/mnist-mlp.yaml --batch-size 128
    python benchmarks/vs_torch.py specs/lenet5.yaml --backend cupy
"""

from __future__ import annotations

import os

# torch's OpenMP threads spin after each op and steal the cores from NumPy's BLAS threads when
# both run in one process (seen here: nnrun 6x slower next to torch than alone). Passive
# waiting makes the side-by-side timing fair to both.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import nnrun  # noqa: E402
from nnrun.runtime.gradcheck import random_batch  # noqa: E402


def torch_model(model) -> torch.nn.Module:
    """The spec's layers as torch modules (the layer kinds the example specs use)."""
    modules = []
    for layer, info in zip(model.spec.model.layers, model.lowered.layers):
        modules += _torch_layer(layer, info, model)
    return torch.nn.Sequential(*modules)


def _torch_layer(layer, info, model):
    params = model.param_infos
    kind = layer.type
    if kind == "conv2d":
        out_ch, in_ch, kh, kw = params[f"{info.name}.weight"].shape
        return [torch.nn.Conv2d(in_ch, out_ch, (kh, kw), layer.stride, layer.padding), *_act(layer)]
    if kind == "conv1d":
        out_ch, in_ch, k = params[f"{info.name}.weight"].shape
        return [torch.nn.Conv1d(in_ch, out_ch, k, layer.stride, layer.padding), *_act(layer)]
    if kind == "dense":
        fan_in, units = params[f"{info.name}.weight"].shape
        return [torch.nn.Linear(fan_in, units), *_act(layer)]
    if kind == "maxpool2d":
        return [torch.nn.MaxPool2d(layer.pool_size, layer.stride)]
    if kind == "maxpool1d":
        return [torch.nn.MaxPool1d(layer.pool_size, layer.stride)]
    if kind == "flatten":
        return [torch.nn.Flatten()]
    if kind == "dropout":
        return [torch.nn.Dropout(layer.rate)]
    if kind == "relu":
        return [torch.nn.ReLU()]
    raise SystemExit(f"benchmark: layer type {kind} not mapped to torch here")


def _act(layer):
    activation = getattr(layer, "activation", None)
    return [] if activation is None else [{"relu": torch.nn.ReLU(), "tanh": torch.nn.Tanh(),
                                           "sigmoid": torch.nn.Sigmoid()}[activation.type]]


def nnrun_step(model, x, y):
    feeds = model.step_feeds(model.train_state(), x, y, lr=0.01, step=1, seed=0)
    executor = model.step_executor

    def step():
        _, updates = executor.run(feeds)
        feeds.update(updates)

    return step, model.backend.synchronize


def torch_step(model, x, y, device: str):
    net = torch_model(model).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    tx = torch.from_numpy(x).to(device)
    ty = torch.from_numpy(y.astype(np.int64)).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad()
        loss_fn(net(tx), ty).backward()
        optimizer.step()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return step, sync


def time_steps(side, steps: int) -> float:
    step, synchronize = side
    synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return (time.perf_counter() - started) / steps


def compare(spec_path: str, batch_size: int, steps: int, rounds: int, backend: str) -> dict:
    model = nnrun.compile(spec_path, backend=backend,
                          overrides=["optimizer.momentum=0.9", "optimizer.type=sgd"])
    x, y = random_batch(model, batch_size, np.random.default_rng(0))
    x = x.astype(model.spec.dtype)
    device = "cuda" if backend == "cupy" else "cpu"
    sides = {"nnrun": nnrun_step(model, x, y), "torch": torch_step(model, x, y, device)}
    for side in sides.values():
        time_steps(side, 3)  # warm-up
    best = {name: float("inf") for name in sides}
    for _ in range(rounds):
        for name, side in sides.items():
            best[name] = min(best[name], time_steps(side, steps))
    return {"spec": spec_path, "backend": backend, "torch_device": device,
            "batch_size": batch_size,
            "nnrun_ms": round(best["nnrun"] * 1e3, 2), "torch_ms": round(best["torch"] * 1e3, 2),
            "ratio": round(best["nnrun"] / best["torch"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [compare(s, args.batch_size, args.steps, args.rounds, args.backend) for s in args.specs]
    machine = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
               "numpy": np.__version__, "torch_threads": torch.get_num_threads()}
    if args.backend == "cupy":
        machine["gpu"] = torch.cuda.get_device_name()
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}, indent=2))
        return
    print(f"machine: {machine}")
    print(f"{'spec':<28} {'backend':<8} {'batch':>5} {'nnrun ms':>10} {'torch ms':>10} "
          f"{'nnrun/torch':>12}")
    for row in rows:
        print(f"{row['spec']:<28} {row['backend']:<8} {row['batch_size']:>5} "
              f"{row['nnrun_ms']:>10.2f} {row['torch_ms']:>10.2f} {row['ratio']:>12.2f}")


if __name__ == "__main__":
    main()
