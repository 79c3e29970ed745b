"""How much of the coarse stage a better entmax solver could save at most (GPU).

Times the inference coarse launch (``coarse_selection_rows_launch``: score GEMM + grouped entmax over
the query chunks, as ``fused_select_only`` runs it without the block summaries) on the attention
benchmark's inputs with the schedule's Newton step count replaced by fewer (down to 0, which leaves
τ = −1: wrong results, a timing floor only), interleaved twice, and prints how far each result is
from the schedule's p̄. A solver that reached the float32 floor in k steps could at best take the
time of k here.

    PYTHONPATH=. python scripts/probe_newton_budget.py [--seq 32768] [--steps 7 5 3 2 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_attention import BS, topic_inputs  # noqa: E402

from custom_ops.block_summary import block_summaries  # noqa: E402
from custom_ops.coarse_selection import split_kernels as sk  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="+", default=[32768])
    parser.add_argument("--steps", type=int, nargs="+", default=[7, 5, 3, 2, 0])
    args = parser.parse_args()
    print(torch.cuda.get_device_name())
    schedule = sk.solver_schedule
    for S in args.seq:
        q, k, _ = topic_inputs(S)
        k_bar = block_summaries(k, None, BS)

        def launch():
            return sk.coarse_selection_rows_launch(q, k_bar, 1.5, 1.0, True, S, BS, tails=True)[0]

        want = launch()
        for repeat in range(2):
            for steps in args.steps:
                sk.solver_schedule = lambda alpha, n, dtype, steps=steps: (*schedule(alpha, n, dtype)[:2], steps)
                got = launch()
                ms = triton.testing.do_bench(launch, warmup=3, rep=200)
                err = (got - want).abs().max().item()
                print(f"S={S} pass {repeat}: {steps} Newton steps: {ms:.3f} ms, max |p̄ - p̄(schedule)| {err:.2e}",
                      flush=True)  # fmt: skip
        sk.solver_schedule = schedule


if __name__ == "__main__":
    main()
