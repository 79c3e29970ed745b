#!/usr/bin/env bash
# Session 13, run 64: run 63 found multi-warp entmax programs 4-13x slower under the new reduction
# order (warps split a row's pieces K, and summing K first went through shared memory); the
# launches now size the pieces (piece_width) so that warps split S. The launch table again at 128K
# (wide rows, 1-4 warps) and 32K, each with the inference launch's split rows (main + tail) for
# more widths. Run at the commit that adds it.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 200 python scripts/study_coarse_kernels.py --seq 131072 --widths 1024 2048 --configs 1x1 1x2 1x4 2x2 \
  --tail-widths 1024 2048 > "$OUT/study128k.log" 2>&1
echo "study128k rc=$? after $((SECONDS - start)) s"; grep -E "^\||timed" "$OUT/study128k.log" | tail -24
timeout 150 python scripts/study_coarse_kernels.py --seq 32768 --configs 1x1 2x1 1x2 2x2 --tail-widths 512 \
  > "$OUT/study32k.log" 2>&1
echo "study32k rc=$? after $((SECONDS - start)) s"; grep -E "^\|" "$OUT/study32k.log" | tail -34
