#!/usr/bin/env bash
# Session 7: GPU tests with two backward pipeline stages (the new default): the fine and coarse
# suites (incl. the training-in-query-chunks test, never run before) and the one GPU attention
# test run 27 did not reach.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 520 python -m pytest -m gpu -v -p no:cacheprovider -rfE --tb=short tests/test_sparse_attention.py \
  tests/test_coarse_selection.py "tests/test_gpu_attention.py::test_eager_flex_equals_compiled_flex_cuda" \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |PASSED|FAILED|XFAIL|passed|failed|rc=" "$OUT/gpu_tests.log" | head -40
