#!/usr/bin/env bash
# Session 11: same-process A/B of the fine forward's step-ahead loads (run 51 had no same-process
# baseline) and cost probes of the keep flags and the prior, each launch timed twice (interleaved),
# with a probe copy of the kernel (scripts/fine_forward_variants.py). Run at the commit that adds it.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python scripts/probe_fine_variants.py --seq 32768 > "$OUT/variants.log" 2>&1
echo "probe rc=$?"; grep -v Warning "$OUT/variants.log" | tail -24
