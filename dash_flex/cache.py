"""A static-shape KV cache for DashAttention: decoding and chunked prefill (issue #7).

Layout (right padding, static capacity ``N``, a multiple of ``block_size``)::

    key        [B, Hkv, N, D]       sequence b's tokens at slots [0, len_b); the rest is stale
    value      [B, Hkv, N, Dv]
    summaries  [B, Hkv, N / bs, D]  float32; k̄_c of every *complete* block c < len_b // bs
    lengths    [B] int64            len_b

``append(k, v)`` writes ``Sq`` new tokens of every sequence at ``[len_b, len_b + Sq)`` and
recomputes the summaries of the ``(Sq + bs − 2) // bs + 1`` blocks the write can touch (a fixed
number, so shapes stay static); only blocks that are complete are ever read, so a block's
summary is exact from the append that completes it on. ``attend(q)`` runs DashAttention for
the ``Sq`` queries that were just appended: query ``t`` of sequence ``b`` sits at absolute
position ``a_{b,t} = len_b − Sq + t`` (bottom-right alignment, SPEC §2), and

* forced   = its own block ``a_{b,t} // bs``;
* eligible = the complete blocks ``c < a_{b,t} // bs``;
* excluded = everything else (later blocks, stale and empty slots),

which is exactly SPEC §2's classification for ``dash_attention(q, k[:len_b], v[:len_b],
causal=True)``: decode and chunked-prefill outputs equal the full call at the same rows.
Everything is computed from ``lengths`` with tensor ops (no ``.item()``, no host sync), so a
decode step traces into one graph and replays for every step without recompiling.

Variable-length appends (prompts of different lengths): ``num_new [B]`` says how many of the
``Sq`` rows are real for each sequence (``len_b += num_new[b]``); rows ``t ≥ num_new[b]`` are
padding: they are written past the new length (never visible, overwritten later) and their
queries output zeros. The caller keeps ``max_b len_b + Sq ≤ N`` (an out-of-range write raises
on the CPU and trips a device assert on CUDA; checking it here would need a host sync).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.nn.attention.flex_attention import BlockMask

from custom_ops.block_summary import block_summaries
from custom_ops.kv_cache import cache_write
from custom_ops.sparse_decode import decode_selection, sparse_decode
from custom_ops.sparse_decode.torch_impl import query_positions

from ._validation import AttentionShapes, _check_positive_scalar, check_attention_inputs
from .attention import _flex
from .mods import evaluate_mask_mod
from .selection import TILE, DashSelection, build_selection, coarse_probabilities

__all__ = ["DashKVCache", "CacheReadStats", "DecodeSelection"]

# Flex kernel options for the folded decode layout on CUDA. ``None`` lets Inductor pick its
# decoding template (split-KV, the G query heads of a KV head in one program); the library's
# ``num_stages=2`` / ``FORCE_USE_FLEX_ATTENTION`` defaults target the prefill template instead.
DECODE_KERNEL_OPTIONS: dict | None = None


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


@torch.library.custom_op("dash_flex::cache_query_positions", mutates_args=())
def _query_positions_padded(
    lengths: torch.Tensor, num_new: torch.Tensor | None, q_len: int, q_pad: int
) -> torch.Tensor:
    return query_positions(lengths, num_new, q_len, q_pad)


@_query_positions_padded.register_fake
def _(lengths, num_new, q_len, q_pad):
    return lengths.new_empty(lengths.shape[0], q_pad, dtype=torch.int64)


class DecodeSelection(NamedTuple):
    """What :meth:`DashKVCache.decode_selection` returns (``[B, Hkv, ·]`` tensors): ``active``
    (kept + forced blocks, bool), ``prior`` (float32 log-prior, 0 off the support),
    ``block_list`` / ``count`` (int32: the active blocks in order, then zeros; how many) and
    ``pos [B]`` (int64 query positions, −1 on a padding row): the inputs of ``sparse_decode``."""

    active: torch.Tensor
    prior: torch.Tensor
    block_list: torch.Tensor
    count: torch.Tensor
    pos: torch.Tensor


@dataclass(frozen=True)
class CacheReadStats:
    """What one cached attention step read, per query row: ``[B, H_act, Sq]`` tensors.

    ``kept_blocks``: blocks attended (kept + forced); ``visible_blocks``: blocks holding a key the
    query may see (``a // bs + 1`` without a user mask); ``tokens_read``: visible keys inside the
    attended blocks; ``tokens_visible``: visible keys (what dense attention reads, ``a + 1``).
    Padding rows are all zero.
    """

    kept_blocks: torch.Tensor
    visible_blocks: torch.Tensor
    tokens_read: torch.Tensor
    tokens_visible: torch.Tensor

    def kept_block_share(self) -> float:
        """Attended / visible blocks over all real query rows (host sync: not for the hot path)."""
        return float(self.kept_blocks.sum() / self.visible_blocks.sum().clamp(min=1))

    def token_share(self) -> float:
        """Keys read / keys dense attention would read (host sync)."""
        return float(self.tokens_read.sum() / self.tokens_visible.sum().clamp(min=1))


class DashKVCache:
    """Keys, values and block summaries of ``batch`` sequences, for DashAttention decoding.

    Args:
        batch, kv_heads, capacity, head_dim: buffer sizes; ``capacity`` (max tokens per sequence)
            must be a positive multiple of ``block_size``.
        value_dim: defaults to ``head_dim``.
        block_size: DashAttention block size (a positive multiple of 16).
        pool_query: ``[kv_heads, head_dim]`` pooling vectors of the summaries (SPEC §2; None =
            mean pooling). Summaries are computed when blocks complete, so the cache holds a
            reference to this tensor and uses its value at that time.
        dtype, device: of the key / value buffers (summaries are float32, float64 for float64).

    On CUDA the buffers are marked as static addresses, so a compiled step with
    ``mode="reduce-overhead"`` (CUDA graphs) may mutate them in place.
    """

    def __init__(
        self,
        batch: int,
        kv_heads: int,
        capacity: int,
        head_dim: int,
        value_dim: int | None = None,
        *,
        block_size: int = 64,
        pool_query: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        for name, n in (("batch", batch), ("kv_heads", kv_heads), ("capacity", capacity), ("head_dim", head_dim)):
            if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
                raise ValueError(f"{name} must be a positive int, got {name}={n!r}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0 or block_size % 16:
            raise ValueError(f"block_size must be a positive multiple of 16, got block_size={block_size!r}")
        if capacity % block_size:
            raise ValueError(f"capacity must be a multiple of block_size ({block_size}), got capacity={capacity}")
        value_dim = head_dim if value_dim is None else value_dim
        device = torch.device(device)
        if pool_query is not None:
            if not isinstance(pool_query, torch.Tensor):
                raise TypeError(f"pool_query must be a Tensor or None, got {type(pool_query).__name__}")
            if tuple(pool_query.shape) != (kv_heads, head_dim):
                raise ValueError(f"pool_query must have shape {(kv_heads, head_dim)}, got {tuple(pool_query.shape)}")
        self.batch, self.kv_heads, self.capacity = batch, kv_heads, capacity
        self.head_dim, self.value_dim, self.block_size = head_dim, value_dim, block_size
        self.pool_query = pool_query
        self.dtype, self.device = dtype, device
        self.key = torch.zeros(batch, kv_heads, capacity, head_dim, dtype=dtype, device=device)
        self.value = torch.zeros(batch, kv_heads, capacity, value_dim, dtype=dtype, device=device)
        sum_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        self.summaries = torch.zeros(batch, kv_heads, capacity // block_size, head_dim, dtype=sum_dtype, device=device)
        self.lengths = torch.zeros(batch, dtype=torch.int64, device=device)
        self.device = self.key.device  # "cuda" → "cuda:0": the device tensors report, for input checks
        if device.type == "cuda":
            for t in (self.key, self.value, self.summaries, self.lengths):
                torch._dynamo.mark_static_address(t)

    @property
    def num_blocks(self) -> int:
        return self.capacity // self.block_size

    def reset(self) -> None:
        """Empty every sequence (slots are left stale: nothing past ``lengths`` is ever read)."""
        self.lengths.zero_()

    # ------------------------------------------------------------------------- writing
    def append(self, key: torch.Tensor, value: torch.Tensor, num_new: torch.Tensor | None = None) -> None:
        """Write ``key [B, Hkv, Sq, D]`` / ``value [B, Hkv, Sq, Dv]`` at ``[len_b, len_b + Sq)`` and
        advance ``lengths`` by ``Sq`` (or by ``num_new[b]``, ``0 ≤ num_new[b] ≤ Sq``: rows past it
        are padding). Recomputes the summaries of the blocks the write touches."""
        B, Hkv, bs = self.batch, self.kv_heads, self.block_size
        self._check_kv(key, value)
        Sq = key.shape[2]
        self._check_num_new(num_new)
        cache_write(self.key, self.value, key, value, self.lengths)  # in place even when compiled

        # The Sq slots starting at len_b span at most this many blocks (start offset ≤ bs − 1).
        n_touch = min((Sq + bs - 2) // bs + 1, self.num_blocks)
        blocks = (self.lengths[:, None] // bs + torch.arange(n_touch, device=self.device)).clamp(
            max=self.num_blocks - 1
        )  # [B, n_touch]; clamped duplicates recompute the same block, so they write equal values
        key_blocks = self.key.view(B, Hkv, self.num_blocks, bs, self.head_dim)
        gathered = key_blocks.gather(2, blocks[:, None, :, None, None].expand(B, Hkv, n_touch, bs, self.head_dim)).view(
            B, Hkv, n_touch * bs, self.head_dim
        )
        fresh = block_summaries(gathered, self.pool_query, bs)  # [B, Hkv, n_touch, D]
        self.summaries.scatter_(2, blocks[:, None, :, None].expand(B, Hkv, n_touch, self.head_dim), fresh)
        self.lengths.add_(Sq if num_new is None else num_new.to(torch.int64))

    def query_positions(self, q_len: int, num_new: torch.Tensor | None = None) -> torch.Tensor:
        """Absolute positions ``[B, q_len]`` of the ``q_len`` rows appended last
        (``len_b − n_b + t``, ``n_b = num_new[b]`` or ``q_len``); ``-1`` on padding rows."""
        return query_positions(self.lengths, num_new, q_len, q_len)

    # ------------------------------------------------------------------------- attention
    def select(
        self,
        query: torch.Tensor,
        *,
        num_new: torch.Tensor | None = None,
        alpha: float = 1.5,
        selection_scale: float = 1.0,
        sigma: float = 1.0,
        score_mod: Callable | None = None,
        mask_mod: Callable | None = None,
        share_kv_groups: bool = True,
    ) -> DashSelection:
        """The coarse stage of :meth:`attend` alone: a :class:`DashSelection` over all ``N`` cache
        slots whose ``block_mask`` / ``score_mod`` (with ``kernel_options``) drive
        ``flex_attention(query, cache.key, cache.value, ..., enable_gqa=Hq != Hkv)``.

        Block classes per query row (``a`` its position, SPEC §2): forced = ``{a // bs}``, eligible
        = ``{c < a // bs}`` (complete past blocks; with a ``mask_mod``, the fully visible ones),
        the rest excluded; the BlockMask's ``mask_mod`` adds ``kv_idx ≤ a`` (and the user's)."""
        s = self._check_query(
            query,
            alpha=alpha,
            selection_scale=selection_scale,
            sigma=sigma,
            score_mod=score_mod,
            mask_mod=mask_mod,
        )
        self._check_num_new(num_new)
        B, Hq, Sq, N, bs, nb, dev = s.batch, s.q_heads, s.q_len, s.kv_len, s.block_size, s.num_blocks, query.device

        # An opaque op, so the captured positions are a real buffer: Inductor's CPU flex template
        # cannot read a captured tensor that is an unrealised expression (see docs/design.md).
        # Padded to whole query tiles with -1: flex reads captured tensors on padded lanes too.
        pos_pad = _query_positions_padded(self.lengths, num_new, Sq, _round_up(Sq, TILE))
        pos = pos_pad[:, :Sq]  # [B, Sq], -1 on padding rows
        real = (pos >= 0)[:, None, :, None]
        own = (pos // bs)[:, None, :, None]  # [B, 1, Sq, 1]
        c = torch.arange(nb, device=dev)
        if mask_mod is None:
            forced = (c == own) & real  # [B, 1, Sq, nb]
            eligible = (c < own) & real
        else:
            visible = evaluate_mask_mod(mask_mod, B, Hq, Sq, N, dev)
            visible = visible & (torch.arange(N, device=dev) <= pos[:, None, :, None])
            n_visible = visible.view(B, Hq, Sq, nb, bs).sum(-1)
            complete = n_visible == bs
            forced = (n_visible > 0) & (~complete | (c == own))
            eligible = complete & (c != own)

        def cache_mask(b, h, q_idx, kv_idx):
            keep = kv_idx <= pos_pad[b, q_idx]
            if mask_mod is not None:
                keep = keep & mask_mod(b, h, q_idx, kv_idx)
            return keep

        p = coarse_probabilities(query, self.summaries, eligible, s, alpha, selection_scale, share_kv_groups)
        sel = build_selection(p, forced, s, False, sigma, score_mod, cache_mask, share_kv_groups)
        sel.user_mask_mod = mask_mod  # cache_mask's position rule is reported via query_positions
        sel.query_positions = pos
        return sel

    def attend(
        self,
        query: torch.Tensor,
        *,
        num_new: torch.Tensor | None = None,
        alpha: float = 1.5,
        scale: float | None = None,
        selection_scale: float = 1.0,
        sigma: float = 1.0,
        score_mod: Callable | None = None,
        mask_mod: Callable | None = None,
        share_kv_groups: bool = True,
        fold_heads: bool | None = None,
        kernel_options: dict | None = None,
        decode_kernel: bool | None = None,
        return_selection: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, DashSelection]:
        """DashAttention of ``query [B, Hq, Sq, D]`` (the rows appended last) over the cache.

        Row ``t`` of sequence ``b`` is the query at position ``a = len_b − Sq + t`` (or
        ``len_b − num_new[b] + t``; padding rows output zeros) and sees keys ``i ≤ a``. Arguments
        as in :func:`dash_flex.dash_attention` (always causal, ``block_size`` and ``pool_query``
        are the cache's). ``score_mod`` / ``mask_mod`` get ``q_idx`` = the query *row*; the
        absolute position is ``cache.lengths[b] − Sq + q_idx`` (capture ``cache.lengths``).

        ``fold_heads`` (default: when the selection is shared by each KV group, no ``mask_mod``)
        runs the fine stage as ``[B·Hkv, G, Sq, D]`` queries over ``[B·Hkv, 1, N, D]`` keys with
        one block table per (sequence, KV head): the only GQA layout whose tables FlexAttention's
        decoding template accepts. ``kernel_options`` overrides the flex kernel options
        (default: the selection's, or :data:`DECODE_KERNEL_OPTIONS` when folded with ``Sq < 128``).

        ``decode_kernel`` (default: on CUDA when ``Sq = 1``, selection shared per KV group, no
        user mods) runs the fine stage as ``dash_flex::sparse_decode``, a split-KV kernel over the
        compact list of kept blocks, instead of FlexAttention; ``True`` asks for it anywhere (the
        CPU runs its torch definition) and raises when the call does not qualify.

        Returns ``[B, Hq, Sq, Dv]`` in the query dtype (and the :class:`DashSelection`, over all
        ``N`` cache slots, with ``return_selection=True``). Inference only: no autograd through
        the cache.
        """
        if scale is not None:
            scale = _check_positive_scalar("scale", scale)
        one_query = isinstance(query, torch.Tensor) and query.dim() == 4 and query.shape[2] == 1
        kernel_ok = one_query and share_kv_groups and score_mod is None and mask_mod is None and not fold_heads
        if decode_kernel and not kernel_ok:
            raise ValueError(
                "decode_kernel=True needs Sq = 1, share_kv_groups=True, no score_mod / mask_mod and fold_heads unset"
            )
        if decode_kernel is None:
            decode_kernel = kernel_ok and query.device.type == "cuda" and kernel_options is None
        if decode_kernel:
            out = self._attend_decode_kernel(query, num_new, alpha, scale, selection_scale, sigma)
            if not return_selection:
                return out
            sel = self.select(query, num_new=num_new, alpha=alpha, selection_scale=selection_scale, sigma=sigma)
            return out, sel
        foldable = share_kv_groups and mask_mod is None
        if fold_heads and not foldable:
            raise ValueError("fold_heads=True needs share_kv_groups=True and no mask_mod (one table per KV head)")
        sel = self.select(
            query,
            num_new=num_new,
            alpha=alpha,
            selection_scale=selection_scale,
            sigma=sigma,
            score_mod=score_mod,
            mask_mod=mask_mod,
            share_kv_groups=share_kv_groups,
        )
        s = sel.shapes
        G = s.group_size
        scale = 1.0 / math.sqrt(s.head_dim) if scale is None else scale
        if fold_heads is None:
            fold_heads = foldable and G > 1
        if fold_heads:
            # Below 128 queries flex may pick its decoding template (DECODE_KERNEL_OPTIONS); a longer
            # chunk runs the main template, whose default configs overflow shared memory for bf16
            # D = 64 on the H100 (docs/design.md), so it gets the selection's options.
            if kernel_options is not None:
                options = kernel_options
            else:
                options = DECODE_KERNEL_OPTIONS if s.q_len < TILE else sel.kernel_options
            out = _folded_fine_stage(query, self.key, self.value, sel, s, scale, options)
        else:
            options = sel.kernel_options if kernel_options is None else kernel_options
            out = _flex(query, self.key, self.value, sel.score_mod, sel.block_mask, scale, G > 1, options)
        return (out, sel) if return_selection else out

    def _attend_decode_kernel(self, query, num_new, alpha, scale, selection_scale, sigma) -> torch.Tensor:
        """``Sq = 1``: :meth:`decode_selection`, then ``dash_flex::sparse_decode``."""
        sel = self.decode_selection(query, num_new=num_new, alpha=alpha, selection_scale=selection_scale, sigma=sigma)
        scale = 1.0 / math.sqrt(self.head_dim) if scale is None else scale
        out = sparse_decode(
            query[:, :, 0], self.key, self.value, sel.block_list, sel.count, sel.prior, sel.pos, scale, self.block_size
        )
        return out[:, :, None]

    def decode_selection(
        self,
        query: torch.Tensor,
        *,
        num_new: torch.Tensor | None = None,
        alpha: float = 1.5,
        selection_scale: float = 1.0,
        sigma: float = 1.0,
    ) -> DecodeSelection:
        """The coarse stage of the decode kernel path for ``query [B, Hq, 1, D]`` on ``[B, Hkv, nb]``
        tensors (no tile padding, no BlockMask), as one op (``dash_flex::decode_selection``: two
        Triton kernels on CUDA). Same math as :meth:`select`: forced = own block, eligible =
        complete past blocks; the log-prior ``(log p̄ − mean_S log p̄)/sigma`` on kept blocks."""
        s = self._check_query(query, alpha=alpha, selection_scale=selection_scale, sigma=sigma)
        self._check_num_new(num_new)
        inv_sigma = 1.0 / sigma if math.isfinite(sigma) else 0.0
        return DecodeSelection(
            *decode_selection(
                query[:, :, 0], self.summaries, self.lengths, num_new, alpha, selection_scale, inv_sigma, s.block_size
            )
        )

    def append_and_attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        num_new: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor | tuple[torch.Tensor, DashSelection]:
        """``append(key, value, num_new)`` then ``attend(query, num_new=num_new, **kwargs)``: one
        decode step (``Sq = 1``) or one prefill chunk."""
        self.append(key, value, num_new)
        return self.attend(query, num_new=num_new, **kwargs)

    # ------------------------------------------------------------------------- statistics
    def read_stats(self, sel: DashSelection, num_new: torch.Tensor | None = None) -> CacheReadStats:
        """Blocks and tokens read by the step that produced ``sel`` (call before the next append;
        counts assume no user ``mask_mod``)."""
        B, _, Sq, nb = sel.active_blocks.shape
        bs = self.block_size
        pos = self.query_positions(Sq, num_new)[:, None, :, None]  # [B, 1, Sq, 1]
        start = torch.arange(nb, device=self.device) * bs
        visible_in_block = (pos + 1 - start).clamp(min=0, max=bs)  # [B, 1, Sq, nb]
        active = sel.active_blocks
        return CacheReadStats(
            kept_blocks=active.sum(-1),
            visible_blocks=(visible_in_block > 0).sum(-1).expand_as(active[..., 0]),
            tokens_read=(visible_in_block * active).sum(-1),
            tokens_visible=visible_in_block.sum(-1).expand_as(active[..., 0]),
        )

    # ------------------------------------------------------------------------- checks
    def _check_kv(self, key, value) -> None:
        for name, t, dim in (("key", key, self.head_dim), ("value", value, self.value_dim)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 4 or (t.shape[0], t.shape[1], t.shape[3]) != (self.batch, self.kv_heads, dim):
                raise ValueError(
                    f"{name} must have shape [batch={self.batch}, kv_heads={self.kv_heads}, Sq, {dim}], "
                    f"got {tuple(t.shape)}"
                )
            if t.dtype != self.dtype:
                raise TypeError(f"{name} has dtype {t.dtype} but the cache holds {self.dtype}")
            if t.device != self.device:
                raise ValueError(f"{name} is on {t.device} but the cache is on {self.device}")
        if key.shape[2] != value.shape[2]:
            raise ValueError(
                f"key and value must append the same number of tokens, got {key.shape[2]} and {value.shape[2]}"
            )
        if not 0 < key.shape[2] <= self.capacity:
            raise ValueError(f"key must append between 1 and capacity={self.capacity} tokens, got {key.shape[2]}")

    def _check_num_new(self, num_new) -> None:
        if num_new is None:
            return
        if not isinstance(num_new, torch.Tensor) or num_new.dtype.is_floating_point or num_new.dtype == torch.bool:
            raise TypeError("num_new must be an integer tensor [batch] or None")
        if tuple(num_new.shape) != (self.batch,) or num_new.device != self.device:
            raise ValueError(f"num_new must have shape [{self.batch}] on {self.device}, got {tuple(num_new.shape)}")

    def _check_query(self, query, **kw) -> AttentionShapes:
        if isinstance(query, torch.Tensor) and query.dim() == 4 and query.shape[0] != self.batch:
            raise ValueError(f"query batch size {query.shape[0]} differs from the cache's ({self.batch})")
        if isinstance(query, torch.Tensor) and query.dtype != self.dtype:
            raise TypeError(f"query has dtype {query.dtype} but the cache holds {self.dtype}")
        pool = None if self.pool_query is None else self.pool_query.detach()
        # causal=False here: causality is the cache's position mask, and Sq ≤ capacity is all it needs.
        s = check_attention_inputs(
            query, self.key, self.value, block_size=self.block_size, causal=False, scale=None, pool_query=pool, **kw
        )
        if s.q_len > self.capacity:
            raise ValueError(f"query length {s.q_len} exceeds the cache capacity {self.capacity}")
        return s


def _folded_fine_stage(query, key, value, sel: DashSelection, s: AttentionShapes, scale, kernel_options):
    """Fine stage with KV heads folded into the batch: sequence ``b' = b·Hkv + j`` has the ``G``
    query heads of KV head ``j`` and one KV head, so its block table is per (b, j) with one head
    (what flex decoding needs for GQA). The selection's mods are re-indexed, not rewritten."""
    B, Hq, Hkv, Sq, N, G = s.batch, s.q_heads, s.kv_heads, s.q_len, s.kv_len, s.group_size
    bm = sel.block_mask
    n_qt = bm.kv_num_blocks.shape[-1]
    # The tables were repeated over each group's G query heads: take one head per group.
    kv_num = bm.kv_num_blocks[:, ::G].reshape(B * Hkv, 1, n_qt).contiguous()
    kv_idx = bm.kv_indices[:, ::G].reshape(B * Hkv, 1, n_qt, -1).contiguous()
    inner_mask, inner_score = bm.mask_mod, sel.score_mod

    def folded_mask(b, h, q_idx, kv_idx):
        return inner_mask(b // Hkv, (b % Hkv) * G + h, q_idx, kv_idx)

    folded_score = None
    if inner_score is not None:

        def folded_score(score, b, h, q_idx, kv_idx):
            return inner_score(score, b // Hkv, (b % Hkv) * G + h, q_idx, kv_idx)

    block_mask = BlockMask.from_kv_blocks(
        kv_num_blocks=kv_num, kv_indices=kv_idx, BLOCK_SIZE=(TILE, TILE), mask_mod=folded_mask, seq_lengths=(Sq, N)
    )
    q = query.reshape(B * Hkv, G, Sq, s.head_dim)
    k = key.view(B * Hkv, 1, N, s.head_dim)
    v = value.view(B * Hkv, 1, N, s.value_dim)
    out = _flex(q, k, v, folded_score, block_mask, scale, G > 1, kernel_options)
    return out.view(B, Hq, Sq, s.value_dim)
