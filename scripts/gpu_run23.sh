#!/usr/bin/env bash
# Session 6, first device run: where the 32K forward + backward time goes (profiler tables).
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 300 python scripts/profile_stages.py --seq 32768 --backward --rows 40 > "$OUT/profile32k.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile32k.log"; tail -3 "$OUT/profile32k.log"
