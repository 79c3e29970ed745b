#!/usr/bin/env bash
# Session 12, run 57: inference from p̄ rows (coarse_selection_rows + sparse_attention_rows, no
# block-major prior or flags). The new GPU tests first, then the benchmark (8K, 32K, 128K in one
# process) with both layouts side by side (dash_fused against dash_fused_block_major, and each
# stage alone), then the whole GPU suite. Run at the commit that adds it.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 150 python -m pytest -m gpu -n 4 -v -p no:cacheprovider --timeout 120 --timeout-method thread -rfEx \
  --tb=short tests/test_sparse_attention.py tests/test_coarse_selection.py -k "rows" > "$OUT/rows_tests.log" 2>&1
echo "rows tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|passed|failed" "$OUT/rows_tests.log" | head -20
timeout 240 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_select_only dash_fused dash_fused_block_major fused_fine_only fused_fine_block_major --stacks-every 90 \
  --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -21
left=$((585 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s)"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -30
