#!/usr/bin/env bash
# Session 18, run 101 — NOT RUN: superseded by run 102 (session 19), which ran its probe and tests.
# The review fixes' GPU tests (scripts/gpu_run100.sh), then the fine kernel with a static
# masked-tail walk (no spills in a local sm_90 compile with Triton 3.6) against the shipped one.
set -uo pipefail
source scripts/gpu_preamble.sh
bash scripts/gpu_run100.sh
timeout 300 python scripts/probe_fine_pipelining.py --seq 32768 131072 > "$OUT/pipelining.log" 2>&1
echo "pipelining rc=$? after $((SECONDS - start)) s"; grep -E "S=|--|registers|spill" "$OUT/pipelining.log" | cut -c1-160
