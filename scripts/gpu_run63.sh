#!/usr/bin/env bash
# Session 13, run 63: the entmax solver's row reductions now sum a thread's pieces before the
# warp shuffles (10 shuffles per Newton step at 512 blocks against 40; sm_90 SASS of the loop:
# 178 → 118 instructions at 512, 574 → 202 at 2048). The coarse kernels' launch table under the
# new order (32K chunks, and 128K's wide chunks), the benchmark at 32K and 128K, then the whole
# GPU suite (it also runs session 12's corrected split-row CUDA test). Run at the commit that
# adds it.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 150 python scripts/study_coarse_kernels.py --seq 32768 --configs 1x1 2x1 4x1 1x2 2x2 \
  > "$OUT/study32k.log" 2>&1
echo "study32k rc=$? after $((SECONDS - start)) s"; grep -E "^\|" "$OUT/study32k.log" | tail -24
timeout 120 python scripts/study_coarse_kernels.py --seq 131072 --widths 1024 2048 --configs 1x1 1x2 1x4 2x2 2x4 \
  > "$OUT/study128k.log" 2>&1
echo "study128k rc=$? after $((SECONDS - start)) s"; grep -E "^\||timed" "$OUT/study128k.log" | tail -20
timeout 200 python benchmarks/bench_attention.py --seq 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (32768|131072)|Error" "$OUT/attn.log" | tail -12
left=$((590 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s)"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -30
