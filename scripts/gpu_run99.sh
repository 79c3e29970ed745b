#!/usr/bin/env bash
# Session 18, run 99 (warm, the card of runs 97-98): the 32K rows of the benchmark twice more, in two
# processes, for the spread of the coarse stage's share of cuDNN (the 10% bar).
set -uo pipefail
source scripts/gpu_preamble.sh
for i in 1 2; do
  timeout 80 python benchmarks/bench_attention.py --seq 32768 --methods sdpa_cudnn fused_select_only dash_fused \
    --out "$OUT/attn$i" > "$OUT/attn$i.log" 2>&1
  echo "attn $i rc=$? after $((SECONDS - start)) s"; grep -E "^\| 32768|Error" "$OUT/attn$i.log" | tail -3
done
