#!/usr/bin/env bash
# Session 7, the full table: the attention benchmark at 8K and 32K (every method, fwd and
# fwd+bwd) and at 128K (forward, the fused path), with Δ still in _dq_dprior's prologue (commit
# 31bfd85; the final code forms it in _delta_rows, timed the same in gpu_run33.sh).
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 240 python benchmarks/bench_attention.py --seq 8192 32768 --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$?" >> "$OUT/attn.log"; grep -E "^\| (8192|32768)|rc=|Error" "$OUT/attn.log" | tail -19
timeout 200 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn dash_select_only dash_fused \
  fused_fine_only --out "$OUT/attn128k" > "$OUT/attn128k.log" 2>&1
echo "attn128k rc=$?" >> "$OUT/attn128k.log"; grep -E "^\| 131072|rc=|Error" "$OUT/attn128k.log" | tail -6
