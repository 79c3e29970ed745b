#!/usr/bin/env bash
# Branch wip/score-loop: the looped score GEMM, the entmax stop test on the mass, the forced-only
# fused path. Benchmarks first (a pytest timeout leaves workers running): study_coarse_kernels at
# 32K (tiled vs looped GEMM, entmax configs on valid scores), the 128K benchmark that timed out in
# session 8; then the GPU tests of the coarse, entmax and end-to-end suites.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 150 python scripts/study_coarse_kernels.py --seq 32768 --configs 1x1 2x1 4x2 2>&1 | tee "$OUT/study.log" | grep -v Warn
timeout 200 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn dash_select_only dash_fused \
  --out "$OUT/attn128k" > "$OUT/attn128k.log" 2>&1
echo "attn128k rc=$?"; grep -E "^\| 131072|Error" "$OUT/attn128k.log" | tail -3
timeout 200 python -m pytest -m gpu -n 8 -p no:cacheprovider -rfEx --tb=short tests/test_coarse_selection.py \
  tests/test_entmax.py tests/test_gpu_attention.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|ERROR|passed|failed|rc=" "$OUT/gpu_tests.log" | head -20
