#!/usr/bin/env bash
# Session 23, run 109 — RAN (H100 80GB HBM3; docs/benchmarks.md, session 23: 177 passed, 7 out of
# memory beside the other 7 workers, 2 xfailed): every GPU test but the Gluon ones (run 107 ran
# those) — the first full GPU run since session 13, and the first CUDA run of session 20's
# float32 last Newton step; where the 32K coarse stage's time goes (scripts/profile_coarse_host.py:
# host vs GPU, each kernel); a second 32K sample of the coarse share in its own process.
set -uo pipefail
source scripts/gpu_preamble.sh
# verbose: each result is printed as it lands, so a run cut off by the timeout still says what passed
timeout "${TEST_LIMIT:-260}" python -m pytest -m gpu -n 8 -p no:cacheprovider --timeout 200 --timeout-method thread -rfEx -v \
  --tb=short --durations 12 --ignore tests/test_gluon_forward.py tests compile_tests > "$OUT/gpu_tests.log" 2>&1
echo "gpu tests rc=$? after $((SECONDS - start)) s"
echo "PASSED $(grep -c ' PASSED ' "$OUT/gpu_tests.log"), FAILED $(grep -c ' FAILED ' "$OUT/gpu_tests.log")," \
  "XFAIL $(grep -c ' XFAIL ' "$OUT/gpu_tests.log"), SKIPPED $(grep -c ' SKIPPED ' "$OUT/gpu_tests.log")"
grep -E "^E  |^FAILED|^ERROR|Timeout|[0-9]+ passed|crashed" "$OUT/gpu_tests.log" | cut -c1-220 | head -30
timeout 70 python scripts/profile_coarse_host.py --seq 32768 --trace "$OUT/trace" > "$OUT/profile.log" 2>&1
echo "profile rc=$? after $((SECONDS - start)) s"; head -60 "$OUT/profile.log" | cut -c1-160
left=$((${DEADLINE:-380} - (SECONDS - start)))
[ "$left" -lt 40 ] && { echo "no time left for the 32K sample ($left s)"; exit 0; }
timeout "$left" python benchmarks/bench_attention.py --seq 32768 --methods sdpa_cudnn fused_select_only dash_fused \
  --out "$OUT/attn32" > "$OUT/attn32.log" 2>&1
echo "attn32 rc=$? after $((SECONDS - start)) s"; grep -E "^\| 32768|Error" "$OUT/attn32.log" | tail -4
