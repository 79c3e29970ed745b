"""dash_attention inside torch.compile: no graph break, compiled == eager, bounded recompiles.

CPU: forward (FlexAttention has no CPU backward; the CPU autograd path is covered by the
eager suite and by a compiled backward through the dense path below). CUDA (`-m gpu`):
forward and backward through the compiled FlexAttention kernels.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounterWithBackend

from dash_flex import dash_attention, mods
from dash_flex.reference import dash_attention_reference

torch._dynamo.config.fail_on_recompile_limit_hit = True  # never fall back to eager flex silently


class TinyDashLayer(torch.nn.Module):
    """A minimal attention layer: projections, learnable pooling and a learnable relative bias."""

    def __init__(self, dim=64, q_heads=4, kv_heads=2, head_dim=16, block_size=16):
        super().__init__()
        self.q_heads, self.kv_heads, self.head_dim, self.block_size = q_heads, kv_heads, head_dim, block_size
        self.wq = torch.nn.Linear(dim, q_heads * head_dim, bias=False)
        self.wk = torch.nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.wv = torch.nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.wo = torch.nn.Linear(q_heads * head_dim, dim, bias=False)
        self.pool_query = torch.nn.Parameter(torch.randn(kv_heads, head_dim))
        self.rel_bias = torch.nn.Parameter(0.1 * torch.randn(q_heads, 128))

    def forward(self, x):
        B, S, _ = x.shape
        q = self.wq(x).view(B, S, self.q_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
        score_mod = mods.compose_score_mods(
            mods.generate_tanh_softcap(10.0), mods.generate_relative_bias(self.rel_bias)
        )
        out = dash_attention(q, k, v, block_size=self.block_size, pool_query=self.pool_query, score_mod=score_mod)
        return self.wo(out.transpose(1, 2).reshape(B, S, -1))


def _layer_and_input(S, device="cpu", seed=0):
    torch.manual_seed(seed)
    layer = TinyDashLayer().to(device)
    x = 2 * torch.randn(2, S, 64, device=device)
    return layer, x


def test_layer_compiles_without_graph_breaks_cpu():
    layer, x = _layer_and_input(200)
    with torch.no_grad():
        explanation = torch._dynamo.explain(layer)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compiled_equals_eager_cpu_forward():
    """Inductor's FlexAttention uses the BlockMask's block tables; eager flex uses only mask_mod.
    Agreement checks that the tables list every tile the per-query selection needs."""
    torch._dynamo.reset()
    layer, x = _layer_and_input(300, seed=1)
    with torch.no_grad():
        eager = layer(x)
        compiled = torch.compile(layer, fullgraph=True, dynamic=False)(x)
    torch.testing.assert_close(compiled, eager, atol=2e-5, rtol=2e-5)


def test_compiled_dense_backward_cpu_matches_eager():
    torch._dynamo.reset()
    layer, x = _layer_and_input(96, seed=2)
    eager_out = layer(x)
    eager_grads = torch.autograd.grad(eager_out.square().sum(), list(layer.parameters()))
    compiled = torch.compile(layer, fullgraph=True, dynamic=False)
    out = compiled(x)
    grads = torch.autograd.grad(out.square().sum(), list(layer.parameters()))
    torch.testing.assert_close(out, eager_out, atol=2e-5, rtol=2e-5)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)
    assert layer.pool_query.grad is None and grads[4].abs().sum() > 0  # pool_query gets a gradient


def test_recompiles_are_bounded_across_sequence_lengths():
    """Stated bound: with ``dynamic=False`` every new (Sq, Skv) compiles exactly once (the block
    tables' shapes depend on it); repeating a length never recompiles."""
    torch._dynamo.reset()
    layer, _ = _layer_and_input(64)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(layer, backend=counter, fullgraph=True, dynamic=False)
    lengths = [64, 100, 160, 257]
    with torch.no_grad():
        for S in lengths + lengths:
            compiled(torch.randn(1, S, 64))
    assert counter.frame_count == len(lengths)


def test_compiled_matches_reference_cpu():
    torch._dynamo.reset()
    torch.manual_seed(3)
    q, k, v = 2 * torch.randn(1, 4, 150, 32), 2 * torch.randn(1, 2, 150, 32), torch.randn(1, 2, 150, 32)
    mask_mod = mods.generate_sliding_window(90)
    fn = torch.compile(lambda q, k, v: dash_attention(q, k, v, block_size=16, mask_mod=mask_mod), fullgraph=True)
    with torch.no_grad():
        out = fn(q, k, v)
    ref = dash_attention_reference(q, k, v, block_size=16, mask_mod=mask_mod)
    assert float((out.double() - ref).norm() / ref.norm()) < 1e-4


# ----------------------------------------------------------------------------- CUDA
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@gpu
def test_layer_compiles_forward_backward_cuda():
    torch._dynamo.reset()
    layer, x = _layer_and_input(1000, device="cuda", seed=4)
    explanation = torch._dynamo.explain(layer)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(layer, fullgraph=True, dynamic=False)
    out = compiled(x)
    grads = torch.autograd.grad(out.square().sum(), list(layer.parameters()))
    eager = layer(x)
    eager_grads = torch.autograd.grad(eager.square().sum(), list(layer.parameters()))
    torch.testing.assert_close(out, eager, atol=1e-3, rtol=1e-3)
    for g, e in zip(grads, eager_grads):
        assert math.isfinite(float(g.norm()))
        assert float((g - e).norm() / e.norm()) < 5e-3
