#!/usr/bin/env bash
# Session 15, run 78: converged entmax rows stop (STOP, split_kernels.stop_rule). The probe (32K, 128K:
# every step against stopping, bits and timings), the GPU tests of the coarse stage, entmax and decode
# (incl. the launch that hung with the sessions 7-9 `while` exit), then the benchmark at 32K and 128K.
# The change and its probe (scripts/probe_entmax_stop.py) were reverted after this run; they are at commit 8262ebd.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 170 python scripts/probe_entmax_stop.py --seq 32768 131072 > "$OUT/probe.txt" 2>&1
echo "probe rc=$? after $((SECONDS - start)) s"; grep -vE "^  width" "$OUT/probe.txt" | tail -8
timeout 170 python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests/test_coarse_selection.py tests/test_entmax.py tests/test_sparse_decode.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
left=$((575 - (SECONDS - start)))
timeout "$left" python benchmarks/bench_attention.py --seq 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s (limit $left)"; grep -E "^\| (32768|131072)|Error" "$OUT/attn.log" | tail -8
