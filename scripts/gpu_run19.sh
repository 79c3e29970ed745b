#!/usr/bin/env bash
# Session 5, device run 1: GPU tests of the fused path (new forward kernel, chunked inference),
# the forward kernel old (session 4) vs new at 32K / 128K, the coarse configs at 128K, a
# profile of the 128K forward, and the attention benchmark at 32K (fwd+bwd) and 128K (fwd).
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 150 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=short tests/test_sparse_attention.py tests/test_coarse_selection.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|passed|failed|rc=" "$OUT/gpu_tests.log" | head -12
timeout 60 python scripts/profile_stages.py --seq 32768 --sweep --against old_fwd_kernels.py --only-sweeps > "$OUT/sweep32.log" 2>&1
echo "sweep32 rc=$?" >> "$OUT/sweep32.log"; grep -E "ms|rc=|Error" "$OUT/sweep32.log"
timeout 100 python scripts/profile_stages.py --seq 131072 --sweep --against old_fwd_kernels.py --coarse-sweep --rows 30 > "$OUT/sweep128.log" 2>&1
echo "sweep128 rc=$?" >> "$OUT/sweep128.log"; grep -E "ms$|rc=|Error|default entmax" "$OUT/sweep128.log"
timeout 100 python benchmarks/bench_attention.py --seq 32768 --methods sdpa_cudnn dash_fused fused_fine_only --out "$OUT/attn32" > "$OUT/attn32.log" 2>&1
echo "attn32 rc=$?" >> "$OUT/attn32.log"; grep -E "^\| 32768|rc=|Error" "$OUT/attn32.log" | tail -4
timeout 120 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn dash_fused fused_fine_only --out "$OUT/attn128" > "$OUT/attn128.log" 2>&1
echo "attn128 rc=$?" >> "$OUT/attn128.log"; grep -E "^\| 131072|rc=|Error" "$OUT/attn128.log" | tail -4
rm -f "$OUT"/*/bench_*.md "$OUT"/*/bench_*.png
