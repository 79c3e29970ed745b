#!/usr/bin/env bash
# Session 17, run 93: the inference coarse launch under larger score chunks, 256 / 512 / 1024 MiB
# (32K: 4096 / 8192 / 16384 rows; 128K: 1024 / 2048 / 4096 rows), interleaved twice.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 100 python scripts/probe_coarse_chunk_rows.py --seq 32768 131072 --budgets-mib 256 512 1024 \
  > "$OUT/chunks.log" 2>&1
echo "rc=$? after $((SECONDS - start)) s"; grep -E "score|Error" "$OUT/chunks.log"
