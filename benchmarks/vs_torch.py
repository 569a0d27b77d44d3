"""Training-step and inference time of nnrun and PyTorch, each side in its own process.

In one process PyTorch's OpenMP threads distort NumPy's timings, so every measurement here is a
fresh worker process (this script with --worker) that times one side alone. The driver runs the
two sides alternately, several repetitions each (the order flips every repetition), and reports
medians over repetitions of each worker's median step time, and the ratio nnrun / PyTorch
(below 1: nnrun is faster).

Both sides train the same spec's architecture on the same random batch with SGD (momentum 0.9),
float32, with the same number of threads. `--backend cupy` compares with PyTorch on CUDA, both
eager and with its training step captured by `torch.cuda.CUDAGraph` ("torch-graph"), and says
which path nnrun's step took (captured, planned or reference: runtime/step_path.py), with each
side's inference throughput and the peak memory of its training step (nnrun: `bench`'s
peak_memory_mb, what its memory pool grew by; PyTorch: torch.cuda.max_memory_allocated).
On CUDA both sides compute in IEEE float32, as nnrun's CuPy step does: PyTorch's own default
lets cuDNN compute convolutions in TF32 (10 bits of mantissa), which `--torch-tf32` keeps; the
row says which (`torch_float32`).

    python benchmarks/vs_torch.py                                  # issue 7's CPU table
    python benchmarks/vs_torch.py benchmarks/workloads/lenet5.yaml --batch-size 128 1024
    python benchmarks/vs_torch.py --backend cupy --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE / "workloads"
# Issue 7's table: (workload, batch sizes)
DEFAULT_TABLE = [("mlp.yaml", 128), ("mlp.yaml", 1024), ("lenet5.yaml", 128),
                 ("mnist1d-mlp.yaml", 128), ("mnist1d-cnn.yaml", 128)]


# --- workers: one side, one spec, one batch size -----------------------------------------


def nnrun_worker(spec: str, batch: int, steps: int, warmup: int, backend: str,
                 threads: int | None) -> dict:
    import nnrun
    from nnrun.runtime.bench import bench

    model = nnrun.compile(spec, backend=backend,
                          overrides=["optimizer.type=sgd", "optimizer.momentum=0.9"])
    result = bench(model, batch, steps=steps, warmup=warmup, threads=threads)
    return {"train_ms": result["train_step_ms"], "infer_ms": result["inference_ms"],
            "threads": result["threads"], "numpy": np.__version__,
            "step_path": result["step_path"], "peak_mb": result["peak_memory_mb"]}


def torch_worker(spec: str, batch: int, steps: int, warmup: int, backend: str,
                 threads: int | None, graph: bool = False, tf32: bool = False) -> dict:
    import torch

    import nnrun
    from nnrun.runtime.bench import median_step_seconds
    from nnrun.runtime.gradcheck import random_batch

    if threads:
        torch.set_num_threads(threads)
    model = nnrun.compile(spec)
    device = "cuda" if backend == "cupy" else "cpu"
    float32 = _torch_float32(torch, tf32) if device == "cuda" else None
    net = torch_model(model).to(device)
    x, y = random_batch(model, batch, np.random.default_rng(0))
    tx = torch.from_numpy(x.astype(np.float32)).to(device)
    loss_fn, target_type = _torch_loss(torch, model.spec.loss)
    ty = torch.from_numpy(y.astype(target_type)).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def train_step():
        optimizer.zero_grad(set_to_none=not graph)  # a captured step keeps its gradients' memory
        loss_fn(net(tx), ty).backward()
        optimizer.step()

    def inference():
        with torch.no_grad():
            net(tx)

    if graph:
        train_step = _captured_torch_step(torch, train_step)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":  # from here: the weights, the batch, and what the steps add
        torch.cuda.reset_peak_memory_stats()
    net.train()
    train_ms = median_step_seconds(train_step, steps, warmup, sync) * 1e3
    # The most its tensors held at once (gradients, momentum, activations included), as
    # nnrun's peak_memory_mb counts its own; on the CPU PyTorch's allocator is not traced.
    peak_mb = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    net.eval()
    infer_ms = median_step_seconds(inference, steps, warmup, sync) * 1e3
    return {"train_ms": train_ms, "infer_ms": infer_ms, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "peak_mb": peak_mb, "float32": float32}


def _torch_loss(torch, loss):
    """The spec's loss in PyTorch, and the type of its targets (class labels or values)."""
    if loss.type == "cross_entropy":
        return torch.nn.CrossEntropyLoss(), np.int64
    regression = {"mse": torch.nn.MSELoss, "mae": torch.nn.L1Loss,
                  "binary_cross_entropy": torch.nn.BCEWithLogitsLoss}
    if loss.type == "huber":
        return torch.nn.HuberLoss(delta=loss.delta), np.float32
    if loss.type in regression:
        return regression[loss.type](), np.float32
    raise SystemExit(f"benchmark: loss {loss.type} is not mapped to torch here")


