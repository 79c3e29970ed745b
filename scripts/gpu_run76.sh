#!/usr/bin/env bash
# Session 14, run 76: TMA descriptors only from 64K keys (DESCRIPTOR_MIN_KV_LEN). The host-time
# probe (shipped rule, forced, shipped again), then the benchmark at 8K and 32K under the rule (128K
# launches its late chunks with descriptors as in run 74), then the fused-path GPU tests.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 120 python scripts/probe_descriptor_overhead.py --seq 8192 32768 2>&1 | tee "$OUT/probe.txt"
echo "probe after $((SECONDS - start)) s"
timeout 150 python benchmarks/bench_attention.py --seq 8192 32768 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768)|Error" "$OUT/attn.log" | tail -8
timeout 150 python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 120 --timeout-method thread -rfEx \
  --tb=short tests/test_sparse_attention.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
