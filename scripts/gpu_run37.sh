#!/usr/bin/env bash
# Branch wip/unmeasured, second call: kernel times (profile of 32K forward + backward: the list
# kernels, _group_entmax and _group_entmax_vjp with the early exit) and the 8K / 32K / 128K
# benchmark of cuDNN and dash_fused against session 7's main (docs/benchmarks.md).
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 90 python scripts/profile_stages.py --seq 32768 --backward --rows 40 > "$OUT/profile.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile.log"
grep -E "_tile_lists|_block_lists|_group_entmax|Self CUDA time total" "$OUT/profile.log"
timeout 200 python benchmarks/bench_attention.py --seq 8192 32768 --methods sdpa_cudnn dash_select_only dash_fused \
  --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$?" >> "$OUT/attn.log"; grep -E "^\| (8192|32768)|rc=|Error" "$OUT/attn.log" | tail -6
timeout 200 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn dash_select_only dash_fused \
  --out "$OUT/attn128k" > "$OUT/attn128k.log" 2>&1
echo "attn128k rc=$?" >> "$OUT/attn128k.log"; grep -E "^\| 131072|rc=|Error" "$OUT/attn128k.log" | tail -3
