"""DashAttention as a Hugging Face ``transformers`` attention implementation.

    from dash_flex.integrations.transformers import register_dash_attention, add_pool_queries
    register_dash_attention()                                   # registers "dash"
    model = LlamaForCausalLM(LlamaConfig(..., attn_implementation="dash"))
    add_pool_queries(model)                                     # optional learnable pooling vectors

Registration goes through transformers' public ``AttentionInterface`` (and, where it exists,
``AttentionMaskInterface``, so padding masks reach the attention as boolean tensors). The
attention function receives the model's already rotated ``query [B, Hq, S, D]`` and
``key`` / ``value [B, Hkv, S_kv, D]`` (GQA is handled natively, no head repetition) and
returns ``[B, S, Hq, D]`` as transformers expects. Causal alignment is bottom-right, which is
what a KV cache needs (query t sits at position ``t + S_kv − S``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import mods
from ..attention import dash_attention
from ..topk import topk_attention

__all__ = ["register_dash_attention", "add_pool_queries", "make_attention_function", "POOL_QUERY_ATTR"]

POOL_QUERY_ATTR = "dash_pool_query"  # per-module learnable pooling vectors, [Hkv, D]


def _require_transformers():
    try:
        import transformers
    except ImportError as err:
        raise ImportError(
            "dash_flex.integrations.transformers needs the `transformers` package (pip install 'transformers>=4.48')"
        ) from err
    return transformers


def _mask_mod_from_attention_mask(mask: torch.Tensor, q_len: int, kv_len: int) -> Callable:
    """A FlexAttention mask_mod reading transformers' 4-D mask ``[B or 1, 1, ≥Sq, ≥Skv]``:
    boolean (True = visible) or additive float (0 visible, very negative masked)."""
    if mask.dtype != torch.bool:
        mask = mask > torch.finfo(mask.dtype).min / 2
    mask = mask[:, 0, -q_len:, :kv_len]
    per_batch = mask.shape[0] > 1

    def padding_mask(b, h, q_idx, kv_idx):
        return mask[b if per_batch else torch.zeros_like(b), q_idx, kv_idx]

    return padding_mask


def make_attention_function(
    *,
    selector: str = "dash",
    alpha: float = 1.5,
    block_size: int = 64,
    sigma: float = 1.0,
    selection_scale: float = 1.0,
    top_k: int = 16,
    share_kv_groups: bool = True,
) -> Callable[..., tuple[torch.Tensor, None]]:
    """An attention function with transformers' calling convention
    ``fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs)``
    ``-> (out [B, S, Hq, D], None)`` computing DashAttention (``selector="dash"``) or top-k block
    attention (``"topk"``) with the given settings. ``module.dash_pool_query`` (see
    :func:`add_pool_queries`) is used as the pooling vector when present, else mean pooling."""
    if selector not in ("dash", "topk"):
        raise ValueError(f"selector must be 'dash' or 'topk', got selector={selector!r}")

    def dash_attention_forward(
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        if dropout > 0.0:
            raise ValueError(f"dash attention has no attention dropout, got dropout={dropout}")
        if kwargs.get("output_attentions"):
            raise ValueError("dash attention does not materialise attention weights (output_attentions=True)")
        q_len, kv_len = query.shape[-2], key.shape[-2]
        causal = kwargs.get("is_causal")
        causal = getattr(module, "is_causal", True) if causal is None else bool(causal)
        mask_mod = None
        if attention_mask is not None:
            mask_mod = _mask_mod_from_attention_mask(attention_mask, q_len, kv_len)
        window = kwargs.get("sliding_window")
        if window:
            mask_mod = mods.and_masks(mask_mod, mods.generate_sliding_window(int(window), q_offset=kv_len - q_len))
        softcap = kwargs.get("softcap")
        score_mod = mods.generate_tanh_softcap(float(softcap)) if softcap else None
        common = dict(
            block_size=block_size,
            causal=causal,
            scale=scaling,
            pool_query=getattr(module, POOL_QUERY_ATTR, None),
            score_mod=score_mod,
            mask_mod=mask_mod,
            share_kv_groups=share_kv_groups,
        )
        if selector == "dash":
            out = dash_attention(query, key, value, alpha=alpha, sigma=sigma, selection_scale=selection_scale, **common)
        else:
            out = topk_attention(query, key, value, top_k=top_k, **common)
        return out.transpose(1, 2).contiguous(), None

    return dash_attention_forward


def register_dash_attention(name: str = "dash", **settings: Any) -> str:
    """Register DashAttention under ``name`` so ``attn_implementation=name`` selects it.

    ``settings`` are those of :func:`make_attention_function` (``selector``, ``alpha``,
    ``block_size``, ``sigma``, ``selection_scale``, ``top_k``, ``share_kv_groups``); registering
    several names with different settings is fine. Returns ``name``. Raises ImportError without
    transformers."""
    transformers = _require_transformers()
    transformers.AttentionInterface.register(name, make_attention_function(**settings))
    mask_interface = getattr(transformers, "AttentionMaskInterface", None)
    if mask_interface is not None:
        # Boolean 4-D masks (None when purely causal): what our mask_mod adapter reads best.
        from transformers.masking_utils import sdpa_mask

        mask_interface.register(name, sdpa_mask)
    return name


def add_pool_queries(model: nn.Module) -> int:
    """Give every attention module of ``model`` (those with ``k_proj`` and ``head_dim``) a learnable
    pooling vector ``dash_pool_query [Hkv, D]``, initialised to 0 (mean pooling, SPEC §2). Returns
    how many modules got one. Call before creating the optimiser."""
    count = 0
    for module in model.modules():
        k_proj, head_dim = getattr(module, "k_proj", None), getattr(module, "head_dim", None)
        if not isinstance(k_proj, nn.Linear) or not isinstance(head_dim, int) or hasattr(module, POOL_QUERY_ATTR):
            continue
        kv_heads = k_proj.out_features // head_dim
        weight = k_proj.weight
        module.register_parameter(
            POOL_QUERY_ATTR, nn.Parameter(torch.zeros(kv_heads, head_dim, device=weight.device, dtype=weight.dtype))
        )
        count += 1
    if count == 0:
        raise ValueError("add_pool_queries found no attention module with `k_proj` and an int `head_dim`")
    return count
