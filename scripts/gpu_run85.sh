#!/usr/bin/env bash
# Session 16, run 85: the fine kernel's list loop under Hopper warp specialisation and unrolling
# (32K, 128K); Nsight Compute on the 32K coarse stage's last two chunks; a cheaper Newton step
# (approximate rsqrt and division) in the coarse launch; Nsight Compute on the 32K fine kernel.
set -uo pipefail
source scripts/gpu_preamble.sh
timeout 240 python scripts/probe_fine_pipelining.py --seq 32768 131072 > "$OUT/pipelining.txt" 2>&1
echo "pipelining rc=$? after $((SECONDS - start)) s"; grep -v "^\s*$" "$OUT/pipelining.txt" | tail -24
SECTIONS="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis --section InstructionStats"
timeout 120 ncu --clock-control none -k regex:"_coarse_scores|_group_entmax" --launch-skip 12 --launch-count 4 \
  $SECTIONS python scripts/ncu_target.py --seq 32768 > "$OUT/ncu_coarse.txt" 2>&1
echo "ncu coarse rc=$? after $((SECONDS - start)) s"
timeout 150 python scripts/probe_solver_variants.py --seq 32768 131072 > "$OUT/solver.txt" 2>&1
echo "solver rc=$? after $((SECONDS - start)) s"; tail -12 "$OUT/solver.txt"
timeout 70 ncu --clock-control none -k regex:"_sparse_attention_fwd" --launch-count 1 \
  $SECTIONS python scripts/ncu_target.py --seq 32768 --fine > "$OUT/ncu_fine.txt" 2>&1
echo "ncu fine rc=$? after $((SECONDS - start)) s"
grep -E "^\s+(Duration|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Registers Per Thread|Achieved Occupancy|Issue Slots Busy|No Eligible|Warp Cycles Per Issued)|_coarse_scores|_group_entmax|_sparse_attention_fwd" "$OUT/ncu_coarse.txt" "$OUT/ncu_fine.txt" | head -60
