"""The inference coarse launch under smaller score chunks (GPU).

``coarse_selection_rows_launch`` solves each chunk's rows at the chunk's causal reach rounded up
to a power of two (``chunk_width``), so shorter chunks waste fewer register lanes on blocks past a
row's reach (at 32K, chunks of 4096 rows: ~82% of the solved lanes are eligible) but launch more
kernels with shorter grids. Times the launch (score GEMM + grouped entmax, as ``fused_select_only``
runs it without the block summaries) on the attention benchmark's inputs at several score-chunk
budgets, interleaved twice (median of ``triton.testing.do_bench``, ms), and how far p̄ moves.

    PYTHONPATH=. python scripts/probe_coarse_chunk_rows.py [--seq 32768] [--budgets-mib 256 128 64]
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
    parser.add_argument("--budgets-mib", type=int, nargs="+", default=[256, 128, 64])
    args = parser.parse_args()
    print(torch.cuda.get_device_name())
    for S in args.seq:
        q, k, _ = topic_inputs(S)
        k_bar = block_summaries(k, None, BS)

        def launch(mib: int):
            return sk.coarse_selection_rows_launch(q, k_bar, 1.5, 1.0, True, S, BS, z_budget=mib * 2**20, tails=True)

        want = launch(args.budgets_mib[0])[0]
        for repeat in range(2):
            for mib in args.budgets_mib:
                rows = sk.chunk_rows(1, q.shape[1], k_bar.shape[2], S, mib * 2**20)
                err = (launch(mib)[0] - want).abs().max().item()
                ms = triton.testing.do_bench(lambda: launch(mib), warmup=3, rep=300)
                print(f"S={S} pass {repeat}: score chunk {mib} MiB ({rows} rows): {ms:.3f} ms, "
                      f"max |p̄ - p̄({args.budgets_mib[0]} MiB)| {err:.1e}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
