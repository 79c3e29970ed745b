"""The coarse backward's error against the torch definition per kind of output gradient (CUDA).

    PYTHONPATH=. python scripts/diagnose_coarse_backward.py

Prints relative errors of dq and dk̄ for a random gradient of ``probs``, a gradient of the prior
proportional to p̄, and a raw random gradient of the prior, whose chain rule divides by p̄ (tiny
on some selected blocks), fp32 and bf16 (4K tokens, Hq=32, Hkv=8, D=128; the GPU test's problem).
"""

from __future__ import annotations

import torch

from custom_ops.block_summary import block_summaries
from custom_ops.coarse_selection.split_kernels import coarse_selection_backward_split
from custom_ops.coarse_selection.torch_impl import (
    block_classes,
    coarse_selection_backward_torch,
    coarse_selection_torch,
)
from custom_ops.selection.torch_impl import log_prior_backward_torch


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def main() -> None:
    B, Hq, Hkv, S, D, bs = 1, 32, 8, 4096, 128, 64
    sq_pad, nb_pad = S, S // bs
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.Generator(device="cuda").manual_seed(11)
        q = (2 * torch.randn(B, Hq, S, D, device="cuda", generator=g)).to(dtype)
        k = 2 * torch.randn(B, Hkv, S, D, device="cuda", generator=g)
        k_bar = block_summaries(k, torch.randn(Hkv, D, device="cuda", generator=g), bs)
        probs, prior, _ = coarse_selection_torch(q, k_bar, 1.5, 1.0, 0.5, True, S, bs, sq_pad, nb_pad)
        eligible, _ = block_classes(S, S, bs, True, q.device)
        raw = torch.randn(prior.shape, device="cuda", generator=g)
        smallest = probs[probs > 0].min().item()
        kinds = {
            "probs": (torch.randn(probs.shape, device="cuda", generator=g), None),
            "prior ∝ p̄": (None, raw * probs.transpose(2, 3)),
            "prior raw": (None, raw),
        }
        for name, (gp, gr) in kinds.items():
            total = gp if gr is None else log_prior_backward_torch(gr, probs, 0.5)
            want = coarse_selection_backward_torch(total, q, k_bar, 1.5, 1.0, eligible)
            got = coarse_selection_backward_split(gp, gr, probs, q, k_bar, 1.5, 1.0, 0.5, True, S, bs, z_budget=2**26)
            errors = f"dq {rel_err(got[0], want[0]):.2e}  dk_bar {rel_err(got[1], want[1]):.2e}"
            print(f"{str(dtype):15s} {name:10s} {errors}  (smallest selected p̄ {smallest:.1e})", flush=True)


if __name__ == "__main__":
    main()
