#!/usr/bin/env bash
# Session 14, run 75: run 74's 8K dash_fused took 0.91 ms against 0.75 in session 13; whether the
# TMA descriptors' host work is the cause (scripts/probe_descriptor_overhead.py, 8K and 32K).
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 200 python scripts/probe_descriptor_overhead.py --seq 8192 32768 2>&1 | tee "$OUT/probe.txt"
echo "probe after $((SECONDS - start)) s"
