"""Which kernel of the coarse forward stalls at 128K (GPU): the score GEMM and the grouped entmax
kernel of every query chunk, each launched alone and waited for, with a line before each launch.
A stalled kernel leaves its line last; run it under ``timeout``.

    PYTHONPATH=. timeout 120 python scripts/diagnose_coarse_stall.py [--seq 131072]
        [--config 1x2] [--early-exit auto|on|off] [--from-width 1024]

``--config ROWSxWARPS`` replaces the launch table's entry at widths from ``--from-width`` on;
``--early-exit``: ``auto`` (the kernels' rule: only one-warp launches exit early), ``on``, ``off``.
Context (docs/benchmarks.md, session 9): a 128K forward with (1, 2) launches at widths 1024 and
2048 and the early exit stalled three times inside the coarse op.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_attention import BS, topic_inputs  # noqa: E402

from custom_ops.block_summary import block_summaries  # noqa: E402
from custom_ops.coarse_selection import split_kernels as sk  # noqa: E402
from custom_ops.entmax.torch_impl import solver_schedule  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=131072)
    parser.add_argument("--config", help="ROWSxWARPS for widths from --from-width on (default: the table)")
    parser.add_argument("--from-width", type=int, default=1024)
    parser.add_argument("--early-exit", choices=["auto", "on", "off"], default="auto")
    args = parser.parse_args()
    S = args.seq
    q, k, _ = topic_inputs(S)
    k_bar = block_summaries(k, None, BS)
    B, Hq, Sq, _ = q.shape
    Hkv, nb = k_bar.shape[1], k_bar.shape[2]
    nb_pad = -(-(-(-S // 128) * 128) // BS)  # the launch's padded block count (whole 128-row tiles)
    NB = max(16, triton.next_power_of_2(nb_pad))
    chunk = sk.chunk_rows(B, Hq, nb, Sq)
    z = torch.empty(B, Hq, chunk, -(-nb // 16) * 16, device=q.device, dtype=torch.float32)[..., :nb]
    probs = torch.empty(B, Hkv, Sq, nb, device=q.device, dtype=torch.float32)
    mean_log = torch.empty(B, Hkv, Sq, device=q.device, dtype=torch.float32)
    parts = sk.split_summaries(k_bar, q.dtype)
    mode, n_bisect, n_newton = solver_schedule(1.5, nb, torch.float32)
    override = tuple(int(n) for n in args.config.split("x")) if args.config else None
    torch.cuda.synchronize()
    seen = set()
    for i, row0 in enumerate(range(0, Sq, chunk)):
        n_rows = min(chunk, Sq - row0)
        width = sk.chunk_width(NB, True, row0, n_rows, Sq, 0, BS)
        rows, warps = override if override and width >= args.from_width else sk.entmax_config(width)
        early = {"auto": warps == 1, "on": True, "off": False}[args.early_exit]
        for name in ("scores", "entmax"):
            tag = f"chunk {i} rows {row0}+{n_rows} width {width} ({rows}, {warps}) early_exit={early}: {name}"
            if (name, width) not in seen:  # a first launch compiles: say so, it is not a stall
                print(f"{tag} (first launch, compiling)", flush=True)
                seen.add((name, width))
            t0 = time.perf_counter()
            if name == "scores":
                sk.launch_scores(q, parts, z, row0, n_rows, 1.0, True, 0, BS)
            else:
                sk.launch_group_entmax(z, probs, mean_log, row0, n_rows, width, NB, 1.5, True, 0, BS,
                                       (mode, n_bisect, n_newton), rows, warps, early_exit=early)  # fmt: skip
            launched = time.perf_counter()
            print(f"{tag} launched in {launched - t0:.2f} s", flush=True)
            torch.cuda.synchronize()
            print(f"{tag} done in {1e3 * (time.perf_counter() - launched):.2f} ms", flush=True)
    kept = (probs > 0).float().sum(-1).mean().item()
    print(f"all {i + 1} chunks done; {kept:.1f} blocks kept per query on average", flush=True)


if __name__ == "__main__":
    main()
