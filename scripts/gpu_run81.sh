#!/usr/bin/env bash
# Session 15, run 81: the final code (HEAVY_TILES_FIRST on; causal inference / training chunks sized
# by the keys they see, fused_chunk_bounds): the attention benchmark at 8K, 32K, 128K in one
# process, then the fused path's GPU tests (chunks, heavy-first, rows / descriptors / inference).
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 300 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
left=$((560 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests/test_sparse_attention.py -k "chunk or heavy or rows or descriptor or inference" \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s)"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
