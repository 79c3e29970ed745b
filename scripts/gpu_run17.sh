#!/usr/bin/env bash
# Device run: GPU tests of the split coarse forward/backward, the sparse-attention kernels (int64
# offsets) and the decode kernels; the attention benchmark at 32K (fwd, fwd+bwd) and 128K (fwd).
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 170 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=line tests/test_coarse_selection.py \
  tests/test_sparse_attention.py tests/test_gpu_cache.py -k "not prefill_and_decode and not compiled_decode and not chunked" \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|XPASS|passed|failed|rc=" "$OUT/gpu_tests.log" | head -14
timeout 200 python benchmarks/bench_attention.py --seq 32768 --out "$OUT/attn32" > "$OUT/attn32.log" 2>&1
echo "attn32 rc=$?" >> "$OUT/attn32.log"; grep -E "^\| 32768|rc=|Error" "$OUT/attn32.log" | tail -9
timeout 150 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn dash_coarse_only dash_fused fused_fine_only \
  --out "$OUT/attn128" > "$OUT/attn128.log" 2>&1
echo "attn128 rc=$?" >> "$OUT/attn128.log"; grep -E "^\| 131072|rc=|Error" "$OUT/attn128.log" | tail -5
