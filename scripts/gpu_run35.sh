#!/usr/bin/env bash
# Session 7, last device minutes: the fine backward's GPU tests after _delta_rows moved batch·head
# to grid axis 0 (the backward kernels against the definition; training in query chunks).
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 230 python -m pytest -m gpu -v -p no:cacheprovider -rfE --tb=short tests/test_sparse_attention.py \
  -k "backward_kernels_match or training_in_query" > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |PASSED|FAILED|passed|failed|rc=" "$OUT/gpu_tests.log" | head -12
