#!/usr/bin/env bash
# Branch wip/score-loop with the looped score GEMM as the default (run 42: 0.665 vs 0.735 ms at 32K)
# and the prefetching loop removed: the 8K/32K benchmark of the final code, the GEMMs at 128K's
# chunk shapes (study, GEMMs only), then the whole GPU suite.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 170 python benchmarks/bench_attention.py --seq 8192 32768 --methods sdpa_cudnn dash_select_only dash_fused \
  fused_fine_only --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$?"; grep -E "^\| (8192|32768)|Error" "$OUT/attn.log" | tail -8
timeout 90 python scripts/study_coarse_kernels.py --seq 131072 --gemm-only 2>&1 | tee "$OUT/study128k.log" \
  | grep -E "scores|whole|Error"
timeout 250 python -m pytest -m gpu -n 8 -p no:cacheprovider -rfEx --tb=short tests > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|ERROR|passed|failed|rc=" "$OUT/gpu_tests.log" | head -20
