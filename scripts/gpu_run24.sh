#!/usr/bin/env bash
# Session 6, second device run: GPU tests of the new coarse backward (dq / dk̄ GEMMs, log-prior
# chain rule in the VJP kernel) and the packed fine backward; the 32K profile with the coarse
# forward/backward sweeps; the attention benchmark at 8K and 32K.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 170 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=short tests/test_sparse_attention.py \
  tests/test_coarse_selection.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|passed|failed|rc=" "$OUT/gpu_tests.log" | head -12
timeout 170 python scripts/profile_stages.py --seq 32768 --backward --coarse-sweep --rows 30 > "$OUT/profile32k.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile32k.log"; grep -E "^coarse|rc=|Error" "$OUT/profile32k.log" | tail -30
timeout 230 python benchmarks/bench_attention.py --seq 8192 32768 --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$?" >> "$OUT/attn.log"; grep -E "^\| (8192|32768)|rc=|Error" "$OUT/attn.log" | tail -19
rm -f "$OUT"/*/bench_*.png
