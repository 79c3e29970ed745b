"""The coarse stage: block summaries → α-entmax → a FlexAttention BlockMask and score_mod.

`dash_select` turns (query, key) into a :class:`DashSelection`. Every step has a fixed output
shape and none reads a value back to the host, so the whole function traces into one graph
under ``torch.compile``. Storage layout (why): the prior and the per-query active flags are kept
as ``[B, H_sel, nb_pad, Sq_pad]``, query index contiguous, because the fine-stage kernels walk
queries along a tile's rows (FIELD_NOTES: 2× faster than ``[.., Sq, nb]``); both are padded to
whole 128-tiles so padded lanes of the FlexAttention kernels read in bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn.attention.flex_attention import BlockMask

from custom_ops.block_summary import block_summaries
from custom_ops.coarse_selection import coarse_selection
from custom_ops.coarse_selection.split_kernels import row_fits
from custom_ops.coarse_selection.torch_impl import coarse_scores
from custom_ops.selection import block_tables, log_prior, selection_tables
from custom_ops.selection.torch_impl import TILE  # 128×128 tiles compile fwd and bwd on H100, D = 64 and 128

from ._validation import AttentionShapes, check_attention_inputs
from .entmax import entmax
from .mods import evaluate_mask_mod

__all__ = ["dash_select", "DashSelection", "SparsityReport", "TILE", "coarse_probabilities", "build_selection"]


# Measured on the H100 (torch 2.11, scripts/probe_flex_configs.py): with the default options the
# forward fails for D=64 bf16 and the backward for D=128 bf16 ("out of resource: shared memory");
# two pipeline stages compile for D=64/128, bf16/fp32, fwd and bwd.
CUDA_KERNEL_OPTIONS = {"num_stages": 2}


def _kernel_options(device: torch.device, q_len: int) -> dict | None:
    # Below 128 queries flex picks its decoding template, which overflowed shared memory with
    # these options (Sq = 1, bf16, measured): keep the main template there.
    if device.type != "cuda":
        return None
    return dict(CUDA_KERNEL_OPTIONS, FORCE_USE_FLEX_ATTENTION=True) if q_len < TILE else dict(CUDA_KERNEL_OPTIONS)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


@dataclass(frozen=True)
class SparsityReport:
    """How much of causal (or full, when not causal) dense attention is skipped."""

    token_sparsity: float  # share of visible (query, key) pairs the fine stage never scores
    tile_sparsity: float  # share of dense 128×128 tiles the BlockMask lets FlexAttention skip
    kept_blocks_mean: float  # mean number of blocks a query attends (kept + forced)

    def __str__(self) -> str:
        return (
            f"token sparsity {100 * self.token_sparsity:.1f}%, tile sparsity {100 * self.tile_sparsity:.1f}%, "
            f"{self.kept_blocks_mean:.1f} blocks per query"
        )


@dataclass
class DashSelection:
    """The result of the coarse stage, ready for ``flex_attention``.

    Attributes:
        block_mask: FlexAttention ``BlockMask`` whose ``mask_mod`` encodes the per-query selection
            exactly (so eager FlexAttention, which ignores block tables, agrees with compiled). A
            property: its tables are built on first access (``block_mask_or_builder`` holds the
            mask or the function that builds it), which the fused fine stage never makes.
        score_mod: adds the log-prior (after the user's ``score_mod``), or the user's alone when
            ``sigma = inf``.
        probs: ``p̄ [B, H_sel, Sq, nb]`` float32, the (group-shared) entmax probabilities.
        log_prior: ``b [B, H_sel, Sq, nb]`` float32, 0 outside the selected blocks.
        active_blocks: ``[B, H_act, Sq, nb]`` bool, kept + forced blocks per query.
        forced_blocks: ``[B, H_act, Sq, nb]`` bool.
        kernel_options: pass to ``flex_attention`` with the two above (``{"num_stages": 2}`` on
            CUDA: the default three-stage configs overflow the H100's shared memory for this
            score_mod/mask_mod, see docs/design.md).
        query_positions: ``[B, Sq]`` absolute position of each query row (``-1``: a padding row)
            when the selection is over a KV cache (``DashKVCache.select``), whose slots past a
            sequence's length are not keys; ``None``: positions follow ``causal`` (SPEC §2).
        ``H_sel`` is ``Hkv`` with GQA sharing, else ``Hq``; ``H_act`` is ``Hkv`` when a group's
        heads always agree (sharing and no ``mask_mod``), else ``Hq``.
    """

    block_mask_or_builder: BlockMask | Callable[[], BlockMask] = field(repr=False)
    score_mod: Callable | None
    user_mask_mod: Callable | None
    probs: torch.Tensor
    log_prior: torch.Tensor
    active_blocks: torch.Tensor
    forced_blocks: torch.Tensor
    shapes: AttentionShapes
    causal: bool
    kernel_options: dict | None = None
    query_positions: torch.Tensor | None = None

    @property
    def block_mask(self) -> BlockMask:
        """Built on first use: the fused fine stage never needs FlexAttention's block tables (their
        sort and scans cost ~0.5 ms of the 32K coarse stage)."""
        if not isinstance(self.block_mask_or_builder, BlockMask):
            self.block_mask_or_builder = self.block_mask_or_builder()
        return self.block_mask_or_builder

    def sparsity(self) -> SparsityReport:
        """Both sparsity measures (reads values back to the host: not for the hot path)."""
        s = self.shapes
        pos = self.query_positions
        visible_pairs, kept_pairs = _count_pairs(s, self.causal, self.user_mask_mod, self.active_blocks, pos)
        kv_num = self.block_mask.kv_num_blocks.to(torch.float64)
        full = self.block_mask.full_kv_num_blocks
        tiles_kept = kv_num.sum() + (0 if full is None else full.to(torch.float64).sum())
        n_qt, n_kt = -(-s.q_len // TILE), -(-s.kv_len // TILE)
        if pos is not None:  # per sequence: key tiles up to the last position in each query tile
            padded = torch.nn.functional.pad(pos, (0, n_qt * TILE - s.q_len), value=-1)
            last = padded.view(s.batch, n_qt, TILE).amax(-1)
            per_b = torch.where(last >= 0, (last // TILE + 1).clamp(max=n_kt), torch.zeros_like(last))
            dense_tiles = per_b.sum().item() * kv_num.shape[1]
        else:
            if self.causal:
                offset = s.kv_len - s.q_len
                last_q = torch.clamp(torch.arange(n_qt) * TILE + TILE - 1, max=s.q_len - 1) + offset
                dense_tiles = (last_q // TILE + 1).clamp(max=n_kt).sum().item()
            else:
                dense_tiles = n_qt * n_kt
            dense_tiles *= kv_num.shape[0] * kv_num.shape[1]
        return SparsityReport(
            token_sparsity=float(1.0 - kept_pairs / max(visible_pairs, 1)),
            tile_sparsity=float(1.0 - tiles_kept.item() / max(dense_tiles, 1)),
            kept_blocks_mean=float(self.active_blocks.float().sum(-1).mean().item()),
        )


_PAIR_FLAGS_PER_CHUNK = 1 << 28


def _count_pairs(
    s: AttentionShapes, causal: bool, mask_mod, active: torch.Tensor, positions: torch.Tensor | None = None
) -> tuple[float, float]:
    """(visible, attended) numbers of (b, h, t, i): key i visible to query t before any selection,
    and visible and in one of t's kept + forced blocks. Chunked over queries: a report must not
    need an Sq×Skv tensor at once. ``positions [B, Sq]`` (a cache selection): key i is visible to
    row t iff ``i ≤ positions[b, t]`` (none for a padding row, −1)."""
    visible = attended = 0
    block_of_key = torch.arange(s.kv_len, device=active.device) // s.block_size
    G_act = s.q_heads // active.shape[1]
    # ≤ 2^28 (b, h, t, i) flags a chunk (256 MiB of bools): at 128K a 1024-row chunk held 4 G.
    rows = max(1, min(1024, _PAIR_FLAGS_PER_CHUNK // (s.batch * s.q_heads * s.kv_len)))
    for t0 in range(0, s.q_len, rows):
        t = torch.arange(t0, min(t0 + rows, s.q_len), device=active.device)
        allowed = _base_visibility(s, causal, mask_mod, t, active.device)
        if positions is not None:
            keys = torch.arange(s.kv_len, device=active.device)
            allowed = allowed & (keys <= positions[:, t0 : t0 + len(t), None])[:, None]
        act = active[:, :, t0 : t0 + len(t)][..., block_of_key].repeat_interleave(G_act, dim=1)
        # count_nonzero: a bool .sum() makes an int64 copy first (8 bytes a flag).
        visible += torch.count_nonzero(allowed).item() * (s.batch * s.q_heads // (allowed.shape[0] * allowed.shape[1]))
        attended += torch.count_nonzero(allowed & act).item()
    return float(visible), float(attended)


def _base_visibility(s: AttentionShapes, causal: bool, mask_mod, t: torch.Tensor, device) -> torch.Tensor:
    """Causal + user mask over query rows ``t`` (the selection's mask_mod minus the selection)."""
    i = torch.arange(s.kv_len, device=device)
    vis = torch.ones(1, 1, len(t), s.kv_len, dtype=torch.bool, device=device)
    if causal:
        vis = vis & (i[None, :] <= (t + s.kv_len - s.q_len)[:, None])
    if mask_mod is not None:
        vis = vis & evaluate_mask_mod(mask_mod, s.batch, s.q_heads, t, s.kv_len, device)
    return vis


# ----------------------------------------------------------------------------- coarse stage
def _forced_blocks(s: AttentionShapes, causal: bool, device) -> torch.Tensor:
    """``forced [1, 1, Sq, nb]`` bool without a ``mask_mod``: each query's own block when causal,
    none otherwise (what the fused coarse op needs; one comparison kernel, not two)."""
    if not causal:
        return torch.zeros(1, 1, s.q_len, s.num_blocks, dtype=torch.bool, device=device)
    own = (torch.arange(s.q_len, device=device) + (s.kv_len - s.q_len)) // s.block_size
    return (torch.arange(s.num_blocks, device=device)[None, :] == own[:, None])[None, None]


def _block_classes(s: AttentionShapes, causal: bool, mask_mod, device):
    """``forced, eligible`` as ``[B or 1, H or 1, Sq, nb]`` bool (see SPEC §2 block classes)."""
    nb, bs = s.num_blocks, s.block_size
    a_t = torch.arange(s.q_len, device=device) + (s.kv_len - s.q_len)
    c = torch.arange(nb, device=device)
    if mask_mod is None:
        forced = _forced_blocks(s, causal, device)
        if not causal:
            return forced, ~forced
        return forced, (c[None, :] < (a_t // bs)[:, None])[None, None]
    visible = evaluate_mask_mod(mask_mod, s.batch, s.q_heads, s.q_len, s.kv_len, device)
    if causal:
        visible = visible & (torch.arange(s.kv_len, device=device)[None, :] <= a_t[:, None])
    visible = torch.nn.functional.pad(visible, (0, nb * bs - s.kv_len))
    n_visible = visible.view(s.batch, s.q_heads, s.q_len, nb, bs).sum(-1)
    block_len = torch.clamp(s.kv_len - c * bs, max=bs)
    complete = n_visible == block_len
    own = (c[None, :] == (a_t // bs)[:, None]) if causal else torch.zeros(1, nb, dtype=torch.bool, device=device)
    forced = (n_visible > 0) & (~complete | own)
    return forced, complete & ~own


def dash_select(
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    alpha: float = 1.5,
    block_size: int = 64,
    causal: bool = True,
    selection_scale: float = 1.0,
    sigma: float = 1.0,
    pool_query: torch.Tensor | None = None,
    score_mod: Callable | None = None,
    mask_mod: Callable | None = None,
    share_kv_groups: bool = True,
) -> DashSelection:
    """Run the coarse stage of DashAttention (SPEC §2) and return a :class:`DashSelection`.

    ``flex_attention(q, k, v, score_mod=sel.score_mod, block_mask=sel.block_mask,
    enable_gqa=Hq != Hkv)`` then equals ``dash_attention(q, k, v, ...)`` with the same arguments.
    Differentiable: ``sel.score_mod`` captures the log-prior, which carries gradients back to
    ``query``, ``key`` and ``pool_query`` through entmax.
    """
    s = check_attention_inputs(
        query,
        key,
        None,
        alpha=alpha,
        block_size=block_size,
        causal=causal,
        scale=None,
        selection_scale=selection_scale,
        sigma=sigma,
        pool_query=pool_query,
        score_mod=score_mod,
        mask_mod=mask_mod,
    )
    return _select(
        query, key, s, alpha, causal, selection_scale, sigma, pool_query, score_mod, mask_mod, share_kv_groups
    )


def _select(
    query,
    key,
    s: AttentionShapes,
    alpha,
    causal,
    selection_scale,
    sigma,
    pool_query,
    score_mod,
    mask_mod,
    share_kv_groups,
    k_bar: torch.Tensor | None = None,
) -> DashSelection:
    """``k_bar``: the block summaries when the caller already has them (``[B, Hkv, ≥ nb, D]``; the
    first ``nb`` are used), else computed from ``key``."""
    if k_bar is None:
        k_bar = block_summaries(key, pool_query, s.block_size)  # [B, Hkv, nb, D] float32
    else:
        k_bar = k_bar[:, :, : s.num_blocks]
    if _fused_coarse_applies(s, mask_mod, share_kv_groups):
        # One op for scores → entmax → group mean → prior and flags (custom_ops/coarse_selection).
        sq_pad, nb_pad = _padded_sizes(s)
        inv_sigma = 1.0 / sigma if math.isfinite(sigma) else 0.0
        p, prior_t, active_t = coarse_selection(
            query, k_bar, alpha, selection_scale, inv_sigma, causal, s.kv_len, s.block_size, sq_pad, nb_pad
        )
        forced = _forced_blocks(s, causal, query.device)
        return build_selection(
            p, forced, s, causal, sigma, score_mod, None, share_kv_groups, computed=(prior_t, active_t)
        )
    forced, eligible = _block_classes(s, causal, mask_mod, query.device)
    p = coarse_probabilities(query, k_bar, eligible, s, alpha, selection_scale, share_kv_groups)
    return build_selection(p, forced, s, causal, sigma, score_mod, mask_mod, share_kv_groups)


def _fused_coarse_applies(s: AttentionShapes, mask_mod, share_kv_groups: bool) -> bool:
    """The fused coarse op covers the default case: no user mask (block classes follow from
    causality alone), GQA-shared selection, rows of blocks that fit its register tile."""
    sq_pad, nb_pad = _padded_sizes(s)
    # in-row offsets (block · query stride) are int32 in the kernels
    return mask_mod is None and share_kv_groups and row_fits(nb_pad) and nb_pad * sq_pad < 2**31


def _padded_sizes(s: AttentionShapes) -> tuple[int, int]:
    """``(Sq_pad, nb_pad)``: the prior / flags cover whole 128-tiles (see the module doc)."""
    return _round_up(s.q_len, TILE), -(-_round_up(s.kv_len, TILE) // s.block_size)


def coarse_probabilities(
    query: torch.Tensor,
    k_bar: torch.Tensor,
    eligible: torch.Tensor,
    s: AttentionShapes,
    alpha: float,
    selection_scale: float,
    share_kv_groups: bool,
) -> torch.Tensor:
    """``p̄ [B, H_sel, Sq, nb]`` float32: α-entmax of ``selection_scale · q·k̄ / √D`` over the
    eligible blocks (``eligible`` broadcastable to ``[B, Hq, Sq, nb]``), averaged over each KV
    group when ``share_kv_groups`` (a block is then eligible only if eligible for all its heads)."""
    B, Hq, Hkv, Sq, nb, G = s.batch, s.q_heads, s.kv_heads, s.q_len, s.num_blocks, s.group_size
    if share_kv_groups and eligible.shape[1] > 1:
        eligible = eligible.view(eligible.shape[0], Hkv, G, Sq, nb).all(2).repeat_interleave(G, dim=1)
    if eligible.shape[1] > 1:  # per query head → [b, Hkv, G, ·, nb], the scores' layout
        eligible = eligible.view(eligible.shape[0], Hkv, G, *eligible.shape[2:])
    else:
        eligible = eligible.unsqueeze(2)
    z = coarse_scores(query, k_bar, selection_scale, eligible).reshape(B, Hq, Sq, nb)
    p = entmax(z, alpha=alpha, dim=-1)
    if share_kv_groups:
        p = p.view(B, Hkv, G, Sq, nb).mean(2)  # [B, Hkv, Sq, nb]
    return p


def build_selection(
    p: torch.Tensor,
    forced: torch.Tensor,
    s: AttentionShapes,
    causal: bool,
    sigma: float,
    score_mod: Callable | None,
    mask_mod: Callable | None,
    share_kv_groups: bool,
    computed: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> DashSelection:
    """Turn block probabilities ``p [B, H_sel, Sq, nb]`` (``H_sel`` = Hkv or Hq; blocks with
    ``p > 0`` are selected) and ``forced [B or 1, H or 1, Sq, nb]`` into a :class:`DashSelection`:
    the log-prior, the block tables, the BlockMask and the score_mod. Any selector that produces
    such ``p`` (entmax, top-k) shares this fine-stage path; ``sigma = inf`` adds no prior.
    ``computed = (prior_t, active_t)``: the padded, block-major prior and flags, already built
    (by the fused coarse op) for ``H_act = H_sel = Hkv``."""
    B, Hq, Hkv, Sq, nb, bs = s.batch, s.q_heads, s.kv_heads, s.q_len, s.num_blocks, s.block_size
    # Log-prior and active flags, padded to whole tiles, query index contiguous (see module doc).
    H_sel = p.shape[1]
    H_act = Hkv if (share_kv_groups and H_sel == Hkv and forced.shape[1] == 1) else Hq
    Sq_pad, nb_pad = _padded_sizes(s)
    tables = None
    if computed is None:
        prior_t = log_prior(p, sigma, Sq_pad, nb_pad) if math.isfinite(sigma) else None
        active_t, *tables = selection_tables(p.detach(), forced, H_act, Sq_pad, nb_pad, s.kv_len, bs, Hq)
    else:  # the fused coarse op already wrote both, in this layout; tables on first use
        prior_t, active_t = computed
        prior_t = prior_t if math.isfinite(sigma) else None

    G_act, offset = Hq // H_act, s.kv_len - Sq

    def dash_mask(b, h, q_idx, kv_idx):
        keep = active_t[b, h // G_act, kv_idx // bs, q_idx]
        if causal:
            keep = keep & (kv_idx <= q_idx + offset)
        if mask_mod is not None:
            keep = keep & mask_mod(b, h, q_idx, kv_idx)
        return keep

    if prior_t is None:
        dash_score = score_mod
    else:
        G_sel = Hq // H_sel

        def dash_score(score, b, h, q_idx, kv_idx):
            if score_mod is not None:
                score = score_mod(score, b, h, q_idx, kv_idx)
            return score + prior_t[b, h // G_sel, kv_idx // bs, q_idx]

    def make_block_mask() -> BlockMask:
        kv_num_blocks, kv_indices = tables if tables is not None else block_tables(active_t, s.kv_len, bs, Hq)
        return BlockMask.from_kv_blocks(
            kv_num_blocks=kv_num_blocks,
            kv_indices=kv_indices,
            BLOCK_SIZE=(TILE, TILE),
            mask_mod=dash_mask,
            seq_lengths=(Sq, s.kv_len),
        )

    return DashSelection(
        block_mask_or_builder=make_block_mask if tables is None else make_block_mask(),
        score_mod=dash_score,
        user_mask_mod=mask_mod,
        probs=p,
        log_prior=prior_t[:, :, :nb, :Sq].transpose(2, 3) if prior_t is not None else torch.zeros_like(p),
        active_blocks=active_t[:, :, :nb, :Sq].transpose(2, 3),
        forced_blocks=forced.expand(B, H_act, Sq, nb),
        shapes=s,
        causal=causal,
        kernel_options=_kernel_options(p.device, Sq),
    )
