#!/usr/bin/env bash
# Device run: cache GPU tests (details), decode benchmark (folded layout) at 32K and 128K.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
timeout 200 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=short -x tests/test_gpu_cache.py > "$OUT/gpu_cache.log" 2>&1
echo "cache rc=$?" >> "$OUT/gpu_cache.log"; grep -E "^E |FAILED|passed|failed|rc=" "$OUT/gpu_cache.log" | head -20
timeout 230 python benchmarks/bench_decode.py --lengths 32768 131072 --dash-variants fold --reps 50 --warmup 10 \
  --out "$OUT/decode" > "$OUT/bench_decode.log" 2>&1
echo "bench rc=$?" >> "$OUT/bench_decode.log"; grep -v "warn\|record(" "$OUT/bench_decode.log" | tail -30
