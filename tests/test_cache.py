"""DashKVCache on the CPU: decode and chunked prefill equal dash_attention on the full sequence
(the same rows, bottom-right alignment) and the float64 reference.

Every sequence of a batch is compared with its own unpadded full call. Tolerance: relative L2
error ≤ 1e-4 (float32; the cache and the full call differ only in reduction order).
"""

from __future__ import annotations

import math

import pytest
import torch

from custom_ops.block_summary import block_summaries
from dash_flex import dash_attention, mods
from dash_flex.cache import DashKVCache
from dash_flex.reference import dash_attention_reference

TOL = 1e-4


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def sequences(seed, B, Hq, Hkv, L, D, pool=True):
    """Full sequences ``q [B, Hq, L, D]``, ``k, v [B, Hkv, L, D]`` and a pooling vector (spread 2 so
    that entmax makes real choices)."""
    g = torch.Generator().manual_seed(seed)
    q = 2 * torch.randn(B, Hq, L, D, generator=g)
    k = 2 * torch.randn(B, Hkv, L, D, generator=g)
    v = torch.randn(B, Hkv, L, D, generator=g)
    u = torch.randn(Hkv, D, generator=g) if pool else None
    return q, k, v, u


def rows_at(x: torch.Tensor, start: torch.Tensor, n: int) -> torch.Tensor:
    """``x[b, :, start[b] : start[b] + n]`` for every b (rows past the end are zero-padded)."""
    B, H, L, D = x.shape
    x = torch.nn.functional.pad(x, (0, 0, 0, n))
    idx = (start[:, None] + torch.arange(n))[:, None, :, None].expand(B, H, n, D)
    return x.gather(2, idx)


CONFIGS = [
    # (Hq, Hkv, kwargs): GQA shared with pooling; per-head selection, sparsemax, no prior; MHA
    (4, 2, dict(alpha=1.5, sigma=1.0)),
    (4, 1, dict(alpha=2.0, sigma=math.inf, share_kv_groups=False)),
    (2, 2, dict(alpha=1.25, sigma=0.5, selection_scale=3.0)),
]


@pytest.mark.parametrize("Hq,Hkv,kw", CONFIGS, ids=["gqa-shared", "per-head-sparsemax", "mha"])
def test_variable_length_prefill_then_decode_matches_full_calls(Hq, Hkv, kw):
    """Prompts of 37, 48 (a whole number of blocks) and 5 tokens, one right-padded prefill chunk,
    then 12 decode steps; blocks complete during decoding (the last step of the first and third
    sequences is the first to see the block completed one step before). Every output row equals the same
    row of dash_attention on that sequence alone, and the reference at the last step."""
    B, D, bs, steps = 3, 16, 16, 12
    prompt = torch.tensor([37, 48, 5])
    L = int(prompt.max()) + steps
    q, k, v, u = sequences(1, B, Hq, Hkv, L, D, pool=Hq != Hkv or kw["alpha"] != 2.0)
    cache = DashKVCache(B, Hkv, 64, D, block_size=bs, pool_query=u)
    P = int(prompt.max())
    prefill = cache.append_and_attend(q[:, :, :P], k[:, :, :P], v[:, :, :P], num_new=prompt, **kw)
    torch.testing.assert_close(cache.lengths, prompt)
    decoded = []
    for step in range(steps):
        pos = prompt + step
        step_in = [rows_at(x, pos, 1) for x in (q, k, v)]
        decoded.append(cache.append_and_attend(*step_in, **kw))
    decoded = torch.cat(decoded, 2)  # [B, Hq, steps, D]
    torch.testing.assert_close(cache.lengths, prompt + steps)

    for b in range(B):
        n = int(prompt[b]) + steps
        qb, kb, vb = q[b : b + 1, :, :n], k[b : b + 1, :, :n], v[b : b + 1, :, :n]
        full = dash_attention(qb, kb, vb, block_size=bs, pool_query=u, **kw)
        p = int(prompt[b])
        assert rel_err(prefill[b : b + 1, :, :p], full[:, :, :p]) <= TOL, f"prefill row mismatch, sequence {b}"
        assert torch.count_nonzero(prefill[b, :, p:]) == 0, "padding rows of the prefill chunk must output zeros"
        err = rel_err(decoded[b : b + 1], full[:, :, p:])
        assert err <= TOL, f"decode mismatch, sequence {b}: {err:.2e}"
        ref = dash_attention_reference(qb[:, :, -1:], kb, vb, block_size=bs, pool_query=u, **kw)
        assert rel_err(decoded[b : b + 1, :, -1:], ref) <= TOL, f"reference mismatch, sequence {b}"


