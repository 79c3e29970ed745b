#!/usr/bin/env bash
# Session 7: 128K forward + backward of cuDNN and dash_fused (training in checkpointed query
# chunks: its first GPU timing).
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 280 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn dash_fused \
  --backward-up-to 131072 --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$?" >> "$OUT/attn.log"; grep -E "^\| 131072|rc=|Error" "$OUT/attn.log" | tail -4
