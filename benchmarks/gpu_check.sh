#!/usr/bin/env bash
# One prepared device check for issue 12 (fused layer kernels) and the pending energy run.
#
#   bash benchmarks/gpu_check.sh [PARTS] [DATA_DIR]     PARTS: all (default) or a comma list of tests,kernels,energy
#
# Run on a CUDA machine from the repo root; results go to $OUT (the device tool's return folder)
# or benchmarks/results/. The machine is offline, so the package is installed without
# dependencies into the image's python3 (torch, triton, torch_geometric, tqdm, nvidia-ml-py are
# there), and MNIST must travel with the repo: copy ../shared/data/mnist into an ignored folder
# (.gpu_data/mnist; /.gpu_data/ is in .gitignore) and name .gpu_data in the tool's `carry`.
# Budget (H200): tests ~1 min, kernels ~4 min, energy ~4 min, precision ~3 min, step ~2 min; run
# them as two calls (`tests,kernels,step` then `energy,precision`): one call's limit is 10 minutes.
#   tests:   pytest -m gpu (docs/guides/kernels.md#error-rule, fp32/bf16/fp16) + the kernel tests on CUDA.
#   kernels: benchmarks/bench_kernels.py, eager vs torch.compile vs Triton, FF and MF layers,
#            batch 128..4096 x width 1000..4096, fp32 and bf16.
#   energy:  benchmarks/bench_energy.py, Mono-Forward vs backprop on MNIST mlp:2x1000, 3 repeats,
#            NVML energy counter, relative spread reported.
#   precision: benchmarks/bench_precision.py, MF and backprop on MNIST mlp:4x1000, fp32 vs bf16 vs fp16
#            (throughput and accuracy, interleaved repeats), ~3 min.
#   step:    benchmarks/bench_step.py, MF and backprop epoch time with the data on the device vs on the
#            host, and CUDA syncs per step under torch.cuda.set_sync_debug_mode (N vs 3N steps), ~2 min.
set -euo pipefail
PART=${1:-all}
DATA=${2:-.gpu_data}
RES=${OUT:-benchmarks/results}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$RES"
$PY -m pip install --no-deps --no-build-isolation -q -e . 2>&1 | tail -2 || true
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$RES/gpu_check_device.txt"
$PY -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" \
  | tee -a "$RES/gpu_check_device.txt"
if [[ $PART == all || ",$PART," == *",tests,"* ]]; then
  $PY -m pytest -m gpu tests/kernels -q -p no:cacheprovider -rA 2>&1 | tee "$RES/gpu_tests.log"
fi
if [[ $PART == all || ",$PART," == *",kernels,"* ]]; then
  $PY benchmarks/bench_kernels.py --device cuda --impl torch,compile,triton --dtype float32,bfloat16 \
    --batches 128,512,1024,4096 --widths 1000,2000,4096 --repeats 20 --warmup 3 --out "$RES" 2>&1 \
    | grep -v '^W[0-9]' | tee "$RES/bench_kernels.log"
fi
if [[ $PART == all || ",$PART," == *",energy,"* ]]; then
  $PY benchmarks/bench_energy.py --repeats 3 --epochs 3 --arch mlp:2x1000 --data-dir "$DATA" --device cuda \
    --idle-seconds 5 --cooldown 10 --out "$RES" 2>&1 | tee "$RES/bench_energy.log"
fi
if [[ $PART == all || ",$PART," == *",precision,"* ]]; then
  $PY benchmarks/bench_precision.py --device cuda --data-dir "$DATA" --epochs 2 --repeats 2 --out "$RES" 2>&1 \
    | tee "$RES/bench_precision.log"
fi
if [[ $PART == all || ",$PART," == *",step,"* ]]; then
  $PY benchmarks/bench_step.py --device cuda --data-dir "$DATA" --out "$RES" 2>&1 | tee "$RES/bench_step.log"
fi
