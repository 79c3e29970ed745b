"""`DashAttention`: a multi-head (GQA) attention layer whose attention is DashAttention, top-k
block selection, or dense causal attention, behind one interface.

    layer = DashAttention(hidden_size=256, num_heads=8, num_kv_heads=2, rope=RotaryEmbedding(32))
    y = layer(x)                                   # x [B, S, hidden_size] -> y [B, S, hidden_size]
    y, sel = layer(x, return_selection=True)       # sel.sparsity(): this layer's sparsity

Forward: ``q = x W_q``, ``k = x W_k``, ``v = x W_v`` split into heads (``Hq = G·Hkv``), optional
rotary hook on (q, k), then attention and ``W_o``. The attention itself is reachable on
pre-rotated heads through :meth:`DashAttention.attend` (what the transformers integration uses).

α: a fixed float, or with ``learn_alpha=True`` a parameter ``θ`` mapped to
``α = 1 + clamp(θ, 1e-3, 1)`` ∈ (1, 2]. The entmax operator takes α as a Python float, so the
value is read once per eager forward (and cached for compiled graphs, where it is a guarded
constant: changing it recompiles); **α receives no gradient**. Making it trainable needs an
entmax operator that takes α as a tensor and returns ∂L/∂α (docs/results.md).

Selection temperature: ``selection_scale`` multiplies the coarse scores. It is a buffer (a
tensor), so a training loop may steer it, e.g. towards a target sparsity, without recompiling:
the layer feeds ``c·q`` to DashAttention and divides the fine-stage scores by ``c`` in a
score_mod, which leaves the fine stage exactly as with ``q`` and scales only ``z = c·q·k̄/√D``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._validation import check_alpha
from .attention import dash_attention
from .mods import compose_score_mods
from .selection import DashSelection
from .topk import topk_attention

__all__ = ["DashAttention", "RotaryEmbedding", "apply_rotary"]

SELECTORS = ("dash", "topk", "dense")
_ALPHA_MIN_OFFSET = 1e-3  # α ≥ 1.001: at α → 1 entmax's threshold search degenerates into softmax

RopeHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs ``(x_j, x_{j+D/2})`` by angle ``θ_j·pos``: ``[x1, x2] → [x1 cos − x2 sin, x2 cos + x1 sin]``."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE) as a hook for :class:`DashAttention`.

    ``θ_j = base^{−2j/D}``, ``j < D/2``; position ``m`` rotates each pair by ``m·θ_j``, so
    ``q_m·k_n`` depends on ``m − n`` only. Called as ``q, k = rope(q, k, positions)`` with
    ``q [B, Hq, S, D]``, ``k [B, Hkv, S, D]``, ``positions [S]`` or ``[B, S]`` (int).
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got head_dim={head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions.to(torch.float32)[..., None] * self.inv_freq  # [(B,) S, D/2]
        if angles.dim() == 3:
            angles = angles[:, None]  # broadcast over heads
        cos, sin = angles.cos(), angles.sin()
        return apply_rotary(q.float(), cos, sin).to(q.dtype), apply_rotary(k.float(), cos, sin).to(k.dtype)


def _dense_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    """Dense softmax attention, bottom-right causal alignment (query t at ``t + Skv − Sq``)."""
    Sq, Skv = q.shape[-2], k.shape[-2]
    gqa = q.shape[1] != k.shape[1]
    if not causal or Sq == Skv:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa)
    # SDPA's is_causal aligns top-left when Sq ≠ Skv; spell the bottom-right mask out.
    keep = torch.arange(Skv, device=q.device)[None, :] <= torch.arange(Sq, device=q.device)[:, None] + (Skv - Sq)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scale, enable_gqa=gqa)


def _refresh_alpha_after_load(module: DashAttention, incompatible_keys) -> None:
    module.refresh_alpha()


class DashAttention(nn.Module):
    """Multi-head attention with DashAttention (``selector="dash"``), fixed top-k block selection
    (``"topk"``) or dense attention (``"dense"``); GQA when ``num_kv_heads < num_heads``.

    Args:
        hidden_size: model width (input and output features).
        num_heads: query heads ``Hq``. num_kv_heads: key/value heads ``Hkv`` (default ``Hq``).
        head_dim: per-head width ``D`` (default ``hidden_size // num_heads``).
        selector: ``"dash"`` | ``"topk"`` | ``"dense"``.
        alpha: entmax α ∈ (1, 2] (dash). learn_alpha: store α as a parameter (no gradient, see module doc).
        block_size: key block size (a positive multiple of 16).
        top_k: blocks per query for ``"topk"``.
        causal: causal attention (bottom-right aligned).
        sigma: log-prior temperature (dash; ``inf``: no prior).
        selection_scale: initial coarse-score multiplier (a buffer; dash).
        learn_pool_query: learnable per-KV-head pooling vector ``u [Hkv, D]`` for the block summaries,
            initialised to 0 (mean pooling); otherwise mean pooling.
        share_kv_groups: one selection per KV group (GQA sharing).
        bias: biases in the projections.
        rope: a hook ``(q, k, positions) -> (q, k)`` such as :class:`RotaryEmbedding`, or None.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        *,
        selector: str = "dash",
        alpha: float = 1.5,
        learn_alpha: bool = False,
        block_size: int = 64,
        top_k: int = 16,
        causal: bool = True,
        sigma: float = 1.0,
        selection_scale: float = 1.0,
        learn_pool_query: bool = True,
        share_kv_groups: bool = True,
        bias: bool = False,
        rope: RopeHook | None = None,
    ):
        super().__init__()
        if selector not in SELECTORS:
            raise ValueError(f"selector must be one of {SELECTORS}, got selector={selector!r}")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads < 1 or num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        head_dim = hidden_size // num_heads if head_dim is None else head_dim
        alpha = check_alpha(alpha)
        if not math.isfinite(selection_scale) or selection_scale <= 0:
            raise ValueError(f"selection_scale must be a positive finite float, got selection_scale={selection_scale}")
        self.selector, self.block_size, self.top_k, self.causal = selector, block_size, top_k, causal
        self.sigma, self.share_kv_groups = sigma, share_kv_groups
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=bias)
        self.rope = rope
        self.pool_query = nn.Parameter(torch.zeros(num_kv_heads, head_dim)) if learn_pool_query else None
        self.register_buffer("selection_scale", torch.tensor(float(selection_scale)))
        if learn_alpha:
            self.alpha_offset = nn.Parameter(torch.tensor(alpha - 1.0))
            self.register_load_state_dict_post_hook(_refresh_alpha_after_load)
        else:
            self.alpha_offset = None
        self._alpha = alpha

    # ------------------------------------------------------------------ α
    @property
    def alpha(self) -> float:
        """The α in use, a float in (1, 2]."""
        return self._alpha

    def refresh_alpha(self) -> float:
        """Re-read α from its parameter: ``α = 1 + clamp(θ, 1e-3, 1)``. Called by every eager
        forward and after ``load_state_dict``; call it after editing the parameter by hand when
        the layer only runs compiled."""
        if self.alpha_offset is not None:
            self._alpha = 1.0 + float(self.alpha_offset.detach().clamp(_ALPHA_MIN_OFFSET, 1.0))
        return self._alpha

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        hidden_states: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        score_mod: Callable | None = None,
        mask_mod: Callable | None = None,
        return_selection: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, DashSelection | None]:
        """``hidden_states [B, S, hidden_size]`` → ``[B, S, hidden_size]``; ``positions`` (``[S]`` or
        ``[B, S]``, default ``0..S-1``) feed the rope hook. With ``return_selection`` also the
        layer's :class:`DashSelection` (None for ``"dense"``)."""
        B, S, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(B, S, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(hidden_states).view(B, S, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(hidden_states).view(B, S, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.rope is not None:
            if positions is None:
                positions = torch.arange(S, device=hidden_states.device)
            q, k = self.rope(q, k, positions)
        out, sel = self.attend(q, k, v, score_mod=score_mod, mask_mod=mask_mod, return_selection=True)
        out = self.o_proj(out.transpose(1, 2).reshape(B, S, self.num_heads * self.head_dim))
        return (out, sel) if return_selection else out

    def attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        scale: float | None = None,
        score_mod: Callable | None = None,
        mask_mod: Callable | None = None,
        return_selection: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, DashSelection | None]:
        """The attention alone on (already rotated) heads: ``query [B, Hq, Sq, D]``, ``key`` /
        ``value [B, Hkv, Skv, ·]`` → ``[B, Hq, Sq, Dv]``, with this layer's selector and its
        pooling vector, α, block size, top-k, σ and selection scale."""
        scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
        # The attention kernels pick their own precision (fp32 coarse scores, fp32 softmax): keep
        # autocast out, or it would round the coarse scores to bf16. q/k/v keep their dtype.
        with torch.autocast(query.device.type, enabled=False):
            return self._attend(query, key, value, scale, score_mod, mask_mod, return_selection)

    def _attend(self, query, key, value, scale, score_mod, mask_mod, return_selection):
        pool_query = None if self.pool_query is None else self.pool_query.to(key.dtype)
        sel = None
        if self.selector == "dash":
            if self.alpha_offset is not None and not torch.compiler.is_compiling():
                self.refresh_alpha()
            c = self.selection_scale.to(query.dtype)
            # Coarse scores see c·q; the fine stage undoes c inside its score_mod (module doc).
            # The user's score_mod must see the true scale·q·k, so ``/c`` comes first.
            unscaled = compose_score_mods(lambda score, b, h, q_idx, kv_idx: score / c, score_mod)
            out, sel = dash_attention(
                query * c,
                key,
                value,
                alpha=self._alpha,
                block_size=self.block_size,
                causal=self.causal,
                scale=scale,
                sigma=self.sigma,
                pool_query=pool_query,
                score_mod=unscaled,
                mask_mod=mask_mod,
                share_kv_groups=self.share_kv_groups,
                return_selection=True,
            )
        elif self.selector == "topk" or score_mod is not None or mask_mod is not None:
            # Dense with mods: top-k with every block kept is exactly dense attention (tested).
            top_k = self.top_k if self.selector == "topk" else -(-key.shape[-2] // self.block_size)
            out, sel = topk_attention(
                query,
                key,
                value,
                top_k=top_k,
                block_size=self.block_size,
                causal=self.causal,
                scale=scale,
                pool_query=pool_query,
                score_mod=score_mod,
                mask_mod=mask_mod,
                share_kv_groups=self.share_kv_groups,
                return_selection=True,
            )
        else:
            out = _dense_causal(query, key, value, scale, self.causal)
        return (out, sel) if return_selection else out

    def extra_repr(self) -> str:
        extra = f"alpha={self._alpha}, sigma={self.sigma}" if self.selector == "dash" else ""
        extra += f"top_k={self.top_k}" if self.selector == "topk" else ""
        return (
            f"selector={self.selector!r}, heads={self.num_heads}/{self.num_kv_heads}, head_dim={self.head_dim}, "
            f"block_size={self.block_size}, {extra}"
        )
