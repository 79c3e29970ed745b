#!/usr/bin/env bash
# Device run: issue #7's decode benchmark (CUDA-graph timing, 8K/32K/128K; then per-call timing
# under torch.compile for the kernel path), and the GPU suites not re-run since their last change.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 200 python benchmarks/bench_decode.py --lengths 8192 32768 131072 --dash-variants kernel \
  --out "$OUT/bench_graph" > "$OUT/bench_graph.log" 2>&1
echo "bench graph rc=$?" >> "$OUT/bench_graph.log"; grep -E "^\| (8192|32768|131072) \| (sdpa_cudnn|sdpa_default|flex|kernel|dash)|rc=" "$OUT/bench_graph.log"
timeout 130 python benchmarks/bench_decode.py --lengths 32768 131072 --dash-variants kernel --timing call \
  --out "$OUT/bench_call" > "$OUT/bench_call.log" 2>&1
echo "bench call rc=$?" >> "$OUT/bench_call.log"; grep -E "^\| (32768|131072) \| (sdpa_default |dash)|rc=" "$OUT/bench_call.log"
timeout 200 python -m pytest -m gpu -q -p no:cacheprovider -rfE --tb=line tests/test_sparse_attention.py \
  tests/test_coarse_selection.py tests/test_entmax.py tests/test_gpu_cache.py -k "not prefill_and_decode and not compiled_decode" \
  > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$?" >> "$OUT/gpu_tests.log"; grep -E "^E  |FAILED|XPASS|passed|failed|rc=" "$OUT/gpu_tests.log" | head -20
