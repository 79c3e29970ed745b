#!/usr/bin/env bash
# Device run: fused fine stage GPU tests; bench_attention at 8K/32K; stage profile at 32K.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"
timeout 150 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=short tests/test_sparse_attention.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|passed|failed|rc=" "$OUT/gpu_tests.log" | head -20
timeout 100 python scripts/profile_stages.py --seq 32768 > "$OUT/profile.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile.log"; tail -5 "$OUT/profile.log"
timeout 240 python benchmarks/bench_attention.py --seq 8192 32768 --out "$OUT/bench" > "$OUT/bench.log" 2>&1
echo "bench rc=$?" >> "$OUT/bench.log"; grep -v "warn\|record(" "$OUT/bench.log" | tail -24
