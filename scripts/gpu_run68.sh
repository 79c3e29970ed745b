#!/usr/bin/env bash
# Session 13, run 68: the whole GPU suite on the session's final code (runs 65-67 ran it in parts
# across the decode launch change and the wide-rows test fix). Run at the commit that adds it.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 330 python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -30
