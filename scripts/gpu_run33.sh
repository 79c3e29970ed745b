#!/usr/bin/env bash
# Session 7: Δ as its own kernel (_delta_rows) against Δ in _dq_dprior's prologue (the previous
# commit's triton_backward.py, copied beside it as triton_backward_prologue.py), the fine GPU
# tests with it, a 32K forward + backward profile, and 32K cuDNN / dash_fused timings. Before the
# call, locally (the device copy has no .git):
#   git show 31bfd85:custom_ops/sparse_attention/triton_backward.py \
#     > custom_ops/sparse_attention/triton_backward_prologue.py
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 100 python scripts/profile_stages.py --seq 32768 --backward-sweep --only-sweeps \
  --backward-against triton_backward_prologue > "$OUT/sweep.log" 2>&1
echo "sweep rc=$?" >> "$OUT/sweep.log"; grep -E "fused backward|rc=|Error" "$OUT/sweep.log"
timeout 260 python -m pytest -m gpu -v -p no:cacheprovider -rfE --tb=short tests/test_sparse_attention.py \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|passed|failed|rc=" "$OUT/gpu_tests.log" | head -20
timeout 70 python scripts/profile_stages.py --seq 32768 --backward --rows 40 > "$OUT/profile.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile.log"; grep -E "_delta_rows|_dq_dprior|_dk_dv|Self CUDA time total" "$OUT/profile.log"
timeout 90 python benchmarks/bench_attention.py --seq 32768 --methods sdpa_cudnn dash_fused --out "$OUT/attn" \
  > "$OUT/attn.log" 2>&1
echo "attn rc=$?" >> "$OUT/attn.log"; grep -E "^\| 32768|rc=|Error" "$OUT/attn.log" | tail -4
