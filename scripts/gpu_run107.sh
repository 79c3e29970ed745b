#!/usr/bin/env bash
# Sessions 21–22, run 107 — RAN in session 23 (H100 80GB HBM3; docs/benchmarks.md, session 23: all
# Gluon tests passed, every Gluon kernel slower than the Triton one). Call
# `bash scripts/gpu_run107.sh`, with timeout_s 600 (about 570 s; DEADLINE=… shortens the end-to-end
# part). The hand-pipelined Gluon fine forwards (custom_ops/sparse_attention/gluon_forward.py): their
# GPU tests; each against the shipped Triton kernel on the benchmark's lists at 128K and 32K (a
# kernel that hung in the tests is left out); then sdpa_cudnn, fused_select_only and dash_fused end
# to end with the kernel fastest at 128K (the shipped one if none beats it), through ops.FINE_KERNEL:
# on an H100 that table is issue #6's acceptance run.
set -uo pipefail
source scripts/gpu_preamble.sh
# four workers (the compiles run in parallel); a test that hangs is killed by pytest-timeout with
# its worker, which xdist replaces and reports ("crashed while running ..."): the probe leaves
# out every kernel that hung (a hung kernel cannot be stopped in-process)
timeout 180 python -m pytest -m gpu -n 4 -p no:cacheprovider --timeout 60 --timeout-method thread -rfEx -q \
  --tb=short tests/test_gluon_forward.py > "$OUT/gluon_tests.log" 2>&1
echo "gluon tests rc=$? after $((SECONDS - start)) s"
grep -E "^E  |FAILED|ERROR|passed|failed|crashed" "$OUT/gluon_tests.log" | cut -c1-220 | head -24
timeout 150 python scripts/probe_gluon_fine.py --seq 131072 32768 --skip-hung-in "$OUT/gluon_tests.log" \
  > "$OUT/gluon.log" 2>&1
echo "gluon probe rc=$? after $((SECONDS - start)) s"; grep -E "S=|Error|error|left out" "$OUT/gluon.log" | cut -c1-300 | tail -48
# the fastest FINE_KERNEL (shipped, gluon, gluon_ws, _pingpong, _pairs) at 128K by the mean of its two medians
# ("S=131072: NAME: t1, t2 ms")
best=$(grep -E "^S=131072: (shipped|gluon|gluon_ws|gluon_ws_pingpong|gluon_ws_pairs): [0-9.]+, [0-9.]+ ms" "$OUT/gluon.log" \
  | awk '{gsub(":", "", $2); gsub(",", "", $3); print ($3 + $4) / 2, $2}' | sort -n | head -1 | awk '{print $2}')
case "$best" in gluon*) kernel=$best ;; *) kernel=triton ;; esac
echo "fastest at 128K: ${best:-none} -> FINE_KERNEL=$kernel"
left=$((${DEADLINE:-570} - (SECONDS - start)))
[ "$left" -lt 60 ] && { echo "no time left for the end-to-end benchmark ($left s)"; exit 0; }
timeout "$left" python scripts/bench_fine_kernel.py "$kernel" \
  --seq 131072 32768 --methods sdpa_cudnn fused_select_only dash_fused --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn ($kernel) rc=$? (limit $left s) after $((SECONDS - start)) s"
grep -E "^\| (32768|131072)|Error|fine kernel launches" "$OUT/attn.log" | tail -13
