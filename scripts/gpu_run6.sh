#!/usr/bin/env bash
# Device run: cache GPU tests after the fold-options and compile-counter fixes; decode-kernel stage split at 32K/128K.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
timeout 110 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=line tests/test_gpu_cache.py \
  -k "compiled or (64 and dtype1)" > "$OUT/gpu_cache.log" 2>&1
echo "cache rc=$?" >> "$OUT/gpu_cache.log"; grep -E "^E  |FAILED|passed|failed|rc=" "$OUT/gpu_cache.log" | head -12
timeout 100 python benchmarks/bench_decode.py --lengths 32768 131072 --dash-variants kernel --flex-options decode --reps 30 --warmup 5 \
  --out "$OUT/decode" > "$OUT/bench_decode.log" 2>&1
echo "bench rc=$?" >> "$OUT/bench_decode.log"; grep -v "warn\|record(" "$OUT/bench_decode.log" | tail -20
