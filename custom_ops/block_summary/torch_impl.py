"""Plain-torch block summaries (the CPU path, and the formula the Triton kernel follows).

For block ``c`` (keys ``i ∈ c``, the last block possibly short) and pooling vector ``u``:

    w_i = softmax_i(u · k_i / √D),        k̄_c = Σ_i w_i k_i          (u absent: w_i = 1/|c|)

Backward, with ``g = ∂L/∂k̄_c`` and ``s_i = g · k_i``:

    ∂L/∂l_i = w_i (s_i − g · k̄_c),   ∂L/∂k_i = w_i g + (∂L/∂l_i) u / √D,   ∂L/∂u = Σ_{b,c,i} (∂L/∂l_i) k_i / √D
"""

from __future__ import annotations

import math

import torch


def compute_dtype(key: torch.Tensor) -> torch.dtype:
    """float32 accumulation, float64 kept for float64 inputs (gradcheck)."""
    return torch.float64 if key.dtype == torch.float64 else torch.float32


def _blocks(key: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, S, D = key.shape
    nb = -(-S // block_size)
    k = key.to(compute_dtype(key))
    k = torch.nn.functional.pad(k, (0, 0, 0, nb * block_size - S)).view(B, H, nb, block_size, D)
    real = (torch.arange(nb * block_size, device=key.device) < S).view(nb, block_size)
    return k, real


def pooling_weights(k: torch.Tensor, real: torch.Tensor, pool_query: torch.Tensor | None) -> torch.Tensor:
    """``w [B, H, nb, bs]`` (zero on the padding slots of the last block)."""
    if pool_query is None:
        w = real.to(k.dtype).expand(k.shape[:-1])
        return w / w.sum(-1, keepdim=True)
    logits = torch.einsum("bhcid,hd->bhci", k, pool_query.to(k.dtype)) / math.sqrt(k.shape[-1])
    return torch.softmax(logits.masked_fill(~real, -math.inf), dim=-1)


def block_summaries_torch(key: torch.Tensor, pool_query: torch.Tensor | None, block_size: int) -> torch.Tensor:
    k, real = _blocks(key, block_size)
    return torch.einsum("bhci,bhcid->bhcd", pooling_weights(k, real, pool_query), k)


def block_summaries_backward_torch(
    grad: torch.Tensor, key: torch.Tensor, pool_query: torch.Tensor | None, block_size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    B, H, S, D = key.shape
    k, real = _blocks(key, block_size)
    w = pooling_weights(k, real, pool_query)
    g = grad.to(k.dtype)
    grad_k = w.unsqueeze(-1) * g.unsqueeze(3)
    grad_u = None
    if pool_query is not None:
        k_bar = torch.einsum("bhci,bhcid->bhcd", w, k)
        s = torch.einsum("bhcid,bhcd->bhci", k, g)
        dl = w * (s - (g * k_bar).sum(-1, keepdim=True)) / math.sqrt(D)
        grad_k = grad_k + dl.unsqueeze(-1) * pool_query.to(k.dtype).view(1, H, 1, 1, D)
        grad_u = torch.einsum("bhci,bhcid->hd", dl, k).to(pool_query.dtype)
    grad_k = grad_k.reshape(B, H, -1, D)[:, :, :S].to(key.dtype)
    return grad_k, grad_u
