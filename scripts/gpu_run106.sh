#!/usr/bin/env bash
# Session 20, run 106 — NOT RUN (device time ran out in session 20; session 21 got no machine): the inference coarse
# launch with float32 Newton steps against the landed float16 steps (all but the last; run 105
# timed every step in float16), block summaries in the timed call, 32K and 128K; the reworked
# float16-step test on CUDA (per head, exact scores, the crowd family) and the rows op tests; the
# attention benchmark at 32K and 128K in the time left.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 80 python scripts/probe_coarse_variants.py --seq 32768 131072 --with-summaries --variants "fp32 Newton" \
  "fp16 Newton" > "$OUT/coarse.log" 2>&1
echo "coarse rc=$? after $((SECONDS - start)) s"; grep -E "S=|Error" "$OUT/coarse.log" | cut -c1-130
timeout 150 python -m pytest -m gpu -n 4 -p no:cacheprovider --timeout 120 --timeout-method thread -rfEx -q \
  --tb=short tests/test_coarse_selection.py -k "float16_newton or rows_op or tail_tiles or zero_fill" \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
left=$((450 - (SECONDS - start)))
timeout "$left" python benchmarks/bench_attention.py --seq 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? (limit $left s) after $((SECONDS - start)) s"; grep -E "^\| (32768|131072)|Error" "$OUT/attn.log" | tail -12
