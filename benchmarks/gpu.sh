#!/usr/bin/env bash
# One call on the GPU machine: install from the staged wheels, run the GPU tests, and time
# nnrun (CuPy) against PyTorch (CUDA), each side in its own process. Prepare here with:
#   ../shared/device/stage        (copies the wheels the GPU machine lacks into .device/)
# then run this script there with carry [".device"].
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/wheels/*.whl \
  && export PYTHONPATH=/tmp/site \
  && python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
out="${OUT:-/tmp}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import cupy, torch; print('cupy', cupy.__version__, 'torch', torch.__version__)"
echo "== GPU tests"
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -15 | tee "$out/gpu-tests.txt"
echo "== check-backends: CuPy against NumPy op by op"
for spec in specs/lenet5.yaml specs/residual-block.yaml specs/fcn-segmentation.yaml; do
  timeout 60 nnrun check-backends "$spec" --backend cupy | tail -5 | tee -a "$out/gpu-tests.txt"
done
echo "== nnrun (cupy) vs torch (cuda), train step"
timeout 240 python3 benchmarks/vs_torch.py benchmarks/workloads/lenet5.yaml \
  benchmarks/workloads/mlp.yaml --backend cupy --batch-size 128 1024 --steps 30 \
  --repetitions 3 | tee -a "$out/gpu-bench.txt"
echo "== nnrun (numpy) vs torch (cpu) on this machine's CPU, for reference"
timeout 120 python3 benchmarks/vs_torch.py --backend numpy --steps 10 --repetitions 1 \
  | tee -a "$out/gpu-bench.txt"
echo "== end to end: nnrun train on cupy"
timeout 60 nnrun train specs/quickstart.yaml --backend cupy --out /tmp/quick-cupy --quiet \
  && python3 -c "import json; print(json.load(open('/tmp/quick-cupy/summary.json')))"
if [ -d .device/data/mnist ]; then
  export NNRUN_DATA_DIR=$PWD/.device/data
  timeout 150 nnrun train specs/lenet5.yaml --backend cupy --epochs 2 --out /tmp/lenet-cupy --quiet \
    && python3 -c "import json; print(json.load(open('/tmp/lenet-cupy/summary.json')))"
fi
echo "== the data path: splits held on the GPU, then copied batch by batch (NNRUN_DEVICE_DATA_LIMIT=0)"
for limit in "" 0; do
  NNRUN_DEVICE_DATA_LIMIT=$limit timeout 60 nnrun train specs/quickstart.yaml --backend cupy \
    --epochs 2 --out "/tmp/quick-data-${limit:-device}" --quiet \
    && python3 -c "import json, sys; rows = [json.loads(l) for l in open(sys.argv[1])]; \
print('NNRUN_DEVICE_DATA_LIMIT=${limit:-(budget)}', [(r['epoch_s'], r['samples_per_s']) for r in rows])" \
      "/tmp/quick-data-${limit:-device}/metrics.jsonl"
done
echo "== whole-step CUDA graphs (issue 8): cuBLAS called directly under capture, every ops layout"
timeout 90 python3 -m pytest -q -m gpu -p no:cacheprovider tests/backends/test_cuda_graph.py \
  -k "matmul_into or broken_kernel" -rA 2>&1 | tail -8 | tee "$out/cuda-graph-tests.txt"
echo "== each spec's step path on cupy, its first-step self-check, weights vs numpy after 3 steps"
timeout 180 python3 benchmarks/step_paths.py --backend cupy --jsonl "$out/step-paths.jsonl" 2>&1 \
  | tee "$out/step-paths.txt"
echo "== nnrun bench: the path that ran (captured by default, planned with --no-graph)"
for flag in "" --no-graph; do
  timeout 60 nnrun bench specs/lenet5.yaml --backend cupy --batch-size 128 $flag --format json \
    | python3 -c "import json, sys; r = json.load(sys.stdin); print('${flag:-default}', r['step_path'], r['train_step_ms'], 'ms')"
done
echo "== CuPy kernels of its own: each against its generic code, self-checks, CUDA-graph replay,"
echo "   check-backends on every spec (all results: $out/cupy-kernels-tests.txt)"
timeout 300 python3 -m pytest -q -m gpu -p no:cacheprovider -rA tests/backends/test_cupy_kernels.py \
  --junitxml="$out/cupy-kernels-junit.xml" > "$out/cupy-kernels-tests.txt" 2>&1
grep -E "^(FAILED|ERROR)|nnrun: CuPy kernel|[0-9]+ (passed|failed|skipped|error)" \
  "$out/cupy-kernels-tests.txt" | tail -40
echo "== CuPy kernels: time per call (CUDA events, median), the generic code against the kernel"
timeout 120 python3 benchmarks/cupy_kernels.py --json "$out/cupy-kernels-bench.json" \
  | tee "$out/cupy-kernels-bench.txt"
