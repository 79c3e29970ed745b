"""dash_flex::log_prior and dash_flex::selection_tables: formulas, Triton kernel, opcheck, gradients."""

import math

import pytest
import torch

from custom_ops.selection import log_prior, selection_tables
from custom_ops.selection.torch_impl import log_prior_torch
from dash_flex.entmax import entmax


def sparse_probs(B, H, Sq, nb, seed=0, dtype=torch.float32, device="cpu"):
    """Entmax rows with exact zeros (and one all-zero row), like the coarse stage makes."""
    g = torch.Generator().manual_seed(seed)
    z = 3 * torch.randn(B, H, Sq, nb, generator=g, dtype=torch.float64)
    z[..., 0, :] = -math.inf  # a query with no eligible block
    return entmax(z, alpha=1.5).to(dtype).to(device)


@pytest.mark.parametrize("B,H,Sq,nb", [(1, 2, 5, 7), (2, 3, 130, 20), (1, 1, 1, 3)])
def test_log_prior_formula(B, H, Sq, nb):
    p = sparse_probs(B, H, Sq, nb)
    sq_pad, nb_pad = -(-Sq // 128) * 128, nb + 3
    out = log_prior(p, 0.5, sq_pad, nb_pad)
    assert out.shape == (B, H, nb_pad, sq_pad)
    prior = out[:, :, :nb, :Sq].transpose(2, 3)
    sel = p > 0
    log_p = torch.log(p.double())
    for b, h, t in [(0, 0, Sq - 1), (B - 1, H - 1, Sq // 2)]:
        s = sel[b, h, t]
        if s.any():
            expected = (log_p[b, h, t, s] - log_p[b, h, t, s].mean()) / 0.5
            torch.testing.assert_close(prior[b, h, t, s].double(), expected, atol=1e-5, rtol=1e-5)
    assert (prior[~sel] == 0).all()
    assert (out[:, :, nb:] == 0).all() and (out[:, :, :, Sq:] == 0).all()


def test_log_prior_gradcheck_float64():
    """Gradient on the support (a zero probability is a selection boundary: not differentiable)."""
    p = sparse_probs(1, 2, 6, 9, dtype=torch.float64)
    support = p > 0
    values = p[support].clone().requires_grad_()

    def fn(v):
        return log_prior(torch.zeros_like(p).masked_scatter(support, v), 0.7, 128, 10)

    assert torch.autograd.gradcheck(fn, (values,), eps=1e-8, atol=1e-6)


@pytest.mark.parametrize("requires_grad", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_prior_opcheck_cpu(requires_grad, dtype):
    p = sparse_probs(2, 2, 40, 12, dtype=dtype).requires_grad_(requires_grad)
    torch.library.opcheck(torch.ops.dash_flex.log_prior.default, (p, 1.0, 128, 16))


@pytest.mark.parametrize("B,H,Sq,nb", [(1, 2, 5, 7), (2, 3, 130, 100)])
def test_log_prior_triton_kernel_matches_torch(B, H, Sq, nb):
    from custom_ops.selection.triton_kernels import log_prior_launch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    p = sparse_probs(B, H, Sq, nb, device=device)
    sq_pad, nb_pad = -(-Sq // 128) * 128, nb + 5
    out = torch.full((B, H, nb_pad, sq_pad), math.nan, device=device)  # poisoned
    log_prior_launch(p, 2.0, out)
    torch.testing.assert_close(out, log_prior_torch(p, 2.0, sq_pad, nb_pad), atol=1e-5, rtol=1e-5)


def _brute_force_tables(active, kv_len, block_size):
    """Tile (qt, kt) listed iff some row of qt has an active block with a key in kt."""
    B, H, Sq, nb = active.shape
    n_qt, n_kt = -(-Sq // 128), -(-kv_len // 128)
    tiles = torch.zeros(B, H, n_qt, n_kt, dtype=torch.bool)
    for t in range(Sq):
        for c in range(nb):
            keys = range(c * block_size, min((c + 1) * block_size, kv_len))
            for kt in {i // 128 for i in keys}:
                tiles[:, :, t // 128, kt] |= active[:, :, t, c]
    return tiles


@pytest.mark.parametrize("block_size", [16, 64, 192])
def test_selection_tables_match_brute_force(block_size):
    B, Hsel, Sq, kv_len = 2, 2, 200, 700
    nb = -(-kv_len // block_size)
    p = sparse_probs(B, Hsel, Sq, nb, seed=block_size)
    forced = torch.zeros(1, 1, Sq, nb, dtype=torch.bool)
    forced[0, 0, torch.arange(Sq), (torch.arange(Sq) + kv_len - Sq) // block_size] = True
    sq_pad, nb_pad = 256, -(-768 // block_size)
    active_t, kv_num, kv_idx = selection_tables(p, forced, Hsel, sq_pad, nb_pad, kv_len, block_size, 2 * Hsel)
    active = active_t[:, :, :nb, :Sq].transpose(2, 3)
    assert torch.equal(active, (p > 0) | forced)
    tiles = _brute_force_tables(active, kv_len, block_size).repeat_interleave(2, dim=1)
    assert torch.equal(kv_num, tiles.sum(-1, dtype=torch.int32))
    for b, h, qt in [(0, 0, 0), (1, 3, 1), (0, 2, 1)]:
        n = int(kv_num[b, h, qt])
        listed = kv_idx[b, h, qt, :n].tolist()
        assert listed == sorted(listed) == tiles[b, h, qt].nonzero().flatten().tolist()
        assert sorted(kv_idx[b, h, qt].tolist()) == list(range(tiles.shape[-1]))  # a permutation


def test_selection_tables_opcheck_cpu():
    p = sparse_probs(1, 2, 130, 9)
    forced = torch.zeros(1, 1, 130, 9, dtype=torch.bool)
    torch.library.opcheck(torch.ops.dash_flex.selection_tables.default, (p, forced, 2, 256, 10, 300, 32, 4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_selection_ops_cuda_opcheck_and_gradients():
    p = sparse_probs(2, 4, 300, 64, device="cuda").requires_grad_()
    torch.library.opcheck(torch.ops.dash_flex.log_prior.default, (p, 1.0, 384, 64))
    out = log_prior(p, 1.0, 384, 64)
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, (p,), g)
    p64 = p.detach().double().cpu().requires_grad_()
    (ref,) = torch.autograd.grad(log_prior(p64, 1.0, 384, 64), (p64,), g.double().cpu())
    torch.testing.assert_close(grad.double().cpu(), ref, atol=1e-4, rtol=1e-4)
    forced = torch.zeros(1, 1, 300, 64, dtype=torch.bool, device="cuda")
    torch.library.opcheck(torch.ops.dash_flex.selection_tables.default, (p.detach(), forced, 4, 384, 64, 4096, 64, 8))


@pytest.mark.parametrize("group", [8, 16, 64, 6])
def test_any_in_row_groups_matches_any(group):
    """The word-OR reduction (groups of whole 8-byte words) and the fallback equal ``any``: every
    single set position of a group (the top byte makes a negative int64), random flags, none."""
    from custom_ops.selection.torch_impl import any_in_row_groups

    n = 4
    single = torch.zeros(group, n * group, dtype=torch.bool)
    single[torch.arange(group), torch.arange(group) + group] = True  # position p of group 1
    rand = torch.rand(3, 2, n * group, generator=torch.Generator().manual_seed(group)) < 0.03
    for flags in (single, rand, torch.zeros(2, n * group, dtype=torch.bool)):
        want = flags.reshape(*flags.shape[:-1], n, group).any(-1)
        assert torch.equal(any_in_row_groups(flags, group), want)
    assert any_in_row_groups(single, group)[:, 1].all() and not any_in_row_groups(single, group)[:, 0].any()
    # contiguous but starting mid-word (a slice of a larger buffer): no int64 view of it exists
    offset = (torch.rand(n * group + 3, generator=torch.Generator().manual_seed(1)) < 0.2)[3:]
    assert offset.is_contiguous() and offset.storage_offset() == 3
    assert torch.equal(any_in_row_groups(offset, group), offset.reshape(n, group).any(-1))
