"""dash_flex::block_summaries: torch path vs the reference, Triton kernel vs torch path, opcheck."""

import math

import pytest
import torch

from custom_ops.block_summary import block_summaries
from custom_ops.block_summary.torch_impl import block_summaries_torch
from dash_flex.reference import block_summaries as reference_summaries

CASES = [(2, 3, 100, 16, 32), (1, 2, 64, 64, 64), (1, 1, 17, 8, 16), (2, 2, 300, 128, 64)]


def _inputs(B, H, S, D, seed=0, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    k = (2 * torch.randn(B, H, S, D, generator=g)).to(dtype).to(device)
    u = torch.randn(H, D, generator=g).to(device)
    return k, u


@pytest.mark.parametrize("B,H,S,D,bs", CASES)
@pytest.mark.parametrize("pool", [True, False])
def test_torch_path_matches_reference(B, H, S, D, bs, pool):
    k, u = _inputs(B, H, S, D, seed=S)
    u = u if pool else None
    ref = reference_summaries(k.double(), bs, None if u is None else u.double())
    torch.testing.assert_close(block_summaries(k, u, bs).double(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pool", [True, False])
def test_gradcheck_float64(pool):
    k, u = _inputs(1, 2, 40, 8, seed=1, dtype=torch.float64)
    k.requires_grad_()
    u = u.double().requires_grad_() if pool else None
    inputs = (k, u) if pool else (k,)
    fn = (lambda k, u: block_summaries(k, u, 16)) if pool else (lambda k: block_summaries(k, None, 16))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("pool", [True, False])
@pytest.mark.parametrize("requires_grad", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_cpu(pool, requires_grad, dtype):
    k, u = _inputs(2, 2, 70, 16, seed=2, dtype=dtype)
    k.requires_grad_(requires_grad)
    u = u.to(dtype).requires_grad_(requires_grad) if pool else None
    torch.library.opcheck(torch.ops.dash_flex.block_summaries.default, (k, u, 32))


@pytest.mark.parametrize("B,H,S,D,bs", CASES)
@pytest.mark.parametrize("pool", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_kernel_matches_torch(B, H, S, D, bs, pool, dtype):
    """On CPU this runs under TRITON_INTERPRET=1 (set in conftest.py); on CUDA natively."""
    from custom_ops.block_summary.triton_kernels import block_summaries_launch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    k, u = _inputs(B, H, S, D, seed=3, dtype=dtype, device=device)
    u = u if pool else None
    out = torch.full((B, H, -(-S // bs), D), math.nan, device=device)  # poisoned: every slot must be written
    block_summaries_launch(k, u, bs, out)
    torch.testing.assert_close(out, block_summaries_torch(k, u, bs), atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_op_autograd_and_opcheck(dtype):
    k, u = _inputs(2, 4, 1000, 128, seed=4, dtype=dtype, device="cuda")
    k.requires_grad_()
    u.requires_grad_()
    out = block_summaries(k, u, 64)
    ref = reference_summaries(k.double(), 64, u.double())
    torch.testing.assert_close(out.double(), ref, atol=1e-4 if dtype == torch.float32 else 1e-2, rtol=1e-3)
    g = torch.randn_like(out)
    gk, gu = torch.autograd.grad(out, (k, u), g)
    rk, ru = torch.autograd.grad(ref, (k, u), g.double())
    assert float((gk.double() - rk).norm() / rk.norm()) < 1e-3
    assert float((gu.double() - ru).norm() / ru.norm()) < 1e-3
    torch.library.opcheck(torch.ops.dash_flex.block_summaries.default, (k, u, 64))
    torch.library.opcheck(torch.ops.dash_flex.block_summaries.default, (k.detach(), None, 64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_kernel_past_int32_offsets():
    """A batch of keys larger than 2³¹ elements (17 × 8 heads × 128K × 128, bf16, 4.6 GB): the last
    sequences' summaries equal the torch path's (batch offsets are int64 in the kernel)."""
    from custom_ops.block_summary.triton_kernels import block_summaries_launch

    B, H, S, D, bs = 17, 8, 131072, 128, 64
    g = torch.Generator(device="cuda").manual_seed(5)
    k = torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, generator=g)
    assert k.numel() >= 2**31
    out = torch.full((B, H, S // bs, D), math.nan, device="cuda")
    block_summaries_launch(k, None, bs, out)
    want = block_summaries_torch(k[-2:], None, bs)
    torch.testing.assert_close(out[-2:], want, atol=1e-5, rtol=1e-5)
