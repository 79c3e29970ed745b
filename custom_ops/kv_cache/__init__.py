"""In-place KV-cache writes: op ``dash_flex::cache_write``."""

from .ops import cache_write

__all__ = ["cache_write"]
