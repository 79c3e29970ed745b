"""The inference fine kernel's list loop under Triton's loop options, against the shipped kernel (GPU).

    PYTHONPATH=. python scripts/probe_fine_pipelining.py [--seq 32768 131072]

Variants are copies of ``custom_ops/sparse_attention/triton_kernels.py`` whose list loop (the
``for j in range(j0, j1)`` of ``_fwd_blocks``) becomes a ``tl.range`` with one option: Hopper's
automatic warp specialisation (``warp_specialize=True``; Triton 3.6 routes sm_90 to its Hopper
pass), or an unroll factor; or whose masked-tail walk (``_first_masked_entry``) is static; or
that rescales lazily. Each copy is written beside the original (so its imports resolve),
imported, timed on the attention benchmark's lists with their bias rows at the shipped launch
(32 rows × 4 heads, 2 stages), and checked against the shipped kernel (bitwise where the math is
the same). Median ms (``triton.testing.do_bench``), every candidate timed twice in turn.

Run 102 (session 19, H100 80GB HBM3, one process), 32K / 128K: shipped 4.565, 4.595 / 65.45,
67.13 ms; static walk 4.918, 4.911 / 72.02, 76.24 (bitwise the same; the device's compile: 0
spills against 44); lazy rescaling 5.366, 5.435 / 81.17, 80.34 (max |diff| 3.9e-3 in bf16).
Both are slower, so the shipped kernel keeps its ``while`` and its rescale at every block.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path

import torch
import triton

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "scripts"))
from bench_attention import BS  # noqa: E402
from probe_fine_descriptors import benchmark_lists  # noqa: E402
from profile_stages import print_kernel_resources  # noqa: E402

from custom_ops.sparse_attention import triton_kernels  # noqa: E402

LOOP = "for j in range(j0, j1):"
# _first_masked_entry's data-dependent walk back from the list's end, and a static walk of at most
# ⌈BLOCK_M / BLOCK_SIZE⌉ + 1 entries: exact for lists that end at the tile's causal reach (the
# benchmark's, built from p̄ rows), not for lists a caller's flags extend past it. Compiled for
# sm_90 with Triton 3.6 on the CPU (session 18): the shipped inference forward spills 180 B a
# thread, this static walk none (3.9: 84 B against none), though a variant that masks the load
# with `past` instead of selecting after it spills 176 B: at 255 registers ptxas's spills swing
# with small changes, so only the device's timing says whether this helps (run 102: it is 8-14%
# slower than the shipped kernel, spills or not; the docstring). The warp-specialised
# loop crashes at 4 warps either way
# ("Other parent ops are not supported" with the `while`, a dominance assertion without it) and
# compiles at 8 warps without a warp_specialize op (the pass returns unless num_warps is 4).
WALK = """    while last >= first_block:
        n_lead -= 1
        last = tl.load(LIST + list_row * stride_lh + (n_lead - 1) * stride_lt, mask=n_lead > 0, other=-1)
