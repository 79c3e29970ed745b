"""The rows path where heads cannot be packed (one KV head per query head: 128-row tiles), against
the block-major call, same process (GPU).

    PYTHONPATH=. python scripts/probe_unpacked_rows.py [--seq 16384] [--heads 8]

``dash_attention(fine_stage="fused")`` without gradients (the rows path) and with
``return_selection=True`` (block-major), each timed twice; their outputs' relative difference.
"""

from __future__ import annotations

import argparse

import torch
import triton

from dash_flex import dash_attention


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=16384)
    parser.add_argument("--heads", type=int, default=8)
    args = parser.parse_args()
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, args.heads, args.seq, 128, device="cuda", generator=g).to(torch.bfloat16)
               for _ in range(3))  # fmt: skip
    kw = dict(block_size=64, fine_stage="fused")
    with torch.no_grad():
        rows = dash_attention(q, k, v, **kw)
        block_major = dash_attention(q, k, v, return_selection=True, **kw)[0]
        err = float((rows.float() - block_major.float()).norm() / block_major.float().norm())
        print(f"S={args.seq}, {args.heads} query = KV heads: rows against block-major {err:.2e}", flush=True)
        calls = {
            "rows": lambda: dash_attention(q, k, v, **kw),
            "block-major": lambda: dash_attention(q, k, v, return_selection=True, **kw),
        }
        for _ in range(2):
            for name, fn in calls.items():
                ms = triton.testing.do_bench(fn, warmup=20, rep=200, return_mode="median")
                print(f"{name:12s} {ms:7.3f} ms", flush=True)


if __name__ == "__main__":
    main()
