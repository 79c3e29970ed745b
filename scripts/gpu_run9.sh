#!/usr/bin/env bash
# Device run: fused coarse op (split-bf16 scores, 16 warps) and the head-packed fused forward:
# GPU tests, fp32 gradient diagnosis, forward launch sweep + stage profile, bench_attention at 32K.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"
timeout 130 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=short tests/test_coarse_selection.py \
  tests/test_sparse_attention.py -k "coarse or kernel_matches" > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|passed|failed|rc=" "$OUT/gpu_tests.log" | head -20
timeout 60 python scripts/diagnose_fused_grads.py --dtypes float32 --sigmas 1 inf --paths triton torch_def > "$OUT/diag.log" 2>&1
echo "diag rc=$?" >> "$OUT/diag.log"; grep -v "arn\|run_backward" "$OUT/diag.log" | tail -8
timeout 70 python scripts/profile_stages.py --seq 32768 --sweep --rows 12 > "$OUT/profile.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile.log"; grep -E "fused forward|rc=|Self CUDA time total" "$OUT/profile.log"
timeout 150 python benchmarks/bench_attention.py --seq 32768 --out "$OUT/bench" > "$OUT/bench.log" 2>&1
echo "bench rc=$?" >> "$OUT/bench.log"; grep -v "warn\|record(" "$OUT/bench.log" | tail -12
