#!/usr/bin/env bash
# Session 13, run 66: the decode selection kernel's pieces and warps (its 128K selection took
# 0.058 ms in run 65), the new wide-rows CUDA test with its mean-log comparison on rows whose
# support agrees with the definition, and the decode and cache GPU tests. Run at the commit that
# adds it.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 90 python scripts/probe_decode_pieces.py --blocks 2048 > "$OUT/decode_pieces.log" 2>&1
echo "pieces rc=$? after $((SECONDS - start)) s"; tail -12 "$OUT/decode_pieces.log"
timeout 60 python scripts/probe_decode_pieces.py --blocks 512 > "$OUT/decode_pieces512.log" 2>&1
echo "pieces512 rc=$? after $((SECONDS - start)) s"; tail -10 "$OUT/decode_pieces512.log"
timeout 300 python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests/test_coarse_selection.py tests/test_sparse_decode.py tests/test_gpu_cache.py \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
