#!/usr/bin/env bash
# Where the coarse forward's time goes: per-kernel times and entmax variants at 32K
# (scripts/study_coarse_kernels.py), then Nsight Compute on the last chunk's kernels.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT="${OUT:-out}"; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader > "$OUT/card.txt"; cat "$OUT/card.txt"
timeout 200 python scripts/study_coarse_kernels.py --seq 32768 2>&1 | tee "$OUT/study.log" | grep -v Warn
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
timeout 200 "$NCU" --clock-control none --kernel-name regex:"_group_entmax|_coarse_scores|_block_major" \
  --launch-skip 31 --launch-count 3 --section SpeedOfLight --section Occupancy --section LaunchStats \
  --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
  python scripts/study_coarse_kernels.py --seq 32768 --ncu > "$OUT/ncu.log" 2>&1
echo "ncu rc=$?"; grep -E "==PROF==|==ERROR|Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Memory Throughput|Compute \(SM\)|No Eligible|Issued Warp|Block Limit" "$OUT/ncu.log" | head -60
