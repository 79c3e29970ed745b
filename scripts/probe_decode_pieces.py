"""The decode selection kernel (``_decode_select``) under piece widths and warp counts (GPU).

    PYTHONPATH=. python scripts/probe_decode_pieces.py [--blocks 2048]

Session 13 changed the entmax row reductions to sum a thread's pieces first; the decode step at
128K then took 0.058 ms for its selection (scores + this kernel) against session 4's 0.039 (which
still had the Newton early exit). Run 66 chose the launch: every warp on the pieces (SUB = 128 per
warp), the group's rows in each thread. One program per (sequence, KV
head): 64 programs at the benchmark's B = 8, Hkv = 8, so the solve's latency is the time. Times
each (SUB, warps) on random scores (bench_decode's shape: G = 4) and checks that the prior equals
the current launch's up to fp32 sum order.
"""

from __future__ import annotations

import argparse

import torch
import triton

from custom_ops.entmax.torch_impl import solver_schedule
from custom_ops.sparse_decode import selection_kernels as sk


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=2048)
    args = parser.parse_args()
    B, Hkv, G, nb, bs = 8, 8, 4, args.blocks, 64
    NB = triton.next_power_of_2(nb)
    z = 3 * torch.randn(B * Hkv, G, nb, device="cuda")
    lengths = torch.full((B,), nb * bs, device="cuda", dtype=torch.int64)
    mode, n_bisect, n_newton = solver_schedule(1.5, nb, torch.float32)

    def launch(sub: int, warps: int):
        active = torch.empty(B, Hkv, nb, device="cuda", dtype=torch.int8)
        prior = torch.empty(B, Hkv, nb, device="cuda")
        block_list = torch.empty(B, Hkv, nb, device="cuda", dtype=torch.int32)
        count = torch.empty(B, Hkv, device="cuda", dtype=torch.int32)
        pos = torch.empty(B, device="cuda", dtype=torch.int64)

        def run():
            sk._decode_select[(B * Hkv,)](
                z, lengths, lengths, active, prior, block_list, count, pos, nb, Hkv, 1.0, 0.5, 2.0, -0.5,
                GROUP=G, GROUP_P2=G, NB=NB, SUB=sub, BLOCK_SIZE=bs, HAS_NUM_NEW=False, MODE=mode,
                N_BISECT=n_bisect, N_NEWTON=n_newton, num_warps=warps,
            )  # fmt: skip

        return run, prior

    current = sk.select_launch(G, NB)
    run, want = launch(*current)
    run()
    print(f"nb={nb}: current launch SUB={current[0]} warps={current[1]}")
    print("| SUB | warps | ms | max |prior − current| |\n|---|---|---|---|")
    for sub, warps in ((128, 4), (256, 4), (512, 4), (128, 8), (256, 8), (512, 8), (1024, 8), (512, 16)):
        if sub > NB:
            continue
        run, prior = launch(sub, warps)
        run()
        ms = triton.testing.do_bench_cudagraph(run, rep=50)
        diff = float((prior - want).abs().max())
        print(f"| {sub} | {warps} | {ms:.4f} | {diff:.2e} |", flush=True)


if __name__ == "__main__":
    main()
