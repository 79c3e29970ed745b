#!/usr/bin/env bash
# Device run: where the fused coarse kernel's time goes (phase cut-offs, launch configs) at 32K;
# then the fp32 gradient diagnosis of the fused fine stage.
set -uo pipefail
export PYTHONPATH=.
OUT="${OUT:-out}"; mkdir -p "$OUT"
timeout 100 python scripts/profile_stages.py --seq 32768 --coarse-sweep > "$OUT/coarse_sweep.log" 2>&1
echo "sweep rc=$?" >> "$OUT/coarse_sweep.log"; grep -E "coarse kernel|rc=" "$OUT/coarse_sweep.log"
timeout 130 python scripts/diagnose_fused_grads.py --dtypes float32 bfloat16 --sigmas 1 --paths triton torch_def > "$OUT/diag.log" 2>&1
echo "diag rc=$?" >> "$OUT/diag.log"; grep -v "arn\|run_backward" "$OUT/diag.log" | tail -8
