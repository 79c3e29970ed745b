"""The decode path: ops ``dash_flex::decode_selection`` (coarse stage for one query per
sequence) and ``dash_flex::sparse_decode`` (split-KV attention over the kept-block list)."""

from .ops import decode_selection, sparse_decode

__all__ = ["decode_selection", "sparse_decode"]
