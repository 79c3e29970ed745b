#!/usr/bin/env bash
# Session 11, final call (run 53): the fused forward with the row max on raw products and no
# residual store at inference (runs 50-52). The whole benchmark (8K, 32K, 128K in one process),
# the 32K rows again in a second process (runs 51-52 showed ~0.1-0.3 ms between identical
# launches), then the whole GPU suite (verbose, per-test timeout). Run at the commit that adds it.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
start=$SECONDS
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 240 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn dash_select_only \
  dash_fused fused_fine_only --stacks-every 90 --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
timeout 90 python benchmarks/bench_attention.py --seq 32768 --methods sdpa_cudnn dash_select_only dash_fused \
  fused_fine_only --out "$OUT/attn32k" > "$OUT/attn32k.log" 2>&1
echo "attn32k rc=$? after $((SECONDS - start)) s"; grep -E "^\| 32768|Error" "$OUT/attn32k.log" | tail -6
left=$((585 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s)"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -30
