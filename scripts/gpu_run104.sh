#!/usr/bin/env bash
# Session 20, run 104 — RAN ITS PROBE AND TESTS ONLY (as one command on an H100; no benchmark): the
# probe gave 32K 1.383 / 1.378 (float32 steps) against 1.356 / 1.421 (float16) and 1.355 / 1.421
# (+ streaming stores); 128K 19.05 / 19.13, 18.55 / 18.60, 18.45 / 18.55 ms. Three tests failed
# (the rows op against the block-major op on the prior of rows whose tiny p̄ moved; a CPU/CUDA
# device mix in the new test), fixed for run 105. What it was written for: the inference entmax kernel's Newton steps on float16 pairs (half_newton)
# against float32 steps (the inference coarse launch with block summaries, 32K and 128K); the GPU
# tests of the rows launch / op (the float16-step test, the rows op against the block-major op),
# the rows path and the chunked inference; the attention benchmark at 32K and 128K. Also the score
# GEMM's streaming stores (score_stream, off) and s = (z − top)·(α − 1) as one FMA (bitwise at α = 1.5).
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 80 python scripts/probe_coarse_variants.py --seq 32768 131072 --with-summaries --variants "fp32 Newton" \
  "fp16 Newton" "fp16 Newton, streaming score stores" > "$OUT/coarse.log" 2>&1
echo "coarse rc=$? after $((SECONDS - start)) s"; grep -E "S=|Error" "$OUT/coarse.log" | cut -c1-130
timeout 120 python -m pytest -m gpu -n 4 -p no:cacheprovider --timeout 100 --timeout-method thread -rfEx -q \
  --tb=short tests/test_coarse_selection.py tests/test_sparse_attention.py \
  -k "float16_newton or rows_op or tail_tiles or wide_rows or zero_fill or narrow_entmax or rows_path_matches or inference_in_query_chunks" \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
left=$((560 - (SECONDS - start)))
timeout "$left" python benchmarks/bench_attention.py --seq 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? (limit $left s) after $((SECONDS - start)) s"; grep -E "^\| (32768|131072)|Error" "$OUT/attn.log" | tail -12
