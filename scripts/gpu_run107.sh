#!/usr/bin/env bash
# Session 21, run 107 — NOT RUN (session 21 got no device machine; first thing next session):
# `bash scripts/gpu_run107.sh` (about 420 s; DEADLINE=… shortens the end-to-end part). The hand-pipelined Gluon fine forward (custom_ops/sparse_attention/
# gluon_forward.py): its GPU tests; against the shipped Triton kernel on the benchmark's lists at
# 32K and 128K; then dash_fused end to end beside cuDNN with the variant fastest at 128K (if it
# beats the shipped kernel; else the shipped one), through ops.FINE_KERNEL.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 120 python -m pytest -m gpu -p no:cacheprovider --timeout 60 --timeout-method thread -rfEx -v --tb=short \
  --maxfail=8 tests/test_gluon_forward.py > "$OUT/gluon_tests.log" 2>&1
echo "gluon tests rc=$? after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|passed|failed|Timeout" "$OUT/gluon_tests.log" | cut -c1-200 | head -24
# A kernel that hangs cannot be stopped in-process: -v names each test as it starts, so a test
# left without its verdict is the one that hung, and the probe leaves that kernel out.
variants="gluon gluon_overlap_pv gluon_ws gluon_ws_regs216 gluon_ws_stages2 gluon_ws_stages4"
hung=$(grep -E "^tests/test_gluon_forward.py::" "$OUT/gluon_tests.log" | grep -vE "PASSED|FAILED|SKIPPED|ERROR|XFAIL" | tail -1)
if [ -n "$hung" ]; then
  echo "hung: $hung"
  case "$hung" in
    *warp-specialised*|*gluon_ws*) variants="gluon gluon_overlap_pv" ;;
    *pv-overlapped*) variants="gluon gluon_ws gluon_ws_regs216 gluon_ws_stages2 gluon_ws_stages4" ;;
    *) variants="gluon_ws gluon_ws_regs216 gluon_ws_stages2 gluon_ws_stages4" ;;
  esac
fi
echo "probe variants: $variants"
timeout 150 python scripts/probe_gluon_fine.py --seq 131072 32768 --variants $variants > "$OUT/gluon.log" 2>&1
echo "gluon probe rc=$? after $((SECONDS - start)) s"; grep -E "S=|Error|error" "$OUT/gluon.log" | cut -c1-300 | tail -20
# the fastest of shipped, gluon, gluon_ws at 128K by the mean of its two medians ("S=131072: NAME: t1, t2 ms")
best=$(grep -E "^S=131072: (shipped|gluon|gluon_ws): [0-9.]+, [0-9.]+ ms" "$OUT/gluon.log" \
  | awk '{gsub(":", "", $2); gsub(",", "", $3); print ($3 + $4) / 2, $2}' | sort -n | head -1 | awk '{print $2}')
case "$best" in gluon_ws*) kernel=gluon_ws ;; gluon*) kernel=gluon ;; *) kernel=triton ;; esac
echo "fastest at 128K: ${best:-none} -> FINE_KERNEL=$kernel"
left=$((${DEADLINE:-420} - (SECONDS - start)))
[ "$left" -lt 60 ] && { echo "no time left for the end-to-end benchmark ($left s)"; exit 0; }
timeout "$left" python -c "
import runpy, sys
import custom_ops.sparse_attention.ops as ops
ops.FINE_KERNEL = sys.argv[1]
sys.argv = ['bench_attention.py'] + sys.argv[2:]
runpy.run_path('benchmarks/bench_attention.py', run_name='__main__')
" "$kernel" --seq 131072 32768 --methods sdpa_cudnn fused_select_only dash_fused --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn ($kernel) rc=$? (limit $left s) after $((SECONDS - start)) s"
grep -E "^\| (32768|131072)|Error" "$OUT/attn.log" | tail -12
