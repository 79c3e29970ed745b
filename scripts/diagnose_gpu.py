"""GPU diagnosis: compiled-vs-eager NaNs in the coarse stage, and gradient error by path.

PYTHONPATH=. python scripts/diagnose_gpu.py
"""

import math
import sys

import torch

sys.path.insert(0, "compile_tests")
from test_compile import _layer_and_input  # noqa: E402

from dash_flex import dash_attention, dash_select  # noqa: E402
from dash_flex.reference import dash_attention_reference  # noqa: E402


def rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


torch._dynamo.config.cache_size_limit = 64
layer, x = _layer_and_input(1000, device="cuda", seed=4)
with torch.no_grad():
    eager = layer(x)
    comp = torch.compile(layer, fullgraph=True, dynamic=False)(x)
print("layer eager nan", bool(eager.isnan().any()), "compiled nan", bool(comp.isnan().any()), flush=True)
q, k, v = (torch.randn(1, 4, 1000, 16, device="cuda") * 2 for _ in range(3))
k, v = k[:, :2], v[:, :2]
u = torch.randn(2, 16, device="cuda")


def sel_parts(q, k, u):
    s = dash_select(q, k, pool_query=u, block_size=16)
    return s.probs, s.log_prior, s.active_blocks, s.block_mask.kv_num_blocks, s.block_mask.kv_indices


with torch.no_grad():
    e = sel_parts(q, k, u)
    c = torch.compile(sel_parts, fullgraph=True)(q, k, u)
for name, a, b in zip(["probs", "log_prior", "active", "kv_num", "kv_idx"], e, c):
    print(
        name,
        "eager nan",
        bool(a.float().isnan().any()),
        "compiled nan",
        bool(b.float().isnan().any()),
        "equal",
        bool(torch.equal(a, b)) if a.dtype in (torch.bool, torch.int32) else rel(b, a),
        flush=True,
    )
with torch.no_grad():
    o_e = dash_attention(q, k, v, pool_query=u, block_size=16)
    o_c = torch.compile(lambda q, k, v, u: dash_attention(q, k, v, pool_query=u, block_size=16), fullgraph=True)(
        q, k, v, u
    )
print(
    "dash eager nan", bool(o_e.isnan().any()), "compiled nan", bool(o_c.isnan().any()), "rel", rel(o_c, o_e), flush=True
)

# Gradient error by path, 4096 tokens, Hq=8, Hkv=2, D=128.
g = torch.Generator(device="cuda").manual_seed(0)
S = 4096
q0 = 2 * torch.randn(1, 8, S, 128, device="cuda", generator=g)
k0 = 2 * torch.randn(1, 2, S, 128, device="cuda", generator=g)
v0 = torch.randn(1, 2, S, 128, device="cuda", generator=g)
u0 = torch.randn(2, 128, device="cuda", generator=g)
for dtype in (torch.float32, torch.bfloat16):
    for sigma in (math.inf, 1.0):
        qq, kk, vv = (t.to(dtype).detach().requires_grad_() for t in (q0, k0, v0))
        out = dash_attention(qq, kk, vv, pool_query=u0, sigma=sigma)
        go = torch.randn_like(out)
        gq, gk, gv = torch.autograd.grad(out, (qq, kk, vv), go)
        q6, k6, v6 = (t.detach().double().requires_grad_() for t in (qq, kk, vv))
        ref = dash_attention_reference(q6, k6, v6, pool_query=u0.double(), sigma=sigma)
        rq, rk, rv = torch.autograd.grad(ref, (q6, k6, v6), go.double())
        print(
            f"{str(dtype)[6:]} sigma={sigma}: out {rel(out, ref):.2e} dq {rel(gq, rq):.2e} dk {rel(gk, rk):.2e} "
            f"dv {rel(gv, rv):.2e}",
            flush=True,
        )
        del ref, rq, rk, rv, q6, k6, v6
        torch.cuda.empty_cache()
# The prior's own gradient: flex's captured-buffer gradient vs the dense path on the same selection.
from dash_flex.attention import dense_flex_attention  # noqa: E402

for dtype in (torch.float32, torch.bfloat16):
    qq, kk, vv = (t.to(dtype).detach() for t in (q0, k0, v0))
    with torch.no_grad():
        sel = dash_select(qq, kk, pool_query=u0)
    prior_leaf = sel.log_prior  # [B, H, Sq, nb] view of the padded buffer: rebuild a leaf buffer

    nb = prior_leaf.shape[-1]
    buf = torch.zeros(1, 2, -(-S // 64), S, device="cuda")
    buf[:, :, :nb, :S] = prior_leaf.transpose(2, 3)
    buf.requires_grad_()
    act = sel.block_mask.mask_mod

    def sm(score, b, h, qi, ki):
        return score + buf[b, h // 4, ki // 64, qi]

    from torch.nn.attention.flex_attention import flex_attention  # noqa: E402

    o = torch.compile(flex_attention)(
        qq, kk, vv, score_mod=sm, block_mask=sel.block_mask, enable_gqa=True, kernel_options=sel.kernel_options
    )
    go = torch.randn_like(o)
    (gb,) = torch.autograd.grad(o, (buf,), go)
    buf2 = buf.detach().clone().requires_grad_()

    def sm2(score, b, h, qi, ki):
        return score + buf2[b, h // 4, ki // 64, qi]

    o2 = dense_flex_attention(qq.float(), kk.float(), vv.float(), score_mod=sm2, mask_mod=act, scale=128**-0.5)
    (gb2,) = torch.autograd.grad(o2, (buf2,), go.float())
    print(f"{str(dtype)[6:]} prior-gradient flex vs dense fp32: {rel(gb, gb2):.2e}; out {rel(o, o2):.2e}", flush=True)

# Decode (Sq = 1) through the user's compiled flex call with sel.kernel_options, no grad.
qd = torch.randn(2, 8, 1, 64, device="cuda", dtype=torch.bfloat16)
kd = torch.randn(2, 4, 3000, 64, device="cuda", dtype=torch.bfloat16)
vd = torch.randn(2, 4, 3000, 64, device="cuda", dtype=torch.bfloat16)
with torch.no_grad():
    sel = dash_select(qd, kd)
    od = torch.compile(flex_attention)(
        qd,
        kd,
        vd,
        score_mod=sel.score_mod,
        block_mask=sel.block_mask,
        enable_gqa=True,
        kernel_options=sel.kernel_options,
    )
    print("decode identity", rel(od, dash_attention(qd, kd, vd)), sel.kernel_options, flush=True)
