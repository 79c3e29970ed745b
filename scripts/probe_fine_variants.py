"""The fused forward kernel's softmax variants, timed at one length on the benchmark's inputs (GPU).

    PYTHONPATH=. python scripts/probe_fine_variants.py [--seq 32768]

Each variant is a set of ``sparse_attention_launch`` switches (``store_residual``: the output's
rounding residual, which only the backward reads; ``has_prior=False``: a cost probe, not the same
output) at a launch ``(rows per head, warps, stages)``, each timed twice: identical launches moved
by up to 0.26 ms within one process and ~0.3 ms between calls (runs 51-52), so compare within a
run.
Session 11's runs of earlier variants, all removed but the first: run 50, the row max on raw
products 5.41 ms against 5.76; lazy rescaling (FA4-style, slack 2⁸) 6.51; P·V accumulated inside
the MMA 5.74; run 51, loading the next block's index and bias row a step ahead 5.48–5.58, and in
run 55 against the kernel in the same process 5.41 / 5.41 against 5.04 / 5.05 (a probe copy of
the kernel, scripts/fine_forward_variants.py, in the commit that adds gpu_run55.sh); three
stages 8.28; no prior at all (cost probe) 5.19; run 52, the programs ordered heads fastest with
the last (longest causal) query tiles first 5.00 / 5.25 against 5.08 / 4.99 in order (no
residual, each timed twice: within the noise); run 55, the keep flags ignored (cost probe) 4.91 /
5.02 and no prior 4.72 / 4.92 against 5.04 / 5.05.

Prints the median time, the output's relative error and the largest LSE difference against the
default launch, then the registers and spills the device's compiler gave every specialisation,
in the order they were compiled.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attention import BS, topic_inputs  # noqa: E402
from profile_stages import print_kernel_resources  # noqa: E402

from custom_ops.sparse_attention import tile_block_lists, triton_kernels  # noqa: E402
from dash_flex import dash_select  # noqa: E402

# (name, rows per head, warps, switches), each launch timed twice
VARIANTS = [
    ("default", 32, 4, {}),
    ("no residual", 32, 4, dict(store_residual=False)),
    ("no prior (cost probe, not the same output)", 32, 4, dict(has_prior=False)),
    ("default (again)", 32, 4, {}),
    ("no residual (again)", 32, 4, dict(store_residual=False)),
    ("no prior (again)", 32, 4, dict(has_prior=False)),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=32768)
    args = parser.parse_args()
    q, k, v = topic_inputs(args.seq)
    with torch.no_grad():
        sel = dash_select(q, k, alpha=1.5, block_size=BS, sigma=1.0)
    prior, active = sel.log_prior.transpose(2, 3), sel.active_blocks.transpose(2, 3)
    scale = 1 / math.sqrt(q.shape[-1])
    lists = {rows: tile_block_lists(active, rows) for rows in {r for _, r, _, _ in VARIANTS}}
    reference = None
    print(f"S={args.seq}, {torch.cuda.get_device_name()}")
    print("| variant | rows × pack | warps | ms | out rel err | max LSE diff |\n|---|---|---|---|---|---|")
    for name, rows, warps, switches in VARIANTS:
        switches = dict(switches)
        has_prior = switches.pop("has_prior", True)
        stages = switches.pop("num_stages", 2)
        block_list, count = lists[rows]

        def fn():
            return triton_kernels.sparse_attention_launch(
                q, k, v, prior, active, block_list, count, True, scale, BS, has_prior, rows, warps, stages, pack=4,
                **switches,
            )  # fmt: skip

        try:
            out, _, lse = fn()
            ms = triton.testing.do_bench(fn, warmup=20, rep=100, return_mode="median")
        except Exception as exc:  # an out-of-resources launch: report and go on
            print(f"| {name} | {rows} × 4 | {warps} | failed ({exc!r:.80}) | | |", flush=True)
            continue
        if reference is None:
            reference = out.float(), lse
        err = float((out.float() - reference[0]).norm() / reference[0].norm())
        finite = torch.isfinite(reference[1])
        lse_diff = float((lse[finite] - reference[1][finite]).abs().max())
        same_inf = bool(torch.equal(torch.isfinite(lse), finite))
        flag = "" if same_inf else " (-inf rows differ)"
        print(f"| {name} | {rows} × 4 | {warps} | {ms:.3f} | {err:.1e} | {lse_diff:.1e}{flag} |", flush=True)
    print_kernel_resources(triton_kernels._sparse_attention_fwd)


if __name__ == "__main__":
    main()
