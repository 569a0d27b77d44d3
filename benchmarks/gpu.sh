#!/usr/bin/env bash
# One call on the GPU machine: install from the staged wheels, run the GPU tests, check each
# spec's step path, and time nnrun (CuPy) against PyTorch (CUDA), each side in its own process.
# Prepare here with:
#   ../shared/device/stage --data   (the wheels the GPU machine lacks, and MNIST, into .device/)
# then run this script there with carry [".device"] and a timeout_s of 600.
#
# A session has about 15 minutes of device time, start-up included, so the sections run in
# order of importance within one budget (GPU_SH_BUDGET seconds, default 480): each gets at most
# its own limit and what is left, and those that no longer fit are skipped and say so. Every
# section's whole output is kept in $OUT/<section>.txt; the screen shows its tail.
set -uo pipefail
started=$(date +%s)
deadline=$((started + ${GPU_SH_BUDGET:-480}))
out="${OUT:-/tmp/gpu-sh}"
mkdir -p "$out"

section() {  # section NAME SECONDS 'COMMAND': COMMAND runs under bash within the budget
  local name=$1 limit=$2 command=$3 left
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
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/machine.txt"
python3 -c "import cupy, torch; print('cupy', cupy.__version__, 'torch', torch.__version__)" \
  | tee -a "$out/machine.txt"
[ -d .device/data/mnist ] && export NNRUN_DATA_DIR=$PWD/.device/data

# 1. Correctness first: every GPU test (kernels against the generic code, capture, planned and
#    captured steps against NumPy on every spec, check-backends on every spec, NCCL).
section gpu-tests 210 "python3 -m pytest -q -m gpu -p no:cacheprovider -rfE tests \
  --junitxml=$out/gpu-tests-junit.xml"

# 2. Each spec's step path on CuPy, its first-step self-check, and its weights against NumPy.
section step-paths 90 "python3 benchmarks/step_paths.py --backend cupy --jsonl $out/step-paths.jsonl"

# 3. The table: nnrun (CuPy) against PyTorch eager and PyTorch with a captured step.
section vs-torch 150 "python3 benchmarks/vs_torch.py benchmarks/workloads/lenet5.yaml \
  benchmarks/workloads/mlp.yaml --backend cupy --batch-size 128 1024 --steps 30 --repetitions 2"

# 4. The path bench takes by default (captured) and with --no-graph.
section bench-paths 45 'for flag in "" --no-graph; do
  python3 -m nnrun bench specs/lenet5.yaml --backend cupy --batch-size 128 $flag --format json \
  | python3 -c "import json, sys; r = json.load(sys.stdin); print(\"${flag:-default}\", r[\"step_path\"], r[\"train_step_ms\"], \"ms\", r[\"inference_ms\"], \"ms\")"
done'

# 5. Each CuPy kernel against its generic code (CUDA events, median).
section kernels 60 "python3 benchmarks/cupy_kernels.py --json $out/cupy-kernels.json"

# 6. End to end: training on CuPy, the summary's accuracy and path.
section train 100 'python3 -m nnrun train specs/quickstart.yaml --backend cupy --out /tmp/quick-cupy --quiet \
  && python3 -c "import json; print(json.load(open(\"/tmp/quick-cupy/summary.json\")))"
if [ -n "${NNRUN_DATA_DIR:-}" ]; then
  python3 -m nnrun train specs/lenet5.yaml --backend cupy --epochs 2 --out /tmp/lenet-cupy --quiet \
  && python3 -c "import json; print(json.load(open(\"/tmp/lenet-cupy/summary.json\")))"
fi'

# 7. The data path: splits held on the GPU, then copied batch by batch.
section data-path 45 'for limit in "" 0; do
  NNRUN_DEVICE_DATA_LIMIT=$limit python3 -m nnrun train specs/quickstart.yaml --backend cupy --epochs 2 \
    --out /tmp/quick-data-${limit:-device} --quiet \
  && python3 -c "import json, sys; rows = [json.loads(l) for l in open(sys.argv[1])]; print(\"NNRUN_DEVICE_DATA_LIMIT=${limit:-(budget)}\", [(r[\"epoch_s\"], r[\"samples_per_s\"]) for r in rows])" \
    /tmp/quick-data-${limit:-device}/metrics.jsonl
done'

# 8. For reference, this machine's CPU: nnrun (NumPy) against PyTorch (CPU).
section cpu-vs-torch 90 "python3 benchmarks/vs_torch.py --backend numpy --steps 10 --repetitions 1"

echo "== done in $(($(date +%s) - started)) s; every section's output is in $out"
