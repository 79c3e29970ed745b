"""The main job: DashAttention on a synthetic long context where a few blocks matter.

    python -m dash_flex.demo [--seq-len N] [--out demo_selection.png]

Keys are noise except a few "topic" blocks scattered through the context; each query carries
one topic. DashAttention should keep the blocks of the query's topic (plus its own block) and
skip the rest. The demo prints the blocks kept by a few queries, the two sparsity measures, the
error of the fast path against the float64 reference and how far DashAttention is from dense
attention, then draws the selection pattern.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from . import dash_attention
from .reference import dash_attention_reference


def make_topic_context(B, Hq, Hkv, S, D, block_size, n_topics=4, blocks_per_topic=3, seed=0, device="cpu"):
    """q, k, v where block c carries topic T(c) for a few blocks; query t asks for topic t mod n_topics."""
    g = torch.Generator().manual_seed(seed)
    nb = -(-S // block_size)
    topics = torch.randn(n_topics, D, generator=g)
    topics = topics / topics.norm(dim=-1, keepdim=True) * math.sqrt(D)
    k = 0.5 * torch.randn(B, Hkv, S, D, generator=g)
    block_topic = torch.full((nb,), -1)
    candidates = torch.randperm(nb - 1, generator=g)[: n_topics * blocks_per_topic]
    for j, c in enumerate(candidates.tolist()):
        block_topic[c] = j % n_topics
        k[:, :, c * block_size : (c + 1) * block_size] += topics[j % n_topics]
    query_topic = (torch.arange(S) // 256) % n_topics  # topics change every 256 queries
    q = 0.5 * torch.randn(B, Hq, S, D, generator=g) + 1.5 * topics[query_topic]
    v = torch.randn(B, Hkv, S, D, generator=g)
    return q.to(device), k.to(device), v.to(device), block_topic, query_topic


def draw_selection(sel, block_topic, query_topic, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = sel.probs[0, 0].float().cpu()  # [Sq, nb] for the first KV group
    active = sel.active_blocks[0, 0].cpu()
    forced = sel.forced_blocks[0, 0].cpu()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    extent = (0, probs.shape[0], 0, probs.shape[1])
    axes[0].imshow(
        forced.T.float().masked_fill(~forced.T, float("nan")).numpy(),
        aspect="auto",
        origin="lower",
        cmap="Greys",
        vmin=0,
        vmax=2,
        interpolation="nearest",
        extent=extent,
    )
    kept = probs.masked_fill(~(active & ~forced), float("nan"))
    im = axes[0].imshow(
        kept.T.numpy(),
        aspect="auto",
        origin="lower",
        cmap="viridis",
        vmin=0,
        vmax=1,
        interpolation="nearest",
        extent=extent,
    )
    topic_rows = [c for c, t in enumerate(block_topic.tolist()) if t >= 0]
    axes[0].set_yticks(
        [c + 0.5 for c in topic_rows], [f"{c} (topic {int(block_topic[c])})" for c in topic_rows], fontsize=6
    )
    axes[0].set_xlabel("query position (its topic changes every 256 queries)")
    axes[0].set_ylabel("key block")
    axes[0].set_title("selected blocks coloured by p̄; grey = forced own block; white = skipped")
    fig.colorbar(im, ax=axes[0], label="entmax probability p̄")
    n_keep = active.sum(-1)
    axes[1].plot(n_keep.numpy(), lw=0.6, label="kept + forced blocks")
    axes[1].plot(
        (torch.arange(len(n_keep)) // sel.shapes.block_size + 1).numpy(), lw=0.8, ls="--", label="causal dense blocks"
    )
    axes[1].set_xlabel("query position")
    axes[1].set_ylabel("blocks attended")
    axes[1].legend()
    axes[1].set_title("blocks per query")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=None, help="default: 2048 on CPU, 16384 on a GPU")
    parser.add_argument("--out", default="demo_selection.png")
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    S = args.seq_len or (16384 if device == "cuda" else 2048)
    B, Hq, Hkv, D, bs = 1, 4, 2, 64, 64
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q, k, v, block_topic, query_topic = make_topic_context(B, Hq, Hkv, S, D, bs, device=device)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    print(
        f"dash_flex demo on {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}): "
        f"B={B} Hq={Hq} Hkv={Hkv} S={S} D={D} block={bs} {str(dtype).replace('torch.', '')}"
    )
    print(f"topic blocks (block: topic): {dict((c, int(t)) for c, t in enumerate(block_topic.tolist()) if t >= 0)}")

    t0 = time.perf_counter()
    with torch.no_grad():
        out, sel = dash_attention(q, k, v, alpha=1.5, block_size=bs, return_selection=True)
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"dash_attention: {1e3 * (time.perf_counter() - t0):.0f} ms (first call, includes compilation)")

    for t in [S // 4 + 3, S // 2 + 1, S - 1]:
        kept = sel.active_blocks[0, 0, t].nonzero().flatten().tolist()
        probs = {c: round(float(sel.probs[0, 0, t, c]), 3) for c in kept if sel.probs[0, 0, t, c] > 0}
        print(f"  query {t:6d} (topic {int(query_topic[t])}): kept blocks {kept} (own block {t // bs}); p̄ = {probs}")
    report = sel.sparsity()
    print(f"sparsity: {report}")

    dense = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, enable_gqa=True)
    rel = lambda a, b: float((a.float() - b.float()).norm() / b.float().norm())  # noqa: E731
    print(f"relative distance to dense causal attention: {rel(out, dense):.3e}")
    if S <= 4096:
        ref = dash_attention_reference(q.cpu().double(), k.cpu().double(), v.cpu().double(), alpha=1.5, block_size=bs)
        print(f"fast path vs float64 reference: relative error {rel(out.cpu(), ref):.2e}")
    else:
        print("(float64 reference skipped above 4096 tokens: it is dense)")
    draw_selection(sel, block_topic, query_topic, args.out, f"DashAttention selection, S={S}, {report}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
