#!/usr/bin/env bash
# Session 7: GPU tests of the fine backward with Δ formed in _dq_dprior and dq written in the
# query dtype; then a profile of one 32K forward + backward.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 330 python -m pytest -m gpu -v -p no:cacheprovider -rfE --tb=short tests/test_sparse_attention.py \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |PASSED|FAILED|XFAIL|passed|failed|rc=" "$OUT/gpu_tests.log" | head -30
timeout 90 python scripts/profile_stages.py --seq 32768 --backward --rows 40 > "$OUT/profile.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile.log"; tail -3 "$OUT/profile.log"
