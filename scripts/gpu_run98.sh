#!/usr/bin/env bash
# Session 18, run 98: is the 8K coarse stage host-bound (runs 96-97: 0.40 / 0.57 ms against 0.20 in
# run 94)? Host and GPU time per call with and without the zero fill.
set -uo pipefail
source scripts/gpu_preamble.sh
nproc; timeout 100 python scripts/probe_host_overhead.py --seq 8192 2>&1 | grep -v Warn | tail -6
