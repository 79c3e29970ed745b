#!/usr/bin/env bash
# Branch wip/list-kernels (not yet run): the list kernels against the torch lists on the GPU, the
# fine GPU tests through them, and the 32K / 8K benchmark of cuDNN and dash_fused.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 300 python -m pytest -m gpu -v -p no:cacheprovider -rfE --tb=short tests/test_sparse_attention.py \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|passed|failed|rc=" "$OUT/gpu_tests.log" | head -20
timeout 70 python scripts/profile_stages.py --seq 32768 --backward --rows 40 > "$OUT/profile.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile.log"; grep -E "_tile_lists|_block_lists|Self CUDA time total" "$OUT/profile.log"
timeout 150 python benchmarks/bench_attention.py --seq 8192 32768 --methods sdpa_cudnn dash_fused --out "$OUT/attn" \
  > "$OUT/attn.log" 2>&1
echo "attn rc=$?" >> "$OUT/attn.log"; grep -E "^\| (8192|32768)|rc=|Error" "$OUT/attn.log" | tail -4
