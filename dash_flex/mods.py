"""Named `score_mod` / `mask_mod` factories, combinators and dense evaluators.

Mods follow FlexAttention's conventions:

* ``score_mod(score, b, h, q_idx, kv_idx) -> score`` where ``score`` is the already scaled
  ``scale · q·k`` and ``h`` is the *query* head;
* ``mask_mod(b, h, q_idx, kv_idx) -> bool`` (True = the key may be seen).

``q_idx`` is the row of the query tensor. With ``causal=True`` and ``Sq < Skv`` the query sits
at absolute position ``q_idx + Skv - Sq``; the factories below take a ``q_offset`` for that.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

ScoreMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- combinators
def and_masks(*mask_mods: MaskMod | None) -> MaskMod | None:
    """A key is visible iff every given mask_mod allows it (None entries are skipped)."""
    mods = [m for m in mask_mods if m is not None]
    if not mods:
        return None
    if len(mods) == 1:
        return mods[0]

    def combined_mask(b, h, q_idx, kv_idx):
        keep = mods[0](b, h, q_idx, kv_idx)
        for mod in mods[1:]:
            keep = keep & mod(b, h, q_idx, kv_idx)
        return keep

    return combined_mask


def compose_score_mods(*score_mods: ScoreMod | None) -> ScoreMod | None:
    """Apply score_mods left to right: ``compose(f, g)(s, ...) = g(f(s, ...), ...)``."""
    mods = [m for m in score_mods if m is not None]
    if not mods:
        return None
    if len(mods) == 1:
        return mods[0]

    def composed_score(score, b, h, q_idx, kv_idx):
        for mod in mods:
            score = mod(score, b, h, q_idx, kv_idx)
        return score

    return composed_score


# ----------------------------------------------------------------------------- mask factories
def generate_causal_mask(q_offset: int = 0) -> MaskMod:
    """Key ``i`` visible to query row ``t`` iff ``i <= t + q_offset``."""

    def causal_mask(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + q_offset

    return causal_mask


def generate_sliding_window(window: int, q_offset: int = 0) -> MaskMod:
    """Only the last ``window`` positions up to and including the query's own: ``a_t - i < window``.

    It does not impose causality on its own (combine with ``causal=True``).
    """
    if window <= 0:
        raise ValueError(f"window must be positive, got window={window}")

    def sliding_window(b, h, q_idx, kv_idx):
        return (q_idx + q_offset - kv_idx) < window

    return sliding_window


def generate_document_mask(document_ids: torch.Tensor, q_offset: int = 0) -> MaskMod:
    """Packed sequences: ``document_ids[b, pos]`` (``[B, Skv]`` or ``[Skv]``); a query sees only
    keys of its own document. Queries are at key positions ``q_idx + q_offset``."""
    doc = document_ids if document_ids.dim() == 2 else document_ids.unsqueeze(0)

    def document_mask(b, h, q_idx, kv_idx):
        bb = b if doc.shape[0] > 1 else torch.zeros_like(b)
        return doc[bb, q_idx + q_offset] == doc[bb, kv_idx]

    return document_mask


def generate_padding_mask(kv_lengths: torch.Tensor) -> MaskMod:
    """Right padding: sequence ``b`` has ``kv_lengths[b]`` real keys; keys past it are invisible."""

    def padding_mask(b, h, q_idx, kv_idx):
        return kv_idx < kv_lengths[b]

    return padding_mask


# ----------------------------------------------------------------------------- score factories
def generate_tanh_softcap(cap: float) -> ScoreMod:
    """Soft-capping (Gemma 2): ``cap · tanh(score / cap)``."""

    def tanh_softcap(score, b, h, q_idx, kv_idx):
        return cap * torch.tanh(score / cap)

    return tanh_softcap


def generate_alibi_bias(num_heads: int, q_offset: int = 0) -> ScoreMod:
    """ALiBi: ``score - m_h · (a_t - i)`` with the usual geometric slopes ``m_h = 2^(-8(h+1)/H)``."""

    def alibi_bias(score, b, h, q_idx, kv_idx):
        slope = torch.exp2(-8.0 * (h + 1).to(torch.float32) / num_heads)
        return score - slope * (q_idx + q_offset - kv_idx).to(score.dtype)

    return alibi_bias


def generate_relative_bias(table: torch.Tensor, q_offset: int = 0) -> ScoreMod:
    """A learnable relative-position bias: ``score + table[h, clamp(a_t - i, 0, L-1)]``.

    ``table`` is ``[H, L]`` and may require grad: the gradient reaches it.
    """
    max_distance = table.shape[-1] - 1

    def relative_bias(score, b, h, q_idx, kv_idx):
        distance = torch.clamp(q_idx + q_offset - kv_idx, 0, max_distance)
        return score + table[h, distance]

    return relative_bias


# ----------------------------------------------------------------------------- dense evaluation
def _vmap_over_bhqkv(fn: Callable, with_score: bool) -> Callable:
    """Lift a scalar mod to the [B, H, Q, KV] grid with nested vmaps, as FlexAttention does, so a
    mod written for FlexAttention (scalar index tensors) evaluates the same way here."""
    prefix = (0,) if with_score else ()
    for axis in (3, 2, 1, 0):  # innermost vmap is over kv_idx
        in_dims = prefix + tuple(0 if i == axis else None for i in range(4))
        fn = torch.vmap(fn, in_dims=in_dims, out_dims=0)
    return fn


def _index_grids(B: int, H: int, Sq: int | torch.Tensor, Skv: int, device) -> tuple[torch.Tensor, ...]:
    q_rows = Sq.to(device=device, dtype=torch.int32) if isinstance(Sq, torch.Tensor) else Sq
    return tuple(
        n if isinstance(n, torch.Tensor) else torch.arange(n, device=device, dtype=torch.int32)
        for n in (B, H, q_rows, Skv)
    )


def evaluate_mask_mod(mask_mod: MaskMod, B: int, H: int, Sq: int | torch.Tensor, Skv: int, device) -> torch.Tensor:
    """Dense boolean ``[B, H, Sq, Skv]`` of ``mask_mod`` over every (b, h, q, kv).

    ``Sq`` may be a tensor of query rows, to evaluate only those rows."""
    grids = _index_grids(B, H, Sq, Skv, device)
    return _vmap_over_bhqkv(mask_mod, with_score=False)(*grids).to(torch.bool)


def apply_score_mod(score_mod: ScoreMod, scores: torch.Tensor) -> torch.Tensor:
    """Apply ``score_mod`` to dense scores ``[B, H, Sq, Skv]`` (differentiable)."""
    B, H, Sq, Skv = scores.shape
    grids = _index_grids(B, H, Sq, Skv, scores.device)
    return _vmap_over_bhqkv(score_mod, with_score=True)(scores, *grids)
