#!/usr/bin/env bash
# Session 17, run 88: α ≤ 1.5 Newton steps by row length (5 up to 512 blocks, 6 up to 4096; 7
# before): the attention benchmark at 8K, 32K, 128K in one process; the coarse launch at 7 / 6 / 5
# steps interleaved (32K, 128K); 128K inference under chunk budgets of 1.25 / 2 / 2.5 GiB; then the
# GPU tests of the solver's users (entmax, coarse selection, decode).
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 240 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
timeout 90 python scripts/probe_newton_budget.py --seq 32768 131072 --steps 7 6 5 > "$OUT/newton.log" 2>&1
echo "newton rc=$? after $((SECONDS - start)) s"; grep -E "steps|Error" "$OUT/newton.log"
timeout 120 python scripts/probe_inference_chunks.py --seq 131072 --budgets-gib 1.25 2.0 2.5 > "$OUT/chunks.log" 2>&1
echo "chunks rc=$? after $((SECONDS - start)) s"; grep -E "cuDNN|budget|Error" "$OUT/chunks.log"
left=$((575 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 120 --timeout-method thread -rfEx \
  --tb=short tests/test_entmax.py tests/test_coarse_selection.py tests/test_sparse_decode.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s) after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
