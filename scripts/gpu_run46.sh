#!/usr/bin/env bash
# Record of run 46 (session 10). probe_entmax_exit.py was removed after it: run this at commit 0875860.
# Session 10's second call: which launches of the early-exit entmax hang (scripts/probe_entmax_exit.py,
# one process per case), what the early exit saves per chunk at 32K/128K, then the GPU suite with a
# per-test timeout (run 43 left 4 tests running at its limit and did not name them).
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT/probe"
for case in fixed table rows1 warps2 width64 chunk1 randn seq1024; do
  timeout 40 python scripts/probe_entmax_exit.py "$case" --out "$OUT/probe" > "$OUT/probe/$case.log" 2>&1
  echo "[$case] rc=$? $(grep -v Warn "$OUT/probe/$case.log" | tail -1)"
done
timeout 120 python scripts/probe_entmax_exit.py time > "$OUT/probe/time.log" 2>&1
echo "time rc=$?"; grep "over the chunks" "$OUT/probe/time.log"; tail -1 "$OUT/probe/time.log"
timeout 300 python -m pytest -m gpu -n 8 -p no:cacheprovider --timeout 90 -rfEx --tb=short -q tests > "$OUT/gpu_suite.log" 2>&1
echo "suite rc=$?"; grep -E "Timeout|FAILED|ERROR|passed|failed" "$OUT/gpu_suite.log" | head -20
