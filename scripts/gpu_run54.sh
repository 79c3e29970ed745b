#!/usr/bin/env bash
# Session 11: the entmax launch table re-measured without the early exit (its configs were chosen
# with it, runs 38-42): forward and VJP per 32K chunk at five (rows, warps), and the forward at 6
# Newton steps (the schedule's 7 = 6 + 1 spare) for the record. Run at the commit that adds it.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 260 python scripts/study_coarse_kernels.py --seq 32768 --configs 1x1 2x1 4x1 2x2 4x2 > "$OUT/configs.log" 2>&1
echo "configs rc=$?"; grep -v Warning "$OUT/configs.log" | grep -v "^| .* | scores" | tail -28
timeout 120 python scripts/study_coarse_kernels.py --seq 32768 --configs 1x1 2x1 --newton 6 > "$OUT/newton6.log" 2>&1
echo "newton6 rc=$?"; grep -E "entmax \((current|best)\)" "$OUT/newton6.log"
