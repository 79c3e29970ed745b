"""Block summaries ``k̄_c = Σ_{i∈c} softmax_i(u·k_i/√D) k_i``: op ``dash_flex::block_summaries``."""

from .ops import block_summaries

__all__ = ["block_summaries"]
