"""Probe which FlexAttention kernel options compile for dash_attention's selection on this GPU.

PYTHONPATH=. python scripts/probe_flex_configs.py
"""

import time

import torch
from torch.nn.attention.flex_attention import flex_attention

from dash_flex import dash_select

torch._dynamo.config.cache_size_limit = 256
OPTIONS = [None, {"num_stages": 2}, {"BLOCK_M": 64, "BLOCK_N": 64}, {"BLOCK_M": 128, "BLOCK_N": 64, "num_stages": 2}]

for D, dtype, G in [(64, torch.bfloat16, 4), (128, torch.bfloat16, 4), (64, torch.float32, 4), (128, torch.float32, 1)]:
    S = 4096
    q = torch.randn(1, 8, S, D, device="cuda", dtype=dtype)
    k = torch.randn(1, 8 // G, S, D, device="cuda", dtype=dtype)
    v = torch.randn(1, 8 // G, S, D, device="cuda", dtype=dtype)
    for opts in OPTIONS:
        torch._dynamo.reset()
        res = []
        for backward in (False, True):
            qq, kk, vv = (t.detach().requires_grad_(backward) for t in (q, k, v))
            try:
                t0 = time.time()
                sel = dash_select(qq, kk, block_size=64)
                out = torch.compile(flex_attention, dynamic=False)(
                    qq,
                    kk,
                    vv,
                    score_mod=sel.score_mod,
                    block_mask=sel.block_mask,
                    enable_gqa=G > 1,
                    kernel_options=opts,
                )
                if backward:
                    out.sum().backward()
                torch.cuda.synchronize()
                res.append(f"{'bwd' if backward else 'fwd'} ok {time.time() - t0:.0f}s")
            except Exception as e:  # noqa: BLE001 - a probe reports every failure
                res.append(f"{'bwd' if backward else 'fwd'} FAIL {type(e).__name__}: {str(e).splitlines()[0][:120]}")
        print(f"D={D} {str(dtype)[6:]} G={G} opts={opts}: " + " | ".join(res), flush=True)
