#!/usr/bin/env bash
# Session 21, run 107: the hand-pipelined Gluon fine forward (custom_ops/sparse_attention/
# gluon_forward.py): its GPU tests, then against the shipped Triton kernel on the benchmark's lists
# at 32K and 128K; then run 106's timing of the landed coarse launch (float16 Newton steps but the
# last).
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 150 python -m pytest -m gpu -p no:cacheprovider --timeout 60 --timeout-method thread -rfEx -q --tb=short --maxfail=8 tests/test_gluon_forward.py \
  > "$OUT/gluon_tests.log" 2>&1
echo "gluon tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|passed|failed" "$OUT/gluon_tests.log" | head -30
timeout 200 python scripts/probe_gluon_fine.py --seq 32768 131072 > "$OUT/gluon.log" 2>&1
echo "gluon rc=$? after $((SECONDS - start)) s"; grep -E "S=|Error|error" "$OUT/gluon.log" | cut -c1-300 | tail -20
timeout 80 python scripts/probe_coarse_variants.py --seq 32768 131072 --with-summaries --variants "fp32 Newton" \
  "fp16 Newton" > "$OUT/coarse.log" 2>&1
echo "coarse rc=$? after $((SECONDS - start)) s"; grep -E "S=|Error" "$OUT/coarse.log" | cut -c1-130
