#!/usr/bin/env bash
# The 128K benchmark that did not get past its set-up in 376 s (run 42; the 32K set-up takes 2.3 s),
# with every thread's stack dumped each 40 s to show where the time goes.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 440 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn dash_select_only dash_fused \
  --stacks-every 40 --out "$OUT/attn128k" > "$OUT/attn128k.log" 2>&1
echo "attn128k rc=$?"; grep -E "^\[|^\| 131072|Error" "$OUT/attn128k.log" | tail -12
