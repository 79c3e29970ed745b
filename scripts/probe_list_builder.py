"""The inference tile-list builder (``_tile_lists_and_bias_from_rows``) against another version of
``list_kernels.py`` (GPU): median time (``triton.testing.do_bench``, ms) of each, interleaved over
two passes, on the attention benchmark's p̄ rows (the whole call, unchunked), and how far their
bias rows differ on the listed slots.

    PYTHONPATH=. python scripts/probe_list_builder.py --against OLD_list_kernels.py [--seq 32768 131072]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_attention import BS, topic_inputs  # noqa: E402

from custom_ops.block_summary import block_summaries  # noqa: E402
from custom_ops.coarse_selection import coarse_selection_rows  # noqa: E402
from custom_ops.sparse_attention import list_kernels  # noqa: E402


def load_module(path: str):
    spec = importlib.util.spec_from_file_location("custom_ops.sparse_attention.list_kernels_against", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="+", default=[32768])
    parser.add_argument("--against", required=True)
    args = parser.parse_args()
    print(torch.cuda.get_device_name())
    builders = {"current": list_kernels, "against": load_module(args.against)}
    for S in args.seq:
        q, k, _ = topic_inputs(S)
        probs, mean_log = coarse_selection_rows(q, block_summaries(k, None, BS), 1.5, 1.0, True, S, BS)
        del q, k

        def build(name: str):
            return builders[name].tile_lists_and_bias_from_rows_launch(probs, mean_log, 1.0, True, S, BS, 32)

        lists, count, bias = build("current")
        lists_a, count_a, bias_a = build("against")
        listed = torch.arange(bias.shape[3], device=bias.device)[None, None, None, :] < count[..., None]
        finite = listed[..., None] & torch.isfinite(bias_a)
        err = torch.where(finite, bias - bias_a, 0.0).abs().amax().item()
        same_inf = torch.equal(torch.isinf(bias) & listed[..., None], torch.isinf(bias_a) & listed[..., None])
        print(f"S={S}: lists equal {torch.equal(lists, lists_a) and torch.equal(count, count_a)}, "
              f"-inf slots equal {same_inf}, max |Δbias| {err:.2e} (log2 units)", flush=True)  # fmt: skip
        del lists, count, bias, lists_a, count_a, bias_a, listed, finite
        for repeat in range(2):
            for name in builders:
                ms = triton.testing.do_bench(lambda: build(name), warmup=3, rep=200)
                print(f"S={S} pass {repeat}: {name}: {ms:.3f} ms", flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
