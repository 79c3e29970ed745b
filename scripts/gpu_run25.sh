#!/usr/bin/env bash
# Session 6, third device run: GPU tests verbose with tracebacks of any test running past 40 s
# (run 24's test call timed out after 5 tests); coarse backward with dz as bf16 parts (profile,
# sweep); the fused path at 8K and 32K.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 220 python -m pytest -m gpu -v -p no:cacheprovider -rfE --tb=short --durations=0 -o faulthandler_timeout=40 \
  tests/test_coarse_selection.py tests/test_sparse_attention.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "PASSED|FAILED|XFAIL|XPASS|ERROR|Timeout|passed|failed|rc=" "$OUT/gpu_tests.log" | head -30
timeout 150 python scripts/profile_stages.py --seq 32768 --backward --coarse-sweep --rows 30 > "$OUT/profile32k.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile32k.log"; grep -E "^coarse backward|rc=|Error" "$OUT/profile32k.log" | tail -12
timeout 150 python benchmarks/bench_attention.py --seq 8192 32768 --methods sdpa_cudnn dash_select_only dash_fused fused_fine_only \
  --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$?" >> "$OUT/attn.log"; grep -E "^\| (8192|32768)|rc=|Error" "$OUT/attn.log" | tail -10
rm -f "$OUT"/*/bench_*.png
