#!/usr/bin/env bash
# Session 6, last device run: the coarse backward's errors per kind of output gradient; the GPU
# tests run 25 did not finish (coarse backward, chunked inference, tests/test_gpu_attention.py);
# the 128K forward.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 60 python scripts/diagnose_coarse_backward.py > "$OUT/diagnose.log" 2>&1; echo "diag rc=$?" >> "$OUT/diagnose.log"
cat "$OUT/diagnose.log" | tail -8
timeout 120 python -m pytest -m gpu -v -p no:cacheprovider -rfE --tb=short tests/test_coarse_selection.py \
  tests/test_sparse_attention.py -k "backward_matches_definition or inference_in_query_chunks" > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |PASSED|FAILED|passed|failed|rc=" "$OUT/gpu_tests.log" | head -12
timeout 250 python -m pytest -m gpu -v -p no:cacheprovider -rfE --tb=short --durations=5 tests/test_gpu_attention.py \
  > "$OUT/gpu_attention.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_attention.log"; grep -E "^E  |PASSED|FAILED|passed|failed|rc=" "$OUT/gpu_attention.log" | head -22
timeout 110 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn dash_select_only dash_fused fused_fine_only \
  --out "$OUT/attn128" > "$OUT/attn128.log" 2>&1
echo "attn128 rc=$?" >> "$OUT/attn128.log"; grep -E "^\| 131072|rc=|Error" "$OUT/attn128.log" | tail -5
rm -f "$OUT"/*/bench_*.png
