"""DashKVCache inside torch.compile(fullgraph=True) on the CPU: one graph for every decode step
(the lengths are a tensor, the buffers have a static shape), compiled == eager.

Inductor's FlexAttention trusts the BlockMask's tile tables (eager flex uses only mask_mod), so
agreement with the eager twin also checks the tables of both fine-stage layouts.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounterWithBackend

from dash_flex import dash_attention
from dash_flex.cache import DashKVCache

torch._dynamo.config.fail_on_recompile_limit_hit = True  # never fall back to eager flex silently


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def _inputs(seed, B, Hq, Hkv, L, D):
    g = torch.Generator().manual_seed(seed)
    q = 2 * torch.randn(B, Hq, L, D, generator=g)
    k = 2 * torch.randn(B, Hkv, L, D, generator=g)
    v = torch.randn(B, Hkv, L, D, generator=g)
    u = torch.randn(Hkv, D, generator=g)
    return q, k, v, u


def _row(x, pos):
    B, H, _, D = x.shape
    return x.gather(2, pos[:, None, None, None].expand(B, H, 1, D))


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(share_kv_groups=False, sigma=0.5)],
    ids=["folded-heads", "per-head-plain"],
)
def test_decode_steps_compile_once_and_match_eager(kw):
    """Prompts of 29 and 46 tokens, then 6 compiled decode steps: the second sequence completes
    a block at step 2. One frame compiled, no recompile; outputs equal the eager twin and the
    full dash_attention rows."""
    torch._dynamo.reset()
    B, Hq, Hkv, D, bs, steps = 2, 4, 2, 16, 16, 6
    prompt = torch.tensor([29, 46])
    q, k, v, u = _inputs(11, B, Hq, Hkv, 64, D)
    eager_cache, compiled_cache = (DashKVCache(B, Hkv, 64, D, block_size=bs, pool_query=u) for _ in range(2))
    for c in (eager_cache, compiled_cache):
        c.append(k[:, :, :46], v[:, :, :46], num_new=prompt)

    def step(cache, q_t, k_t, v_t):
        return cache.append_and_attend(q_t, k_t, v_t, **kw)

    counter = CompileCounterWithBackend("inductor")
    compiled_step = torch.compile(step, backend=counter, fullgraph=True, dynamic=False)
    eager_out, compiled_out = [], []
    with torch._dynamo.config.patch(recompile_limit=1):
        for t in range(steps):
            args = [_row(x, prompt + t) for x in (q, k, v)]
            eager_out.append(step(eager_cache, *args))
            compiled_out.append(compiled_step(compiled_cache, *args))
    assert counter.frame_count == 1, f"{counter.frame_count} compiles for {steps} decode steps"
    eager_out, compiled_out = torch.cat(eager_out, 2), torch.cat(compiled_out, 2)
    assert rel_err(compiled_out, eager_out) <= 1e-5
    torch.testing.assert_close(compiled_cache.lengths, prompt + steps)
    torch.testing.assert_close(compiled_cache.summaries, eager_cache.summaries, atol=1e-5, rtol=1e-5)
    for b in range(B):
        n = int(prompt[b]) + steps
        full = dash_attention(
            q[b : b + 1, :, :n], k[b : b + 1, :, :n], v[b : b + 1, :, :n], block_size=bs, pool_query=u, **kw
        )
        assert rel_err(compiled_out[b : b + 1], full[:, :, n - steps :]) <= 1e-4, f"sequence {b}"


def test_chunked_prefill_chunks_compile_once():
    """Four 24-token chunks (blocks complete inside and at the end of chunks) through one
    compiled graph: one frame, compiled == bottom-right aligned dash_attention per chunk."""
    torch._dynamo.reset()
    B, Hq, Hkv, D, bs, chunk = 2, 4, 2, 16, 16, 24
    q, k, v, u = _inputs(12, B, Hq, Hkv, 4 * chunk, D)
    cache = DashKVCache(B, Hkv, 112, D, block_size=bs, pool_query=u)
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(cache.append_and_attend, backend=counter, fullgraph=True, dynamic=False)
    with torch._dynamo.config.patch(recompile_limit=1):
        for i in range(4):
            sl = slice(i * chunk, (i + 1) * chunk)
            out = compiled(q[:, :, sl], k[:, :, sl], v[:, :, sl])
            end = (i + 1) * chunk
            want = dash_attention(q[:, :, sl], k[:, :, :end], v[:, :, :end], block_size=bs, pool_query=u)
            assert rel_err(out, want) <= 1e-4, f"chunk {i}: {rel_err(out, want):.2e}"
    assert counter.frame_count == 1
