"""The inference fine kernel with K and V through TMA descriptors against pointer loads (GPU).

    PYTHONPATH=. python scripts/probe_fine_descriptors.py [--seq 32768 131072]

On the attention benchmark's inputs and selection (p̄ rows → tile lists with their bias rows, built
once): ``sparse_attention_rows_launch`` with pointer loads at the shipped launch (4 warps, 2
stages) and with descriptors at (warps, stages) candidates, each timed twice in turn; the outputs
must be bitwise the pointer launch's. Median ms (``triton.testing.do_bench``).
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
from custom_ops.coarse_selection import coarse_selection_rows  # noqa: E402
from custom_ops.sparse_attention import list_kernels, triton_kernels  # noqa: E402

CANDIDATES = [(False, 4, 2), (True, 4, 2), (True, 4, 3), (True, 8, 2)]  # (descriptors, warps, stages)


def benchmark_lists(S: int):
    """The attention benchmark's ``(q, k, v)`` at length ``S`` and the inference fine kernel's tile
    lists with their bias rows (32-row tiles), built once from its selection."""
    q, k, v = topic_inputs(S)
    with torch.no_grad():
        probs, mean_log = coarse_selection_rows(q, block_summaries(k, None, BS), 1.5, 1.0, True, S, BS)
        lists = list_kernels.tile_lists_and_bias_from_rows_launch(probs, mean_log, 1.0, True, S, BS, 32)
    return q, k, v, lists


def study(S: int) -> None:
    q, k, v, lists = benchmark_lists(S)
    scale = 1 / math.sqrt(q.shape[-1])

    def launch(desc, warps, stages):
        return triton_kernels.sparse_attention_rows_launch(
            q, k, v, *lists, True, scale, BS, 32, warps, stages, pack=4, use_descriptors=desc
        )

    want = launch(*CANDIDATES[0])
    listed = int(lists[1].sum())
    flops = listed * 32 * 4 * BS * q.shape[-1] * 4
    print(f"S={S}: {listed} listed (tile, block) pairs, {flops / 1e12:.2f} TFLOP in the fine kernel", flush=True)
    for cand in CANDIDATES[1:]:
        try:
            got = launch(*cand)
            same = torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
            err = float((got[0].float() - want[0].float()).abs().max())
            print(f"S={S}: {cand}: bitwise the pointer launch's: {same} (max |diff| {err:.2e})", flush=True)
        except Exception as exc:  # a launch the card refuses (shared memory): say so, go on
            print(f"S={S}: {cand}: failed: {exc!r:.200}", flush=True)
    times = {c: [] for c in CANDIDATES}
    for _ in range(2):
        for cand in CANDIDATES:
            try:
                times[cand].append(triton.testing.do_bench(lambda c=cand: launch(*c), warmup=10, rep=100,
                                                           return_mode="median"))  # fmt: skip
            except Exception:
                pass
    for cand, ms in times.items():
        rate = ", ".join(f"{flops / (t * 1e-3) / 1e12:.0f}" for t in ms)
        print(f"S={S}: descriptors={cand[0]} warps={cand[1]} stages={cand[2]}: "
              + ", ".join(f"{t:.3f}" for t in ms) + f" ms ({rate} TFLOP/s)", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="*", default=[32768, 131072])
    args = parser.parse_args()
    for S in args.seq:
        study(S)
        torch.cuda.empty_cache()
    print_kernel_resources(triton_kernels._sparse_attention_fwd)


if __name__ == "__main__":
    main()
