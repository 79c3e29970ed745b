#!/usr/bin/env bash
# Device run: cache + bf16 attention GPU tests, decode benchmark, short retrieval-experiment probe.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
export DASH_FLEX_GPU_LOG="$OUT/gpu_errors.jsonl"
timeout 80 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=short tests/test_gpu_cache.py > "$OUT/gpu_tests.log" 2>&1
echo "cache rc=$?" >> "$OUT/gpu_tests.log"
timeout 100 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=short -k dtype1 \
  "tests/test_gpu_attention.py::test_matches_reference_cuda" "tests/test_gpu_attention.py::test_composed_mods_cuda" >> "$OUT/gpu_tests.log" 2>&1
echo "gpu rc=$?" >> "$OUT/gpu_tests.log"; tail -3 "$OUT/gpu_tests.log"
timeout 220 python benchmarks/bench_decode.py --lengths 8192 32768 131072 --dash-variants fold fold-main --reps 50 --warmup 10 \
  --out "$OUT/decode" > "$OUT/bench_decode.log" 2>&1
echo "bench rc=$?" >> "$OUT/bench_decode.log"; tail -25 "$OUT/bench_decode.log"
timeout 150 python -m experiments.retrieval --device cuda --out "$OUT/retrieval" --targets 0.75 --budget-s 120 --skip-non-dispersion > "$OUT/retrieval.log" 2>&1
echo "exp rc=$?" >> "$OUT/retrieval.log"; tail -15 "$OUT/retrieval.log"
