#!/usr/bin/env bash
# Session 12, run 58: where the rows path's fine stage loses ~0.36 ms against the block-major one
# at 32K (run 57: fused_fine_only 5.55 against 5.19 ms): tile lists and kernel timed apart
# (scripts/probe_rows_path.py). Run at the commit that adds it.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 300 python scripts/probe_rows_path.py --seq 32768 > "$OUT/probe.log" 2>&1
echo "probe rc=$? after $((SECONDS - start)) s"; cat "$OUT/probe.log" | tail -30
