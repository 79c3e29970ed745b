#!/usr/bin/env bash
# Device run: the fused decode path (decode_selection + split-KV/merge kernels): GPU tests, the
# CUDA-graph profile with the split-KV launch sweep, then bench_decode at 32K / 128K.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 150 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=short tests/test_gpu_cache.py \
  -k "decode_kernels or kernel" > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|passed|failed|rc=" "$OUT/gpu_tests.log" | head -14
timeout 170 python scripts/profile_decode.py --sweep > "$OUT/profile_decode.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile_decode.log"; grep -v "warps=" "$OUT/profile_decode.log"
sort -t'|' -k4 -n "$OUT/profile_decode.log" | grep "warps=" | head -6
timeout 230 python benchmarks/bench_decode.py --lengths 32768 131072 --dash-variants kernel --out "$OUT/bench" \
  > "$OUT/bench_decode.log" 2>&1
echo "bench rc=$?" >> "$OUT/bench_decode.log"; tail -22 "$OUT/bench_decode.log"
