#!/usr/bin/env bash
# Session 11, after the entmax register rows were split into a power of two plus a tail tile
# (chunk_widths: 32K's chunks take 2368 lanes instead of 2752): the coarse kernels per 32K chunk
# (forward and VJP at the table's configs), the benchmark (8K, 32K, 128K), then the whole GPU
# suite (the new CUDA tail test included). Run at the commit that adds it (b7d61d4); the change
# was reverted after this run (docs/benchmarks.md, session 11).
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
start=$SECONDS
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 100 python scripts/study_coarse_kernels.py --seq 32768 --configs 1x1 2x1 > "$OUT/coarse.log" 2>&1
echo "coarse rc=$? after $((SECONDS - start)) s"; grep -E "^\| [0-9]+\+[0-9]+ \| (entmax|vjp)|entmax \(|vjp \(|whole|S=" "$OUT/coarse.log"
timeout 150 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn dash_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
left=$((500 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s)"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -30
