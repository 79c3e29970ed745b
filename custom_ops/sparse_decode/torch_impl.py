"""Plain-torch ``sparse_decode``: the definition the Triton kernel is tested against.

For sequence ``b``, KV head ``h`` and each of its ``G`` query heads ``g`` (query head
``h·G + g``), with ``pos_b`` the query's position::

    s_i = scale · q·k_i + prior[b, h, i // bs]      for keys i ≤ pos_b in an active block
    out = Σ_i softmax(s)_i · v_i                     (zeros when no key qualifies, e.g. pos_b = −1)

Dense over the cache (O(N) per query): for the CPU and float64; CUDA runs the split-KV kernel.
"""

from __future__ import annotations

import torch


def sparse_decode_torch(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    active: torch.Tensor,
    prior: torch.Tensor,
    pos: torch.Tensor,
    scale: float,
    block_size: int,
) -> torch.Tensor:
    B, Hq, D = query.shape
    Hkv, N = key.shape[1], key.shape[2]
    G = Hq // Hkv
    acc_dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    q = query.to(acc_dtype).view(B, Hkv, G, D)
    scores = scale * torch.einsum("bhgd,bhnd->bhgn", q, key.to(acc_dtype))
    block_of_key = torch.arange(N, device=key.device) // block_size
    scores = scores + prior.to(acc_dtype)[..., block_of_key][:, :, None, :]
    allowed = active[..., block_of_key] & (torch.arange(N, device=key.device) <= pos[:, None, None])
    scores = scores.masked_fill(~allowed[:, :, None, :], float("-inf"))
    row_max = scores.amax(-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    weights = torch.exp(scores - row_max)
    denom = weights.sum(-1, keepdim=True)
    out = torch.einsum("bhgn,bhnd->bhgd", weights, value.to(acc_dtype))
    out = out / torch.where(denom > 0, denom, torch.ones_like(denom))
    return out.reshape(B, Hq, value.shape[-1]).to(query.dtype)
