#!/usr/bin/env bash
# Session 11, first call after run 49 (branch wip/key-pairs: block pairs lost at every launch, see
# docs/benchmarks.md): the fused forward's softmax variants at 32K (lazy rescaling, accumulate in
# the MMA, the row max on raw products, no residual store, 8 warps), timed and checked against
# the default launch, with the device's registers and spills. Run at the commit that adds it.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 400 python scripts/probe_fine_variants.py --seq 32768 > "$OUT/variants.log" 2>&1
echo "probe rc=$?"; cat "$OUT/variants.log" | grep -v Warning | tail -40
