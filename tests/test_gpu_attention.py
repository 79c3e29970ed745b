"""dash_attention on CUDA against the float64 reference (run on the H100: `PYTHONPATH=. pytest -m gpu`).

Tolerances (relative L2), measured on the H100 (see docs/design.md, "Numerics"):

* float32: 1e-3 forward, 1e-2 gradients. The q/k gradients through the prior carry the
  float32 entmax threshold's error: a probability just above the threshold has a large
  *relative* error, and ``log p̄`` exposes it (1e-3 measured at 4K vs 2e-6 with sigma = inf).
* bfloat16: 2e-2 forward and for every gradient with ``sigma = inf``; with a finite sigma the
  v and captured-tensor gradients stay within 2e-2. The q/k/pool_query gradients then carry the
  flash precision model's error: FlexAttention forms the softmax backward's ``Δ = Σ dO·O`` from
  the *bf16-rounded* output, so ``Σ_i dS_i ≠ 0``, and the log-prior's centring mean and
  ``d log p/dz ∝ p^{1−α}`` amplify that (docs/design.md, "Numerics"). The float64 reference
  under that precision model (``flash_output_dtype=bfloat16``) says how well-conditioned an
  input is: where it is within 1e-2 of the exact gradient, ours must be within 2e-2; elsewhere
  both are O(0.1–10) off and only finiteness is asserted (the known gap, issue #4).
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention

from dash_flex import dash_attention, dash_select, mods
from dash_flex.reference import dash_attention_reference

torch._dynamo.config.recompile_limit = 64  # one compile per case; the tests' own flex calls count too
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
TOL = {torch.float32: (1e-3, 1e-2, 1e-2), torch.bfloat16: (2e-2, None, 2e-2)}  # fwd, q/k grads, v grad
LOG = os.environ.get("DASH_FLEX_GPU_LOG")  # where measured errors are appended (docs/design.md tables)


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def inputs(seed, B, Hq, Hkv, Sq, Skv, D, dtype):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = (2 * torch.randn(B, Hq, Sq, D, device="cuda", generator=g)).to(dtype)
    k = (2 * torch.randn(B, Hkv, Skv, D, device="cuda", generator=g)).to(dtype)
    v = torch.randn(B, Hkv, Skv, D, device="cuda", generator=g).to(dtype)
    u = torch.randn(Hkv, D, device="cuda", generator=g)
    return q, k, v, u


CASES = [
    # (B, Hq, Hkv, Sq, Skv, D, block, extra kwargs)
    (1, 8, 2, 4096, 4096, 128, 64, {}),
    (1, 8, 1, 2048, 2048, 64, 64, dict(share_kv_groups=False, alpha=1.25)),
    (2, 4, 4, 1000, 1000, 64, 64, dict(sigma=0.5)),
    (1, 8, 2, 300, 2500, 128, 64, {}),  # chunked prefill
    (2, 8, 4, 1, 3000, 64, 64, {}),  # decode
    (1, 8, 2, 2048, 2048, 64, 128, dict(causal=False, alpha=2.0)),
    (1, 8, 2, 4096, 4096, 128, 64, dict(sigma=math.inf)),  # fine stage alone: tight bf16 gradients
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1]}x{c[2]}-{c[3]}x{c[4]}-D{c[5]}-bs{c[6]}")
def test_matches_reference_cuda(case, dtype):
    B, Hq, Hkv, Sq, Skv, D, bs, kw = case
    q, k, v, u = inputs(sum(case[:6]), B, Hq, Hkv, Sq, Skv, D, dtype)
    _check(q, k, v, u, dtype, block_size=bs, **kw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_composed_mods_cuda(dtype):
    S, Hq, Hkv = 2048, 8, 2
    q, k, v, u = inputs(11, 1, Hq, Hkv, S, S, 64, dtype)
    table = (0.1 * torch.randn(Hq, 512, device="cuda")).requires_grad_()
    doc = (torch.arange(S, device="cuda") // 700).to(torch.int32)
    score_mod = mods.compose_score_mods(mods.generate_tanh_softcap(20.0), mods.generate_relative_bias(table))
    mask_mod = mods.and_masks(mods.generate_sliding_window(1500), mods.generate_document_mask(doc))
    _check(q, k, v, u, dtype, captured=[table], block_size=64, score_mod=score_mod, mask_mod=mask_mod)


def _check(q, k, v, u, dtype, captured=(), **kw):
    fwd_tol, qk_tol, v_tol = TOL[dtype]
    if dtype == torch.bfloat16 and kw.get("sigma", 1.0) == math.inf:
        qk_tol = 2e-2
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, u)]
    out = dash_attention(*leaves[:3], pool_query=leaves[3], **kw)
    grad_out = torch.randn_like(out)
    # With sigma = inf pool_query has no path to the output: its gradient is None on both sides.
    grads = torch.autograd.grad(out, leaves + list(captured), grad_out, allow_unused=True)
    ref_grads, ref = _reference_grads(q, k, v, u, captured, grad_out, None, **kw)
    flash_grads = None
    if qk_tol is None:  # bf16 with a prior: the bound comes from the same precision model in float64
        flash_grads, _ = _reference_grads(q, k, v, u, captured, grad_out, dtype, **kw)
    assert torch.isfinite(out).all()
    errors = {"forward": rel_err(out, ref)}
    assert errors["forward"] <= fwd_tol, f"forward {errors['forward']:.2e}"
    names = ["q", "k", "v", "pool_query", "captured"]
    for i, (name, g, r) in enumerate(zip(names, grads, ref_grads)):
        assert (g is None) == (r is None), name
        if g is None:
            continue
        assert torch.isfinite(g).all(), name
        tol = v_tol if name in ("v", "captured") else qk_tol
        if name == "pool_query" and dtype == torch.float32:
            # through FlexAttention's atomic adds into the prior's gradient, then 1/p̄ (issue #4): the
            # 8x1 per-head case moved 4.3e-4 – 1.2e-2 over identical runs (H200, runs 60–61)
            tol = 2e-2
        errors[name] = rel_err(g, r)
        if tol is None:
            errors[name + "_flash_model"] = model = rel_err(flash_grads[i], r)
            # Well-conditioned input (the float64 flash model is itself accurate): hold ours to 2e-2.
            # Ill-conditioned: ours and the model are both O(0.1–10) off and vary with atomics'
            # order from run to run (H100: 0.54 then 1.70 on one case), so only finiteness is
            # asserted — the known gap of issue #4, fixed by an exact Δ in our own kernel.
            tol = 2e-2 if model < 1e-2 else math.inf
        assert errors[name] <= tol, f"{name} gradient {errors[name]:.2e} > {tol:.2e}"
    if LOG:
        with open(LOG, "a") as f:
            f.write(
                json.dumps({"dtype": str(dtype), "shape": list(q.shape) + [k.shape[1]], **kw_str(kw), **errors}) + "\n"
            )
    # The user-facing identity, through compiled FlexAttention. sel.kernel_options is needed here:
    # Inductor's default configs overflow shared memory for bf16 D=64 (docs/design.md).
    with torch.no_grad():
        sel_kw = {k_: v_ for k_, v_ in kw.items() if k_ != "scale"}
        sel = dash_select(q, k, pool_query=u, **sel_kw)
        user = torch.compile(flex_attention)(
            q,
            k,
            v,
            score_mod=sel.score_mod,
            block_mask=sel.block_mask,
            enable_gqa=q.shape[1] != k.shape[1],
            kernel_options=sel.kernel_options,
        )
        again = dash_attention(q, k, v, pool_query=u, **kw)
    torch.testing.assert_close(user, again, atol=0, rtol=0)


def _reference_grads(q, k, v, u, captured, grad_out, flash_dtype, **kw):
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v, u)]
    ref = dash_attention_reference(*leaves[:3], pool_query=leaves[3], flash_output_dtype=flash_dtype, **kw)
    grads = torch.autograd.grad(ref, leaves + list(captured), grad_out.double(), allow_unused=True)
    return grads, ref.detach()


def kw_str(kw):
    return {
        k_: (v_ if isinstance(v_, (int, float, bool)) else getattr(v_, "__name__", str(v_))) for k_, v_ in kw.items()
    }


def test_eager_flex_equals_compiled_flex_cuda():
    """Eager flex applies mask_mod only; compiled flex trusts the block tables: they must agree."""
    q, k, v, u = inputs(12, 1, 4, 2, 1024, 1024, 64, torch.float32)
    with torch.no_grad():
        sel = dash_select(q, k, pool_query=u, block_size=64)
        eager = flex_attention(q, k, v, score_mod=sel.score_mod, block_mask=sel.block_mask, enable_gqa=True)
        compiled = torch.compile(flex_attention)(
            q, k, v, score_mod=sel.score_mod, block_mask=sel.block_mask, enable_gqa=True
        )
    assert rel_err(compiled, eager) < 1e-5
    assert math.isfinite(sel.sparsity().tile_sparsity)
