#!/usr/bin/env bash
# Final device run of session 4: GPU tests of the coarse kernels (narrowed causal chunks), the
# decode benchmark at 8K/32K/128K (25% kept, CUDA-graph timing), the attention benchmark at
# 8K/32K (fwd, fwd+bwd) and 128K (fwd).
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 60 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=line tests/test_coarse_selection.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|passed|failed|rc=" "$OUT/gpu_tests.log" | head -8
timeout 110 python benchmarks/bench_decode.py --lengths 8192 32768 131072 --dash-variants kernel --out "$OUT/decode" > "$OUT/decode.log" 2>&1
echo "decode rc=$?" >> "$OUT/decode.log"; grep -E "scaled|keeps|^\| [0-9]+ \| (sdpa_cudnn|flex|dash\[|kernel_|dash_step)|rc=" "$OUT/decode.log"
timeout 230 python benchmarks/bench_attention.py --seq 8192 32768 --out "$OUT/attn" > "$OUT/attn.log" 2>&1
echo "attn rc=$?" >> "$OUT/attn.log"; grep -E "^\| (8192|32768)|rc=|Error" "$OUT/attn.log" | tail -17
timeout 140 python benchmarks/bench_attention.py --seq 131072 --methods sdpa_cudnn dash_coarse_only dash_fused fused_fine_only \
  --out "$OUT/attn128" > "$OUT/attn128.log" 2>&1
echo "attn128 rc=$?" >> "$OUT/attn128.log"; grep -E "^\| 131072|rc=|Error" "$OUT/attn128.log" | tail -5
rm -f "$OUT"/*/bench_*.md "$OUT"/*/bench_*.png  # transfer limit: tables and plots are rebuilt from the JSON
