"""Fused fine stage over a selection: op ``dash_flex::sparse_attention_forward`` (differentiable);
for inference, ``dash_flex::sparse_attention_rows`` (the selection as p̄ rows)."""

from .ops import sparse_attention_forward, sparse_attention_rows, sparse_attention_rows_into, tile_block_lists

__all__ = ["sparse_attention_forward", "sparse_attention_rows", "sparse_attention_rows_into", "tile_block_lists"]
