#!/usr/bin/env bash
# Session 14, run 77: the final code's 128K benchmark (descriptors from 64K keys: a 128K call's late
# chunks), then the fused inference GPU tests (run 76's test subset was cut by its own time limit).
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 110 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn fused_select_only dash_fused \
  fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| 131072|Error" "$OUT/attn.log" | tail -4
left=$((225 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 100 --timeout-method thread -rfEx \
  --tb=short tests/test_sparse_attention.py -k "rows or inference or descriptor" > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s)"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
