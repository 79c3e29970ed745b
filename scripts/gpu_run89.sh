#!/usr/bin/env bash
# Session 17, run 89: the coarse launch with the next chunk's score GEMM on a side stream
# (OVERLAP_SCORES) against the serial launch; the mean log p̄ through lg2.approx; then the attention
# benchmark at 8K, 32K, 128K in one process, and the GPU tests of the coarse stage, entmax, decode
# and the fused path's rows / inference tests.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 100 python scripts/probe_score_overlap.py --seq 32768 131072 > "$OUT/overlap.log" 2>&1
echo "overlap rc=$? after $((SECONDS - start)) s"; grep -E "overlap|Error" "$OUT/overlap.log"
timeout 200 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
left=$((575 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 120 --timeout-method thread -rfEx \
  --tb=short tests/test_entmax.py tests/test_coarse_selection.py tests/test_sparse_decode.py \
  tests/test_sparse_attention.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s) after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
