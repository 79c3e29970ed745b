#!/usr/bin/env bash
# Session 12, run 62, after the review: the rows path's CUDA tests (the list builder now steps 32
# blocks at a time for unpacked 128-row tiles), the attention GPU tests (the fp32 pool_query bound
# set from runs 60-61), and the rows path where heads cannot be packed against the block-major
# call. Run at the commit that adds it.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 200 python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests/test_sparse_attention.py tests/test_coarse_selection.py tests/test_gpu_attention.py \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
timeout 90 python scripts/probe_unpacked_rows.py --seq 16384 --heads 8 > "$OUT/unpacked.log" 2>&1
echo "unpacked rc=$? after $((SECONDS - start)) s"; cat "$OUT/unpacked.log" | tail -6
