"""Fixed top-k block selection (NSA / InfLLMv2 style) on DashAttention's code path.

The baseline the experiments compare against. It shares everything with :func:`dash_attention`
except the rule that picks blocks:

1. the same block classes (forced / eligible, SPEC §2) and the same block summaries
   ``k̄_c = Σ_{i∈c} softmax_i(u·k_i/√D) k_i``;
2. the same coarse scores ``z_{t,c} = q_t·k̄_c / √D``, turned into per-head importances
   ``π_{t,c} = softmax_c(z_t)`` over the eligible blocks and averaged over each KV group when
   ``share_kv_groups`` (NSA's group-shared selection; one head alone ranks blocks by ``z``);
3. query ``t`` keeps the ``top_k`` eligible blocks of highest importance, or every eligible
   block when it has fewer than ``top_k``; its forced blocks are attended as in DashAttention;
4. the same fine stage (``build_selection`` with ``sigma = inf``: no prior), i.e. softmax
   attention over the visible keys of the kept and forced blocks.

No gradient reaches the coarse stage: the ranking is computed from detached inputs, so
``pool_query`` gets no gradient and ``query`` / ``key`` get gradients from the fine stage only.
With ``top_k`` at least the number of eligible blocks, every visible key is attended and the
result is dense (causal) attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from custom_ops.block_summary import block_summaries

from ._validation import AttentionShapes, check_attention_inputs
from .attention import flex_fine_stage
from .selection import DashSelection, _block_classes, build_selection

__all__ = ["topk_attention", "topk_select", "topk_block_probabilities"]


def _check_top_k(top_k: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise TypeError(f"top_k must be an int, got {type(top_k).__name__}")
    if top_k < 1:
        raise ValueError(f"top_k must be a positive int, got top_k={top_k}")
    return top_k


def topk_block_probabilities(
    query: torch.Tensor,
    k_bar: torch.Tensor,
    eligible: torch.Tensor,
    s: AttentionShapes,
    top_k: int,
    share_kv_groups: bool,
) -> torch.Tensor:
    """``p [B, H_sel, Sq, nb]`` float32, detached: ``1/top_k`` on each query's kept blocks, 0 elsewhere.

    ``k_bar [B, Hkv, nb, D]`` are the block summaries, ``eligible`` broadcasts to ``[B, Hq, Sq, nb]``.
    The value ``1/top_k`` only marks the selection (``build_selection`` keeps blocks with ``p > 0``);
    it is never used as a prior. Ties in importance are broken by ``torch.topk`` (deterministic
    for a given device), always among eligible blocks only.
    """
    B, Hq, Hkv, Sq, nb, G = s.batch, s.q_heads, s.kv_heads, s.q_len, s.num_blocks, s.group_size
    eligible = eligible.expand(B, Hq, Sq, nb)
    if share_kv_groups:
        # A block serves a whole group only if every head of the group may see all of it.
        eligible = eligible.reshape(B, Hkv, G, Sq, nb).all(2, keepdim=True).expand(B, Hkv, G, Sq, nb)
        eligible = eligible.reshape(B, Hq, Sq, nb)
    with torch.no_grad():
        q = query.detach().float().view(B, Hkv, G, Sq, s.head_dim)
        z = torch.einsum("bhgtd,bhcd->bhgtc", q, k_bar.detach()).reshape(B, Hq, Sq, nb) / math.sqrt(s.head_dim)
        # Rows with no eligible block give NaN here; they are zeroed just below.
        importance = torch.softmax(z.masked_fill(~eligible, -math.inf), dim=-1).masked_fill(~eligible, 0.0)
        if share_kv_groups:
            importance = importance.view(B, Hkv, G, Sq, nb).mean(2)
            eligible = eligible.view(B, Hkv, G, Sq, nb)[:, :, 0]
        # Importances are ≥ 0 on eligible blocks, so -1 never outranks an eligible block.
        ranked = importance.masked_fill(~eligible, -1.0)
        idx = ranked.topk(min(top_k, nb), dim=-1).indices
        kept = torch.zeros_like(eligible).scatter(-1, idx, True) & eligible
        return kept.float() / top_k


def _topk_selection(query, key, s, top_k, causal, pool_query, score_mod, mask_mod, share_kv_groups) -> DashSelection:
    forced, eligible = _block_classes(s, causal, mask_mod, query.device)
    pool = None if pool_query is None else pool_query.detach()
    k_bar = block_summaries(key.detach(), pool, s.block_size)
    p = topk_block_probabilities(query, k_bar, eligible, s, top_k, share_kv_groups)
    return build_selection(p, forced, s, causal, math.inf, score_mod, mask_mod, share_kv_groups)


def _validate(query, key, value, block_size, causal, scale, pool_query, score_mod, mask_mod, top_k):
    _check_top_k(top_k)
    # α, selection_scale and sigma do not apply to top-k; valid placeholders keep the shared checks.
    return check_attention_inputs(
        query,
        key,
        value,
        alpha=1.5,
        block_size=block_size,
        causal=causal,
        scale=scale,
        selection_scale=1.0,
        sigma=math.inf,
        pool_query=pool_query,
        score_mod=score_mod,
        mask_mod=mask_mod,
    )


def topk_select(
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    top_k: int,
    block_size: int = 64,
    causal: bool = True,
    pool_query: torch.Tensor | None = None,
    score_mod: Callable | None = None,
    mask_mod: Callable | None = None,
    share_kv_groups: bool = True,
) -> DashSelection:
    """The coarse stage of top-k block selection (module docstring); returns a :class:`DashSelection`
    whose ``block_mask`` and ``score_mod`` (the user's, no prior) feed ``flex_attention`` directly.
    ``probs`` holds ``1/top_k`` on kept blocks; ``log_prior`` is all zeros."""
    s = _validate(query, key, None, block_size, causal, None, pool_query, score_mod, mask_mod, top_k)
    return _topk_selection(query, key, s, top_k, causal, pool_query, score_mod, mask_mod, share_kv_groups)


def topk_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    top_k: int,
    block_size: int = 64,
    causal: bool = True,
    scale: float | None = None,
    pool_query: torch.Tensor | None = None,
    score_mod: Callable | None = None,
    mask_mod: Callable | None = None,
    share_kv_groups: bool = True,
    return_selection: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, DashSelection]:
    """Top-k block-sparse attention: each query attends its forced blocks plus the ``top_k``
    eligible blocks ranked highest by ``softmax(q·k̄/√D)`` (module docstring), with plain softmax
    over those keys: ``out_t = Σ_{i ∈ kept_t, visible} softmax_i(score_mod(scale·q_t·k_i)) v_i``.

    Arguments as :func:`dash_attention` (``query [B, Hq, Sq, D]``, ``key [B, Hkv, Skv, D]``,
    ``value [B, Hkv, Skv, Dv]``), plus ``top_k`` (blocks per query, a positive int). Gradients
    reach ``query``, ``key`` and ``value`` through the fine stage only; ``pool_query`` only
    shapes the (detached) ranking.
    """
    s = _validate(query, key, value, block_size, causal, scale, pool_query, score_mod, mask_mod, top_k)
    sel = _topk_selection(query, key, s, top_k, causal, pool_query, score_mod, mask_mod, share_kv_groups)
    scale = 1.0 / math.sqrt(s.head_dim) if scale is None else scale
    out = flex_fine_stage(query, key, value, sel, scale)
    return (out, sel) if return_selection else out
