"""How many Newton steps the entmax solver needs on the attention benchmark's coarse rows, and what
stopping early costs (CPU, float32 emulation of the Triton solver's loop).

    python scripts/study_newton_exit.py [--seq 4096]

Rows: the benchmark's structured inputs (benchmarks/bench_attention.py), scores of every query
head against the 64-token block means, causal (blocks before the query's own). A program of the
coarse kernel solves 4 rows of one head together. Two stop rules: the program stops when every
row's last step was below ``tol·|τ|`` (unsafe: a tiny step can come from a large support far from
the root), or each row stops after the step taken from a τ whose residual ``h(τ)`` was at most
``tol`` (the kernel's rule: ``0 ≤ τ* − τ ≤ h(τ)``) and the program when all its rows have. The
table gives the steps per program and the largest change of ``p`` against the 7-step schedule.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_attention import BS, HKV, HQ, D, topic_inputs  # noqa: E402

N_NEWTON, ROWS_PER_PROGRAM = 7, 4


def scores(S: int) -> torch.Tensor:
    """``s = (α − 1)(z − max z)`` for α = 1.5, rows ``[Hq, S − BS, nb]`` (rows with a block)."""
    q, k, _ = topic_inputs(S, device="cpu", dtype=torch.float32)
    k_bar = k.view(1, HKV, S // BS, BS, D).mean(3)
    z = torch.einsum("bhgtd,bhcd->bhgtc", q.view(1, HKV, HQ // HKV, S, D), k_bar) / math.sqrt(D)
    t, c = torch.arange(S)[:, None], torch.arange(S // BS)[None, :]
    z = z.masked_fill(~(c < t // BS), float("-inf")).reshape(HQ, S, S // BS)[:, BS:]
    return (z - z.max(-1, keepdim=True).values) * 0.5


def probs(s: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    x = (s - tau[..., None]).clamp_min(0)
    return x * x / (x * x).sum(-1, keepdim=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seq", type=int, default=4096)
    s = scores(parser.parse_args().seq)
    taus, steps, residuals = [], [], []
    tau = torch.full(s.shape[:2], -1.0)
    for _ in range(N_NEWTON):  # the kernel's Newton step on h(τ) = ‖[s − τ]_+‖_2 − 1, from τ = −1
        x = (s - tau[..., None]).clamp_min(0)
        mass, slope = (x * x).sum(-1), x.sum(-1)
        new = tau + torch.where(slope > 0, mass * (1 - mass.rsqrt()) / torch.where(slope > 0, slope, 1), 0)
        residuals.append(mass.sqrt() - 1)  # h at the τ this step starts from
        steps.append((new - tau).abs() / new.abs())
        taus.append(tau := new)
    taus, steps, residuals = torch.stack(taus), torch.stack(steps), torch.stack(residuals)
    full = probs(s, taus[-1])
    print("| stop rule | mean steps per program | max |p − p(7 steps)| |")
    print("|---|---|---|")
    rules = [(f"program: every step ≤ {tol:g}·|τ|", steps <= tol) for tol in (0.0, 1e-6)]
    rules += [(f"row: h(τ) ≤ {tol:g}, then one step", residuals <= tol) for tol in (0.0, 1e-7, 2.5e-7, 1e-6)]
    for rule, done in rules:  # done [step, head, row]: the row may stop after this step
        first = torch.where(
            done.any(0), done.float().argmax(0) + 1, torch.full_like(done[0], N_NEWTON, dtype=torch.long)
        )
        per_program = first.view(HQ, -1, ROWS_PER_PROGRAM).amax(-1)
        if rule.startswith("program"):  # the program's rows all stop at its last row's count
            first = per_program.repeat_interleave(ROWS_PER_PROGRAM, -1)
        tau_stop = taus.gather(0, (first - 1)[None]).squeeze(0)
        err = (probs(s, tau_stop) - full).abs().max().item()
        print(f"| {rule} | {per_program.float().mean():.2f} | {err:.1e} |")


if __name__ == "__main__":
    main()
