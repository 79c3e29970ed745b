#!/usr/bin/env bash
# Session 17, run 87: the attention benchmark at 8K, 32K, 128K in one process on the final code,
# after the sparsity report counts in chunks that fit an H100 (run 86 ran out of memory there at 128K).
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 400 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
