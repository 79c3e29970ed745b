#!/usr/bin/env bash
# Session 13, run 67: the decode selection launch chosen from run 66 (every warp on the row's
# pieces, the group's rows in each thread): the probe again, the decode benchmark at 8K, 32K and
# 128K (kernel path), and the decode and cache GPU tests. Run at the commit that adds it.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 60 python scripts/probe_decode_pieces.py --blocks 2048 > "$OUT/decode_pieces.log" 2>&1
echo "pieces rc=$? after $((SECONDS - start)) s"; tail -11 "$OUT/decode_pieces.log"
timeout 120 python benchmarks/bench_decode.py --lengths 8192 32768 131072 --dash-variants kernel \
  --out "$OUT/decode" > "$OUT/decode.log" 2>&1
echo "decode rc=$? after $((SECONDS - start)) s"; grep -E "^\| [0-9]+ \| (sdpa_cudnn|kernel|dash)" "$OUT/decode.log" | head -18
timeout 200 python -m pytest -m gpu -n 8 -v -p no:cacheprovider --timeout 150 --timeout-method thread -rfEx \
  --tb=short tests/test_sparse_decode.py tests/test_gpu_cache.py > "$OUT/gpu_tests.log" 2>&1
echo "tests rc=$? after $((SECONDS - start)) s"; grep -E "^E  |FAILED|ERROR|Timeout|passed|failed" "$OUT/gpu_tests.log" | head -20
