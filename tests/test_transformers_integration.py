"""`attn_implementation="dash"` in a tiny, locally built Llama (random weights, nothing downloaded)."""

from __future__ import annotations

import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb  # noqa: E402

from dash_flex import dash_attention  # noqa: E402
from dash_flex.integrations.transformers import add_pool_queries, register_dash_attention  # noqa: E402
from dash_flex.topk import topk_attention  # noqa: E402

BLOCK = 16


def tiny_llama(attn_implementation: str, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        attn_implementation=attn_implementation,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_dash_attention("dash", block_size=BLOCK)
    register_dash_attention("dash_one_block", block_size=128)  # one block ≥ S: dense causal
    register_dash_attention("dash_topk", selector="topk", top_k=2, block_size=BLOCK)


def _ids(seed: int, B: int = 2, S: int = 96) -> torch.Tensor:
    return torch.randint(0, 97, (B, S), generator=torch.Generator().manual_seed(seed))


def test_layer_output_equals_dash_attention_on_the_same_qkv():
    """Capture the attention output (o_proj's input) of layer 1 and recompute it with
    dash_attention on q/k/v rebuilt from the layer's own projections and rotary embedding."""
    model = tiny_llama("dash")
    add_pool_queries(model)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2 and p.shape[-1] == 16:  # the pooling vectors: make them non-trivial
                p.normal_()
    attn = model.model.layers[1].self_attn
    captured = {}
    attn.register_forward_pre_hook(lambda m, args, kwargs: captured.update(kwargs), with_kwargs=True)
    attn.o_proj.register_forward_pre_hook(lambda m, args: captured.update(out=args[0]))
    with torch.no_grad():
        model(_ids(1))
        h = captured["hidden_states"]
        B, S, _ = h.shape
        q = attn.q_proj(h).view(B, S, 4, 16).transpose(1, 2)
        k = attn.k_proj(h).view(B, S, 2, 16).transpose(1, 2)
        v = attn.v_proj(h).view(B, S, 2, 16).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *captured["position_embeddings"])
        ref = dash_attention(q, k, v, block_size=BLOCK, scale=attn.scaling, pool_query=attn.dash_pool_query)
    torch.testing.assert_close(captured["out"], ref.transpose(1, 2).reshape(B, S, -1), atol=1e-5, rtol=1e-5)


def test_forward_backward_reaches_every_parameter():
    model = tiny_llama("dash").train()
    assert add_pool_queries(model) == 2
    ids = _ids(2)
    loss = model(ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    pools = [m.dash_pool_query for m in model.modules() if hasattr(m, "dash_pool_query")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pools)  # through entmax and the prior
    q_grad = model.model.layers[0].self_attn.q_proj.weight.grad
    assert q_grad is not None and torch.isfinite(q_grad).all() and q_grad.abs().sum() > 0


def test_one_block_equals_sdpa_model_with_left_padding():
    """With one block covering the sequence only forced blocks exist, so DashAttention is dense
    causal attention: the model must match the SDPA model (same weights), padding mask included."""
    dense = tiny_llama("sdpa", seed=3)
    dash = tiny_llama("dash_one_block", seed=3)
    dash.load_state_dict(dense.state_dict())
    ids = _ids(4, S=80)
    mask = torch.ones_like(ids)
    mask[1, :11] = 0  # left padding in the second sequence
    with torch.no_grad():
        ref = dense(ids, attention_mask=mask).logits
        out = dash(ids, attention_mask=mask).logits
    keep = mask.bool()
    torch.testing.assert_close(out[keep], ref[keep], atol=2e-5, rtol=2e-5)


def test_sparse_dash_differs_from_dense_and_topk_matches_its_function():
    """Block size 16 makes the selection bite (logits move away from dense); the top-k name runs
    topk_attention (checked through its output on layer 0's q/k/v via the registered function)."""
    dense, dash = tiny_llama("sdpa", seed=5), tiny_llama("dash", seed=5)
    dash.load_state_dict(dense.state_dict())
    ids = _ids(6)
    with torch.no_grad():
        assert (dash(ids).logits - dense(ids).logits).abs().max() > 1e-3
    fn = transformers.AttentionInterface._global_mapping["dash_topk"]
    g = torch.Generator().manual_seed(7)
    q, k, v = (
        torch.randn(1, 4, 96, 16, generator=g),
        torch.randn(1, 2, 96, 16, generator=g),
        torch.randn(1, 2, 96, 16, generator=g),
    )
    attn = dash.model.layers[0].self_attn
    out, weights = fn(attn, q, k, v, None, scaling=0.3)
    ref = topk_attention(q, k, v, top_k=2, block_size=BLOCK, scale=0.3)
    assert weights is None
    torch.testing.assert_close(out, ref.transpose(1, 2))


def test_clear_error_without_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(ImportError, match="transformers"):
        register_dash_attention("dash_missing")
