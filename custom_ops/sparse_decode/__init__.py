"""Decoding over a selection: op ``dash_flex::sparse_decode`` (one query per sequence)."""

from .ops import sparse_decode

__all__ = ["sparse_decode"]
