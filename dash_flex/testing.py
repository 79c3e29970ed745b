"""Hypothesis strategies for fuzzing DashAttention and layers built on it.

Every strategy is keyword-only and takes plain values or strategies for its knobs (in the
style of ``hypothesis.extra.numpy``). Tensors are built from a drawn seed, so a failing
example replays exactly; sizes come from small sets so compile caches stay warm.

    from hypothesis import given
    from dash_flex import testing as dt

    @given(args=dt.dash_attention_args())
    def test_my_property(args):
        out = dash_attention(*args.tensors, **args.kwargs)

Profiles: ``dash_flex-ci`` (few examples, no deadline) and ``dash_flex-nightly`` (many);
:func:`register_profiles` registers both, and ``HYPOTHESIS_PROFILE`` picks one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from . import mods

__all__ = [
    "AttentionShape",
    "DashArgs",
    "attention_shapes",
    "attention_tensors",
    "entmax_inputs",
    "score_mods",
    "mask_mods",
    "dash_attention_args",
    "register_profiles",
    "CI_PROFILE",
    "NIGHTLY_PROFILE",
]

CI_PROFILE, NIGHTLY_PROFILE = "dash_flex-ci", "dash_flex-nightly"


def _strategy(value: Any) -> SearchStrategy:
    return value if isinstance(value, SearchStrategy) else st.just(value)


def register_profiles(load: bool = True) -> None:
    """Register the CI and nightly profiles; load the one named by ``HYPOTHESIS_PROFILE``
    (default: CI) when ``load`` is true."""
    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile(CI_PROFILE, max_examples=12, derandomize=True, **common)
    settings.register_profile(NIGHTLY_PROFILE, max_examples=200, **common)
    if load:
        settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", CI_PROFILE))


# ----------------------------------------------------------------------------- shapes and tensors
@dataclass(frozen=True)
class AttentionShape:
    batch: int
    q_heads: int
    kv_heads: int
    q_len: int
    kv_len: int
    head_dim: int
    block_size: int
    causal: bool


@st.composite
def attention_shapes(
    draw,
    *,
    batch=st.sampled_from([1, 2]),
    kv_heads=st.sampled_from([1, 2]),
    group_size=st.sampled_from([1, 2, 4]),
    kv_len=st.sampled_from([48, 64, 100, 130, 256]),
    q_len=None,
    head_dim=st.sampled_from([16, 32]),
    block_size=st.sampled_from([16, 32, 64]),
    causal=st.booleans(),
) -> AttentionShape:
    """Shapes of a DashAttention call. ``q_len=None`` draws ``kv_len`` (prefill), 1 (decode) or a
    shorter chunk (chunked prefill) under causal, and ``kv_len`` or a different length otherwise."""
    Hkv, G = draw(_strategy(kv_heads)), draw(_strategy(group_size))
    Skv, is_causal = draw(_strategy(kv_len)), draw(_strategy(causal))
    if q_len is None:
        Sq = draw(st.sampled_from([Skv, Skv, 1, max(1, Skv // 3)] if is_causal else [Skv, 37]))
    else:
        Sq = draw(_strategy(q_len))
        if is_causal and Sq > Skv:
            Sq = Skv
    return AttentionShape(
        draw(_strategy(batch)), G * Hkv, Hkv, Sq, Skv, draw(_strategy(head_dim)), draw(_strategy(block_size)), is_causal
    )


def attention_tensors(shape: AttentionShape, seed: int, *, dtype=torch.float32, device="cpu", spread: float = 2.0):
    """``q, k, v, pool_query`` for ``shape`` from ``seed`` (standard normal, q and k scaled by
    ``spread`` so that the coarse stage makes real choices)."""
    g = torch.Generator().manual_seed(seed)
    q = spread * torch.randn(shape.batch, shape.q_heads, shape.q_len, shape.head_dim, generator=g)
    k = spread * torch.randn(shape.batch, shape.kv_heads, shape.kv_len, shape.head_dim, generator=g)
    v = torch.randn(shape.batch, shape.kv_heads, shape.kv_len, shape.head_dim, generator=g)
    u = torch.randn(shape.kv_heads, shape.head_dim, generator=g)
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v)) + (u.to(device),)


# ----------------------------------------------------------------------------- entmax inputs
@st.composite
def entmax_inputs(
    draw,
    *,
    rows=st.sampled_from([1, 3, 8]),
    length=st.sampled_from([1, 2, 5, 16, 64, 130]),
    scale=st.sampled_from([0.1, 1.0, 10.0, 1e4]),
    masked=st.booleans(),
    ties=st.booleans(),
    dtype=torch.float64,
) -> torch.Tensor:
    """A ``[rows, length]`` score tensor from a drawn seed: Gaussian × ``scale``, optionally with
    ``-inf`` (masked) entries (never a whole row unless ``length == 1``) and repeated values."""
    n_rows, n = draw(_strategy(rows)), draw(_strategy(length))
    seed, s = draw(st.integers(0, 2**31 - 1)), draw(_strategy(scale))
    g = torch.Generator().manual_seed(seed)
    x = s * torch.randn(n_rows, n, generator=g, dtype=torch.float64)
    if draw(_strategy(ties)) and n > 1:
        x[:, n // 2 :] = x[:, : n - n // 2].clone()  # the second half repeats the first
    if draw(_strategy(masked)) and n > 1:
        drop = torch.rand(n_rows, n, generator=g) < 0.3
        drop[:, 0] = False
        x = x.masked_fill(drop, -math.inf)
    return x.to(draw(_strategy(dtype)))


# ----------------------------------------------------------------------------- mods
def score_mods(*, num_heads: int, include_none: bool = True) -> SearchStrategy:
    """Named score_mods from :mod:`dash_flex.mods`: soft-capping, ALiBi, a relative bias (its
    table does not require grad here), or none. Each draw is ``(name, score_mod)``."""
    options = [
        st.sampled_from([5.0, 30.0]).map(lambda cap: (f"tanh_softcap({cap})", mods.generate_tanh_softcap(cap))),
        st.just(("alibi", mods.generate_alibi_bias(num_heads))),
        st.integers(0, 2**31 - 1).map(
            lambda seed: (
                "relative_bias",
                mods.generate_relative_bias(
                    0.2 * torch.randn(num_heads, 64, generator=torch.Generator().manual_seed(seed))
                ),
            )
        ),
    ]
    if include_none:
        options.append(st.just(("none", None)))
    return st.one_of(*options)


def mask_mods(*, kv_len: int, batch: int = 1, q_offset: int = 0, include_none: bool = True) -> SearchStrategy:
    """Named mask_mods: sliding window, document mask (packed sequences), right padding, or none.
    Each draw is ``(name, mask_mod)``."""
    options = [
        st.sampled_from([16, 50, 100]).map(
            lambda w: (f"sliding_window({w})", mods.generate_sliding_window(w, q_offset))
        ),
        st.lists(st.integers(1, kv_len), min_size=1, max_size=3).map(
            lambda cuts: ("document", mods.generate_document_mask(_document_ids(kv_len, cuts), q_offset))
        ),
        st.lists(st.integers(0, kv_len), min_size=batch, max_size=batch).map(
            lambda lengths: ("padding", mods.generate_padding_mask(torch.tensor(lengths)))
        ),
    ]
    if include_none:
        options.append(st.just(("none", None)))
    return st.one_of(*options)


def _document_ids(n: int, cuts: list[int]) -> torch.Tensor:
    boundaries = torch.zeros(n, dtype=torch.int64)
    for c in sorted(set(cuts)):
        if c < n:
            boundaries[c] = 1
    return boundaries.cumsum(0)


# ----------------------------------------------------------------------------- full argument sets
@dataclass
class DashArgs:
    """A drawn ``dash_attention`` call: ``dash_attention(*args.tensors, **args.kwargs)``."""

    shape: AttentionShape
    seed: int
    tensors: tuple
    kwargs: dict = field(default_factory=dict)
    score_mod_name: str = "none"
    mask_mod_name: str = "none"

    def __repr__(self) -> str:  # short, for hypothesis' falsifying-example report
        kw = {k: v for k, v in self.kwargs.items() if k not in ("score_mod", "mask_mod", "pool_query")}
        return (
            f"DashArgs({self.shape}, seed={self.seed}, score_mod={self.score_mod_name}, "
            f"mask_mod={self.mask_mod_name}, {kw})"
        )


@st.composite
def dash_attention_args(
    draw,
    *,
    shapes=None,
    alpha=st.sampled_from([1.25, 1.5, 2.0]),
    sigma=st.sampled_from([1.0, 0.5, math.inf]),
    selection_scale=st.sampled_from([1.0, 3.0]),
    share_kv_groups=st.booleans(),
    with_pool_query=st.booleans(),
    with_score_mod=st.booleans(),
    with_mask_mod=st.booleans(),
    dtype=torch.float32,
    device="cpu",
) -> DashArgs:
    """A complete, valid set of ``dash_attention`` arguments (tensors built from a drawn seed)."""
    shape = draw(shapes if shapes is not None else attention_shapes())
    seed = draw(st.integers(0, 2**31 - 1))
    q, k, v, u = attention_tensors(shape, seed, dtype=draw(_strategy(dtype)), device=device)
    kwargs = dict(
        alpha=draw(_strategy(alpha)),
        block_size=shape.block_size,
        causal=shape.causal,
        sigma=draw(_strategy(sigma)),
        selection_scale=draw(_strategy(selection_scale)),
        share_kv_groups=draw(_strategy(share_kv_groups)),
        pool_query=u if draw(_strategy(with_pool_query)) else None,
    )
    score_name, mask_name = "none", "none"
    if draw(_strategy(with_score_mod)):
        score_name, kwargs["score_mod"] = draw(score_mods(num_heads=shape.q_heads, include_none=False))
    if draw(_strategy(with_mask_mod)):
        offset = shape.kv_len - shape.q_len if shape.causal else 0
        mask_name, kwargs["mask_mod"] = draw(
            mask_mods(kv_len=shape.kv_len, batch=shape.batch, q_offset=offset, include_none=False)
        )
    return DashArgs(shape, seed, (q, k, v), kwargs, score_name, mask_name)