def _torch_float32(torch, tf32: bool) -> str:
    """Set how PyTorch's CUDA convolutions and matrix products compute in float32: IEEE
    float32 (nnrun's arithmetic) or PyTorch's defaults (TF32 convolutions); say which ran.
    PyTorch 2.9 and later have newer switches (and refuse a mix of the two kinds), so each
    version gets its own."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        if not tf32:
            conv.fp32_precision = "ieee"
            torch.backends.cuda.matmul.fp32_precision = "ieee"
        return (f"conv {_precision(torch, conv, torch.backends.cudnn)}, "
                f"matmul {_precision(torch, torch.backends.cuda.matmul)}")
    if not tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return (f"conv {'tf32' if torch.backends.cudnn.allow_tf32 else 'ieee'}, "
            f"matmul {'tf32' if torch.backends.cuda.matmul.allow_tf32 else 'ieee'}")


def _precision(torch, *settings) -> str:
    """The first setting that is not "none" (inherit), from the operation's to the global."""
    for setting in (*settings, torch.backends):
        if getattr(setting, "fp32_precision", "none") != "none":
            return setting.fp32_precision
    return "ieee"


def _captured_torch_step(torch, train_step):
    """The step captured whole as PyTorch's documentation does it: warm-up iterations on a
    side stream, then one captured iteration; each call replays it on the same tensors."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            train_step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        train_step()
    return graph.replay


def torch_model(model):
    """The spec's layers as torch modules (the layer kinds of the benchmark workloads)."""
    import torch

    modules, rank = [], len(model.spec.model.input_shape)  # of a sample: [C, *spatial]
    for layer, info in zip(model.spec.model.layers, model.lowered.layers):
        modules += _torch_layer(torch, layer, info, model.param_infos, rank - 1)
        rank = len(info.output.type.shape) - 1  # less the batch axis
    return torch.nn.Sequential(*modules)


def _torch_layer(torch, layer, info, params, spatial: int):
    """`spatial`: how many spatial axes the layer's input has."""
    kind = layer.type
    if kind in ("conv1d", "conv2d"):
        out_ch, in_ch, *kernel = params[f"{info.name}.weight"].shape
        conv = torch.nn.Conv2d if kind == "conv2d" else torch.nn.Conv1d
        if layer.padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise SystemExit(f"benchmark: padding_mode {layer.padding_mode} is not mapped")
        return [conv(in_ch, out_ch, tuple(kernel), layer.stride, layer.padding,
                     dilation=layer.dilation, padding_mode=layer.padding_mode),
                *_act(torch, layer)]
    if kind in ("conv1d_transpose", "conv2d_transpose"):
        in_ch, out_ch, *kernel = params[f"{info.name}.weight"].shape
        conv = torch.nn.ConvTranspose2d if kind == "conv2d_transpose" else torch.nn.ConvTranspose1d
        return [conv(in_ch, out_ch, tuple(kernel), layer.stride, layer.padding,
                     output_padding=layer.output_padding, dilation=layer.dilation),
                *_act(torch, layer)]
    if kind == "dense":
        fan_in, units = params[f"{info.name}.weight"].shape
        return [torch.nn.Linear(fan_in, units), *_act(torch, layer)]
    pools = {"maxpool1d": torch.nn.MaxPool1d, "maxpool2d": torch.nn.MaxPool2d,
             "avgpool1d": torch.nn.AvgPool1d, "avgpool2d": torch.nn.AvgPool2d}
    if kind in pools:
        return [pools[kind](layer.pool_size, layer.stride, layer.padding)]
    if kind in ("global_avgpool", "global_maxpool"):
        pool = getattr(torch.nn, f"Adaptive{'Avg' if 'avg' in kind else 'Max'}Pool{spatial}d")
        return [pool(1), torch.nn.Flatten()]
    if kind in _ACTIVATIONS:
        return [_ACTIVATIONS[kind](torch)]
    simple = {"flatten": torch.nn.Flatten}
    if kind in simple:
        return [simple[kind]()]
    if kind == "dropout":
        return [torch.nn.Dropout(layer.rate)]
    if kind in ("upsample1d", "upsample2d"):
        scale = layer.scale if isinstance(layer.scale, list) else [layer.scale] * spatial
        corners = {} if layer.mode == "nearest" else {"align_corners": False}
        return [torch.nn.Upsample(scale_factor=tuple(map(float, scale)), mode=layer.mode,
                                  **corners)]
    if kind == "batchnorm":  # nnrun's momentum keeps the running value: PyTorch's takes the batch
        norm = torch.nn.BatchNorm2d if info.output.type.rank == 4 else torch.nn.BatchNorm1d
        return [norm(params[f"{info.name}.gamma"].shape[0], eps=layer.eps,
                     momentum=1 - layer.momentum)]
    raise SystemExit(f"benchmark: layer type {kind} is not mapped to torch here")


