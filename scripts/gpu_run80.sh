#!/usr/bin/env bash
# Session 15, run 80: what query chunks cost a 128K inference call (INFERENCE_CHUNK_BYTES 1.25 / 2.5 /
# 40 GiB) and launching the fine stage's heaviest tiles first (HEAVY_TILES_FIRST), at 32K and 128K;
# the fine forward's GPU tests.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 300 python scripts/probe_inference_chunks.py --seq 32768 131072 > "$OUT/probe.txt" 2>&1
echo "probe rc=$? after $((SECONDS - start)) s"; tail -20 "$OUT/probe.txt"
timeout 150 python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 120 --timeout-method thread -rfEx \
  --tb=short tests/test_sparse_attention.py -k "heavy or rows or descriptor or inference" > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
