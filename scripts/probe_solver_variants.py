"""The inference coarse launch with variants of the entmax solver's Newton step, against the shipped
kernels (GPU). The ``rsqrt_step`` variant below landed in session 16 (run 85 measured it here, at
commit 717a820); at later commits its edits no longer apply and the script says so: add new
variants to ``EDITS`` to measure them.

    PYTHONPATH=. python scripts/probe_solver_variants.py [--seq 32768 131072]

Variants are copies of ``custom_ops/entmax/triton_kernels.py`` (and of
``custom_ops/coarse_selection/split_kernels.py``, importing the copy) written beside the originals,
with one change each:

* ``rsqrt_step``: the α = 1.5 Newton increment through two reciprocal square roots
  (``rsqrt.approx``: ``mass^(-1/2)``, and ``slope^(-1/2)`` squared for the division) instead of
  ``1 / sqrt`` and ``/`` (``sqrt.approx`` and two ``div.full``): the loop at 512 blocks goes from
  117 to 104 instructions (sm_90 SASS, Triton 3.9 here).

Times ``coarse_selection_rows_launch(..., tails=True)`` (score GEMM + grouped entmax over the query
chunks) on the attention benchmark's inputs, interleaved twice, and prints each variant's largest
difference from the shipped p̄.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch
import triton

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_attention import BS, topic_inputs  # noqa: E402

from custom_ops.block_summary import block_summaries  # noqa: E402
from custom_ops.coarse_selection import split_kernels  # noqa: E402

EDITS = {
    "rsqrt_step": [
        ("        root = 1.0 / tl.sqrt(safe)\n", "        root = tl.math.rsqrt(safe)\n"),
        (
            "    step = mass * (1.0 - root) / tl.where(slope > 0, slope, 1.0)\n",
            "    inv = tl.math.rsqrt(tl.where(slope > 0, slope, 1.0))\n    step = mass * (1.0 - root) * inv * inv\n",
        ),
    ],
}
IMPORT = "from ..entmax.triton_kernels import"


def variant(name: str):
    """The coarse kernels' module compiled against an entmax module with ``EDITS[name]``."""
    source = (ROOT / "custom_ops/entmax/triton_kernels.py").read_text()
    for old, new in EDITS[name]:
        if source.count(old) != 1:
            raise RuntimeError(f"{name}: expected {old!r} once")
        source = source.replace(old, new)
    (ROOT / f"custom_ops/entmax/_probe_{name}.py").write_text(source)
    coarse = (ROOT / "custom_ops/coarse_selection/split_kernels.py").read_text()
    if coarse.count(IMPORT) != 1:
        raise RuntimeError(f"expected {IMPORT!r} once in split_kernels.py")
    (ROOT / f"custom_ops/coarse_selection/_probe_{name}.py").write_text(
        coarse.replace(IMPORT, f"from ..entmax._probe_{name} import")
    )
    return importlib.import_module(f"custom_ops.coarse_selection._probe_{name}")


def study(S: int, modules: dict) -> None:
    q, k, _ = topic_inputs(S)
    k_bar = block_summaries(k, None, BS)
    launches = {
        name: (lambda m=m: m.coarse_selection_rows_launch(q, k_bar, 1.5, 1.0, True, S, BS, tails=True)[0])
        for name, m in modules.items()
    }
    want = launches["shipped"]()
    for name, launch in launches.items():
        err = (launch() - want).abs().max().item()
        print(f"S={S}: {name}: max |p̄ - p̄(shipped)| {err:.2e}", flush=True)
    for repeat in range(2):
        for name, launch in launches.items():
            ms = triton.testing.do_bench(launch, warmup=3, rep=200)
            print(f"S={S} pass {repeat}: {name}: {ms:.3f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="+", default=[32768, 131072])
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), flush=True)
    try:
        modules = {"shipped": split_kernels, **{name: variant(name) for name in EDITS}}
        for S in args.seq:
            study(S, modules)
            torch.cuda.empty_cache()
    finally:
        for name in EDITS:
            (ROOT / f"custom_ops/entmax/_probe_{name}.py").unlink(missing_ok=True)
            (ROOT / f"custom_ops/coarse_selection/_probe_{name}.py").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
