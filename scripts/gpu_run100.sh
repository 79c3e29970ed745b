#!/usr/bin/env bash
# Session 18, run 100 — NOT RUN (too little device time left in session 18; run 102 ran these tests): the review fixes' GPU tests: the list builder's lg2 bias against the torch
# prior (p̄ of 1, 1e-30, 1e-40), the fine kernel writing into a strided out (32- and 128-row
# tiles), the no-zero-fill poison test with the checks tightened.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 150 python -m pytest -m gpu -n 3 -p no:cacheprovider --timeout 140 --timeout-method thread -rfEx -q --tb=short \
  tests/test_sparse_attention.py tests/test_coarse_selection.py -k "cuda_rows_list_kernel or writes_into or zero_fill" \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
