#!/usr/bin/env bash
# Sessions 21–22, run 108 — NOT RUN (no Gluon kernel won in run 107, session 23; kept for a future
# one): dash_fused end to end with the inference fine kernel given as $1
# (ops.FINE_KERNEL: triton, gluon, gluon_ws, gluon_ws_pingpong or gluon_ws_pairs; the launches of
# each kernel counted) at 32K and 128K beside cuDNN; then the coarse tests run 106 prepared.
set -uo pipefail
source scripts/gpu_preamble.sh
kernel="${1:-gluon_ws}"
timeout 330 python scripts/bench_fine_kernel.py "$kernel" \
  --seq 32768 131072 --methods sdpa_cudnn fused_select_only dash_fused --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn ($kernel) rc=$? after $((SECONDS - start)) s"; grep -E "^\| (32768|131072)|Error|fine kernel launches" "$OUT/attn.log" | tail -13
timeout 120 python -m pytest -m gpu -n 4 -p no:cacheprovider --timeout 100 --timeout-method thread -rfEx -q \
  --tb=short tests/test_coarse_selection.py -k "float16_newton or rows_op or tail_tiles or zero_fill" \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
