"""Half scores at inference against fp32 scores (GPU, one process): time and accuracy.

    PYTHONPATH=. python scripts/probe_half_scores.py [--seq 32768 131072]

On the attention benchmark's inputs: the inference coarse launch (``coarse_selection_rows_launch``
with split rows) with fp32 scores and with half scores (fp16 differences from each row's largest
score in every 64 blocks), each timed twice, alternating; the score GEMM alone, summed over the
chunks, in both forms; then p̄ of the two against each other (relative error, largest difference,
rows whose support differs) and the fine stage's output on each selection. Median ms
(``triton.testing.do_bench``).
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
from custom_ops.coarse_selection import split_kernels as sk  # noqa: E402
from custom_ops.sparse_attention import sparse_attention_rows  # noqa: E402


def median_ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=100, return_mode="median")


def gemm_sum(q, k_bar, half: bool) -> float:
    """The score GEMM alone over the launch's chunks, summed."""
    B, Hq, Sq, _ = q.shape
    nb = k_bar.shape[2]
    dtype = torch.float16 if half else torch.float32
    chunk = sk.chunk_rows(B, Hq, nb, Sq, None, dtype.itemsize)
    z = torch.empty(B, Hq, chunk, -(-nb // 32) * 32, device=q.device, dtype=dtype)[..., :nb]
    offsets = torch.empty(B, Hq, chunk, -(-nb // sk.Z_OFFSET_TILE), device=q.device) if half else None
    parts = sk.split_summaries(k_bar, q.dtype)
    total = 0.0
    for row0 in range(0, Sq, chunk):
        n_rows = min(chunk, Sq - row0)
        total += median_ms(lambda: sk.launch_scores(q, parts, z, row0, n_rows, 1.0, True, 0, BS, z_offsets=offsets))
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="*", default=[32768])
    args = parser.parse_args()
    for S in args.seq:
        q, k, v = topic_inputs(S)
        k_bar = block_summaries(k, None, BS)
        launch = (q, k_bar, 1.5, 1.0, True, S, BS)
        for use_half in (False, True):
            sk.coarse_selection_rows_launch(*launch, tails=True, half_scores=use_half)
        times = {False: [], True: []}
        for _ in range(2):
            for use_half in (False, True):
                times[use_half].append(
                    median_ms(lambda h=use_half: sk.coarse_selection_rows_launch(*launch, tails=True, half_scores=h))
                )
        print(f"S={S}: coarse rows launch fp32 scores {times[False]} ms, half scores {times[True]} ms", flush=True)
        print(f"S={S}: score GEMM sum fp32 {gemm_sum(q, k_bar, False):.3f} ms, half {gemm_sum(q, k_bar, True):.3f} ms")
        full, full_mean = sk.coarse_selection_rows_launch(*launch, tails=True)
        half, half_mean = sk.coarse_selection_rows_launch(*launch, tails=True, half_scores=True)
        rel = float((half.double() - full.double()).norm() / full.double().norm())
        has = (full > 0).any(-1)
        same = ((half > 0) == (full > 0)).all(-1) & has
        mean_rel = float((half_mean[same] - full_mean[same]).norm() / full_mean[same].norm())
        print(
            f"S={S}: p̄ half vs fp32 rel {rel:.2e}, max |diff| {float((half - full).abs().max()):.2e}, "
            f"rows with another support {int(has.sum() - same.sum())} of {int(has.sum())}, mean log rel {mean_rel:.2e}"
        )
        del full_mean, half_mean
        scale = 1 / math.sqrt(q.shape[-1])
        if S <= 32768:  # the whole fine stage at once (at 128K its bias rows alone take ~8 GiB)
            out_full = sparse_attention_rows(q, k, v, full, sk_mean(full), True, scale, BS, 1.0)[0].float()
            out_half = sparse_attention_rows(q, k, v, half, sk_mean(half), True, scale, BS, 1.0)[0].float()
            rel = float((out_half - out_full).norm() / out_full.norm())
            print(f"S={S}: fine-stage output half vs fp32 rel {rel:.2e}")
        del full, half
        torch.cuda.empty_cache()


def sk_mean(probs: torch.Tensor) -> torch.Tensor:
    from custom_ops.coarse_selection.torch_impl import mean_log_support

    return mean_log_support(probs)


if __name__ == "__main__":
    main()
