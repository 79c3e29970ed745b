#!/usr/bin/env bash
# Session 19, run 102: the fine forward kernel with lazy rescaling (the running max moves only
# past 2⁸) and with the static masked-tail walk, against the shipped kernel (32K, 128K, the kernel
# alone on the benchmark's lists); the score GEMM's TMA stores against its pointer stores (the
# inference coarse launch); the new GPU tests (the climbing-max test, the descriptor-store test)
# and run 100's review-fix tests (never GPU-run); the attention benchmark at 32K and 128K last, in
# the time left.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 170 python scripts/probe_fine_pipelining.py --seq 32768 131072 > "$OUT/pipelining.log" 2>&1
echo "pipelining rc=$? after $((SECONDS - start)) s"; grep -E "S=|--|registers|spill" "$OUT/pipelining.log" | cut -c1-160
timeout 80 python scripts/probe_coarse_variants.py --seq 32768 131072 --variants "no fill, pointer stores" \
  "no fill, TMA stores" "no fill, TMA stores, GEMM (128, 64, 8, 3)" > "$OUT/coarse.log" 2>&1
echo "coarse rc=$? after $((SECONDS - start)) s"; grep -E "S=|Error" "$OUT/coarse.log" | cut -c1-160
timeout 100 python -m pytest -m gpu -n 4 -p no:cacheprovider --timeout 90 --timeout-method thread -rfEx -q \
  --tb=short tests/test_sparse_attention.py tests/test_coarse_selection.py \
  -k "climbing or descriptor_as or cuda_rows_list_kernel or writes_into or zero_fill" > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
left=$((540 - (SECONDS - start)))
timeout "$left" python benchmarks/bench_attention.py --seq 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? (limit $left s) after $((SECONDS - start)) s"; grep -E "^\| (32768|131072)|Error" "$OUT/attn.log" | tail -12
