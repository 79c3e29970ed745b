#!/usr/bin/env bash
# Session 10's fourth and last call (run 48): widths 1024 / 2048 at (1, 2) (no early exit since run 47). The whole
# benchmark, then the GPU tests of the coarse stage (the wide-row tests run (1, 2) forward and VJP),
# attention and decode; run 47 ran the whole suite on the code before this change.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
start=$SECONDS
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 150 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn dash_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
left=$((280 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 100 --timeout-method thread -rfEx \
  --tb=short tests/test_coarse_selection.py tests/test_gpu_attention.py tests/test_sparse_decode.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s)"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -30
