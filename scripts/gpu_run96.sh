#!/usr/bin/env bash
# Session 18, run 96: p̄ not zero-filled past the score chunk's register row (inference op), the
# list builder's MUFU log, the chunk outputs in place: the inference chunk budget at 128K now
# that the chunk outputs are not copied, the fine kernel's launch configs at 128K (TMA loads),
# the benchmark (8K, 32K, 128K), then the GPU tests of the coarse and fine stages and compile.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 100 python scripts/probe_inference_chunks.py --seq 131072 --budgets-gib 1.25 1.75 2.25 > "$OUT/chunks.log" 2>&1
echo "chunks rc=$? after $((SECONDS - start)) s"; grep -E "budget|cuDNN|Error" "$OUT/chunks.log"
timeout 120 python scripts/probe_fine_rows_configs.py --seq 131072 > "$OUT/fine.log" 2>&1
echo "fine rc=$? after $((SECONDS - start)) s"; grep -E "S=|Error" "$OUT/fine.log" | cut -c1-140
timeout 150 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
left=$((575 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 4 -p no:cacheprovider --timeout 200 --timeout-method thread -rfEx -q \
  --tb=short tests/test_coarse_selection.py tests/test_sparse_attention.py compile_tests > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s) after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
