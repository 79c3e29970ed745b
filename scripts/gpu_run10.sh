#!/usr/bin/env bash
# Device run: coarse kernel with warp-owned rows (GPU tests + stage profile at 32K), then the
# retrieval experiment (issue #8) under a hard budget.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"
timeout 70 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=short tests/test_coarse_selection.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|passed|failed|rc=" "$OUT/gpu_tests.log" | head -12
timeout 45 python scripts/profile_stages.py --seq 32768 --rows 10 > "$OUT/profile.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile.log"; grep -E "coarse_selection_fwd|sparse_attention_fwd|rc=|Self CUDA time total" "$OUT/profile.log"
timeout 470 python -m experiments.retrieval --device cuda --out "$OUT/retrieval" --budget-s 400 > "$OUT/retrieval.log" 2>&1
echo "retrieval rc=$?" >> "$OUT/retrieval.log"; tail -30 "$OUT/retrieval.log"
