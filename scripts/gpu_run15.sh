#!/usr/bin/env bash
# Device run: per-kernel profile of the split coarse stage, the fused forward and forward+backward
# at 32K; then the attention benchmark at 128K (forward).
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 120 python scripts/profile_stages.py --seq 32768 --backward --rows 18 > "$OUT/profile.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile.log"; grep -E "===|Self CUDA time total|rc=" "$OUT/profile.log"
timeout 200 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn dash_coarse_only dash_fused fused_fine_only \
  --out "$OUT/attn128" > "$OUT/attn128.log" 2>&1
echo "attn128 rc=$?" >> "$OUT/attn128.log"; grep -E "^\| 131072|rc=|Error" "$OUT/attn128.log" | tail -8
