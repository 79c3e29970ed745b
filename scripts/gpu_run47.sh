#!/usr/bin/env bash
# Session 10's third call (run 47), after the early exit's removal (the entmax Newton loop now always runs
# N_NEWTON steps; run 46 found the one launch that hung): the whole benchmark (8K, 32K, 128K in one
# process), then the GPU suite, verbose with a per-test timeout so that a failing or hanging test
# is named (run 46's suite showed 2 F's and was cut before its summary).
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
start=$SECONDS
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 270 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn dash_select_only \
  dash_fused fused_fine_only --stacks-every 90 --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
left=$((580 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s)"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -30
