#!/usr/bin/env bash
# Session 24, run 111 — NOT RUN (device loans paused this session; prepared for the next one). Call
# with timeout_s 600 (~570 s; DEADLINE=N skips steps 3–4 that would pass N s). Measures the opt-in
# two-stream overlap of the fused inference path's query chunks (dash_flex.attention.
# _overlapped_rows_chunks, OVERLAP_SELECTION: chunk i + 1's selection on a side stream beside chunk
# i's fine stage) and makes issue #6's acceptance table (on an H100):
# 1. tests/test_gpu_overlap.py (overlapped = in-order bits with the fine stages held back by a GPU
#    sleep, both stream priorities, causal / not, from a caller's stream; the peak memory bound);
# 2. bench_attention at 128K and 32K: sdpa_cudnn, fused_select_only, dash_fused (chunks in order,
#    the default), dash_fused_overlapped, its _same_priority, _small_chunks (half the chunk budget)
#    and _lists_on_side (the side stream builds the tile lists too) variants, with the SM clocks;
#    the benchmark also checks dash_fused_overlapped = dash_fused bit for bit. If an overlapped
#    variant wins and step 1 passed, set OVERLAP_SELECTION (and the winning settings) as defaults;
# 3. the 32K part again with --cooldown 5;
# 4. the 3 test_sparse_attention.py GPU tests that run 109 lost to out-of-memory, on 3 workers.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 150 python -m pytest -m gpu -n 2 -p no:cacheprovider --timeout 120 --timeout-method thread -rfEx -v \
  --tb=short tests/test_gpu_overlap.py > "$OUT/overlap_tests.log" 2>&1
echo "overlap tests rc=$? after $((SECONDS - start)) s"; summary "$OUT/overlap_tests.log"
timeout 240 python benchmarks/bench_attention.py --seq 131072 32768 --methods sdpa_cudnn fused_select_only \
  dash_fused dash_fused_overlapped dash_fused_overlapped_same_priority dash_fused_overlapped_small_chunks \
  dash_fused_overlapped_lists_on_side --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (32768|131072)|Error|equals|DIFFERS" "$OUT/attn.log" | tail -14
if [ $((${DEADLINE:-570} - (SECONDS - start))) -ge 90 ]; then
  timeout 80 python benchmarks/bench_attention.py --seq 32768 --methods sdpa_cudnn fused_select_only dash_fused \
    --cooldown 5 --out "$OUT/attn_cooled" > "$OUT/attn_cooled.log" 2>&1
  echo "attn (cooled) rc=$? after $((SECONDS - start)) s"; grep -E "^\| 32768|Error" "$OUT/attn_cooled.log" | tail -3
fi
left=$((${DEADLINE:-570} - (SECONDS - start)))
[ "$left" -lt 60 ] && { echo "no time left for the 3 tests ($left s)"; exit 0; }
f=tests/test_sparse_attention.py
timeout "$left" python -m pytest -n 3 -p no:cacheprovider --timeout $((left - 10)) --timeout-method thread -rfEx \
  -v --tb=short "$f::test_cuda_rows_path_matches_block_major_and_reference[noncausal-dtype0]" \
  "$f::test_cuda_kernel_matches_flex_and_reference[gqa-dtype0]" \
  "$f::test_cuda_backward_kernels_match_definition_and_reference[dtype0]" > "$OUT/rerun3.log" 2>&1
echo "the 3 tests rc=$? (limit $left s) after $((SECONDS - start)) s"; summary "$OUT/rerun3.log"
