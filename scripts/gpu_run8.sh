#!/usr/bin/env bash
# Device run: fused coarse op (GPU tests, entmax after the solver refactor), fused-grad diagnosis,
# forward-kernel launch sweep + stage profile at 32K, bench_attention at 8K/32K.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"
timeout 150 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=short tests/test_coarse_selection.py tests/test_entmax.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|passed|failed|rc=" "$OUT/gpu_tests.log" | head -20
timeout 60 python scripts/diagnose_fused_grads.py > "$OUT/diag.log" 2>&1; echo "diag rc=$?" >> "$OUT/diag.log"; cat "$OUT/diag.log" | grep -v Warn | tail -12
timeout 90 python scripts/profile_stages.py --seq 32768 --sweep --rows 14 > "$OUT/profile.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile.log"; grep -E "fused forward|rc=|Self CUDA time total" "$OUT/profile.log"
timeout 200 python benchmarks/bench_attention.py --seq 8192 32768 --out "$OUT/bench" > "$OUT/bench.log" 2>&1
echo "bench rc=$?" >> "$OUT/bench.log"; grep -v "warn\|record(" "$OUT/bench.log" | tail -21
