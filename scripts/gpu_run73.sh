#!/usr/bin/env bash
# Session 14, run 73: score-GEMM tiles at 128K (GEMM only: the candidates of run 72's 32K sweep),
# then the whole GPU suite with K / V through TMA descriptors in the inference fine kernel.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 120 python scripts/study_coarse_kernels.py --seq 131072 --gemm-only > "$OUT/gemm128k.log" 2>&1
echo "gemm128k rc=$? after $((SECONDS - start)) s"; grep -E "^\| (scores|kernel)" "$OUT/gemm128k.log" | tail -16
left=$((560 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s)"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -30
