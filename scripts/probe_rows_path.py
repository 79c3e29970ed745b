"""Where the rows path's fine stage spends its time against the block-major one (GPU, one process).

    PYTHONPATH=. python scripts/probe_rows_path.py [--seq 32768]

On the benchmark's inputs and selection: the tile lists from the flags against those (with their
bias rows) from the p̄ rows, then the fine kernel on precomputed lists, block-major against the
bias by list slot; each launch timed twice (identical launches move by ~0.25 ms within a process), then the
coarse stage with and without its block-major pass, and the inference launch with and without
its split register rows. Median ms (`triton.testing.do_bench`).
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

from custom_ops.block_summary import block_summaries  # noqa: E402
from custom_ops.coarse_selection import coarse_selection, coarse_selection_rows  # noqa: E402
from custom_ops.coarse_selection.split_kernels import coarse_selection_rows_launch  # noqa: E402
from custom_ops.coarse_selection.torch_impl import mean_log_support  # noqa: E402
from custom_ops.sparse_attention import list_kernels, triton_kernels  # noqa: E402
from dash_flex import dash_select  # noqa: E402


def timed(name: str, fn) -> None:
    ms = triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")
    print(f"{name:60s} {ms:7.3f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=32768)
    args = parser.parse_args()
    S = args.seq
    q, k, v = topic_inputs(S)
    scale = 1 / math.sqrt(q.shape[-1])
    with torch.no_grad():
        sel = dash_select(q, k, alpha=1.5, block_size=BS, sigma=1.0)
    prior, active = sel.log_prior.transpose(2, 3), sel.active_blocks.transpose(2, 3)
    probs, mean_log = sel.probs, mean_log_support(sel.probs)
    lists = list_kernels.tile_block_lists_launch(active, 32)
    rows_lists = list_kernels.tile_lists_and_bias_from_rows_launch(probs, mean_log, 1.0, True, S, BS, 32)
    print(f"S={S}: lists equal: {all(torch.equal(a, b) for a, b in zip(lists, rows_lists))}", flush=True)
    block_major = triton_kernels.sparse_attention_launch(
        q, k, v, prior, active, *lists, True, scale, BS, True, 32, 4, 2, pack=4, store_residual=False
    )
    from_rows = triton_kernels.sparse_attention_rows_launch(q, k, v, *rows_lists, True, scale, BS, 32, 4, 2, pack=4)
    err = float((from_rows[0].float() - block_major[0].float()).norm() / block_major[0].float().norm())
    print(f"rows against block-major: out rel {err:.2e}, lse max {(from_rows[1] - block_major[2]).abs().max():.2e}")
    for _ in range(2):
        timed("tile lists from the flags (block_m 32)", lambda: list_kernels.tile_block_lists_launch(active, 32))
        timed("tile lists and bias from the rows", lambda: list_kernels.tile_lists_and_bias_from_rows_launch(
            probs, mean_log, 1.0, True, S, BS, 32))  # fmt: skip
        timed("fine kernel, block-major (lists given)", lambda: triton_kernels.sparse_attention_launch(
            q, k, v, prior, active, *lists, True, scale, BS, True, 32, 4, 2, pack=4, store_residual=False))  # fmt: skip
        timed("fine kernel, bias by list slot (lists given)", lambda: triton_kernels.sparse_attention_rows_launch(
            q, k, v, *rows_lists, True, scale, BS, 32, 4, 2, pack=4))  # fmt: skip
    k_bar = block_summaries(k, None, BS)
    sq_pad, nb_pad = -(-S // 128) * 128, -(-(-(-S // 128) * 128) // BS)
    for _ in range(2):
        timed("block summaries", lambda: block_summaries(k, None, BS))
        timed("coarse_selection (with the block-major pass)", lambda: coarse_selection(
            q, k_bar, 1.5, 1.0, 1.0, True, S, BS, sq_pad, nb_pad))  # fmt: skip
        timed("coarse_selection_rows (256 + 128 tails)", lambda: coarse_selection_rows(q, k_bar, 1.5, 1.0, True, S, BS))
        timed("coarse_selection_rows launch, whole rows", lambda: coarse_selection_rows_launch(
            q, k_bar, 1.5, 1.0, True, S, BS, tails=False))  # fmt: skip
    print_kernel_resources(triton_kernels._sparse_attention_fwd)
    print_kernel_resources(list_kernels._tile_lists_and_bias_from_rows)


if __name__ == "__main__":
    main()
