#!/usr/bin/env bash
# Device run: GPU attention + cache tests, heavy hypothesis profile (host CPUs, background).
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
export DASH_FLEX_GPU_LOG="$OUT/gpu_errors.jsonl"
i=0
for t in $(python -m pytest --collect-only -q property_tests 2>/dev/null | grep '::' | sed 's/\[.*//' | sort -u); do
  i=$((i+1))
  (HYPOTHESIS_PROFILE=dash_flex-nightly OMP_NUM_THREADS=2 TORCHINDUCTOR_CACHE_DIR=/tmp/ind_$i timeout 540 \
     python -m pytest -q -p no:cacheprovider --tb=short "$t" > /tmp/prop_$i.log 2>&1; echo "rc=$? $t" >> /tmp/prop_summary.txt) &
done
timeout 500 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=short tests/test_gpu_attention.py tests/test_gpu_cache.py > "$OUT/gpu_tests.log" 2>&1
echo "gpu rc=$?" >> "$OUT/gpu_tests.log"
wait
{ cat /tmp/prop_summary.txt; for f in /tmp/prop_*.log; do echo "=== $f"; tail -60 "$f"; done; } > "$OUT/props.log"
tail -3 "$OUT/gpu_tests.log"; cat /tmp/prop_summary.txt; grep -h "passed\|failed" /tmp/prop_*.log
