#!/usr/bin/env bash
# Session 14, run 69: half scores at inference (fp16 z relative to 64-block tile maxima; commit
# 34d5f3b, reverted after this run): the probe at 32K and 128K, the coarse-selection GPU tests, then
# the benchmark at 32K and 128K.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 200 python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests/test_coarse_selection.py tests/test_gpu_attention.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -30
timeout 150 python scripts/probe_half_scores.py --seq 32768 131072 2>&1 | tee "$OUT/probe_half.txt"
echo "probe after $((SECONDS - start)) s"
timeout 200 python benchmarks/bench_attention.py --seq 32768 131072 --methods sdpa_cudnn fused_select_only dash_fused \
  fused_fine_only --backward-up-to 0 --out "$OUT" 2>&1 | grep -v "^\[" | tee "$OUT/bench.txt"
echo "bench after $((SECONDS - start)) s"
