#!/usr/bin/env bash
# Session 17, run 86: the final code of session 16 (α = 1.5 Newton step through rsqrt; the 64-block
# score GEMM tile on 2048-block rows): the attention benchmark at 8K, 32K, 128K in one process,
# then the GPU tests of the solver's users (entmax, coarse selection, decode).
# (Written in session 16, not run there: the device refused every start after run 85.)
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 300 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
left=$((570 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 120 --timeout-method thread -rfEx \
  --tb=short tests/test_entmax.py tests/test_coarse_selection.py tests/test_sparse_decode.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s) after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
