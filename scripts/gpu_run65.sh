#!/usr/bin/env bash
# Session 13, run 65: one-warp entmax programs at every width up to 2048 (runs 63-64) and split
# inference rows at 1024 and 2048 blocks too. The score GEMM's tiles with fewer pipeline stages
# (32K, GEMM only), the benchmark (8K, 32K, 128K; 32K again in a second process), the decode step
# at 128K (its selection kernel's pieces changed with piece_width), then the whole GPU suite
# (a new CUDA test of the wide split rows). Run at the commit that adds it.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 60 python scripts/study_coarse_kernels.py --seq 32768 --gemm-only > "$OUT/gemm32k.log" 2>&1
echo "gemm32k rc=$? after $((SECONDS - start)) s"; grep -E "^\| (scores|kernel)" "$OUT/gemm32k.log" | tail -10
timeout 220 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_fused fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -12
timeout 80 python benchmarks/bench_attention.py --seq 32768 --methods sdpa_cudnn fused_select_only dash_fused \
  fused_fine_only --out "$OUT/attn32k" > "$OUT/attn32k.log" 2>&1
echo "attn32k rc=$? after $((SECONDS - start)) s"; grep -E "^\| 32768|Error" "$OUT/attn32k.log" | tail -4
timeout 60 python benchmarks/bench_decode.py --lengths 131072 --dash-variants kernel > "$OUT/decode.log" 2>&1
echo "decode rc=$? after $((SECONDS - start)) s"; grep -E "^\| 131072" "$OUT/decode.log" | head -12
left=$((590 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s)"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -30
