"""The decode path: ``dash_flex::decode_selection`` (coarse stage) and ``dash_flex::sparse_decode``
(fine stage over the kept-block list).

* The selection's torch definition equals the cache's FlexAttention selection (``select``) on
  the same state; its two Triton kernels (interpreter here) equal the definition.
* The split-KV and merge kernels (run by the CPU interpreter here; on the H100 in ``tests/test_gpu_cache.py``)
  equals the op's torch definition on random inputs: empty rows, a query with no position,
  GQA 1/4, head dims 32/64, block sizes 16/32, float32 and float16. Not bfloat16 here: the
  Triton interpreter's ``tl.dot`` on bf16 CPU tensors is wrong (2e10 off on a 16×16 product,
  triton 3.9), so bf16 runs on the H100 (``tests/test_gpu_cache.py``).
* ``DashKVCache.attend(decode_kernel=True)`` equals the FlexAttention path and the float64
  reference through a variable-length prefill and decode steps, eagerly and compiled.
"""

from __future__ import annotations

import math

import pytest
import torch

from custom_ops.sparse_decode import decode_selection, sparse_decode
from custom_ops.sparse_decode.selection_kernels import decode_selection_launch
from custom_ops.sparse_decode.torch_impl import (
    compact_block_list,
    decode_selection_torch,
    listed_blocks,
    sparse_decode_torch,
)
from custom_ops.sparse_decode.triton_kernels import sparse_decode_launch
from dash_flex.cache import DashKVCache
from dash_flex.reference import dash_attention_reference


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def random_problem(seed, B, Hq, Hkv, N, D, bs, dtype):
    g = torch.Generator().manual_seed(seed)
    nb = N // bs
    q = torch.randn(B, Hq, D, generator=g).to(dtype)
    k = (2 * torch.randn(B, Hkv, N, D, generator=g)).to(dtype)
    v = torch.randn(B, Hkv, N, D, generator=g).to(dtype)
    pos = torch.randint(0, N, (B,), generator=g)
    pos[-1] = -1  # a padding row: no key at all
    own = (pos // bs).clamp(min=0)
    c = torch.arange(nb)
    active = (torch.rand(B, Hkv, nb, generator=g) < 0.4) & (c[None, None] < own[:, None, None])
    active |= (c[None, None] == own[:, None, None]) & (pos >= 0)[:, None, None]
    active[0, 0] = False  # a (sequence, head) with nothing kept
    prior = torch.randn(B, Hkv, nb, generator=g)
    return (q, k, v, *compact_block_list(active), prior, pos)


def test_compact_block_list_and_its_inverse():
    active = torch.tensor([[[False, True, False, True, True], [False] * 5]])
    table, count = compact_block_list(active)
    assert count.tolist() == [[3, 0]]
    assert table.tolist() == [[[1, 3, 4, 0, 0], [0] * 5]]
    assert torch.equal(listed_blocks(table, count), active)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("Hq,Hkv,D,bs", [(4, 1, 32, 16), (2, 2, 64, 32), (8, 2, 32, 16)])
@pytest.mark.parametrize("n_splits", [1, 3])
def test_triton_kernel_matches_torch_definition(Hq, Hkv, D, bs, n_splits, dtype):
    q, k, v, table, count, prior, pos = random_problem(Hq + D + n_splits, 3, Hq, Hkv, 8 * bs, D, bs, dtype)
    expected = sparse_decode_torch(q, k, v, table, count, prior, pos, 0.2, bs)
    got = sparse_decode_launch(q, k, v, table, count, prior, pos, 0.2, bs, n_splits)
    assert got.dtype == dtype
    assert torch.isfinite(got).all()
    assert (got[-1] == 0).all() and (expected[-1] == 0).all()  # the padding row
    assert (got[0, : Hq // Hkv] == 0).all()  # nothing kept for (b=0, h=0)
    tol = 1e-5 if dtype == torch.float32 else 5e-3
    assert rel_err(got, expected) < tol


def test_opcheck_cpu():
    q, k, v, table, count, prior, pos = random_problem(3, 2, 4, 2, 64, 16, 16, torch.float32)
    torch.library.opcheck(torch.ops.dash_flex.sparse_decode.default, (q, k, v, table, count, prior, pos, 0.25, 16))


def _prefill_and_decode(kernel: bool, steps: int, sigma: float, Hq: int, Hkv: int, compiled: bool = False):
    """Prompts of 37, 48 and 5 tokens in one padded chunk (always through FlexAttention), then
    ``steps`` decode steps with or without the kernel; returns decoded rows and the full tensors."""
    B, D, bs = 3, 16, 16
    prompt = torch.tensor([37, 48, 5])
    L = int(prompt.max()) + steps
    g = torch.Generator().manual_seed(5)
    q = 2 * torch.randn(B, Hq, L, D, generator=g)
    k = 2 * torch.randn(B, Hkv, L, D, generator=g)
    v = torch.randn(B, Hkv, L, D, generator=g)
    u = torch.randn(Hkv, D, generator=g)
    cache = DashKVCache(B, Hkv, 96, D, block_size=bs, pool_query=u)
    P = int(prompt.max())
    cache.append(k[:, :, :P], v[:, :, :P], num_new=prompt)

    def step(q1, k1, v1):
        return cache.append_and_attend(q1, k1, v1, sigma=sigma, decode_kernel=kernel)

    fn = torch.compile(step, fullgraph=True, dynamic=False) if compiled else step
    out = []
    for t in range(steps):
        idx = (prompt + t)[:, None, None, None]
        out.append(fn(*(x.gather(2, idx.expand(B, x.shape[1], 1, D)) for x in (q, k, v))))
    return torch.cat(out, 2), (q, k, v, u, prompt)


@pytest.mark.parametrize("sigma", [1.0, math.inf])
@pytest.mark.parametrize("Hq,Hkv", [(4, 2), (2, 2)])
def test_cache_decode_kernel_matches_flex_path_and_reference(sigma, Hq, Hkv):
    steps = 13  # blocks complete during decoding (37 + 11 = 48, 5 + 11 = 16)
    with torch.no_grad():
        fast, (q, k, v, u, prompt) = _prefill_and_decode(True, steps, sigma, Hq, Hkv)
        flex, _ = _prefill_and_decode(False, steps, sigma, Hq, Hkv)
    assert rel_err(fast, flex) < 1e-5
    for b in range(3):
        n = int(prompt[b]) + steps
        ref = dash_attention_reference(
            q[b : b + 1, :, :n].double(),
            k[b : b + 1, :, :n].double(),
            v[b : b + 1, :, :n].double(),
            block_size=16,
            sigma=sigma,
            pool_query=u.double(),
        )
        assert rel_err(fast[b : b + 1], ref[:, :, -steps:]) < 1e-4


def test_cache_decode_kernel_compiled_equals_eager():
    with torch.no_grad():
        eager, _ = _prefill_and_decode(True, 4, 1.0, 4, 2)
        compiled, _ = _prefill_and_decode(True, 4, 1.0, 4, 2, compiled=True)
    assert rel_err(compiled, eager) < 1e-6


def test_decode_kernel_refuses_what_it_cannot_do():
    cache = DashKVCache(1, 1, 32, 16, block_size=16)
    q = torch.randn(1, 2, 2, 16)
    cache.append(torch.randn(1, 1, 2, 16), torch.randn(1, 1, 2, 16))
    with pytest.raises(ValueError, match="decode_kernel=True needs Sq = 1"):
        cache.attend(q, decode_kernel=True)


def test_sparse_decode_op_is_the_cache_fine_stage_on_cpu():
    """The op called directly (CPU: its torch definition) on a cache state equals attend()."""
    q, k, v, table, count, prior, pos = random_problem(9, 2, 4, 2, 64, 16, 16, torch.float32)
    direct = sparse_decode(q, k, v, table, count, prior, pos, 0.25, 16)
    assert rel_err(direct, sparse_decode_torch(q, k, v, table, count, prior, pos, 0.25, 16)) == 0.0


def test_cache_write_in_place_and_opcheck():
    """``dash_flex::cache_write`` writes each sequence's rows at its own start, in place."""
    from custom_ops.kv_cache import cache_write

    g = torch.Generator().manual_seed(4)
    kc, vc = torch.randn(2, 3, 16, 8, generator=g), torch.randn(2, 3, 16, 4, generator=g)
    k, v = torch.randn(2, 3, 2, 8, generator=g), torch.randn(2, 3, 2, 4, generator=g)
    start = torch.tensor([0, 13])
    expected_k, expected_v = kc.clone(), vc.clone()
    expected_k[0, :, 0:2], expected_k[1, :, 13:15] = k[0], k[1]
    expected_v[0, :, 0:2], expected_v[1, :, 13:15] = v[0], v[1]
    ptr = kc.data_ptr()
    cache_write(kc, vc, k, v, start)
    assert kc.data_ptr() == ptr
    torch.testing.assert_close(kc, expected_k, atol=0, rtol=0)
    torch.testing.assert_close(vc, expected_v, atol=0, rtol=0)
    torch.library.opcheck(torch.ops.dash_flex.cache_write.default, (kc, vc, k, v, start))


# ----------------------------------------------------------------------------- decode_selection
def _filled_cache(seed, B, Hq, Hkv, D, bs, lengths, dtype=torch.float32):
    """A cache holding ``lengths[b]`` random tokens per sequence (keys scaled so that entmax keeps
    some blocks and drops others) and the query ``[B, Hq, 1, D]`` of the last one."""
    g = torch.Generator().manual_seed(seed)
    N = bs * (max(lengths) // bs + 2)
    u = torch.randn(Hkv, D, generator=g)
    cache = DashKVCache(B, Hkv, N, D, block_size=bs, pool_query=u, dtype=dtype)
    L = max(lengths)
    k = (3 * torch.randn(B, Hkv, L, D, generator=g)).to(dtype)
    v = torch.randn(B, Hkv, L, D, generator=g).to(dtype)
    cache.append(k, v, num_new=torch.tensor(lengths))
    return cache, (2 * torch.randn(B, Hq, 1, D, generator=g)).to(dtype)


@pytest.mark.parametrize("Hq,Hkv", [(4, 2), (3, 3), (8, 1)])
@pytest.mark.parametrize("sigma", [1.0, 0.5, math.inf])
def test_decode_selection_definition_equals_the_cache_selection(Hq, Hkv, sigma):
    """The op's torch definition is the FlexAttention path's selection (``cache.select``) at Sq = 1:
    same kept blocks, same log-prior."""
    cache, q = _filled_cache(Hq + Hkv, 3, Hq, Hkv, 16, 16, [70, 129, 16])
    with torch.no_grad():
        sel = cache.select(q, sigma=sigma)
        inv_sigma = 1 / sigma if math.isfinite(sigma) else 0.0
        active, prior, table, count, pos = decode_selection_torch(
            q[:, :, 0], cache.summaries, cache.lengths, None, 1.5, 1.0, inv_sigma, 16
        )
    assert pos.tolist() == [69, 128, 15]
    expected_active = sel.active_blocks[:, :, 0]  # [B, Hkv, nb]
    assert torch.equal(active, expected_active)
    assert 0 < int(active.sum()) < active.numel()  # some kept, some dropped
    assert torch.equal(count, active.sum(-1, dtype=torch.int32))
    assert torch.equal(listed_blocks(table, count), active)
    expected_prior = sel.log_prior[:, :, 0]  # [B, Hkv, Sq, nb]
    torch.testing.assert_close(prior, expected_prior, rtol=1e-5, atol=1e-6)


def _selection_problem(seed, B, Hq, Hkv, nb, D, bs, dtype):
    g = torch.Generator().manual_seed(seed)
    q = (2 * torch.randn(B, Hq, D, generator=g)).to(dtype)
    summaries = 2 * torch.randn(B, Hkv, nb, D, generator=g)
    lengths = torch.randint(1, nb * bs + 1, (B,), generator=g)
    lengths[0] = nb * bs  # a full cache
    num_new = torch.ones(B, dtype=torch.int64)
    num_new[-1] = 0  # a padding row (pos = −1): nothing eligible, nothing forced
    return q, summaries, lengths, num_new


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("Hq,Hkv,nb", [(4, 2, 37), (1, 1, 16), (8, 2, 130)])
@pytest.mark.parametrize("with_num_new", [False, True])
def test_decode_selection_kernels_match_definition(Hq, Hkv, nb, dtype, with_num_new):
    q, summaries, lengths, num_new = _selection_problem(nb + Hq, 4, Hq, Hkv, nb, 32, 16, dtype)
    num_new = num_new if with_num_new else None
    args = (q, summaries, lengths, num_new, 1.5, 1.3, 0.7, 16)
    want = decode_selection_torch(*args)
    active, prior, table, count, pos = decode_selection_launch(*args)
    assert torch.equal(pos, want[4])
    assert torch.equal(active, want[0])
    assert torch.equal(count, want[3])
    assert torch.equal(table, want[2])  # in order, zeros after the count
    torch.testing.assert_close(prior, want[1].float(), rtol=1e-4, atol=1e-5)
    if with_num_new:
        assert not active[-1].any() and int(pos[-1]) == -1
    assert (count > 1).any()


def test_decode_selection_opcheck_and_float64():
    q, summaries, lengths, num_new = _selection_problem(2, 3, 4, 2, 9, 16, 16, torch.float32)
    for nn in (None, num_new):
        torch.library.opcheck(
            torch.ops.dash_flex.decode_selection.default, (q, summaries, lengths, nn, 1.5, 1.0, 1.0, 16)
        )
    out = decode_selection(q.double(), summaries.double(), lengths, num_new, 1.5, 1.0, 1.0, 16)
    assert out[1].dtype == torch.float64
    assert torch.equal(out[0], decode_selection(q, summaries, lengths, num_new, 1.5, 1.0, 1.0, 16)[0])
