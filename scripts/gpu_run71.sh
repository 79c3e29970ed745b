#!/usr/bin/env bash
# Session 14, run 71: the inference coarse launch's switches PREFETCH_SCORES and SIDE_STREAM_SCORES
# (scripts/probe_coarse_variants.py of commit ade3948; both removed after this run: no gain) at 32K
# and 128K, and dash_fused under the fastest, then the coarse-selection GPU tests.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 300 python scripts/probe_coarse_variants.py --seq 32768 131072 --fused 2>&1 | tee "$OUT/probe.txt"
echo "probe after $((SECONDS - start)) s"
timeout 200 python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests/test_coarse_selection.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -30
