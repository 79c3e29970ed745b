#!/usr/bin/env bash
# Session 7, first device run: the fused backward's launch configs at 32K (per kernel, 1-3
# stages), a profile of one forward + backward with two backward stages (the new default),
# then the attention benchmark at 8K and 32K.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 150 python scripts/profile_stages.py --seq 32768 --backward-sweep --only-sweeps > "$OUT/sweep.log" 2>&1
echo "sweep rc=$?" >> "$OUT/sweep.log"; grep -E "fused backward|rc=" "$OUT/sweep.log"
timeout 90 python scripts/profile_stages.py --seq 32768 --backward --rows 30 > "$OUT/profile.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile.log"
timeout 240 python benchmarks/bench_attention.py --seq 8192 32768 --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$?" >> "$OUT/attn.log"; grep -E "^\| (8192|32768)|rc=|Error" "$OUT/attn.log" | tail -19
