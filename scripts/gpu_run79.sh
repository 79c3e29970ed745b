#!/usr/bin/env bash
# Session 15, run 79: the coarse score GEMM with k̄ and z through TMA descriptors (launch_scores
# descriptors=True) against pointers, 32K and 128K, several tiles; the GEMM's GPU tests.
set -uo pipefail
# The descriptor GEMM and its probe (scripts/probe_score_descriptors.py) were reverted after this run (slower); they are at commit 4edb23c.
source scripts/gpu_preamble.sh
timeout 200 python scripts/probe_score_descriptors.py --seq 32768 131072 > "$OUT/probe.txt" 2>&1
echo "probe rc=$? after $((SECONDS - start)) s"; cat "$OUT/probe.txt" | tail -20
timeout 120 python -m pytest -m gpu -n 4 -v -p no:cacheprovider --timeout 100 --timeout-method thread -rfEx \
  --tb=short tests/test_coarse_selection.py -k "descriptor or score_gemm" > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
