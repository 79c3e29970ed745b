"""Greedy generation with a tiny causal LM whose attention layers decode through a DashKVCache.

    PYTHONPATH=. python examples/generate.py [--new-tokens 48] [--compile] [--device cuda]

Random weights (the point is the mechanics, not the text): an embedding, ``--layers`` pre-norm
blocks (RoPE, GQA DashAttention over a per-layer cache, a SiLU MLP) and an output head; the
coarse scores are sharpened (``--selection-scale``) so that random weights select sparsely.
Two prompts of different lengths are prefilled in one right-padded chunk (``num_new``), then
every step appends one token per sequence and prints, per layer, how many blocks each
sequence's query kept (kept + forced, mean over KV heads) out of the blocks it could see.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from dash_flex.cache import DashKVCache


def rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary embedding of ``x [B, H, S, D]`` at absolute ``positions [B, S]`` (pairs (i, i + D/2))."""
    half = x.shape[-1] // 2
    freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angle = positions.clamp(min=0)[:, None, :, None].float() * freq  # [B, 1, S, D/2]
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class DashBlock(nn.Module):
    """Pre-norm attention (DashAttention over this layer's cache) + MLP."""

    def __init__(self, dim: int, q_heads: int, kv_heads: int, use_rope: bool, selection_scale: float):
        super().__init__()
        self.selection_scale = selection_scale
        self.q_heads, self.kv_heads, self.head_dim, self.use_rope = q_heads, kv_heads, dim // q_heads, use_rope
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.wq = nn.Linear(dim, q_heads * self.head_dim, bias=False)
        self.wkv = nn.Linear(dim, 2 * kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(q_heads * self.head_dim, dim, bias=False)
        self.pool_query = nn.Parameter(torch.randn(kv_heads, self.head_dim))
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))

    def forward(self, x, cache: DashKVCache, positions, num_new, stats: list | None):
        B, S, _ = x.shape
        h = self.norm1(x)
        q = self.wq(h).view(B, S, self.q_heads, self.head_dim).transpose(1, 2)
        k, v = self.wkv(h).view(B, S, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.use_rope:
            q, k = rope(q, positions), rope(k, positions)
        out = cache.append_and_attend(
            q, k, v, num_new=num_new, selection_scale=self.selection_scale, return_selection=stats is not None
        )
        if stats is not None:
            out, sel = out
            stats.append(cache.read_stats(sel, num_new))
        x = x + self.wo(out.transpose(1, 2).reshape(B, S, -1))
        return x + self.mlp(self.norm2(x))


class TinyDashLM(nn.Module):
    def __init__(self, vocab=256, dim=64, layers=2, q_heads=4, kv_heads=2, use_rope=True, selection_scale=32.0):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(DashBlock(dim, q_heads, kv_heads, use_rope, selection_scale) for _ in range(layers))
        self.norm = nn.RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def new_caches(self, batch: int, capacity: int, block_size: int) -> list[DashKVCache]:
        p = next(self.parameters())
        return [
            DashKVCache(
                batch,
                blk.kv_heads,
                capacity,
                blk.head_dim,
                block_size=block_size,
                pool_query=blk.pool_query.detach(),
                dtype=p.dtype,
                device=p.device,
            )
            for blk in self.blocks
        ]

    def forward(self, tokens, caches, num_new=None, stats: list | None = None):
        """Logits ``[B, S, vocab]`` of ``tokens [B, S]`` appended to the caches (rows past
        ``num_new[b]`` are padding)."""
        S = tokens.shape[1]
        t = torch.arange(S, device=tokens.device)
        positions = caches[0].lengths[:, None] + t  # absolute positions of the new tokens
        x = self.embed(tokens)
        for blk, cache in zip(self.blocks, caches):
            x = blk(x, cache, positions, num_new, stats)
        return self.head(self.norm(x))


@torch.no_grad()
def generate(
    model: TinyDashLM, prompts: list[list[int]], new_tokens: int, block_size: int, compile_step=False, verbose=True
):
    """Greedy decoding; returns the generated tokens ``[B, new_tokens]`` and the per-step, per-layer
    :class:`~dash_flex.cache.CacheReadStats`."""
    dev = next(model.parameters()).device
    B, P = len(prompts), max(len(p) for p in prompts)
    capacity = -(-(P + new_tokens) // block_size) * block_size
    caches = model.new_caches(B, capacity, block_size)
    tokens = torch.zeros(B, P, dtype=torch.long, device=dev)
    for b, p in enumerate(prompts):
        tokens[b, : len(p)] = torch.tensor(p, device=dev)
    num_new = torch.tensor([len(p) for p in prompts], device=dev)

    logits = model(tokens, caches, num_new)  # one right-padded prefill chunk
    next_tok = logits.gather(1, (num_new - 1)[:, None, None].expand(B, 1, logits.shape[-1])).argmax(-1)  # [B, 1]
    step = torch.compile(model, fullgraph=True, dynamic=False) if compile_step else model
    out, history = [next_tok], []
    for i in range(new_tokens - 1):
        stats: list | None = None if compile_step else []
        next_tok = step(next_tok, caches, None, stats)[:, -1:].argmax(-1)
        out.append(next_tok)
        if stats is not None:
            history.append(stats)
            if verbose:
                line = "  ".join(
                    f"L{li}: "
                    + " ".join(
                        f"{s.kept_blocks[b].float().mean():.1f}/{int(s.visible_blocks[b, 0, 0])}" for b in range(B)
                    )
                    for li, s in enumerate(stats)
                )
                print(f"step {i + 1:3d}  len {caches[0].lengths.tolist()}  kept/visible blocks per seq  {line}")
    return torch.cat(out, 1), history


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--prompt-lengths", type=int, nargs="+", default=[150, 97])
    parser.add_argument("--selection-scale", type=float, default=32.0)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--no-rope", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the decode step (no per-step stats)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    model = TinyDashLM(layers=args.layers, use_rope=not args.no_rope, selection_scale=args.selection_scale)
    model = model.to(args.device).eval()
    g = torch.Generator().manual_seed(args.seed + 1)
    prompts = [torch.randint(0, 256, (n,), generator=g).tolist() for n in args.prompt_lengths]
    tokens, history = generate(model, prompts, args.new_tokens, args.block_size, compile_step=args.compile)
    print("generated:", tokens.tolist())
    return tokens, history


if __name__ == "__main__":
    main()
