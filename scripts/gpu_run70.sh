#!/usr/bin/env bash
# Session 14, run 70: kernels side by side. The score GEMM with its registers capped (two 8-warp
# programs an SM), the coarse launch with the GEMM on a second stream, and the fused path's query
# chunks on two streams at 128K (scripts/probe_overlap.py of commit fca6f55; removed with the
# switches after run 71).
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 400 python scripts/probe_overlap.py --seq 32768 131072 2>&1 | tee "$OUT/probe_overlap.txt"
echo "probe after $((SECONDS - start)) s"
