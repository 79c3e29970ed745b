"""Split the error of the fused fine stage's gradients on CUDA into its sources.

    PYTHONPATH=. python scripts/diagnose_fused_grads.py

For fp32 and bf16 inputs (the shape of the GPU gradient test) prints the relative error, against
the float64 reference, of the q/k/v/pool_query gradients through: the fused Triton kernels, the
op's plain-torch definition differentiated by autograd on the same CUDA tensors, and the
FlexAttention path; and the error of the prior gradient of the Triton backward against autograd
of the torch definition (same selection), with sigma = 1 and sigma = inf.
"""

from __future__ import annotations

import math

import torch

from custom_ops.sparse_attention import sparse_attention_forward
from custom_ops.sparse_attention.torch_impl import sparse_attention_forward_torch
from dash_flex import dash_attention, dash_select
from dash_flex.reference import dash_attention_reference


def rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--sigmas", nargs="+", type=float, default=[1.0, math.inf])
    parser.add_argument("--paths", nargs="+", default=["triton", "torch_def", "flex"])
    args = parser.parse_args()
    B, Hq, Hkv, S, D, bs = 1, 8, 2, 4096, 128, 64
    for dtype in [getattr(torch, name) for name in args.dtypes]:
        for sigma in args.sigmas:
            g = torch.Generator(device="cuda").manual_seed(1)
            q = (2 * torch.randn(B, Hq, S, D, device="cuda", generator=g)).to(dtype)
            k = (2 * torch.randn(B, Hkv, S, D, device="cuda", generator=g)).to(dtype)
            v = torch.randn(B, Hkv, S, D, device="cuda", generator=g).to(dtype)
            u = torch.randn(Hkv, D, device="cuda", generator=g)
            go = torch.randn(B, Hq, S, D, device="cuda", generator=g).to(dtype)
            ref_leaves = [t.detach().double().requires_grad_() for t in (q, k, v, u)]
            ref = dash_attention_reference(*ref_leaves[:3], pool_query=ref_leaves[3], block_size=bs, sigma=sigma)
            ref_g = torch.autograd.grad(ref, ref_leaves, go.double(), allow_unused=True)
            line = [f"{str(dtype):15s} sigma={sigma}"]
            for name in args.paths:
                leaves = [t.clone().requires_grad_() for t in (q, k, v, u)]
                if name == "flex":
                    out = dash_attention(*leaves[:3], pool_query=leaves[3], block_size=bs, sigma=sigma)
                else:
                    sel = dash_select(leaves[0], leaves[1], pool_query=leaves[3], block_size=bs, sigma=sigma)
                    prior, active = sel.log_prior.transpose(2, 3), sel.active_blocks.transpose(2, 3)
                    fn = sparse_attention_forward if name == "triton" else sparse_attention_forward_torch
                    out = fn(*leaves[:3], prior, active, True, 1 / math.sqrt(D), bs, math.isfinite(sigma))[0]
                grads = torch.autograd.grad(out, leaves, go, allow_unused=True)
                errs = " ".join(
                    f"{n}={rel(a, b):.1e}"
                    for n, a, b in zip("q k v u".split(), grads, ref_g)
                    if a is not None and b is not None
                )
                line.append(f"{name}: out={rel(out, ref):.1e} {errs}")
                print(line[0], line[-1], flush=True)
            with torch.no_grad():
                sel = dash_select(q, k, pool_query=u, block_size=bs, sigma=sigma)
            prior = sel.log_prior.transpose(2, 3).detach().contiguous().requires_grad_()
            active = sel.active_blocks.transpose(2, 3).contiguous()
            has = math.isfinite(sigma)
            d_tri = torch.autograd.grad(
                sparse_attention_forward(q, k, v, prior, active, True, 1 / math.sqrt(D), bs, has)[0],
                prior,
                go,
                allow_unused=True,
            )[0]
            d_def = torch.autograd.grad(
                sparse_attention_forward_torch(q, k, v, prior, active, True, 1 / math.sqrt(D), bs, has)[0],
                prior,
                go,
                allow_unused=True,
            )[0]
            if d_tri is not None and d_def is not None:
                line.append(f"dprior triton vs torch_def: {rel(d_tri, d_def):.1e}")
            print("\n  ".join(line), flush=True)


if __name__ == "__main__":
    main()
