#!/usr/bin/env bash
# Session 18, run 97: the final code (same as run 96): the attention benchmark at 8K, 32K, 128K in
# one process (run 96's 8K row was host-bound: its untouched training path moved 2.94 → 4.47 ms),
# where the 32K forward's time goes (profiler), then dash_attention's and the selection's GPU tests.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 150 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
timeout 60 python scripts/profile_stages.py --seq 32768 --rows 12 > "$OUT/profile32k.log" 2>&1
echo "profile rc=$? after $((SECONDS - start)) s"
left=$((420 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 4 -p no:cacheprovider --timeout 200 --timeout-method thread -rfEx -q \
  --tb=short tests/test_gpu_attention.py tests/test_block_summary.py tests/test_selection_ops.py \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s) after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