# The activations as torch modules, with PyTorch's defaults (a spec's own parameters, such as a
# leaky_relu slope, do not change the time).
_ACTIVATIONS = {
    "relu": lambda torch: torch.nn.ReLU(), "tanh": lambda torch: torch.nn.Tanh(),
    "sigmoid": lambda torch: torch.nn.Sigmoid(), "gelu": lambda torch: torch.nn.GELU(),
    "leaky_relu": lambda torch: torch.nn.LeakyReLU(), "elu": lambda torch: torch.nn.ELU(),
    "softmax": lambda torch: torch.nn.Softmax(dim=1)}


def _act(torch, layer):
    activation = getattr(layer, "activation", None)
    if activation is None:
        return []
    if activation.type not in _ACTIVATIONS:
        raise SystemExit(f"benchmark: activation {activation.type} is not mapped to torch here")
    return [_ACTIVATIONS[activation.type](torch)]


# --- the driver ----------------------------------------------------------------------------


def _spec_batch(spec: str) -> int:
    """A spec's own train.batch_size, where --batch-size names none."""
    import nnrun

    return nnrun.load_spec(spec).spec.train.batch_size


def run_worker(side: str, spec: str, batch: int, args) -> dict:
    command = [sys.executable, __file__, "--worker", side, spec, "--batch-size", str(batch),
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--backend", args.backend]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.torch_tf32:
        command.append("--torch-tf32")
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} worker failed on {spec}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _optional_worker(side: str, spec: str, batch: int, args) -> dict | None:
    """PyTorch's captured step is an extra column: its failure is reported, not fatal."""
    try:
        return run_worker(side, spec, batch, args)
    except SystemExit as failure:
        if side != "torch-graph":
            raise
        print(f"torch-graph (PyTorch with its step captured) failed: {failure}", file=sys.stderr)
        return None


def compare(spec: str, batch: int, args) -> dict:
    sides = ("nnrun", "torch", "torch-graph") if args.backend == "cupy" else ("nnrun", "torch")
    results = {side: [] for side in sides}
    for repetition in range(args.repetitions):
        order = sides if repetition % 2 == 0 else sides[::-1]
        for side in order:
            results[side].append(_optional_worker(side, spec, batch, args))
    failed_graph = "torch-graph" in results and not all(results["torch-graph"])
    if failed_graph:  # PyTorch's capture failed: the eager comparison stands
        del results["torch-graph"]
    row = {"workload": Path(spec).stem, "batch": batch}
    for side, runs in results.items():
        row[f"{side}_train_ms"] = round(statistics.median(r["train_ms"] for r in runs), 3)
        row[f"{side}_infer_ms"] = round(statistics.median(r["infer_ms"] for r in runs), 3)
        row[f"{side}_threads"] = runs[0]["threads"]
        row[f"{side}_infer_per_s"] = round(batch / row[f"{side}_infer_ms"] * 1e3)
        peaks = [r["peak_mb"] for r in runs if r.get("peak_mb") is not None]
        row[f"{side}_peak_mb"] = round(statistics.median(peaks), 1) if peaks else None
    row["train_ratio"] = round(row["nnrun_train_ms"] / row["torch_train_ms"], 2)
    row["infer_ratio"] = round(row["nnrun_infer_ms"] / row["torch_infer_ms"], 2)
    row["nnrun_step_path"] = results["nnrun"][0]["step_path"]
    if "torch-graph" in results:
        row["graph_ratio"] = round(row["nnrun_train_ms"] / row["torch-graph_train_ms"], 2)
    elif failed_graph:
        row["torch-graph_train_ms"] = row["graph_ratio"] = None
    row["versions"] = {k: v for r in results.values() for k, v in r[0].items()
                       if k in ("numpy", "torch")}
    if results["torch"][0].get("float32"):
        row["torch_float32"] = results["torch"][0]["float32"]
    return row


