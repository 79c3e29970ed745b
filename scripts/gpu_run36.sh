#!/usr/bin/env bash
# Branch wip/unmeasured, first call: the whole GPU suite (list kernels, entmax early exit, and
# main's unrun int64-offset tests) in 6 xdist workers (Triton compiles dominate), then the 32K
# forward + backward profile (list kernels, _group_entmax and _group_entmax_vjp).
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 400 python -m pytest -m gpu -n 6 -p no:cacheprovider -rfEx --tb=short --durations=15 tests/ \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|ERROR|passed|failed|rc=" "$OUT/gpu_tests.log" | head -30
timeout 120 python scripts/profile_stages.py --seq 32768 --backward --rows 40 > "$OUT/profile.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile.log"
grep -E "_tile_lists|_block_lists|_group_entmax|Self CUDA time total|rc=" "$OUT/profile.log"
