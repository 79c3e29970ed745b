"""Where the time of dash_attention goes on the GPU: a torch.profiler table per stage.

    PYTHONPATH=. python scripts/profile_stages.py [--seq 32768] [--fine-stage fused]

Uses the benchmark's structured inputs (benchmarks/bench_attention.py) and prints the top
kernels by CUDA time for the coarse stage alone and for the whole forward.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_attention import BS, topic_inputs  # noqa: E402

from dash_flex import dash_attention, dash_select  # noqa: E402


def sweep_fused_forward(q, k, v, against: str | None = None) -> None:
    """Median time of the fused forward kernel per launch config (listed below); ``against``: the
    path of another version of ``triton_kernels.py`` (e.g. ``git show REV:...``) timed beside it."""
    import importlib.util
    import math

    import triton

    from custom_ops.sparse_attention import tile_block_lists
    from custom_ops.sparse_attention.triton_kernels import sparse_attention_launch

    launchers = {"current": sparse_attention_launch}
    if against:
        spec = importlib.util.spec_from_file_location("kernels_against", against)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        launchers["against"] = module.sparse_attention_launch
    with torch.no_grad():
        sel = dash_select(q, k, alpha=1.5, block_size=BS, sigma=1.0)
    prior, active = sel.log_prior.transpose(2, 3), sel.active_blocks.transpose(2, 3)
    scale = 1 / math.sqrt(q.shape[-1])
    # (rows per head, heads packed per program, num_warps, num_stages)
    configs = [(16, 4, 4, 2), (16, 4, 4, 3), (32, 4, 4, 2), (64, 4, 8, 2)]
    for block_m, pack, warps, stages in configs:
        lists, count = tile_block_lists(active, block_m)
        for kernel, launch in launchers.items():

            def fn():
                return launch(
                    q, k, v, prior, active, lists, count, True, scale, BS, True, block_m, warps, stages, pack=pack
                )

            name = f"fused forward [{kernel}] rows/head={block_m} pack={pack} warps={warps} stages={stages}"
            try:
                ms = triton.testing.do_bench(fn, warmup=20, rep=100, return_mode="median")
                print(f"{name}: {ms:.2f} ms", flush=True)
            except Exception as exc:  # an out-of-resources config: report and go on
                print(f"{name}: failed ({exc!r:.80})", flush=True)
    from custom_ops.sparse_attention import triton_kernels

    print_kernel_resources(triton_kernels._sparse_attention_fwd)


def print_kernel_resources(jit_fn) -> None:
    """Registers and spill counts of every compiled specialisation of ``jit_fn`` so far, in the order
    they were compiled, as the device's Triton and ptxas allocated them (``scripts/compile_sm90.py``
    only estimates them)."""
    name = getattr(getattr(jit_fn, "fn", None), "__name__", str(jit_fn))
    for cache in getattr(jit_fn, "device_caches", {}).values():
        kernels = cache[0] if isinstance(cache, tuple) else cache
        for compiled in kernels.values():
            try:
                meta = compiled.metadata
                print(f"{name} warps={meta.num_warps} stages={meta.num_stages}: shared {meta.shared} B, "
                      f"{compiled.n_regs} registers, {compiled.n_spills} spills", flush=True)  # fmt: skip
            except Exception as exc:  # a Triton version without these fields: say so, go on
                print(f"{name}: resources unavailable ({exc!r:.80})", flush=True)


def sweep_fused_backward(q, k, v, against: str | None = None) -> None:
    """Median time of the fused backward (its kernels, Δ and the dprior buffer included) per launch
    config: (query rows per program over the packed heads, heads packed, (num_warps, num_stages) of
    ``_dq_dprior``, the same of ``_dk_dv``; a stage count of None = Triton's default). ``against``:
    the name of another version of ``triton_backward.py`` placed beside it in
    ``custom_ops/sparse_attention`` (its relative imports then resolve), timed at the default launch
    only."""
    import importlib
    import math

    import triton

    from custom_ops.sparse_attention.ops import block_tile_lists, tile_block_lists
    from custom_ops.sparse_attention.triton_backward import sparse_attention_backward_launch
    from custom_ops.sparse_attention.triton_kernels import sparse_attention_launch

    with torch.no_grad():
        sel = dash_select(q, k, alpha=1.5, block_size=BS, sigma=1.0)
    prior, active = sel.log_prior.transpose(2, 3).contiguous(), sel.active_blocks.transpose(2, 3).contiguous()
    scale = 1 / math.sqrt(q.shape[-1])
    lists, count = tile_block_lists(active, 32)
    out, residual, lse = sparse_attention_launch(q, k, v, prior, active, lists, count, True, scale, BS, True, 32, 4, 2,
                                                 pack=4)  # fmt: skip
    grad_out = torch.randn_like(out)
    if against:
        other = importlib.import_module(f"custom_ops.sparse_attention.{against}")
        launchers = {"current": sparse_attention_backward_launch, against: other.sparse_attention_backward_launch}
        t_list, t_count = tile_block_lists(active, 16)
        b_list, b_count = block_tile_lists(active, 16)
        args = (grad_out, q, k, v, prior, active, out, residual, lse, t_list, t_count, b_list, b_count, True,
                scale, BS, True, 16, 4)  # fmt: skip
        for _ in range(2):  # each version twice, interleaved: drift between the two shows
            for name, launch in launchers.items():
                ms = triton.testing.do_bench(lambda: launch(*args), warmup=5, rep=60, return_mode="median")
                print(f"fused backward [{name}] default launch: {ms:.2f} ms", flush=True)
        return
    # (rows, pack, (warps, stages) of _dq_dprior, (warps, stages) of _dk_dv); stages None = Triton's 3
    configs = [(64, 4, (4, None), (4, None)), (64, 4, (4, 2), (4, 2)), (64, 4, (4, 1), (4, 1)),
               (64, 4, (4, 2), (4, 1)), (64, 4, (4, 1), (4, 2)), (64, 4, (8, 2), (4, 2)),
               (64, 4, (4, 2), (8, 2)), (64, 4, (8, 1), (8, 1)), (128, 4, (8, 2), (8, 2)),
               (32, 4, (4, 2), (4, 2)), (64, 2, (4, 2), (4, 2))]  # fmt: skip
    for rows, pack, dq_launch, kv_launch in configs:
        t_list, t_count = tile_block_lists(active, rows // pack)
        b_list, b_count = block_tile_lists(active, rows // pack)

        def fn():
            return sparse_attention_backward_launch(
                grad_out, q, k, v, prior, active, out, residual, lse, t_list, t_count, b_list, b_count, True, scale,
                BS, True, rows // pack, pack, launch=(dq_launch, kv_launch),
            )  # fmt: skip

        name = f"fused backward rows={rows} pack={pack} dq (warps, stages)={dq_launch} dk/dv={kv_launch}"
        try:
            print(f"{name}: {triton.testing.do_bench(fn, warmup=5, rep=40, return_mode='median'):.2f} ms", flush=True)
        except Exception as exc:  # an out-of-resources config: report and go on
            print(f"{name}: failed ({exc!r:.80})", flush=True)


def sweep_coarse(q, k) -> None:
    """Median time of the coarse kernels (score GEMM + entmax/prior kernel) per launch config."""
    import triton

    from custom_ops.block_summary import block_summaries
    from custom_ops.coarse_selection.split_kernels import coarse_selection_split_launch, entmax_config

    S = q.shape[2]
    k_bar = block_summaries(k, None, BS)
    args = (q, k_bar, 1.5, 1.0, 1.0, True, S, BS, -(-S // 128) * 128, -(-S // BS))
    print(f"default entmax config (rows, warps) = {entmax_config(triton.next_power_of_2(args[-1]))}")
    configs = {"default": {}}
    for rows, warps in [(1, 4), (2, 2), (2, 4), (4, 2), (4, 4), (4, 8), (8, 4)]:
        configs[f"rows={rows} warps={warps}"] = dict(rows=rows, num_warps=warps)
    for mib in (1024, 64, 32, 16):  # small chunks: can z stay in L2 between the GEMM and the solver?
        configs[f"z budget {mib} MiB"] = dict(z_budget=mib * 2**20)
    for name, kw in configs.items():
        try:
            ms = triton.testing.do_bench(lambda: coarse_selection_split_launch(*args, **kw), warmup=10, rep=60)
            print(f"coarse {name}: {ms:.2f} ms", flush=True)
        except Exception as exc:  # an out-of-resources config: report and go on
            print(f"coarse {name}: failed ({exc!r:.80})", flush=True)


def sweep_coarse_backward(q, k) -> None:
    """Median time of the coarse backward (score GEMM, entmax VJP, dq and dk̄ GEMMs) per GEMM tiling,
    on the gradients of both outputs."""
    import triton

    from custom_ops.block_summary import block_summaries
    from custom_ops.coarse_selection import split_kernels

    S = q.shape[2]
    k_bar = block_summaries(k, None, BS)
    sq_pad, nb_pad = -(-S // 128) * 128, -(-S // BS)
    probs, prior, _ = split_kernels.coarse_selection_split_launch(q, k_bar, 1.5, 1.0, 1.0, True, S, BS, sq_pad, nb_pad)
    grad_prior = torch.randn_like(prior)
    default = (split_kernels.DQ_TILE, split_kernels.DK_TILE)
    configs = {"default": default, "dq 128 rows / 8 warps": ((128, 64, 8), default[1]),
               "dq step 32": ((64, 32, 4), default[1]), "dk 4 slices": (default[0], (64, 64, 4, 4)),
               "dk 16 slices": (default[0], (64, 64, 4, 16)), "dk 128 blocks / 8 warps": (default[0], (128, 64, 8, 8)),
               "dk 32 blocks": (default[0], (32, 64, 4, 16))}  # fmt: skip
    for name, (dq_tile, dk_tile) in configs.items():
        split_kernels.DQ_TILE, split_kernels.DK_TILE = dq_tile, dk_tile
        try:
            ms = triton.testing.do_bench(
                lambda: split_kernels.coarse_selection_backward_split(
                    None, grad_prior, probs, q, k_bar, 1.5, 1.0, 1.0, True, S, BS
                ),
                warmup=10,
                rep=60,
            )
            print(f"coarse backward {name}: {ms:.2f} ms", flush=True)
        except Exception as exc:  # an out-of-resources config: report and go on
            print(f"coarse backward {name}: failed ({exc!r:.80})", flush=True)
    split_kernels.DQ_TILE, split_kernels.DK_TILE = default


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=32768)
    parser.add_argument("--fine-stage", default="fused")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--sweep", action="store_true", help="time the fused forward kernel's launch configs")
    parser.add_argument("--against", default=None, help="with --sweep: another triton_kernels.py to time beside")
    parser.add_argument("--only-sweeps", action="store_true", help="skip the profiler tables")
    parser.add_argument("--coarse-sweep", action="store_true", help="time the coarse kernel's configs and phases")
    parser.add_argument("--backward", action="store_true", help="also profile one forward + backward")
    parser.add_argument("--backward-sweep", action="store_true", help="time the fused backward's launch configs")
    parser.add_argument("--backward-against", default=None, help="with --backward-sweep: a module name beside "
                        "triton_backward.py (custom_ops/sparse_attention) to time against it")  # fmt: skip
    args = parser.parse_args()
    q, k, v = topic_inputs(args.seq)
    if args.sweep:
        sweep_fused_forward(q, k, v, args.against)
    if args.backward_sweep:
        sweep_fused_backward(q, k, v, args.backward_against)
    if args.coarse_sweep:
        sweep_coarse(q, k)
        sweep_coarse_backward(q, k)
    if args.only_sweeps:
        return
    stages = {
        "coarse (dash_select)": lambda: dash_select(q, k, alpha=1.5, block_size=BS, sigma=1.0),
        f"forward (fine_stage={args.fine_stage})": lambda: dash_attention(
            q, k, v, alpha=1.5, block_size=BS, sigma=1.0, fine_stage=args.fine_stage
        ),
    }
    if args.backward:
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]

        def fwd_bwd():
            out = dash_attention(*leaves, alpha=1.5, block_size=BS, sigma=1.0, fine_stage=args.fine_stage)
            out.backward(torch.ones_like(out))

        stages[f"forward + backward (fine_stage={args.fine_stage})"] = fwd_bwd
    for name, fn in stages.items():
        with torch.set_grad_enabled("backward" in name):
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
                fn()
                torch.cuda.synchronize()
        print(f"\n=== {name}, S={args.seq}")
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=70))


if __name__ == "__main__":
    main()
