#!/usr/bin/env bash
# Device run: split coarse stage at 128K (launch sweep: the 1.15 s of run 15 looked like spills),
# and the 32K forward profile after the word-OR tile reductions.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
timeout 150 python scripts/profile_stages.py --seq 131072 --coarse-sweep > "$OUT/coarse128.log" 2>&1
echo "sweep rc=$?" >> "$OUT/coarse128.log"; grep -E "coarse|rc=" "$OUT/coarse128.log"
timeout 60 python scripts/profile_stages.py --seq 32768 --rows 12 > "$OUT/profile.log" 2>&1
echo "profile rc=$?" >> "$OUT/profile.log"; grep -E "===|Self CUDA time total|rc=|sparse_attention_fwd|coarse_selection|_group|_coarse|aten::any" "$OUT/profile.log" | cut -c1-70,100-200
