"""The inference fine kernel's launch configs at long context (GPU): ``sparse_attention_rows_launch``
on the attention benchmark's whole-call selection (p̄ rows of ``coarse_selection_rows``, lists and
bias rows built per query-tile height), median time (``triton.testing.do_bench``, ms) per
(rows per head, num_warps, num_stages), two interleaved passes, and whether the output equals
the shipped launch's (same tile height).

    PYTHONPATH=. python scripts/probe_fine_rows_configs.py [--seq 131072]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_attention import BS, topic_inputs  # noqa: E402

from custom_ops.block_summary import block_summaries  # noqa: E402
from custom_ops.coarse_selection import coarse_selection_rows  # noqa: E402
from custom_ops.sparse_attention.list_kernels import tile_lists_and_bias_from_rows_launch  # noqa: E402
from custom_ops.sparse_attention.ops import FORWARD_STAGES, FORWARD_WARPS  # noqa: E402
from custom_ops.sparse_attention.triton_kernels import sparse_attention_rows_launch  # noqa: E402

CONFIGS = [(32, FORWARD_WARPS, FORWARD_STAGES), (32, 4, 3), (32, 8, 2), (32, 8, 3), (16, 4, 2), (16, 4, 3), (64, 8, 2)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="+", default=[131072])
    args = parser.parse_args()
    print(torch.cuda.get_device_name())
    for S in args.seq:
        q, k, v = topic_inputs(S)
        with torch.no_grad():
            probs, mean_log = coarse_selection_rows(q, block_summaries(k, None, BS), 1.5, 1.0, True, S, BS)
        scale = 1 / math.sqrt(q.shape[-1])
        for block_m in sorted({c[0] for c in CONFIGS}):
            lists = tile_lists_and_bias_from_rows_launch(probs, mean_log, 1.0, True, S, BS, block_m)
            configs = [c for c in CONFIGS if c[0] == block_m]
            want = sparse_attention_rows_launch(q, k, v, *lists, True, scale, BS, block_m, *configs[0][1:], pack=4)[0]
            for repeat in range(2):
                for _, warps, stages in configs:
                    try:
                        run = lambda: sparse_attention_rows_launch(  # noqa: E731
                            q, k, v, *lists, True, scale, BS, block_m, warps, stages, pack=4
                        )
                        same = torch.equal(run()[0], want)
                        ms = triton.testing.do_bench(run, warmup=2, rep=1000)
                        print(f"S={S} pass {repeat}: rows {block_m} x 4 heads, {warps} warps, {stages} stages: "
                              f"{ms:.2f} ms, same output as {configs[0]}: {same}", flush=True)  # fmt: skip
                    except Exception as exc:  # a config that does not compile or fit: say so, go on
                        print(f"S={S}: rows {block_m}, {warps} warps, {stages} stages: failed ({exc!r:.100})")
            lists = None
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
