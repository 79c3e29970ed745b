"""The inference coarse launch's variants, timed interleaved on the benchmark's inputs (GPU).

Each variant is ``coarse_selection_rows_launch`` (score GEMM + grouped entmax, as
``fused_select_only`` runs it without the block summaries) with some of its knobs changed:

* ``zero_fill``: p̄ zero-filled past each chunk's register row up to the padded row (session
  17) or left unwritten there (the inference op since session 18: the list builder never reads
  there);
* ``score_tile``: the GEMM's (BM, BN, warps, stages);
* ``half_newton``: the entmax kernel's Newton steps on float16 pairs, the exact step in float32
  (session 20; the inference op's since), or all in float32;
* ``heavy_first``: the score chunks last rows first (the widest first), or in row order.

``--with-summaries`` times the block summaries with the launch, as the benchmark's
``fused_select_only`` does (the host's work between the two kernels then shows).

Run 95 also timed entmax launches over 4096- and 2048-row sub-chunks of each score chunk and
64-block tails (knobs ``entmax_rows`` and ``split_widths`` of the launch at commit 04b8c76, removed
since: no gain; docs/benchmarks.md, session 18). Run 102 (session 19, H100) timed the GEMM's
scores leaving through TMA stores (a ``[B·Hq, rows, nb]`` tensor descriptor, knob
``score_store_desc`` at commit 0f3c9eb, removed since): 32K 1.357 / 1.366 ms against 1.348 /
1.347 with the masked pointer stores, 128K 21.03 / 21.00 against 19.04 / 19.08; with a (128, 64,
8, 3) tile 1.467 / 21.09. Run 103 (session 19's code, H100) timed k̄'s 16-bit parts made in
the GEMM's registers from fp32 k̄ (knob ``split_in_kernel`` at commit 1321bb0, removed since)
against ``split_summaries``' four small kernels, block summaries in the timed call: 32K 1.458 /
1.493 ms against 1.381 / 1.376, 128K 20.88 / 20.93 against 19.19 / 19.17 (the split tile doubles
the GEMM's shared memory). Run 104 (session 20, H100) timed the GEMM's stores streaming
(``st.global.cs``, knob ``score_stream`` at commit 6c066cf, removed since), float16 Newton steps
both ways: 32K 1.355 / 1.421 ms against 1.356 / 1.421, 128K 18.45 / 18.55 against 18.55 / 18.60.

Prints the median of ``triton.testing.do_bench`` (ms) per variant, two passes, and the largest
difference of p̄ from the first variant on the causal region (blocks up to each row's own).

    PYTHONPATH=. python scripts/probe_coarse_variants.py [--seq 32768 131072]
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

VARIANTS = {
    "zero fill": {},
    "no fill": dict(zero_fill=False),
    "no fill, GEMM (128, 32, 8, 2)": dict(zero_fill=False, score_tile=(128, 32, 8, 2)),
    "no fill, GEMM (128, 32, 8, 3)": dict(zero_fill=False, score_tile=(128, 32, 8, 3)),
    "no fill, GEMM (64, 32, 4, 3)": dict(zero_fill=False, score_tile=(64, 32, 4, 3)),
    "no fill, GEMM (128, 16, 4, 3)": dict(zero_fill=False, score_tile=(128, 16, 4, 3)),
    "fp32 Newton": dict(zero_fill=False, half_newton=False),
    "fp16 Newton": dict(zero_fill=False, half_newton=True),
    "fp16 Newton, heavy chunks first": dict(zero_fill=False, half_newton=True, heavy_first=True),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="+", default=[32768])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--with-summaries", action="store_true")
    args = parser.parse_args()
    print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
    for S in args.seq:
        q, k, _ = topic_inputs(S)
        k_bar = block_summaries(k, None, BS)
        own = torch.arange(S, device=q.device) // BS
        causal_region = torch.arange(k_bar.shape[2], device=q.device)[None, :] <= own[:, None]

        def launch(name: str):
            summaries = block_summaries(k, None, BS) if args.with_summaries else k_bar
            return sk.coarse_selection_rows_launch(q, summaries, 1.5, 1.0, True, S, BS, z_budget=sk.ROWS_Z_BUDGET_BYTES,
                                                   tails=True, **VARIANTS[name])  # fmt: skip

        want = launch(args.variants[0])
        for repeat in range(args.passes):
            for name in args.variants:
                probs, mean_log = launch(name)
                err = ((probs - want[0]).abs() * causal_region).max().item()
                err_mean = (mean_log - want[1]).abs().max().item()
                ms = triton.testing.do_bench(lambda: launch(name), warmup=3, rep=300)
                print(f"S={S} pass {repeat}: {name}: {ms:.3f} ms, max |Δp̄| {err:.1e}, max |Δ mean log| {err_mean:.1e}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
