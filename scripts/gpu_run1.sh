#!/usr/bin/env bash
# Device run: GPU correctness suite (with measured errors logged) + heavy hypothesis profile.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/gpu.txt"
export DASH_FLEX_GPU_LOG="$OUT/gpu_errors.jsonl"
# heavy property profile on the host CPUs, one process per test function, in the background
export HYPOTHESIS_PROFILE=dash_flex-nightly OMP_NUM_THREADS=2
i=0
for t in $(python -m pytest --collect-only -q property_tests 2>/dev/null | grep '::' | sed 's/\[.*//' | sort -u); do
  i=$((i+1))
  (TORCHINDUCTOR_CACHE_DIR=/tmp/ind_$i timeout 520 python -m pytest -q -p no:cacheprovider "$t" > "$OUT/prop_$i.log" 2>&1; echo "rc=$? $t" >> "$OUT/prop_summary.txt") &
done
unset HYPOTHESIS_PROFILE
timeout 540 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=short tests/test_gpu_attention.py tests/test_entmax.py \
  tests/test_block_summary.py tests/test_selection_ops.py compile_tests/test_compile.py > "$OUT/gpu_tests.log" 2>&1
echo "gpu rc=$?" >> "$OUT/gpu.txt"
wait
tail -5 "$OUT/gpu_tests.log"; cat "$OUT/prop_summary.txt"; grep -h "passed\|failed" "$OUT"/prop_*.log
