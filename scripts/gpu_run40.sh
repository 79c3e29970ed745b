#!/usr/bin/env bash
# One-warp entmax configs: the 128K widths' sweep (1024, 2048 blocks), GPU tests of the coarse,
# entmax and end-to-end suites, then the 8K / 32K benchmark (cuDNN, select only, dash_fused).
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 150 python scripts/study_coarse_kernels.py --seq 131072 --widths 1024 2048 \
  --configs 1x1 1x2 2x2 1x4 2x4 4x4 2>&1 | tee "$OUT/study_131072.log" | grep -v Warn
timeout 200 python -m pytest -m gpu -n 8 -p no:cacheprovider -rfEx --tb=short tests/test_coarse_selection.py \
  tests/test_entmax.py tests/test_gpu_attention.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|ERROR|passed|failed|rc=" "$OUT/gpu_tests.log" | head -20
timeout 150 python benchmarks/bench_attention.py --seq 8192 32768 --methods sdpa_cudnn dash_select_only dash_fused \
  --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$?"; grep -E "^\| (8192|32768)|Error" "$OUT/attn.log" | tail -6
