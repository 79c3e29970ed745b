"""The generation example runs, and its cached greedy decoding agrees with one uncached pass."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch


def _load_example():
    path = Path(__file__).parents[1] / "examples" / "generate.py"
    spec = importlib.util.spec_from_file_location("generate_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generate_example_matches_a_full_forward(capsys):
    example = _load_example()
    new, prompts_len, bs = 6, [139, 93], 16  # 139 + 4 completes a block at step 5
    tokens, history = example.main(["--new-tokens", str(new), "--prompt-lengths", *map(str, prompts_len)])
    printed = capsys.readouterr().out
    assert tokens.shape == (2, new) and len(history) == new - 1
    assert printed.count("kept/visible blocks") == new - 1 and "generated:" in printed

    for step, per_layer in enumerate(history, start=1):
        assert len(per_layer) == 2
        for stats in per_layer:
            visible = torch.tensor([(n + step - 1) // bs + 1 for n in prompts_len])  # query at n + step - 1
            torch.testing.assert_close(stats.visible_blocks[:, 0, 0], visible)
            assert (stats.kept_blocks >= 1).all() and (stats.kept_blocks <= stats.visible_blocks).all()
    sparse = sum(float((s.kept_blocks < s.visible_blocks).float().mean()) for h in history for s in h)
    assert sparse > 0, "with the example's selection scale some queries must skip blocks"

    # Rebuild the same model and run prompt + generated tokens as one right-padded chunk: the
    # greedy choice at every position must be the token the cached decoding produced.
    torch.manual_seed(0)
    model = example.TinyDashLM(selection_scale=32.0).eval()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 256, (n,), generator=g) for n in prompts_len]
    full = [torch.cat([p, tokens[b, :-1]]) for b, p in enumerate(prompts)]
    lengths = torch.tensor([len(f) for f in full])
    batch = torch.zeros(2, int(lengths.max()), dtype=torch.long)
    for b, f in enumerate(full):
        batch[b, : len(f)] = f
    caches = model.new_caches(2, 256, bs)
    with torch.no_grad():
        logits = model(batch, caches, lengths)
    for b, n in enumerate(prompts_len):
        greedy = logits[b, n - 1 : n - 1 + new].argmax(-1)
        assert torch.equal(greedy, tokens[b]), f"sequence {b}: {greedy.tolist()} != {tokens[b].tolist()}"
