#!/usr/bin/env bash
# GPU correctness run for the device machine (torch preinstalled, no network):
#   bash scripts/gpu_check.sh            # results under $OUT (or ./out)
# Runs every `gpu`-marked test (CUDA kernels vs torch/reference, opcheck on CUDA, compile),
# then the demo at GPU size.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out}"
mkdir -p "$OUT"
export PYTHONPATH=.
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
python -m pytest -m gpu -q -p no:cacheprovider -rs tests compile_tests property_tests "$@" 2>&1 | tee "$OUT/gpu_tests.log" | tail -40
status=${PIPESTATUS[0]}
python -m dash_flex.demo --out "$OUT/demo_gpu.png" 2>&1 | grep -v Warning | tee "$OUT/demo_gpu.log" | tail -12
exit $status
