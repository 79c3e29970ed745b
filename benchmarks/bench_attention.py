"""End-to-end attention benchmark on one GPU: dash_attention vs dense baselines, same process.

    PYTHONPATH=. python benchmarks/bench_attention.py [--seq 8192 32768 131072] [--out DIR]

Times (median, `triton.testing.do_bench`) SDPA cuDNN causal, SDPA flash causal, dense causal
FlexAttention and dash_attention end to end (plus the coarse stage alone and the fine stage
alone), with FlexAttention (``dash``) and with the fused kernels (``dash_fused``,
``fine_stage="fused"``), forward and forward+backward (forward only above 32K, or
``--backward-up-to``), bf16, B=1, Hq=32, Hkv=8, D=128, block 64, α=1.5, sigma=1. Ratios are
against cuDNN in the same run. The stages alone:

* ``fused_select_only`` / ``fused_fine_only``: the coarse and fine stages as ``dash_fused`` runs
  them at inference (the selection as p̄ rows: ``coarse_selection_rows``, then
  ``sparse_attention_rows`` on a fixed selection);
* ``dash_select_only`` / ``fused_fine_block_major``: the same with the block-major prior and
  flags (``dash_select`` without FlexAttention's block tables, then ``sparse_attention_forward``),
  the layout training and ``return_selection`` use; ``dash_fused_block_major`` is ``dash_fused``
  end to end that way (``return_selection=True``);
* ``dash_fused_overlapped`` (+ ``_same_priority`` / ``_small_chunks`` / ``_lists_on_side``; only
  when named): ``dash_fused`` with its query chunks' selections on a side stream beside the fine
  stages (``OVERLAP_SELECTION = True``, opt-in until measured), at the caller's stream priority,
  in chunks of half the selection budget, or with the side stream also building the tile lists
  (``SELECTION_BUILDS_LISTS``); the same work as ``dash_fused`` when the call runs in one chunk
  (32K), and checked equal to it bit for bit;
* ``dash_coarse_only`` / ``dash_fine_only``: ``dash_select`` with FlexAttention's block tables,
  and FlexAttention on that selection.

Inputs: keys carry one of four "topics" per 64-token block (plus noise) and each query asks
for one topic, so entmax keeps the same-topic blocks, about a quarter of the causal tokens.
The measured token- and tile-level sparsity are printed beside each time, and the median SM
clock during each forward timing (``ClockSampler``; clocks fall under sustained load, and the
same process does not make two timings' clocks equal).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from custom_ops.block_summary import block_summaries
from custom_ops.coarse_selection import coarse_selection_rows
from custom_ops.coarse_selection.torch_impl import mean_log_support
from custom_ops.sparse_attention import sparse_attention_forward, sparse_attention_rows
from dash_flex import attention as attention_module
from dash_flex import dash_attention, dash_select

B, HQ, HKV, D, BS = 1, 32, 8, 128, 64


def topic_inputs(S: int, n_topics: int = 4, device="cuda", dtype=torch.bfloat16, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    topics = torch.randn(n_topics, D, device=device, generator=g)
    topics = topics / topics.norm(dim=-1, keepdim=True) * math.sqrt(D)
    nb = S // BS
    block_topic = torch.randint(0, n_topics, (nb,), device=device, generator=g)
    k = 0.5 * torch.randn(B, HKV, S, D, device=device, generator=g)
    k += topics[block_topic].repeat_interleave(BS, 0)
    query_topic = torch.randint(0, n_topics, (S // 256,), device=device, generator=g).repeat_interleave(256)
    q = 0.5 * torch.randn(B, HQ, S, D, device=device, generator=g) + 1.5 * topics[query_topic]
    v = torch.randn(B, HKV, S, D, device=device, generator=g)
    return [t.to(dtype) for t in (q, k, v)]


_START = time.perf_counter()


def progress(message: str) -> None:
    """One line on stderr with the seconds since start: a cold long run compiles for minutes."""
    print(f"[{time.perf_counter() - _START:7.1f} s] {message}", file=sys.stderr, flush=True)


def _nvml_sample(device: int) -> tuple[float, float]:
    return torch.cuda.clock_rate(device), torch.cuda.temperature(device)


def _smi_sample(device: int) -> tuple[float, float]:
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    uuid = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
    query = ["nvidia-smi", "--query-gpu=clocks.sm,temperature.gpu", "--format=csv,noheader,nounits", "-i", uuid]
    clock, temp = subprocess.run(query, capture_output=True, text=True, check=True, timeout=5).stdout.split(",")
    return float(clock), float(temp)


class ClockSampler:
    """The SM clock (median MHz) and the GPU temperature (max °C) while a timing runs, polled from a
    thread one ``period`` after another (the first one period in): through NVML
    (``torch.cuda.clock_rate`` / ``temperature``), else through ``nvidia-smi`` (every 0.5 s at
    least: each poll starts a process); ``None`` where neither works, with the reason in
    ``failure``. Same-process ratios hide throttling: a method timed after a long heavy one may
    run at lower clocks than the baseline did."""

    def __init__(self, period: float = 0.05, device: int | None = None):
        self.period, self.clocks, self.temps, self.failure = period, [], [], None
        # CUDA's current device is per thread: the poller is told which one
        self.device = torch.cuda.current_device() if device is None else device
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        sample, period = _nvml_sample, self.period
        while not self._stop.wait(period):
            try:
                clock, temp = sample(self.device)
            except Exception as exc:  # no pynvml: nvidia-smi, less often; neither: report nothing
                if sample is _smi_sample:
                    self.failure = f"no NVML and no nvidia-smi reading ({exc!r:.80})"
                    return
                sample, period = _smi_sample, max(self.period, 0.5)
                continue
            self.clocks.append(clock)
            self.temps.append(temp)

    def __enter__(self) -> ClockSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        if not self.clocks:
            return {"sm_mhz": None, "max_temp_c": None}
        return {"sm_mhz": statistics.median(self.clocks), "max_temp_c": max(self.temps)}


_CLOCK_FAILURE_SHOWN = False


def bench(fn, backward=False, inputs=(), cooldown: float = 0.0) -> tuple[float, dict]:
    """Median ms of ``fn`` (or of its forward + backward) by ``do_bench``, and the clocks during that
    timing (:class:`ClockSampler`). One call first, so compiles and first-call set-up finish
    before the GPU idles ``cooldown`` s and the sampler starts."""
    import triton

    global _CLOCK_FAILURE_SHOWN
    target = fn
    if backward:
        out = fn()
        grad = torch.randn_like(out)

        def step():
            for t in inputs:
                t.grad = None
            fn().backward(grad)

        target = step
    target()
    torch.cuda.synchronize()
    time.sleep(cooldown)
    with ClockSampler() as clocks:
        ms = triton.testing.do_bench(target, warmup=50, rep=300, return_mode="median")
    if clocks.failure and not _CLOCK_FAILURE_SHOWN:
        progress(f"SM clocks not recorded: {clocks.failure}")
        _CLOCK_FAILURE_SHOWN = True
    return ms, clocks.summary()


def peak_extra_gib(fn, baseline_bytes):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - baseline_bytes - out.numel() * out.element_size()
    del out
    return peak / 2**30


METHODS = [
    "sdpa_cudnn",
    "sdpa_flash",
    "flex_dense",
    "dash",
    "dash_coarse_only",
    "dash_select_only",
    "dash_fine_only",
    "dash_fused",
    "fused_select_only",
    "fused_fine_only",
    "dash_fused_block_major",
    "fused_fine_block_major",
]


# dash_fused with the chunks' overlap changed (only asked for by name: at one chunk they equal it)
OVERLAP_VARIANTS = [
    "dash_fused_overlapped",
    "dash_fused_overlapped_same_priority",
    "dash_fused_overlapped_small_chunks",
    "dash_fused_overlapped_lists_on_side",
]


def run(S: int, with_backward: bool, methods=METHODS, cooldown: float = 0.0):
    progress(f"S={S}: inputs")
    q, k, v = topic_inputs(S)
    rows = {}
    compiled_flex = torch.compile(flex_attention, dynamic=False)
    # compiled: the eager path materialises an S × S mask (128 GiB at 128K); built only when
    # flex_dense runs (its Inductor compile is a large part of a cold 128K run's set-up)
    dense_mask = (
        create_block_mask(lambda b, h, qi, ki: ki <= qi, 1, 1, S, S, device="cuda", _compile=True)
        if "flex_dense" in methods
        else None
    )

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def flash():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def flex_dense():
        return compiled_flex(q, k, v, block_mask=dense_mask, enable_gqa=True)

    def dash():
        return dash_attention(q, k, v, alpha=1.5, block_size=BS, sigma=1.0)

    progress(f"S={S}: selection for the sparsity report and the fine-only rows")
    with torch.no_grad():
        sel = dash_select(q, k, alpha=1.5, block_size=BS, sigma=1.0)
    report = sel.sparsity()

    def coarse():
        return dash_select(q, k, alpha=1.5, block_size=BS, sigma=1.0).block_mask.kv_indices

    def select_only():  # the block-major selection without FlexAttention's block tables
        return dash_select(q, k, alpha=1.5, block_size=BS, sigma=1.0).log_prior

    def fused_select():  # the coarse stage as dash_fused runs it at inference: p̄ rows and their mean log
        return coarse_selection_rows(q, block_summaries(k, None, BS), 1.5, 1.0, True, S, BS)[0]

    def fine():
        return compiled_flex(
            q,
            k,
            v,
            score_mod=sel.score_mod,
            block_mask=sel.block_mask,
            enable_gqa=True,
            kernel_options=sel.kernel_options,
        )

    prior_t, active_t = sel.log_prior.transpose(2, 3), sel.active_blocks.transpose(2, 3)
    fused_scale = 1.0 / math.sqrt(q.shape[-1])

    def fused_fine_block_major():  # dash_flex::sparse_attention_forward on the selection (no residual)
        return sparse_attention_forward(q, k, v, prior_t, active_t, True, fused_scale, BS, True, False)[0]

    mean_log = mean_log_support(sel.probs)

    def fused_fine():  # dash_flex::sparse_attention_rows on the same selection, as p̄ rows
        return sparse_attention_rows(q, k, v, sel.probs, mean_log, True, fused_scale, BS, 1.0)[0]

    def dash_fused():
        return dash_attention(q, k, v, alpha=1.5, block_size=BS, sigma=1.0, fine_stage="fused")

    def dash_fused_with(**settings):  # dash_fused with attention-module settings changed for the call
        saved = {name: getattr(attention_module, name) for name in settings}
        for name, value in settings.items():
            setattr(attention_module, name, value)
        try:
            return dash_fused()
        finally:
            for name, value in saved.items():
                setattr(attention_module, name, value)

    def dash_fused_block_major():
        kw = dict(alpha=1.5, block_size=BS, sigma=1.0, fine_stage="fused", return_selection=True)
        return dash_attention(q, k, v, **kw)[0]

    coarse_only = ("dash_coarse_only", "dash_select_only", "fused_select_only")
    base_bytes = sum(t.numel() * t.element_size() for t in (q, k, v))
    fns = dict(
        sdpa_cudnn=cudnn,
        sdpa_flash=flash,
        flex_dense=flex_dense,
        dash=dash,
        dash_coarse_only=coarse,
        dash_select_only=select_only,
        dash_fine_only=fine,
        dash_fused=dash_fused,
        dash_fused_overlapped=lambda: dash_fused_with(OVERLAP_SELECTION=True),
        dash_fused_overlapped_same_priority=lambda: dash_fused_with(
            OVERLAP_SELECTION=True, SELECTION_STREAM_PRIORITY=0
        ),
        dash_fused_overlapped_small_chunks=lambda: dash_fused_with(
            OVERLAP_SELECTION=True, INFERENCE_CHUNK_BYTES=attention_module.INFERENCE_CHUNK_BYTES // 2
        ),
        dash_fused_overlapped_lists_on_side=lambda: dash_fused_with(
            OVERLAP_SELECTION=True, SELECTION_BUILDS_LISTS=True
        ),
        fused_select_only=fused_select,
        fused_fine_only=fused_fine,
        dash_fused_block_major=dash_fused_block_major,
        fused_fine_block_major=fused_fine_block_major,
    )
    for name in methods:
        fn = fns[name]
        row = {}
        progress(f"S={S}: {name} forward")
        try:
            with torch.no_grad():
                row["fwd_ms"], clocks = bench(fn, cooldown=cooldown)
                row.update(clocks)
                row["extra_peak_gib"] = (
                    peak_extra_gib(fn, torch.cuda.memory_allocated()) if name not in coarse_only else None
                )
        except torch.OutOfMemoryError:
            row["fwd_ms"] = None
            row["error"] = "OOM"
        torch.cuda.empty_cache()
        forward_only = (*coarse_only, "fused_fine_only", "dash_fused_block_major", "fused_fine_block_major",
                        *OVERLAP_VARIANTS)  # fmt: skip
        if with_backward and name not in forward_only and row.get("fwd_ms") is not None:
            progress(f"S={S}: {name} forward+backward")
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            q_, k_, v_ = leaves
            try:
                if name == "dash_fine_only":
                    row["fwd_bwd_ms"] = None  # the prior graph needs q/k leaves: timed end to end only
                else:
                    fn_b = {
                        "sdpa_cudnn": lambda: _sdpa(q_, k_, v_, SDPBackend.CUDNN_ATTENTION),
                        "sdpa_flash": lambda: _sdpa(q_, k_, v_, SDPBackend.FLASH_ATTENTION),
                        "flex_dense": lambda: compiled_flex(q_, k_, v_, block_mask=dense_mask, enable_gqa=True),
                        "dash": lambda: dash_attention(q_, k_, v_, alpha=1.5, block_size=BS, sigma=1.0),
                        "dash_fused": lambda: dash_attention(
                            q_, k_, v_, alpha=1.5, block_size=BS, sigma=1.0, fine_stage="fused"
                        ),
                    }[name]
                    row["fwd_bwd_ms"], clocks = bench(fn_b, backward=True, inputs=leaves, cooldown=cooldown)
                    row.update({f"{key}_fwd_bwd": value for key, value in clocks.items()})
            except torch.OutOfMemoryError:
                row["fwd_bwd_ms"] = None
                row["error"] = "OOM (backward)"
            torch.cuda.empty_cache()
        rows[name] = row
    if "dash_fused" in rows and "dash_fused_overlapped" in rows:  # the overlap must not change a bit
        with torch.no_grad():
            same = bool(torch.equal(dash_fused(), fns["dash_fused_overlapped"]()))
        rows["dash_fused_overlapped"]["equals_in_order"] = same
        progress(f"S={S}: dash_fused_overlapped {'equals' if same else 'DIFFERS FROM'} dash_fused bit for bit")
    del base_bytes
    return rows, report


def _sdpa(q, k, v, backend):
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--out", default=None, help="folder for bench_attention.{md,json,png}")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS + OVERLAP_VARIANTS,
                        help="sdpa_cudnn always runs")  # fmt: skip
    parser.add_argument("--backward-up-to", type=int, default=32768, help="time forward+backward up to this length")
    parser.add_argument(
        "--cooldown", type=float, default=0.0, help="seconds of idle GPU before each timing, after its first call"
    )
    parser.add_argument("--stacks-every", type=float, default=0, help="dump every thread's stack every N s (stderr)")
    args = parser.parse_args()
    if args.cooldown < 0:
        parser.error(f"--cooldown must be >= 0, got {args.cooldown}")
    if args.stacks_every:  # where a slow cold run spends its minutes
        faulthandler.dump_traceback_later(args.stacks_every, repeat=True)
    methods = ["sdpa_cudnn"] + [m for m in args.methods if m != "sdpa_cudnn"]
    if not torch.cuda.is_available():
        raise SystemExit("bench_attention.py needs a CUDA GPU")
    torch._dynamo.config.cache_size_limit = 64
    card = torch.cuda.get_device_name()
    results = {"card": card, "torch": torch.__version__, "cooldown_s": args.cooldown, "runs": {}}
    lines = [
        f"# dash_attention benchmark on {card} (torch {torch.__version__}), bf16 B={B} Hq={HQ} Hkv={HKV} D={D} "
        f"block={BS} α=1.5 σ=1" + (f", {args.cooldown:g} s idle before each timing" if args.cooldown else ""),
        "",
        "| S | method | fwd ms | fwd × vs cuDNN | fwd+bwd ms | fwd+bwd × vs cuDNN | extra peak GiB | sparsity "
        "| fwd: SM MHz (max °C) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for S in args.seq:
        rows, report = run(S, with_backward=S <= args.backward_up_to, methods=methods, cooldown=args.cooldown)
        results["runs"][S] = {
            "rows": rows,
            "token_sparsity": report.token_sparsity,
            "tile_sparsity": report.tile_sparsity,
        }
        ref_f = rows["sdpa_cudnn"].get("fwd_ms")
        ref_b = rows["sdpa_cudnn"].get("fwd_bwd_ms")
        for name, row in rows.items():
            f, fb = row.get("fwd_ms"), row.get("fwd_bwd_ms")
            sp = (
                f"tok {100 * report.token_sparsity:.0f}% / tile {100 * report.tile_sparsity:.0f}%"
                if "dash" in name
                else ""
            )
            lines.append(
                f"| {S} | {name} | {_fmt(f)} | {_fmt(ref_f / f if f and ref_f else None, 'x')} | {_fmt(fb)} | "
                f"{_fmt(ref_b / fb if fb and ref_b else None, 'x')} | {_fmt(row.get('extra_peak_gib'))} | {sp} "
                f"{row.get('error', '')}| {_clock(row)} |"
            )
        print("\n".join(lines[-len(rows) :]), flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench_attention.md"), "w") as f:
            f.write(table + "\n")
        with open(os.path.join(args.out, "bench_attention.json"), "w") as f:
            json.dump(results, f, indent=1)
        plot(results, os.path.join(args.out, "bench_attention.png"), lines[0].removeprefix("# "))
        print(f"wrote {args.out}/bench_attention.{{md,json,png}}")


# issue #6's bars (× faster than cuDNN) per pass and length, drawn on the plot
TARGETS = {"fwd_ms": {"32768": 2.0, "131072": 3.0}, "fwd_bwd_ms": {"32768": 1.5}}


def plot(results: dict, path: str, title: str) -> None:
    """Speed-up over cuDNN (forward, and forward+backward where measured) per method and length,
    one colour per method in both panels, each bar labelled, issue #6's bars as dashed marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    lengths = sorted(runs, key=int)
    colours = {m: plt.get_cmap("tab20")(i % 20) for i, m in enumerate(METHODS + OVERLAP_VARIANTS)}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, key, label in ((axes[0], "fwd_ms", "forward"), (axes[1], "fwd_bwd_ms", "forward + backward")):
        methods = [m for m in METHODS + OVERLAP_VARIANTS if any(runs[S]["rows"].get(m, {}).get(key) for S in lengths)]
        width = 0.8 / max(len(methods), 1)
        for i, m in enumerate(methods):
            ratios = []
            for S in lengths:
                ref, t = runs[S]["rows"]["sdpa_cudnn"].get(key), runs[S]["rows"].get(m, {}).get(key)
                ratios.append(ref / t if ref and t else 0.0)
            bars = ax.bar([j + i * width for j in range(len(lengths))], ratios, width, label=m, color=colours[m])
            ax.bar_label(bars, [f"{r:.2f}" if r else "" for r in ratios], fontsize=7)
        labelled = False  # runs are keyed by int in a fresh run, by str once read back from JSON
        for j, S in enumerate(lengths):
            if str(S) in TARGETS[key]:
                ax.hlines(TARGETS[key][str(S)], j - width / 2, j + 0.8 - width / 2, colors="k", linestyles="--", lw=1,
                          label=None if labelled else "issue #6 bar")  # fmt: skip
                labelled = True
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(lengths))], [f"S={S}" for S in lengths])
        ax.set_title(label)
        ax.set_ylabel("× faster than cuDNN (higher is better)")
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(x, suffix=""):
    return "—" if x is None else f"{x:.2f}{suffix}"


def _clock(row: dict) -> str:
    if row.get("sm_mhz") is None:
        return "—"
    return f"{row['sm_mhz']:.0f} ({row['max_temp_c']:.0f} °C)"


if __name__ == "__main__":
    main()
