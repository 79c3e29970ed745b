#!/usr/bin/env bash
# Session 18, run 94 (written in session 17, not run then): the final code of session 17 (the
# inference coarse launch's score chunks at 512 MiB, the 2^24 log scale): the attention benchmark at
# 8K, 32K, 128K in one process; where 128K's forward time goes (profiler); then the GPU tests of
# the coarse stage, the fine stage, dash_attention, the cache, selection and block summaries.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 200 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
timeout 90 python scripts/profile_stages.py --seq 131072 --rows 14 > "$OUT/profile128k.log" 2>&1
echo "profile rc=$? after $((SECONDS - start)) s"
left=$((560 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 4 -p no:cacheprovider --timeout 200 --timeout-method thread -rfEx -q \
  --tb=short tests/test_coarse_selection.py tests/test_sparse_attention.py tests/test_gpu_attention.py \
  tests/test_gpu_cache.py tests/test_selection_ops.py tests/test_block_summary.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s) after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
