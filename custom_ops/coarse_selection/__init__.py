"""Fused coarse stage (scores → entmax → group mean → log-prior, active flags): op
``dash_flex::coarse_selection``."""

from .ops import coarse_selection

__all__ = ["coarse_selection"]
