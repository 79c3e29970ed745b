"""Fused coarse stage (scores → entmax → group mean → log-prior, active flags): op
``dash_flex::coarse_selection``; for inference, ``dash_flex::coarse_selection_rows`` (p̄ rows and
their mean log, nothing block-major)."""

from .ops import coarse_selection, coarse_selection_rows

__all__ = ["coarse_selection", "coarse_selection_rows"]
