#!/usr/bin/env bash
# Session 14, run 72: the inference fine kernel with K / V through TMA descriptors (32K, 128K), and
# more score-GEMM tiles and stage counts at 32K (GEMM only).
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 240 python scripts/probe_fine_descriptors.py --seq 32768 131072 2>&1 | tee "$OUT/probe_fine.txt"
echo "fine probe after $((SECONDS - start)) s"
timeout 150 python scripts/study_coarse_kernels.py --seq 32768 --gemm-only 2>&1 | grep -v "^\[" | tail -22 | tee "$OUT/gemm.txt"
echo "gemm after $((SECONDS - start)) s"
