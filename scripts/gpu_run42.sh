#!/usr/bin/env bash
# Branch wip/score-loop: the looped score GEMM, the entmax stop test on the mass, the forced-only
# fused path. Benchmarks first (a pytest timeout leaves workers running): study_coarse_kernels at
# 32K (tiled vs looped GEMM, entmax configs on valid scores), the 128K benchmark that timed out in
# session 8; the GPU tests run in run 43,
# after the winning GEMM variant is chosen.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 150 python scripts/study_coarse_kernels.py --seq 32768 --configs 1x1 2x1 4x2 2>&1 | tee "$OUT/study.log" | grep -v Warn
timeout 380 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn dash_select_only dash_fused \
  --out "$OUT/attn128k" > "$OUT/attn128k.log" 2>&1
echo "attn128k rc=$?"; grep -vi warn "$OUT/attn128k.log" | tail -30
