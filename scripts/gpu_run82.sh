#!/usr/bin/env bash
# Session 15, run 82: causal chunks sized by the keys they see (fused_chunk_bounds) against uniform
# chunks, 128K dash_fused, interleaved, one process.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 200 python scripts/probe_inference_chunks.py --seq 131072 --bounds-only > "$OUT/probe.txt" 2>&1
echo "probe rc=$? after $((SECONDS - start)) s"; tail -6 "$OUT/probe.txt"
