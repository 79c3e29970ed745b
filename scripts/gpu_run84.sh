#!/usr/bin/env bash
# Session 15, run 84: the coarse launch at 32K with fewer Newton steps than the schedule's 7 (a bound
# on what a better entmax solver start could save; 0 steps is a timing floor, not a result).
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 120 python scripts/probe_newton_budget.py --seq 32768 > "$OUT/probe.txt" 2>&1
echo "probe rc=$? after $((SECONDS - start)) s"; tail -12 "$OUT/probe.txt"
