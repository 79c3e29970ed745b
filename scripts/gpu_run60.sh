#!/usr/bin/env bash
# Session 12, run 60: the inference path with 256 + 128 register rows in the coarse entmax (its
# 512-wide chunks that reach at most 384 blocks) and the rows path's chunk budget counting the
# bias by list slot. The probe (coarse launches with and without the split), the whole benchmark
# (8K, 32K, 128K), the 32K rows again in a second process, then the whole GPU suite. Run at the
# commit that adds it.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 120 python scripts/probe_rows_path.py --seq 32768 > "$OUT/probe.log" 2>&1
echo "probe rc=$? after $((SECONDS - start)) s"; tail -18 "$OUT/probe.log"
timeout 240 python benchmarks/bench_attention.py --seq 8192 32768 131072 --methods sdpa_cudnn fused_select_only \
  dash_select_only dash_fused dash_fused_block_major fused_fine_only fused_fine_block_major --stacks-every 90 \
  --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$? after $((SECONDS - start)) s"; grep -E "^\| (8192|32768|131072)|Error" "$OUT/attn.log" | tail -21
timeout 100 python benchmarks/bench_attention.py --seq 32768 --methods sdpa_cudnn fused_select_only dash_fused \
  fused_fine_only --out "$OUT/attn32k" > "$OUT/attn32k.log" 2>&1
echo "attn32k rc=$? after $((SECONDS - start)) s"; grep -E "^\| 32768|Error" "$OUT/attn32k.log" | tail -4
left=$((585 - (SECONDS - start)))
timeout "$left" python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? (limit $left s)"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -30