@pytest.mark.parametrize("Hq,Hkv,kw", CONFIGS, ids=["gqa-shared", "per-head-sparsemax", "mha"])
def test_chunked_prefill_matches_bottom_right_calls(Hq, Hkv, kw):
    """Chunks of 20, 12 (the second ends exactly on a block boundary), 16, 1 and 33 tokens: each
    chunk's output equals dash_attention(q_chunk, k[:L], v[:L]) (bottom-right aligned) and the
    reference."""
    B, D, bs = 2, 16, 16
    chunks = [20, 12, 16, 1, 33]
    L = sum(chunks)
    q, k, v, u = sequences(2, B, Hq, Hkv, L, D)
    cache = DashKVCache(B, Hkv, 96, D, block_size=bs, pool_query=u)
    start = 0
    for n in chunks:
        end = start + n
        out = cache.append_and_attend(q[:, :, start:end], k[:, :, start:end], v[:, :, start:end], **kw)
        want = dash_attention(q[:, :, start:end], k[:, :, :end], v[:, :, :end], block_size=bs, pool_query=u, **kw)
        assert rel_err(out, want) <= TOL, f"chunk [{start}, {end}): {rel_err(out, want):.2e}"
        if n in (12, 33):
            ref = dash_attention_reference(
                q[:, :, start:end], k[:, :, :end], v[:, :, :end], block_size=bs, pool_query=u, **kw
            )
            assert rel_err(out, ref) <= TOL, f"chunk [{start}, {end}) vs reference"
        start = end
    torch.testing.assert_close(cache.lengths, torch.full((B,), L))


def test_variable_length_chunks_with_padding_rows():
    """Two right-padded chunks with per-sequence counts (one sequence appends nothing in the
    second chunk); real rows equal the full call's rows, padding rows are zero, and the
    sequence that appended nothing keeps its cache untouched where it is visible."""
    B, Hq, Hkv, D, bs = 2, 4, 2, 16, 16
    q, k, v, u = sequences(3, B, Hq, Hkv, 64, D)
    cache = DashKVCache(B, Hkv, 64, D, block_size=bs, pool_query=u)
    counts = [torch.tensor([20, 7]), torch.tensor([13, 0])]
    done = torch.zeros(B, dtype=torch.int64)
    outs = []
    for n in counts:
        Sq = int(n.max())
        chunk = [rows_at(x, done, Sq) for x in (q, k, v)]
        outs.append(cache.append_and_attend(*chunk, num_new=n))
        done += n
    torch.testing.assert_close(cache.lengths, done)
    for b in range(B):
        n_b = int(done[b])
        full = dash_attention(
            q[b : b + 1, :, :n_b], k[b : b + 1, :, :n_b], v[b : b + 1, :, :n_b], block_size=bs, pool_query=u
        )
        first = int(counts[0][b])
        assert rel_err(outs[0][b : b + 1, :, :first], full[:, :, :first]) <= TOL
        assert torch.count_nonzero(outs[0][b, :, first:]) == 0
        second = int(counts[1][b])
        if second:
            assert rel_err(outs[1][b : b + 1, :, :second], full[:, :, first:n_b]) <= TOL
        assert torch.count_nonzero(outs[1][b, :, second:]) == 0
        torch.testing.assert_close(cache.key[b, :, :n_b], k[b, :, :n_b], rtol=0, atol=0)


def test_summaries_of_complete_blocks_equal_block_summaries():
    B, Hkv, D, bs = 2, 2, 16, 16
    _, k, v, u = sequences(4, B, 2, Hkv, 75, D)
    cache = DashKVCache(B, Hkv, 96, D, block_size=bs, pool_query=u)
    for start, end in [(0, 10), (10, 32), (32, 33), (33, 75)]:
        cache.append(k[:, :, start:end], v[:, :, start:end])
        complete = end // bs
        want = block_summaries(k[:, :, :end], u, bs)[:, :, :complete]
        torch.testing.assert_close(cache.summaries[:, :, :complete], want, rtol=1e-5, atol=1e-5)
    assert cache.summaries[:, :, complete:].abs().sum() > 0  # the partial block was written too (never read)


