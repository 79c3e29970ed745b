"""The inference coarse launch under its switches (GPU, one process): ``PREFETCH_SCORES`` (the entmax
kernel loads the next head's scores before solving this head's) and ``SIDE_STREAM_SCORES`` (the
next chunk's score GEMM on a side stream beside the entmax kernel), each combination timed twice
in turn; every combination's p̄ and mean log p̄ must be bitwise the default's.

    PYTHONPATH=. python scripts/probe_coarse_variants.py [--seq 32768 131072] [--fused]

``--fused``: also ``dash_attention(fine_stage="fused")`` at inference under the default and the
fastest combination. Median ms (``triton.testing.do_bench``).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_attention import BS, topic_inputs  # noqa: E402

from custom_ops.block_summary import block_summaries  # noqa: E402
from custom_ops.coarse_selection import split_kernels as sk  # noqa: E402
from dash_flex import dash_attention  # noqa: E402

COMBINATIONS = list(itertools.product((False, True), (False, True)))  # (prefetch, side stream)


def switched(prefetch: bool, side: bool, fn):
    def run():
        sk.PREFETCH_SCORES, sk.SIDE_STREAM_SCORES = prefetch, side
        try:
            return fn()
        finally:
            sk.PREFETCH_SCORES, sk.SIDE_STREAM_SCORES = False, False

    return run


def study(S: int, with_fused: bool) -> None:
    q, k, v = topic_inputs(S)
    k_bar = block_summaries(k, None, BS)
    launch = lambda: sk.coarse_selection_rows_launch(q, k_bar, 1.5, 1.0, True, S, BS, tails=True)  # noqa: E731
    want = launch()
    for combo in COMBINATIONS[1:]:
        got = switched(*combo, launch)()
        same = torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        print(f"S={S}: prefetch={combo[0]} side stream={combo[1]}: bitwise the default's: {same}", flush=True)
        del got
    del want
    times = {c: [] for c in COMBINATIONS}
    for _ in range(2):
        for combo in COMBINATIONS:
            times[combo].append(triton.testing.do_bench(switched(*combo, launch), warmup=10, rep=100,
                                                        return_mode="median"))  # fmt: skip
    for combo, ms in times.items():
        print(f"S={S}: coarse rows launch prefetch={combo[0]} side stream={combo[1]}: "
              + ", ".join(f"{t:.3f}" for t in ms) + " ms", flush=True)  # fmt: skip
    if with_fused:
        best = min(COMBINATIONS, key=lambda c: min(times[c]))
        fused = lambda: dash_attention(q, k, v, alpha=1.5, block_size=BS, sigma=1.0, fine_stage="fused")  # noqa: E731
        with torch.no_grad():
            for _ in range(2):
                for combo in (COMBINATIONS[0], best):
                    ms = triton.testing.do_bench(switched(*combo, fused), warmup=5, rep=50, return_mode="median")
                    print(f"S={S}: dash_fused prefetch={combo[0]} side stream={combo[1]}: {ms:.2f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="*", default=[32768, 131072])
    parser.add_argument("--fused", action="store_true")
    args = parser.parse_args()
    for S in args.seq:
        study(S, args.fused)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
