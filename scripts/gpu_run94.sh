#!/usr/bin/env bash
# Session 17, run 94: NOT RUN (too little device time was left to start a machine). The final code (the
# inference coarse launch's score chunks at 512 MiB): the
# attention benchmark at 8K, 32K, 128K in one process, then the coarse-stage GPU tests.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 150 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
timeout 60 python -m pytest -m gpu -n 8 -p no:cacheprovider --timeout 60 --timeout-method thread -rfEx -q \
  --tb=short tests/test_coarse_selection.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -10
