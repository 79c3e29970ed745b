#!/usr/bin/env bash
# Device run: the sparse_decode kernel and in-place cache writes on CUDA (tests), decode benchmark.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
timeout 170 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=short tests/test_gpu_cache.py \
  -k "kernel or compiled or chunked" > "$OUT/gpu_cache.log" 2>&1
echo "cache rc=$?" >> "$OUT/gpu_cache.log"; grep -E "^E  |FAILED|passed|failed|rc=" "$OUT/gpu_cache.log" | head -20
timeout 210 python benchmarks/bench_decode.py --lengths 32768 131072 --dash-variants kernel fold --reps 30 --warmup 5 \
  --out "$OUT/decode" > "$OUT/bench_decode.log" 2>&1
echo "bench rc=$?" >> "$OUT/bench_decode.log"; grep -v "warn\|record(" "$OUT/bench_decode.log" | tail -24
