"""How much work the fused fine stage does for the keys dash_attention keeps (CPU, no GPU needed).

    python scripts/study_tile_work.py [--seq 8192 32768]

On the attention benchmark's input recipe (benchmarks/bench_attention.py: B=1, Hq=32, Hkv=8,
D=128, block 64, α=1.5; here float32 from the CPU generator, so not the GPU run's exact draws),
the selection's kept (query row, key block) pairs against what a fine kernel with query tiles of
``M`` rows computes: a tile runs a block when any of its rows keeps it, in full (``M`` × 64
scores; the diagonal's masked part too). As a share of the causal scores (``S(S+1)/2`` per
selection head), the unit of cuDNN's work. ``M = 1`` is the token level with each row's own block
counted in full. The recipe's query topics are constant over 256 rows, which favours large tiles.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_attention import BS, topic_inputs  # noqa: E402

from dash_flex import dash_select  # noqa: E402

TILE_ROWS = (1, 16, 32, 64, 128)


def work_shares(active: torch.Tensor, S: int) -> dict[int, float]:
    """``active [B, H, S, nb]`` (kept blocks per row): computed scores per tile size, as a share of
    the causal scores."""
    B, H, _, nb = active.shape
    causal = B * H * S * (S + 1) / 2
    shares = {}
    for m in TILE_ROWS:
        runs = active.view(B, H, S // m, m, nb).any(3)  # [B, H, tiles, nb]
        rows = torch.arange(S).view(S // m, m)
        own = rows[:, -1] // BS  # the tile's last row's own block: the diagonal, run in full
        diagonal = torch.zeros(S // m, nb, dtype=torch.bool)
        diagonal[torch.arange(S // m), own] = True
        first_own = rows[:, 0] // BS  # a tile can straddle two own blocks when m > BS
        diagonal[torch.arange(S // m), first_own] = True
        runs = runs | diagonal  # the fine kernel always runs each row's own (diagonal) block
        shares[m] = float(runs.sum()) * m * BS / causal
    return shares


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="+", default=[8192])
    args = parser.parse_args()
    print("| S | " + " | ".join(f"M = {m}" for m in TILE_ROWS) + " |")
    print("|---|" + "---|" * len(TILE_ROWS))
    for S in args.seq:
        q, k, _ = topic_inputs(S, device="cpu", dtype=torch.float32)
        with torch.no_grad():
            sel = dash_select(q, k, alpha=1.5, block_size=BS)
        shares = work_shares(sel.active_blocks.bool(), S)  # per selection head (a KV head's group)
        print(f"| {S} | " + " | ".join(f"{100 * shares[m]:.1f}%" for m in TILE_ROWS) + " |", flush=True)


if __name__ == "__main__":
    main()
