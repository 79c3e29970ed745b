"""The coarse score GEMM through TMA descriptors against pointers (GPU).

On the attention benchmark's inputs, for each length and tile ``(BM, BN, warps, stages)``: the
score GEMMs of every query chunk of the coarse launch, timed as one call (median of
``triton.testing.do_bench``, ms), with k̄ and ``z`` through pointers and through TMA descriptors
(``launch_scores(descriptors=...)``); and whether both write the same bits on the last chunk.

    PYTHONPATH=. python scripts/probe_score_descriptors.py [--seq 32768 131072]
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

TILES = [(128, 32, 8, 4), (128, 64, 8, 3), (128, 64, 8, 4), (128, 64, 4, 3), (256, 32, 8, 3), (64, 64, 4, 4),
         (128, 128, 8, 2)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="+", default=[32768, 131072])
    args = parser.parse_args()
    print(torch.cuda.get_device_name())
    for S in args.seq:
        q, k, _ = topic_inputs(S)
        k_bar = block_summaries(k, None, BS)
        del k
        B, Hq, Sq, _ = q.shape
        nb = k_bar.shape[2]
        chunk = sk.chunk_rows(B, Hq, nb, Sq)
        z = torch.empty(B, Hq, chunk, -(-nb // 16) * 16, device=q.device)[..., :nb]
        parts = sk.split_summaries(k_bar, q.dtype)
        plan = [(row0, min(chunk, Sq - row0)) for row0 in range(0, Sq, chunk)]

        def all_chunks(tile, use):
            for row0, n_rows in plan:
                sk.launch_scores(q, parts, z, row0, n_rows, 1.0, True, 0, BS, tile=tile, looped=1, descriptors=use)

        print(f"S={S}: {len(plan)} chunks of {chunk} rows")
        for tile in TILES:
            cells = []
            for use in (False, True, False, True):
                try:
                    ms = triton.testing.do_bench(lambda: all_chunks(tile, use), warmup=3, rep=100)
                    cells.append(f"{'desc' if use else 'ptr'} {ms:.3f}")
                except Exception as exc:  # a tile the card refuses (shared memory): say so, go on
                    cells.append(f"{'desc' if use else 'ptr'} failed ({type(exc).__name__})")
            row0, n_rows = plan[-1]
            outs = []
            for use in (False, True):
                z.fill_(float("nan"))
                try:
                    sk.launch_scores(q, parts, z, row0, n_rows, 1.0, True, 0, BS, tile=tile, looped=1, descriptors=use)
                except Exception:
                    break
                outs.append(z.nan_to_num(nan=1234.5).clone())
            same = len(outs) == 2 and torch.equal(outs[0], outs[1])
            print(f"  tile {tile}: " + ", ".join(cells) + f"; same bits on the last chunk: {same}", flush=True)


if __name__ == "__main__":
    main()
