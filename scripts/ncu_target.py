"""One pass of the benchmark's inference stages, for Nsight Compute to profile (GPU).

    ncu -k regex:_group_entmax ... python scripts/ncu_target.py --seq 32768 [--fine]

Runs the coarse stage as ``fused_select_only`` does (block summaries, then the score GEMM and the
entmax kernel over the query chunks) once on the attention benchmark's inputs; with ``--fine``
also the inference fine kernel once on the resulting lists. Prints nothing but its progress: the
numbers come from the profiler.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_attention import BS, topic_inputs  # noqa: E402

from custom_ops.block_summary import block_summaries  # noqa: E402
from custom_ops.coarse_selection import coarse_selection_rows  # noqa: E402
from custom_ops.sparse_attention import list_kernels, triton_kernels  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=32768)
    parser.add_argument("--fine", action="store_true")
    args = parser.parse_args()
    S = args.seq
    q, k, v = topic_inputs(S)
    with torch.no_grad():
        probs, mean_log = coarse_selection_rows(q, block_summaries(k, None, BS), 1.5, 1.0, True, S, BS)
        torch.cuda.synchronize()
        print(f"coarse stage at S={S}: done", flush=True)
        if args.fine:
            lists = list_kernels.tile_lists_and_bias_from_rows_launch(probs, mean_log, 1.0, True, S, BS, 32)
            triton_kernels.sparse_attention_rows_launch(q, k, v, *lists, True, 1 / math.sqrt(q.shape[-1]), BS, 32, 4, 2,
                                                        pack=4)  # fmt: skip
            torch.cuda.synchronize()
            print(f"fine kernel at S={S}: done", flush=True)


if __name__ == "__main__":
    main()
