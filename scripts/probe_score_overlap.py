"""The inference coarse launch with the next chunk's score GEMM on a side stream
(``split_kernels.OVERLAP_SCORES``) against the serial launch (GPU).

Times ``coarse_selection_rows_launch`` (score GEMM + grouped entmax over the query chunks, as
``fused_select_only`` runs it without the block summaries) on the attention benchmark's inputs,
serial and overlapped, interleaved twice (median of ``triton.testing.do_bench``, ms), and checks
that both give the same bits.

    PYTHONPATH=. python scripts/probe_score_overlap.py [--seq 32768 131072]
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
    parser.add_argument("--seq", type=int, nargs="+", default=[32768, 131072])
    args = parser.parse_args()
    print(torch.cuda.get_device_name())
    for S in args.seq:
        q, k, _ = topic_inputs(S)
        k_bar = block_summaries(k, None, BS)

        def launch(overlap: bool):
            return sk.coarse_selection_rows_launch(q, k_bar, 1.5, 1.0, True, S, BS, tails=True, overlap=overlap)

        serial, overlapped = launch(False), launch(True)
        same = all(torch.equal(a, b) for a, b in zip(serial, overlapped))
        for repeat in range(2):
            for overlap in (False, True):
                ms = triton.testing.do_bench(lambda: launch(overlap), warmup=3, rep=300)
                print(f"S={S} pass {repeat}: overlap {overlap!s:5}: {ms:.3f} ms (same bits: {same})", flush=True)


if __name__ == "__main__":
    main()
