#!/usr/bin/env bash
# Session 11, second call: after run 50 the fused forward takes its row max on the raw products
# (5.41 against 5.76 ms at 32K); now each step also loads the next block's index and bias row a
# step ahead (prefetch), and inference skips the residual store. The probe times prefetch against
# the in-step loads (with the device's registers / spills), then the fine stage's and the
# attention GPU tests. Run at the commit that adds it.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 200 python scripts/probe_fine_variants.py --seq 32768 > "$OUT/variants.log" 2>&1
echo "probe rc=$?"; grep -v Warning "$OUT/variants.log" | tail -24
timeout 300 python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests/test_sparse_attention.py tests/test_gpu_attention.py > "$OUT/tests.log" 2>&1
echo "tests rc=$?"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/tests.log" | head -20
