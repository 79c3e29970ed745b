"""The coarse stage's tail: log-prior (``dash_flex::log_prior``) and the per-query active flags
plus BlockMask tables (``dash_flex::selection_tables``, or ``dash_flex::block_tables`` from given
flags)."""

from .ops import block_tables, log_prior, selection_tables

__all__ = ["block_tables", "log_prior", "selection_tables"]
