#!/usr/bin/env bash
# Session 17, run 90: α = 1.5 entmax as 4 Newton steps + the exact step on the support (rows up to
# 1024 blocks; 5 + exact up to 4096); the entmax kernel's vectorised score loads masked in
# registers, the mean log p̄ through lg2.approx.ftz of 2^64·p̄, a (rows, KV heads, batch) grid:
# the attention benchmark at 8K, 32K, 128K in one process, then the GPU tests of the solver's
# users, then the fine stage's and dash_attention's (4 workers: 8 ran out of memory in run 89).
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 200 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
timeout 150 python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 120 --timeout-method thread -rfEx \
  --tb=short tests/test_entmax.py tests/test_coarse_selection.py tests/test_sparse_decode.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
left=$((580 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 4 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests/test_sparse_attention.py tests/test_gpu_attention.py tests/test_gpu_cache.py \
  tests/test_selection_ops.py tests/test_block_summary.py > "$OUT/gpu_tests2.log" 2>&1
echo "tests2 rc=$? (limit $left s) after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests2.log" | head -20
