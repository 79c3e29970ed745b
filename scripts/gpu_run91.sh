#!/usr/bin/env bash
# Session 17, run 91: the final code (α = 1.5: 4 Newton steps + the exact step up to 2048 entries,
# so 128K's 2048-block rows too): the attention benchmark at 8K, 32K, 128K in one process, the
# GPU tests of the solver's users, then the compile tests.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 200 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
timeout 150 python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 120 --timeout-method thread -rfEx \
  --tb=short tests/test_entmax.py tests/test_coarse_selection.py tests/test_sparse_decode.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
left=$((440 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 4 -v -p no:cacheprovider --timeout 200 --timeout-method thread -rfEx \
  --tb=short compile_tests > "$OUT/gpu_compile.log" 2>&1
echo "compile tests rc=$? (limit $left s) after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_compile.log" | head -20
