"""What running a long inference call in query chunks costs, and launching the fine stage's
heaviest query tiles first (GPU).

``dash_attention(fine_stage="fused")`` without gradients runs the queries in chunks whose selection
state fits ``attention.INFERENCE_CHUNK_BYTES`` (128K at 1.25 GiB: chunks of 9216 rows over every key,
taller where causal chunks see fewer keys, ``fused_chunk_bounds``); each chunk's fine launch ends
with a partial wave. On the attention benchmark's inputs this times the
call (median of ``triton.testing.do_bench``, ms) and its extra peak memory (GiB, beyond inputs and
output) under several budgets, with ``HEAVY_TILES_FIRST`` off and on, and cuDNN's dense causal
forward in the same process for the ratio.

    PYTHONPATH=. python scripts/probe_inference_chunks.py [--seq 32768 131072] [--budgets-gib 1.25 2.5 40]
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_attention import BS, peak_extra_gib, topic_inputs  # noqa: E402

from custom_ops.sparse_attention import triton_kernels  # noqa: E402
from dash_flex import attention, dash_attention  # noqa: E402
from dash_flex.attention import AttentionShapes  # noqa: E402


def fused_inference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``dash_fused`` as the benchmark runs it: the fused path without gradients."""
    with torch.no_grad():
        return dash_attention(q, k, v, alpha=1.5, block_size=BS, sigma=1.0, fine_stage="fused")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--budgets-gib", type=float, nargs="+", default=[1.25, 2.5, 40.0])
    parser.add_argument(
        "--bounds-only",
        action="store_true",
        help="only compare causal chunks sized by the keys they see (fused_chunk_bounds) against uniform chunks, "
        "at the default budget, heavy tiles first",
    )
    args = parser.parse_args()
    if args.bounds_only:
        compare_bounds(args.seq)
        return
    print(torch.cuda.get_device_name())
    default_budget = attention.INFERENCE_CHUNK_BYTES
    for S in args.seq:
        q, k, v = topic_inputs(S)

        def cudnn():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

        fused = functools.partial(fused_inference, q, k, v)

        cudnn_ms = triton.testing.do_bench(cudnn, warmup=5, rep=500)
        print(f"S={S}: cuDNN {cudnn_ms:.2f} ms", flush=True)
        shapes = AttentionShapes(1, q.shape[1], k.shape[1], S, S, q.shape[3], v.shape[3], BS)
        budgets = args.budgets_gib if S > 32768 else [default_budget / 2**30]
        for gib in budgets:
            attention.INFERENCE_CHUNK_BYTES = int(gib * 2**30)
            rows = attention.fused_chunk_rows(shapes, True, False, from_rows=True)
            n_chunks = len(attention.fused_chunk_bounds(shapes, rows, True)) - 1
            outs = []
            for heavy_first in (False, True, False, True):
                triton_kernels.HEAVY_TILES_FIRST = heavy_first
                if len(outs) < 2:
                    outs.append(fused())
                ms = triton.testing.do_bench(fused, warmup=2, rep=1500)
                peak = peak_extra_gib(fused, torch.cuda.memory_allocated())
                print(
                    f"  budget {gib:5.2f} GiB, heavy tiles first {heavy_first!s:5}: {n_chunks} chunks "
                    f"({rows} rows over every key), {ms:.2f} ms ({cudnn_ms / ms:.2f}x cuDNN), "
                    f"extra peak {peak:.2f} GiB",
                    flush=True,
                )
            print(f"  same bits with heavy tiles first: {torch.equal(outs[0], outs[1])}", flush=True)
        attention.INFERENCE_CHUNK_BYTES = default_budget


def compare_bounds(seqs: list[int]) -> None:
    """``dash_fused`` with :func:`attention.fused_chunk_bounds` against uniform chunks of the same
    rows, interleaved twice, same process."""
    sized = attention.fused_chunk_bounds
    for S in seqs:
        q, k, v = topic_inputs(S)

        fused = functools.partial(fused_inference, q, k, v)

        shapes = AttentionShapes(1, q.shape[1], k.shape[1], S, S, q.shape[3], v.shape[3], BS)
        rows = attention.fused_chunk_rows(shapes, True, False, from_rows=True)
        for uniform in (True, False, True, False):
            attention.fused_chunk_bounds = (lambda sh, r, c: [*range(0, sh.q_len, r), sh.q_len]) if uniform else sized
            n_chunks = len(attention.fused_chunk_bounds(shapes, rows, True)) - 1
            ms = triton.testing.do_bench(fused, warmup=2, rep=1500)
            peak = peak_extra_gib(fused, torch.cuda.memory_allocated())
            kind = "uniform" if uniform else "sized by keys"
            print(f"S={S}: {kind:13} chunks ({n_chunks}): {ms:.2f} ms, extra peak {peak:.2f} GiB", flush=True)
        attention.fused_chunk_bounds = sized


if __name__ == "__main__":
    main()
