#!/usr/bin/env bash
# Session 18, run 95: the inference coarse launch's variants (p̄ not zero-filled past the chunk's
# register row, entmax sub-chunks, 64-wide tails, GEMM tiles), the list builder with the MUFU log
# against session 17's, and the benchmark with both plus the fine kernel writing each query chunk's
# rows in place (sparse_attention_rows_into); then the fine stage's GPU tests.
# scripts/list_kernels_session17.py (not kept) was session 17's kernel file, made with
#   git show c23e1b5:custom_ops/sparse_attention/list_kernels.py > scripts/list_kernels_session17.py
# and its relative import of LOG2E made absolute (custom_ops.sparse_attention.triton_kernels).
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 170 python scripts/probe_coarse_variants.py --seq 32768 131072 > "$OUT/variants.log" 2>&1
echo "variants rc=$? after $((SECONDS - start)) s"; grep -E "pass|Error" "$OUT/variants.log" | cut -c1-150
timeout 60 python scripts/probe_list_builder.py --seq 32768 131072 --against scripts/list_kernels_session17.py \
  > "$OUT/lists.log" 2>&1
echo "lists rc=$? after $((SECONDS - start)) s"; grep -E "S=|Error" "$OUT/lists.log"
timeout 150 python benchmarks/bench_attention.py --seq 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
left=$((570 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 4 -p no:cacheprovider --timeout 200 --timeout-method thread -rfEx -q \
  --tb=short tests/test_sparse_attention.py tests/test_gpu_attention.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s) after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
