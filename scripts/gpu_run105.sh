#!/usr/bin/env bash
# Session 20, run 105 — RAN (H100; docs/benchmarks.md, session 20). Its tests stopped at this
# script's 120 s limit after one failure and were rerun on the same machine (13 passed; the
# float16-step test's mean-log bound, fixed). Timed with every Newton step in float16; after a
# review the last step is float32 again (not timed). What it was written for: the inference coarse launch with float32 Newton steps, float16 steps, and
# float16 steps with the score chunks widest first (heavy_first; the inference op's since), block
# summaries in the timed call, 32K and 128K; the GPU tests run 104 failed (fixed) and the rows
# launch / op / path tests; the attention benchmark at 32K and 128K in the time left (320 s in all: device time).
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 80 python scripts/probe_coarse_variants.py --seq 32768 131072 --with-summaries --variants "fp32 Newton" \
  "fp16 Newton" "fp16 Newton, heavy chunks first" > "$OUT/coarse.log" 2>&1
echo "coarse rc=$? after $((SECONDS - start)) s"; grep -E "S=|Error" "$OUT/coarse.log" | cut -c1-130
timeout 120 python -m pytest -m gpu -n 4 -p no:cacheprovider --timeout 100 --timeout-method thread -rfEx -q \
  --tb=short tests/test_coarse_selection.py tests/test_sparse_attention.py \
  -k "float16_newton or rows_op or tail_tiles or zero_fill or rows_path_matches or inference_in_query_chunks" \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
left=$((320 - (SECONDS - start)))
timeout "$left" python benchmarks/bench_attention.py --seq 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? (limit $left s) after $((SECONDS - start)) s"; grep -E "^\| (32768|131072)|Error" "$OUT/attn.log" | tail -12
