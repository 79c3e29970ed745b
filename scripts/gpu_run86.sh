#!/usr/bin/env bash
# Session 16, run 86: the final code (α = 1.5 Newton step through rsqrt; the 64-block score GEMM
# tile on 2048-block rows): the GPU tests of the solver's users (entmax, coarse selection, decode),
# then the attention benchmark at 32K, 128K, 8K in one process, within what is left of the budget.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 110 python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 120 --timeout-method thread -rfEx \
  --tb=short tests/test_entmax.py tests/test_coarse_selection.py tests/test_sparse_decode.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
grep -c PASSED "$OUT/gpu_tests.log"
left=$((255 - (SECONDS - start)))
timeout "$left" python benchmarks/bench_attention.py --seq 32768 131072 8192 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s (limit $left s)"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
