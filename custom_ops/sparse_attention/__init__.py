"""Fused fine stage over a selection (forward): op ``dash_flex::sparse_attention_forward``."""

from .ops import sparse_attention_forward, tile_block_lists

__all__ = ["sparse_attention_forward", "tile_block_lists"]
