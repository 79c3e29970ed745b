#!/usr/bin/env bash
# Session 11, third call: the fused forward's program order (heavy first: heads fastest, the
# last, longest causal query tiles first) against the tile-major order, with and without the
# residual store, at 32K; two launches timed twice. Run at the commit that adds it.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python scripts/probe_fine_variants.py --seq 32768 > "$OUT/variants.log" 2>&1
echo "probe rc=$?"; grep -v Warning "$OUT/variants.log" | tail -20
