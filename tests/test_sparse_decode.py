"""``dash_flex::sparse_decode``, the decode fine stage over the kept-block list.

* The Triton kernel (run by the CPU interpreter here; on the H100 in ``tests/test_gpu_cache.py``)
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

from custom_ops.sparse_decode import sparse_decode
from custom_ops.sparse_decode.ops import compact_block_list
from custom_ops.sparse_decode.torch_impl import sparse_decode_torch
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
    return q, k, v, active, prior, pos


def test_compact_block_list():
    active = torch.tensor([[[False, True, False, True, True], [False] * 5]])
    table, count = compact_block_list(active)
    assert count.tolist() == [[3, 0]]
    assert table[0, 0, :3].tolist() == [1, 3, 4]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("Hq,Hkv,D,bs", [(4, 1, 32, 16), (2, 2, 64, 32), (8, 2, 32, 16)])
@pytest.mark.parametrize("n_splits", [1, 3])
def test_triton_kernel_matches_torch_definition(Hq, Hkv, D, bs, n_splits, dtype):
    q, k, v, active, prior, pos = random_problem(Hq + D + n_splits, 3, Hq, Hkv, 8 * bs, D, bs, dtype)
    expected = sparse_decode_torch(q, k, v, active, prior, pos, 0.2, bs)
    table, count = compact_block_list(active)
    got = sparse_decode_launch(q, k, v, table, count, prior, pos, 0.2, bs, n_splits)
    assert torch.isfinite(got).all()
    assert (got[-1] == 0).all() and (expected[-1] == 0).all()  # the padding row
    assert (got[0, : Hq // Hkv] == 0).all()  # nothing kept for (b=0, h=0)
    tol = 1e-5 if dtype == torch.float32 else 5e-3
    assert rel_err(got, expected) < tol


def test_opcheck_cpu():
    q, k, v, active, prior, pos = random_problem(3, 2, 4, 2, 64, 16, 16, torch.float32)
    torch.library.opcheck(torch.ops.dash_flex.sparse_decode.default, (q, k, v, active, prior, pos, 0.25, 16))


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
    q, k, v, active, prior, pos = random_problem(9, 2, 4, 2, 64, 16, 16, torch.float32)
    direct = sparse_decode(q, k, v, active, prior, pos, 0.25, 16)
    assert rel_err(direct, sparse_decode_torch(q, k, v, active, prior, pos, 0.25, 16)) == 0.0


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
