#!/usr/bin/env bash
# Session 5, final device run: GPU tests of the fused fine stage, the coarse kernels and
# dash_attention on CUDA; the attention benchmark at 8K/32K (fwd, fwd+bwd) and 128K (fwd).
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 195 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=short tests/test_sparse_attention.py \
  tests/test_coarse_selection.py tests/test_gpu_attention.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|passed|failed|rc=" "$OUT/gpu_tests.log" | head -12
timeout 250 python benchmarks/bench_attention.py --seq 8192 32768 --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$?" >> "$OUT/attn.log"; grep -E "^\| (8192|32768)|rc=|Error" "$OUT/attn.log" | tail -19
timeout 115 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn dash_select_only dash_fused fused_fine_only \
  --out "$OUT/attn128" > "$OUT/attn128.log" 2>&1
echo "attn128 rc=$?" >> "$OUT/attn128.log"; grep -E "^\| 131072|rc=|Error" "$OUT/attn128.log" | tail -5
rm -f "$OUT"/*/bench_*.md "$OUT"/*/bench_*.png
