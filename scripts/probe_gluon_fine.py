"""The inference fine forward as a hand-pipelined Gluon kernel against the shipped Triton kernel (GPU).

    PYTHONPATH=. python scripts/probe_gluon_fine.py [--seq 32768 131072]

On the attention benchmark's lists with their bias rows (32 rows × 4 heads): the shipped kernel
(``sparse_attention_rows_launch``, 4 warps, 2 stages, its default K / V loads) and
``gluon_forward.sparse_attention_rows_gluon`` (TMA ring, async score MMA one entry ahead; with
``overlap_pv`` the P·V MMA also stays in flight into the next step; ``_ws``: the two warpgroups
as separate partitions beside a one-warp TMA loader; ``_pingpong``: their MMAs in turns;
``_pairs``: in turns, two entries a step). Checks each Gluon launch against the shipped kernel's
output and LSE, then times all, interleaved, twice (median ms of ``triton.testing.do_bench``)
with the TFLOP/s of the listed pairs.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import torch
import triton

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "scripts"))
from bench_attention import BS  # noqa: E402
from probe_fine_descriptors import benchmark_lists  # noqa: E402

from custom_ops.sparse_attention import gluon_forward, triton_kernels  # noqa: E402

ALL_VARIANTS = ("gluon", "gluon_overlap_pv", "gluon_ws", "gluon_ws_regs216", "gluon_ws_stages2", "gluon_ws_stages4",
                "gluon_ws_pingpong", "gluon_ws_pairs", "gluon_ws_pairs_stages5")  # fmt: skip


def study(S: int, variants: list[str] | None) -> None:
    q, k, v, lists = benchmark_lists(S)
    scale = 1 / math.sqrt(q.shape[-1])
    launches = {
        "shipped": lambda: triton_kernels.sparse_attention_rows_launch(
            q, k, v, *lists, True, scale, BS, 32, 4, 2, pack=4
        ),  # fmt: skip
        "gluon": lambda: gluon_forward.sparse_attention_rows_gluon(q, k, v, *lists, True, scale, BS, 32, 4),
        "gluon_overlap_pv": lambda: gluon_forward.sparse_attention_rows_gluon(
            q, k, v, *lists, True, scale, BS, 32, 4, overlap_pv=True
        ),  # fmt: skip
        "gluon_ws": lambda: gluon_forward.sparse_attention_rows_gluon_ws(q, k, v, *lists, True, scale, BS, 32, 4),
        "gluon_ws_regs216": lambda: gluon_forward.sparse_attention_rows_gluon_ws(
            q, k, v, *lists, True, scale, BS, 32, 4, consumer_regs=216
        ),
        "gluon_ws_stages2": lambda: gluon_forward.sparse_attention_rows_gluon_ws(
            q, k, v, *lists, True, scale, BS, 32, 4, stages=2
        ),
        "gluon_ws_stages4": lambda: gluon_forward.sparse_attention_rows_gluon_ws(
            q, k, v, *lists, True, scale, BS, 32, 4, stages=4
        ),
        "gluon_ws_pingpong": lambda: gluon_forward.sparse_attention_rows_gluon_ws_pingpong(
            q, k, v, *lists, True, scale, BS, 32, 4
        ),
        "gluon_ws_pairs": lambda: gluon_forward.sparse_attention_rows_gluon_ws_pairs(
            q, k, v, *lists, True, scale, BS, 32, 4
        ),
        "gluon_ws_pairs_stages5": lambda: gluon_forward.sparse_attention_rows_gluon_ws(
            q, k, v, *lists, True, scale, BS, 32, 4, stages=5, pairs=True
        ),
    }
    assert tuple(launches)[1:] == ALL_VARIANTS
    if variants is not None:  # the shipped kernel always: the baseline and the reference
        launches = {n: f for n, f in launches.items() if n == "shipped" or n in variants}
    print(f"S={S}: supports: {gluon_forward.supports(q, k, v, *lists, True, scale, BS, 32, 4)}", flush=True)
    want = launches["shipped"]()
    listed = int(lists[1].sum())
    flops = listed * 32 * 4 * BS * q.shape[-1] * 4
    print(f"S={S}: {listed} listed (tile, block) pairs, {flops / 1e12:.2f} TFLOP", flush=True)
    ok = ["shipped"]
    for name in list(launches)[1:]:
        try:
            got = launches[name]()
            torch.cuda.synchronize()
            err = float((got[0].float() - want[0].float()).abs().max())
            lse_err = float((got[1] - want[1]).abs().nan_to_num().max())
            same_inf = torch.equal(torch.isinf(got[1]), torch.isinf(want[1]))
            finite = bool(torch.isfinite(got[0]).all())
            right = err < 0.05 and lse_err < 1e-3 and same_inf and finite  # bf16 outputs: a few ulps
            print(f"S={S}: {name}: max |out diff| {err:.2e}, max |lse diff| {lse_err:.2e}, same -inf rows {same_inf},"
                  f" finite {finite}" + ("" if right else ": WRONG, not timed"), flush=True)  # fmt: skip
            if right:
                ok.append(name)
        except Exception as exc:  # a variant the compiler or the card refuses: say so, go on
            print(f"S={S}: {name}: failed: {exc!r:.400}", flush=True)
    times = {n: [] for n in ok}
    for _ in range(2):
        for name in ok:
            # rep in ms: at 128K a launch takes ~66 ms, so 300 gives the median of ~5 (100 gave 1)
            times[name].append(triton.testing.do_bench(launches[name], warmup=10, rep=300, return_mode="median"))
    for name, ms in times.items():
        rate = ", ".join(f"{flops / (t * 1e-3) / 1e12:.0f}" for t in ms)
        print(f"S={S}: {name}: " + ", ".join(f"{t:.3f}" for t in ms) + f" ms ({rate} TFLOP/s)", flush=True)


# A test id's kernel (its variant or FINE_KERNEL name, most specific first) -> the probe's variants
TESTED_AS = (
    (("ws-pairs", "gluon_ws_pairs"), ("gluon_ws_pairs", "gluon_ws_pairs_stages5")),
    (("ws-pingpong", "gluon_ws_pingpong"), ("gluon_ws_pingpong",)),
    (("warp-specialised", "gluon_ws"), ("gluon_ws", "gluon_ws_regs216", "gluon_ws_stages2", "gluon_ws_stages4")),
    (("pv-overlapped",), ("gluon_overlap_pv",)),
    (("pv-in-step", "gluon"), ("gluon",)),
)


def hung_variants(pytest_log: str) -> set[str]:
    """The probe's variants whose kernel hung in ``tests/test_gluon_forward.py`` run under xdist
    (a worker killed by pytest-timeout: "crashed while running '<test id>'"). A kernel that hangs
    cannot be stopped in-process, so the probe leaves these out."""
    hung = set()
    for test_id in re.findall(r"crashed while running '([^']+)'", pytest_log):
        for names, variants in TESTED_AS:
            if any(n in test_id for n in names):
                hung.update(variants)
                break
    return hung


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument(
        "--variants",
        nargs="*",
        help="Gluon variants to run (default: all); a kernel that hangs"
        " cannot be stopped in-process, so a caller leaves out what hung in the tests",
    )
    parser.add_argument("--skip-hung-in", type=Path, help="a pytest log of the Gluon tests (xdist): leave out the"
                        " variants whose test hung")  # fmt: skip
    args = parser.parse_args()
    print(torch.cuda.get_device_name(), f"torch {torch.__version__}, triton {triton.__version__}", flush=True)
    variants = args.variants
    if args.skip_hung_in is not None:
        hung = hung_variants(args.skip_hung_in.read_text(errors="replace"))
        print(f"left out (hung in the tests): {sorted(hung) or 'none'}", flush=True)
        if hung:
            variants = [v for v in (variants or ALL_VARIANTS) if v not in hung]
    for S in args.seq:
        study(S, variants)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
