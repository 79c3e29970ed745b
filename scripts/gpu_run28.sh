#!/usr/bin/env bash
# Session 6, final device run: the attention benchmark at 8K and 32K (every method, fwd and
# fwd+bwd) on the final code; then the fused backward's launch configs at 32K.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 230 python benchmarks/bench_attention.py --seq 8192 32768 --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$?" >> "$OUT/attn.log"; grep -E "^\| (8192|32768)|rc=|Error" "$OUT/attn.log" | tail -19
timeout 80 python scripts/profile_stages.py --seq 32768 --backward-sweep --only-sweeps > "$OUT/sweep.log" 2>&1
echo "sweep rc=$?" >> "$OUT/sweep.log"; tail -7 "$OUT/sweep.log"
