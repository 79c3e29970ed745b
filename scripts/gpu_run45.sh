#!/usr/bin/env bash
# Record of run 45 (session 10). diagnose_coarse_stall.py was removed after it: run this at commit 18caa8d.
# Session 10's first call. The 128K coarse stall (docs/benchmarks.md, session 9): widths 1024/2048
# now launch (4, 4) / (2, 4) and several-warp launches run every Newton step. Chunk by chunk at 128K
# (scripts/diagnose_coarse_stall.py; a stall leaves its kernel's line last): the new table, the
# 128K benchmark and the wide-row tests (per-test timeout) first; then the old (1, 2) launch
# without and with the early exit, last, so that a wedged GPU spoils nothing after it.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
stall() {  # $1: limit in s, $2: log name, rest: diagnose_coarse_stall.py arguments (the first compiles)
  local limit=$1 log="$OUT/stall_$2.log"; shift 2
  timeout "$limit" python scripts/diagnose_coarse_stall.py "$@" > "$log" 2>&1
  echo "[stall $*] rc=$?"; grep -v Warn "$log" | tail -2
}
stall 90 table --early-exit auto
timeout 220 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn dash_select_only dash_fused \
  --stacks-every 60 --out "$OUT/attn128k" > "$OUT/attn128k.log" 2>&1
echo "attn128k rc=$?"; grep -E "^\[|^\| 131072|Error" "$OUT/attn128k.log" | tail -8
timeout 120 python -m pytest -m gpu -p no:cacheprovider --timeout 60 -rfEx --tb=short tests/test_coarse_selection.py \
  -k "wide_rows or looped" > "$OUT/wide_tests.log" 2>&1
echo "wide rows rc=$?"; grep -E "^E  |FAILED|Timeout|passed|failed" "$OUT/wide_tests.log" | head -8
stall 60 1x2_fixed --config 1x2 --early-exit off
stall 60 1x2_early --config 1x2 --early-exit on
