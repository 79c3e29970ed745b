"""dash_flex: DashAttention on FlexAttention.

Differentiable, adaptively sparse two-stage attention: α-entmax over block summaries picks a
variable number of key blocks per query; softmax attention then runs over those tokens with
the entmax probabilities as a log-prior. See SPEC and ``docs/method.md``.
"""

import custom_ops as _custom_ops  # noqa: F401  (registers the dash_flex:: operators)

from . import cache, mods, reference
from .attention import dash_attention, dense_flex_attention
from .cache import CacheReadStats, DashKVCache
from .entmax import entmax
from .layer import DashAttention, RotaryEmbedding
from .selection import DashSelection, SparsityReport, dash_select
from .topk import topk_attention, topk_select

__all__ = [
    "dash_attention",
    "dash_select",
    "DashSelection",
    "SparsityReport",
    "entmax",
    "dense_flex_attention",
    "DashAttention",
    "RotaryEmbedding",
    "topk_attention",
    "topk_select",
    "DashKVCache",
    "CacheReadStats",
    "cache",
    "mods",
    "reference",
]
__version__ = "0.1.0"
