#!/usr/bin/env bash
# Session 17, run 92: the inference coarse launch under score chunks of 256 / 128 / 64 MiB (32K:
# 4096 / 2048 / 1024 rows) and 256 / 128 MiB at 128K, interleaved twice.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 100 python scripts/probe_coarse_chunk_rows.py --seq 32768 --budgets-mib 256 128 64 > "$OUT/chunks.log" 2>&1
echo "32K rc=$? after $((SECONDS - start)) s"; grep -E "score|Error" "$OUT/chunks.log"
timeout 120 python scripts/probe_coarse_chunk_rows.py --seq 131072 --budgets-mib 256 128 > "$OUT/chunks128.log" 2>&1
echo "128K rc=$? after $((SECONDS - start)) s"; grep -E "score|Error" "$OUT/chunks128.log"
