#!/usr/bin/env bash
# Session 14, run 74: the final attention benchmark (8K, 32K, 128K; 32K again in a second process)
# with the session's two changes (score GEMM tile (128, 32, 8, 4); TMA descriptor loads in the
# inference fine kernel), then the GPU tests of the coarse stage and the fused path (the GEMM tile
# changed after run 73's whole suite).
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 240 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
timeout 80 python benchmarks/bench_attention.py --seq 32768 --methods sdpa_cudnn fused_select_only dash_fused \
  fused_fine_only --out "$OUT/attn32k" > "$OUT/attn32k.log" 2>&1
echo "attn32k rc=$? after $((SECONDS - start)) s"; grep -E "^\| 32768|Error" "$OUT/attn32k.log" | tail -4
left=$((570 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests/test_coarse_selection.py tests/test_sparse_attention.py tests/test_gpu_attention.py \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s)"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -30
