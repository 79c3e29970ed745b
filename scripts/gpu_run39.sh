#!/usr/bin/env bash
# Entmax launch configs (rows × warps) per chunk width, forward kernel and VJP, at 32K and 128K
# (scripts/study_coarse_kernels.py), after the 1-warp result of run 38.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
for S in 32768 131072 8192; do
  timeout 170 python scripts/study_coarse_kernels.py --seq $S 2>&1 | tee "$OUT/study_$S.log" | grep -v Warn
done
