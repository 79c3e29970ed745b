#!/usr/bin/env bash
# Session 15, run 83: the whole GPU suite on the final code (HEAVY_TILES_FIRST, fused_chunk_bounds).
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 470 python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests compile_tests > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -30
