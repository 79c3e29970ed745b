#!/usr/bin/env bash
# Session 19, run 103 — RAN FIRST THING IN SESSION 20 (H100): the in-GEMM split lost (32K 1.458 /
# 1.493 against 1.381 / 1.376 ms, 128K 20.88 / 20.93 against 19.19 / 19.17) and its knob, variants
# and test were removed after it (this script no longer runs as is). What it was written for: the
# inference score GEMM reading k̄ in fp32 and splitting it into its bf16 parts in registers
# (SCORE_SPLIT_IN_KERNEL, off) against split_summaries' four kernels, with the block summaries in
# the timed call as fused_select_only has them, at 32K and 128K; the coarse selection's GPU tests
# of the rows launch (the split's bitwise test among them); the 32K benchmark if a minute is left.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 80 python scripts/probe_coarse_variants.py --seq 32768 131072 --with-summaries --variants "host split" \
  "split in the GEMM" > "$OUT/coarse.log" 2>&1
echo "coarse rc=$? after $((SECONDS - start)) s"; grep -E "S=|Error" "$OUT/coarse.log" | cut -c1-130
timeout 70 python -m pytest -m gpu -n 4 -p no:cacheprovider --timeout 60 --timeout-method thread -rfEx -q \
  --tb=short tests/test_coarse_selection.py -k "splits or rows_op or zero_fill or tail_tiles" > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
left=$((160 - (SECONDS - start)))
if [ "$left" -gt 60 ]; then
  timeout "$left" python benchmarks/bench_attention.py --seq 32768 --methods sdpa_cudnn fused_select_only \
    dash_fused --out "$OUT/attn" > "$OUT/attn.log" 2>&1
  echo "attn rc=$? (limit $left s) after $((SECONDS - start)) s"; grep -E "^\| 32768|Error" "$OUT/attn.log" | tail -3
fi