def test_folded_and_plain_fine_stage_agree():
    """The folded layout (KV heads in the batch, one block table per KV head) re-indexes the
    selection's mods: it must give the plain layout's output."""
    B, Hq, Hkv, D, bs = 2, 8, 2, 16, 16
    q, k, v, u = sequences(5, B, Hq, Hkv, 70, D)
    caches = [DashKVCache(B, Hkv, 80, D, block_size=bs, pool_query=u) for _ in range(2)]
    for c in caches:
        c.append(k[:, :, :69], v[:, :, :69])
    args = (q[:, :, 69:], k[:, :, 69:], v[:, :, 69:])
    folded = caches[0].append_and_attend(*args, fold_heads=True, score_mod=mods.generate_tanh_softcap(6.0))
    plain = caches[1].append_and_attend(*args, fold_heads=False, score_mod=mods.generate_tanh_softcap(6.0))
    assert rel_err(folded, plain) <= 1e-6
    full = dash_attention(q, k, v, block_size=bs, pool_query=u, score_mod=mods.generate_tanh_softcap(6.0))
    assert rel_err(folded, full[:, :, 69:]) <= TOL


def test_user_score_mod_and_mask_mod_per_sequence_offsets():
    """Soft-capping plus a sliding window written with the cache's lengths (each sequence has its
    own offset) equal dash_attention with the window at that sequence's offset."""
    B, Hq, Hkv, D, bs, window = 2, 4, 2, 16, 16, 40
    prompt = torch.tensor([50, 27])
    q, k, v, u = sequences(6, B, Hq, Hkv, 60, D)
    cache = DashKVCache(B, Hkv, 80, D, block_size=bs, pool_query=u)
    cache.append(k[:, :, :50], v[:, :, :50], num_new=prompt)
    Sq = 1

    def window_mask(b, h, q_idx, kv_idx):
        return cache.lengths[b] - Sq + q_idx - kv_idx < window

    softcap = mods.generate_tanh_softcap(5.0)
    outs = []
    for step in range(6):
        step_in = [rows_at(x, prompt + step, 1) for x in (q, k, v)]
        outs.append(cache.append_and_attend(*step_in, score_mod=softcap, mask_mod=window_mask))
    outs = torch.cat(outs, 2)
    for b in range(B):
        p = int(prompt[b])
        for step in (0, 5):
            n = p + step + 1
            kw = dict(
                block_size=bs, pool_query=u, score_mod=softcap, mask_mod=mods.generate_sliding_window(window, n - 1)
            )
            want = dash_attention(q[b : b + 1, :, n - 1 : n], k[b : b + 1, :, :n], v[b : b + 1, :, :n], **kw)
            assert rel_err(outs[b : b + 1, :, step : step + 1], want) <= TOL, f"sequence {b}, step {step}"
            ref = dash_attention_reference(q[b : b + 1, :, n - 1 : n], k[b : b + 1, :, :n], v[b : b + 1, :, :n], **kw)
            assert rel_err(outs[b : b + 1, :, step : step + 1], ref) <= TOL


def test_read_stats_match_the_reference_selection():
    B, Hq, Hkv, D, bs = 2, 4, 2, 16, 16
    q, k, v, u = sequences(7, B, Hq, Hkv, 100, D)
    cache = DashKVCache(B, Hkv, 128, D, block_size=bs, pool_query=u)
    cache.append(k[:, :, :96], v[:, :, :96])
    _, sel = cache.append_and_attend(q[:, :, 96:], k[:, :, 96:], v[:, :, 96:], return_selection=True)
    stats = cache.read_stats(sel)
    _, ref = dash_attention_reference(q[:, :, 96:], k, v, block_size=bs, pool_query=u, return_selection=True)
    ref_active = ref.active[:, ::2]  # per KV head (shared selection)
    torch.testing.assert_close(stats.kept_blocks, ref_active.sum(-1))
    block_of_key = torch.arange(100) // bs
    read = (ref.visible[:, ::2] & ref_active[..., block_of_key]).sum(-1)
    torch.testing.assert_close(stats.tokens_read, read)
    torch.testing.assert_close(stats.tokens_visible, ref.visible[:, ::2].sum(-1))
    torch.testing.assert_close(stats.visible_blocks, torch.full_like(stats.kept_blocks, 7))  # positions 96..99
    assert 0 < stats.kept_block_share() < 1 and 0 < stats.token_share() < 1


