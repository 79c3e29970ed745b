#!/usr/bin/env bash
# Device run: the split coarse stage (GPU tests vs its definition, launch sweep at 32K), the
# attention benchmark at 32K (fwd, fwd+bwd) and 128K (fwd), and the decode benchmark at 25% kept.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 80 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=line tests/test_coarse_selection.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|passed|failed|rc=" "$OUT/gpu_tests.log" | head -12
timeout 60 python scripts/profile_stages.py --seq 32768 --coarse-sweep > "$OUT/coarse_sweep.log" 2>&1
echo "sweep rc=$?" >> "$OUT/coarse_sweep.log"; grep -E "coarse|rc=" "$OUT/coarse_sweep.log"
timeout 170 python benchmarks/bench_attention.py --seq 32768 --out "$OUT/attn32" > "$OUT/attn32.log" 2>&1
echo "attn32 rc=$?" >> "$OUT/attn32.log"; grep -E "^\| 32768|rc=|Error" "$OUT/attn32.log" | tail -12
timeout 130 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn dash_coarse_only dash_fused fused_fine_only \
  --out "$OUT/attn128" > "$OUT/attn128.log" 2>&1
echo "attn128 rc=$?" >> "$OUT/attn128.log"; grep -E "^\| 131072|rc=|Error" "$OUT/attn128.log" | tail -8
timeout 100 python benchmarks/bench_decode.py --lengths 32768 131072 --dash-variants kernel --out "$OUT/decode" > "$OUT/decode.log" 2>&1
echo "decode rc=$?" >> "$OUT/decode.log"; grep -E "scaled|keeps|^\| (32768|131072) \| (sdpa_cudnn|dash\[|kernel_|dash_step)|rc=" "$OUT/decode.log"
