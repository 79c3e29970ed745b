#!/usr/bin/env bash
# Session 6: the revised coarse-backward GPU test (per kind of output gradient) and the GPU test
# run 26 cut off (composed mods, bf16).
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 200 python -m pytest -m gpu -v -p no:cacheprovider -rfE --tb=short tests/test_coarse_selection.py \
  "tests/test_gpu_attention.py::test_composed_mods_cuda" -k "backward_matches_definition or composed" > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |PASSED|FAILED|passed|failed|rc=" "$OUT/gpu_tests.log" | head -12