def print_table(rows: list[dict], markdown: bool) -> None:
    header = ["workload", "batch", "nnrun train ms", "torch train ms", "train ratio",
              "nnrun infer ms", "torch infer ms", "infer ratio", "nnrun step"]
    keys = ["workload", "batch", "nnrun_train_ms", "torch_train_ms", "train_ratio",
            "nnrun_infer_ms", "torch_infer_ms", "infer_ratio", "nnrun_step_path"]
    if "graph_ratio" in rows[0]:  # PyTorch with its step captured as a CUDA graph (or None)
        header += ["torch graph ms", "graph ratio"]
        keys += ["torch-graph_train_ms", "graph_ratio"]
    if rows[0]["torch_peak_mb"] is not None:  # on a GPU: inference throughput, peak memory
        header += ["nnrun infer/s", "torch infer/s", "nnrun peak MB", "torch peak MB"]
        keys += ["nnrun_infer_per_s", "torch_infer_per_s", "nnrun_peak_mb", "torch_peak_mb"]
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|---|" + "---:|" * (len(header) - 1))
        for row in rows:
            print("| " + " | ".join(str(row[k]) for k in keys) + " |")
        return
    print("  ".join(f"{h:>14}" for h in header))
    for row in rows:
        print("  ".join(f"{row[k]!s:>14}" for k in keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", help="default: issue 7's table of workloads")
    parser.add_argument("--batch-size", type=int, nargs="+", default=None,
                        help="default: issue 7's table's, or each named spec's train.batch_size")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: every core")
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    parser.add_argument("--torch-tf32", action="store_true",
                        help="on CUDA, PyTorch with its default TF32 convolutions "
                             "(default: IEEE float32 on both sides)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--json-out", type=Path, default=None,
                        help="also write the JSON here, row by row as each is measured")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--worker", choices=["nnrun", "torch", "torch-graph"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker = nnrun_worker if args.worker == "nnrun" else torch_worker
        options = {} if args.worker == "nnrun" else {"tf32": args.torch_tf32}
        if args.worker == "torch-graph":
            options["graph"] = True
        result = worker(args.specs[0], args.batch_size[0], args.steps, args.warmup,
                        args.backend, args.threads, **options)
        print(json.dumps(result))
        return
    if args.specs:
        table = [(s, b) for s in args.specs for b in (args.batch_size or [_spec_batch(s)])]
    else:
        table = [(str(WORKLOADS / name), b) for name, b in DEFAULT_TABLE]
    machine = {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
               **_gpu(args.backend), "date": time.strftime("%Y-%m-%d")}
    rows = []
    for spec, batch in table:
        try:
            rows.append(compare(spec, batch, args))
        except SystemExit as failure:  # one workload's failure leaves the others' rows
            print(f"{Path(spec).stem} at batch {batch}: {failure}", file=sys.stderr, flush=True)
            continue
        machine.update(rows[0]["versions"])
        if "torch_float32" in rows[0]:
            machine["torch_float32"] = rows[0]["torch_float32"]
        if args.json_out:  # a run stopped at a time limit keeps the rows it measured
            args.json_out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
        if not args.json:
            print(f"measured: {rows[-1]}", file=sys.stderr, flush=True)
    if not rows:
        raise SystemExit("no workload was measured")
    if args.json:
        print(json.dumps({"machine": machine, "rows": rows}, indent=2))
        return
    print(f"machine: {machine}; medians of {args.repetitions} alternating processes per side")
    print_table(rows, args.markdown)


def _gpu(backend: str) -> dict:
    if backend != "cupy":
        return {}
    from nnrun.backends import BackendUnavailable, get_backend

    try:
        get_backend(backend)
    except BackendUnavailable as missing:  # no CuPy, no device: one line, as nnrun says it
        raise SystemExit(f"vs_torch benchmark: {missing}") from None
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    return {"gpu": name.decode() if isinstance(name, bytes) else name, "cupy": cupy.__version__,
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
