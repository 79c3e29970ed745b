"""experiments/retrieval.py: the task generator, the sparsity bookkeeping, and the --smoke run."""

from __future__ import annotations

import json
import math

import torch

from dash_flex.topk import topk_select
from experiments import retrieval as R


def test_batches_plant_retrievable_pairs():
    cfg = R.smoke_config()
    r, n_keys_end = cfg.pair_repeats, cfg.n_filler + cfg.n_keys
    for S in (cfg.seq_len, cfg.curriculum[0][0]):  # the target length and a curriculum stage
        ids, targets = R.make_batch(cfg, 3, torch.Generator().manual_seed(0), S)
        Q, bs = cfg.n_queries, cfg.block_size
        assert ids.shape == targets.shape == (3, S)
        assert (targets[:, : S - Q] == -100).all() and (targets[:, S - Q :] >= n_keys_end).all()
        for b in range(3):
            context, queries = ids[b, : S - Q], ids[b, S - Q :]
            key_pos = ((context >= cfg.n_filler) & (context < n_keys_end)).nonzero()[:, 0]
            assert len(key_pos) == cfg.n_pairs * r and torch.equal(key_pos // bs, (key_pos + 1) // bs)  # never split
            assert len(set(queries.tolist())) == Q  # each planted key asked at most once
            for t in range(S - Q, S):  # the answer follows every planted copy of the query key
                (pos,) = (context[key_pos] == ids[b, t]).nonzero(as_tuple=True)
                assert len(pos) == r and (pos.diff() == 1).all()  # r copies, one chunk "k v k v …"
                assert len(set((key_pos[pos] // bs).tolist())) == 1  # inside one block
                assert (context[key_pos[pos] + 1] == targets[b, t]).all()


def test_in_graph_sparsity_equals_dash_selection_sparsity():
    """The per-step statistic the controller uses must be DashSelection.sparsity()'s token sparsity."""
    cfg = R.smoke_config()
    torch.manual_seed(0)
    model = R.TinyLM(cfg, "dash")
    model.blocks[0].attn.selection_scale.fill_(200.0)  # sharp entmax: real sparsity at init
    ids, _ = R.make_batch(cfg, 2, torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, stats = model(ids)
        block = model.blocks[0]
        x = model.embed(ids) + model.embed_prev(torch.nn.functional.pad(ids[:, :-1], (1, 0)))
        _, sel = block.attn(block.norm1(x), return_selection=True)
    measured, _ = R._sparsity(cfg, stats)
    assert 0.05 < measured < 0.95
    assert math.isclose(measured, sel.sparsity().token_sparsity, rel_tol=1e-6)


def test_topk_sparsity_formula_and_matching():
    cfg = R.smoke_config()
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(1, 2, cfg.seq_len, 32, generator=g), torch.randn(1, 1, cfg.seq_len, 32, generator=g)
    for top_k in (1, 3, 7):
        sel = topk_select(q, k, top_k=top_k, block_size=cfg.block_size)
        assert math.isclose(R.topk_sparsity(cfg, top_k)[0], sel.sparsity().token_sparsity, rel_tol=1e-9)
    assert R.matched_top_k(cfg, R.topk_sparsity(cfg, 3)[0] + 0.005) == 3


def test_smoke_run_writes_table_and_figures(tmp_path):
    results = R.main(["--smoke", "--device", "cpu", "--out", str(tmp_path)])
    assert [r.selector for r in results] == ["dense", "dash", "topk"]
    dash, topk = results[1], results[2]
    assert topk.top_k == R.matched_top_k(R.smoke_config(), dash.sparsity)
    assert math.isclose(topk.sparsity, R.topk_sparsity(R.smoke_config(), topk.top_k)[0], rel_tol=1e-6)
    assert results[0].sparsity == 0.0 and 0.0 < dash.sparsity < 1.0
    assert all(math.isfinite(r.final_loss) and 0.0 <= r.accuracy <= 1.0 for r in results)
    for name in ("results_table.md", "results.json", "accuracy_vs_sparsity.png", "non_dispersion.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    table = (tmp_path / "results_table.md").read_text()
    assert "| dense |" in table and f"| {topk.name} |" in table and "target 75%" in table
    curves = json.loads((tmp_path / "non_dispersion.json").read_text())
    entmax_curve, softmax_curve = curves.values()
    assert entmax_curve[-1][1] > softmax_curve[-1][1]  # the needle keeps more attention with α = 1.5
