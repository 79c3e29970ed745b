#!/usr/bin/env bash
# Session 16, run 86: the final code (α = 1.5 Newton step through rsqrt; the 64-block score GEMM
# tile on 2048-block rows): the GPU tests of the solver's users (entmax, coarse selection, decode).
# NOT RUN in session 16: the device refused every start after run 85 until its budget was spent;
# the next session should run this (or the whole GPU suite) first.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 150 python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 120 --timeout-method thread -rfEx \
  --tb=short tests/test_entmax.py tests/test_coarse_selection.py tests/test_sparse_decode.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
grep -c PASSED "$OUT/gpu_tests.log"
