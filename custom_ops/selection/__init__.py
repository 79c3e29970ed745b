"""The coarse stage's tail: log-prior (``dash_flex::log_prior``) and the per-query active flags
plus BlockMask tables (``dash_flex::selection_tables``)."""

from .ops import log_prior, selection_tables

__all__ = ["log_prior", "selection_tables"]