"""
STATIC_WALK = """    for _ in tl.static_range(BLOCK_M // BLOCK_SIZE + 2):
        past = last >= first_block
        n_lead -= past.to(tl.int32)
        last = tl.where(past, tl.load(LIST + list_row * stride_lh + (n_lead - 1) * stride_lt, mask=n_lead > 0,
                                      other=-1), -1)
"""
# Lazy rescaling: the running max moves (and acc, l are rescaled) only when some row of the tile
# would grow by more than 2⁸ (log2 units); otherwise p = 2^(s − stale max) ≤ 2⁸, exact in the
# same math and far from fp32 / bf16 range limits. Saves the [rows, Dv] multiply of acc on most
# blocks for one tile-wide max (a cross-warp reduction) a block. Session 11 measured a first form
# slower (H200, 32K: 6.51 against 5.41 ms, docs/design.md); this one, compiled for sm_90 with
# Triton 3.6 on the CPU (session 19), spills 36 B against the shipped 180 B, but ptxas warns that
# the P·V wgmma is serialised ("non wgmma instructions defining accumulator registers": the
# multiply of acc inside the branch), which the shipped kernel's compile does not. Run 102: 18-21%
# slower than the shipped kernel (the docstring).
LAZY_RESCALE = [
    (
        """    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that keep nothing so far: no NaN
    rescale = tl.exp2(m_i - m_safe)
""",
        """    grow = tl.max(tl.where(m_new > m_i, m_new - m_i, 0.0), axis=0)
    if grow > 8.0:
        rescale = tl.exp2(m_i - tl.where(m_new == float("-inf"), 0.0, m_new))
        acc = acc * rescale[:, None]
        l_i = l_i * rescale
        m_i = m_new
    m_safe = tl.where(m_i == float("-inf"), 0.0, m_i)  # rows that keep nothing so far: no NaN
""",
    ),
    ("    l_i = l_i * rescale + tl.sum(p, axis=1)\n", "    l_i = l_i + tl.sum(p, axis=1)\n"),
    (
        """        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
    else:
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i""",
        """        acc = tl.dot(p.to(v.dtype), v, acc, input_precision="ieee")
    else:
        acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, m_i, l_i""",
    ),
]
VARIANTS = {
    "warp_specialize": [(LOOP, "for j in tl.range(j0, j1, warp_specialize=True):")],
    "unroll2": [(LOOP, "for j in tl.range(j0, j1, loop_unroll_factor=2):")],
    "static_walk": [(WALK, STATIC_WALK)],
    "lazy_rescale": LAZY_RESCALE,
    "static_walk_lazy": [(WALK, STATIC_WALK), *LAZY_RESCALE],
}
# (variant, warps): None is the shipped kernel
CANDIDATES = [(None, 4), ("static_walk", 4), ("lazy_rescale", 4)]


def variant_module(name: str):
    source = (ROOT / "custom_ops/sparse_attention/triton_kernels.py").read_text()
    for old, new in VARIANTS[name]:
        if source.count(old) != 1:
            raise RuntimeError(f"expected one {old!r} in triton_kernels.py")
        source = source.replace(old, new)
    path = ROOT / f"custom_ops/sparse_attention/_probe_{name}.py"
    path.write_text(source)
    return importlib.import_module(f"custom_ops.sparse_attention._probe_{name}")


def study(S: int, modules: dict) -> None:
    q, k, v, lists = benchmark_lists(S)
    scale = 1 / math.sqrt(q.shape[-1])

    def launch(cand):
        module = modules[cand[0]]
        return module.sparse_attention_rows_launch(q, k, v, *lists, True, scale, BS, 32, cand[1], 2, pack=4)

    want = launch(CANDIDATES[0])
    listed = int(lists[1].sum())
    flops = listed * 32 * 4 * BS * q.shape[-1] * 4
    print(f"S={S}: {listed} listed (tile, block) pairs, {flops / 1e12:.2f} TFLOP", flush=True)
    ok = [CANDIDATES[0]]
    for cand in CANDIDATES[1:]:
        try:
            got = launch(cand)
            torch.cuda.synchronize()
            same = torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
            err = float((got[0].float() - want[0].float()).abs().max())
            print(f"S={S}: {cand}: bitwise the shipped kernel's: {same} (max |diff| {err:.2e})", flush=True)
            ok.append(cand)
        except Exception as exc:  # a variant the compiler or the card refuses: say so, go on
            print(f"S={S}: {cand}: failed: {exc!r:.300}", flush=True)
    times = {c: [] for c in ok}
    for _ in range(2):
        for cand in ok:
            times[cand].append(triton.testing.do_bench(lambda c=cand: launch(c), warmup=10, rep=100,
                                                       return_mode="median"))  # fmt: skip
    for cand, ms in times.items():
        rate = ", ".join(f"{flops / (t * 1e-3) / 1e12:.0f}" for t in ms)
        print(f"S={S}: {cand[0] or 'shipped'} warps={cand[1]}: " + ", ".join(f"{t:.3f}" for t in ms)
              + f" ms ({rate} TFLOP/s)", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="*", default=[32768, 131072])
    args = parser.parse_args()
    modules = {None: triton_kernels}
    try:
        for name in VARIANTS:
            modules[name] = variant_module(name)
        for S in args.seq:
            study(S, modules)
            torch.cuda.empty_cache()
    finally:
        for name in VARIANTS:
            (ROOT / f"custom_ops/sparse_attention/_probe_{name}.py").unlink(missing_ok=True)
    for name, module in modules.items():
        print(f"-- {name or 'shipped'}", flush=True)
        print_kernel_resources(module._sparse_attention_fwd)


if __name__ == "__main__":
    main()
