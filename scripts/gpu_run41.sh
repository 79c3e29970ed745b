#!/usr/bin/env bash
# Final tables with the one-warp entmax configs (8K / 32K / 128K; run 40's 8K row ran beside
# orphaned pytest workers), then the coarse and entmax GPU suites (incl. the wide-row VJP test).
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 120 python benchmarks/bench_attention.py --seq 8192 32768 --methods sdpa_cudnn dash_select_only dash_fused \
  --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$?"; grep -E "^\| (8192|32768)|Error" "$OUT/attn.log" | tail -6
timeout 90 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn dash_select_only dash_fused \
  --out "$OUT/attn128k" > "$OUT/attn128k.log" 2>&1
echo "attn128k rc=$?"; grep -E "^\| 131072|Error" "$OUT/attn128k.log" | tail -3
timeout 150 python -m pytest -m gpu -n 8 -p no:cacheprovider -rfEx --tb=short tests/test_coarse_selection.py \
  tests/test_entmax.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|ERROR|passed|failed|rc=" "$OUT/gpu_tests.log" | head -20