def test_reset_reuses_the_buffers():
    B, Hq, Hkv, D, bs = 1, 2, 1, 16, 16
    q, k, v, u = sequences(8, B, Hq, Hkv, 40, D)
    cache = DashKVCache(B, Hkv, 64, D, block_size=bs, pool_query=u)
    cache.append(2 * torch.randn(B, Hkv, 50, D), torch.randn(B, Hkv, 50, D))
    cache.reset()
    torch.testing.assert_close(cache.lengths, torch.zeros(B, dtype=torch.int64))
    out = cache.append_and_attend(q, k, v)
    assert rel_err(out, dash_attention(q, k, v, block_size=bs, pool_query=u)) <= TOL


def test_bad_arguments_raise_naming_the_argument():
    cache = DashKVCache(2, 2, 64, 16, block_size=16)
    k = torch.randn(2, 2, 3, 16)
    with pytest.raises(ValueError, match="capacity"):
        DashKVCache(2, 2, 70, 16, block_size=16)
    with pytest.raises(ValueError, match="block_size"):
        DashKVCache(2, 2, 64, 16, block_size=24)
    with pytest.raises(ValueError, match="pool_query"):
        DashKVCache(2, 2, 64, 16, block_size=16, pool_query=torch.randn(3, 16))
    with pytest.raises(ValueError, match="key"):
        cache.append(torch.randn(2, 1, 3, 16), k)
    with pytest.raises(TypeError, match="value"):
        cache.append(k, k.double())
    with pytest.raises(ValueError, match="num_new"):
        cache.append(k, k, num_new=torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="num_new"):
        cache.append(k, k, num_new=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="query heads"):
        cache.attend(torch.randn(2, 3, 1, 16))
    with pytest.raises(ValueError, match="alpha"):
        cache.attend(torch.randn(2, 4, 1, 16), alpha=2.5)
    with pytest.raises(ValueError, match="fold_heads"):
        cache.attend(torch.randn(2, 4, 1, 16), fold_heads=True, share_kv_groups=False)
    assert int(cache.lengths.sum()) == 0  # nothing was written by the rejected calls


def test_sparsity_of_a_cache_selection_counts_only_filled_slots():
    """``cache.select(...).sparsity()`` equals the per-sequence ``dash_select`` reports combined
    (pair and tile counts summed over the batch): empty slots past a sequence's length and
    padding rows are neither visible pairs nor dense tiles."""
    from dash_flex import dash_select

    B, Hq, Hkv, D, bs, cap = 2, 4, 2, 16, 16, 384
    q, k, v, u = sequences(5, B, Hq, Hkv, 340, D)
    prompt, chunk = torch.tensor([300, 170]), torch.tensor([40, 25])
    cache = DashKVCache(B, Hkv, cap, D, block_size=bs, pool_query=u)
    cache.append(k[:, :, :300], v[:, :, :300], num_new=prompt)
    Sq = int(chunk.max())
    rows = [rows_at(x, prompt, Sq) for x in (q, k, v)]
    cache.append(rows[1], rows[2], num_new=chunk)
    report = cache.select(rows[0], num_new=chunk).sparsity()
    visible = attended = dense = kept = 0.0
    for b in range(B):
        L, n = int(prompt[b] + chunk[b]), int(chunk[b])
        r = dash_select(q[b : b + 1, :, L - n : L], k[b : b + 1, :, :L], block_size=bs, pool_query=u).sparsity()
        vis = Hq * sum(t + 1 for t in range(L - n, L))
        tiles = Hq * ((L - 1) // 128 + 1)  # one 128-row query tile (Sq ≤ 128), key tiles up to L − 1
        visible, attended = visible + vis, attended + vis * (1 - r.token_sparsity)
        dense, kept = dense + tiles, kept + tiles * (1 - r.tile_sparsity)
    assert report.token_sparsity == pytest.approx(1 - attended / visible, abs=1e-9)
    assert report.tile_sparsity == pytest.approx(1 - kept / dense, abs=1e-9)
