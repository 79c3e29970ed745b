"""``dash_flex::cache_write``: write new keys/values into static cache buffers, in place.

Why an op: a plain ``cache.scatter_(...)`` inside a compiled decode step is functionalised into
an out-of-place scatter plus a copy back into the graph input, i.e. two full passes over the
cache per token (measured on the H100: appending one token to a 128K × B=8 cache cost ≈ 6 ms).
A custom op that declares the mutation goes through ``auto_functionalized``, which Inductor
re-inplaces for graph inputs: the write touches only the new rows.
"""

from __future__ import annotations

import torch


@torch.library.custom_op("dash_flex::cache_write", mutates_args=("key_cache", "value_cache"))
def cache_write(
    key_cache: torch.Tensor, value_cache: torch.Tensor, key: torch.Tensor, value: torch.Tensor, start: torch.Tensor
) -> None:
    """``key_cache[b, :, start_b + t] = key[b, :, t]`` for every row t (values likewise);
    ``start [B]`` int64. Caches ``[B, H, N, ·]``, new rows ``[B, H, Sq, ·]``."""
    B, H, Sq, _ = key.shape
    rows = start[:, None] + torch.arange(Sq, device=key.device)  # [B, Sq]
    key_cache.scatter_(2, rows[:, None, :, None].expand(B, H, Sq, key.shape[-1]), key)
    value_cache.scatter_(2, rows[:, None, :, None].expand(B, H, Sq, value.shape[-1]), value)


@cache_write.register_fake
def _(key_cache, value_cache, key, value, start):
    return None
