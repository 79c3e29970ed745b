"""How many Newton steps α-entmax (α ≤ 1.5, from τ = −1, no bisection) needs per row length, judged
by the worst absolute error of ``p`` against the float64 bisection oracle (CPU, float32 through
``custom_ops.entmax.torch_impl.entmax_forward``: the kernels' solver, at α = 1.5 with its exact
last step after the Newton steps counted here).

The criterion: ``k`` steps suffice at length ``n`` when, on every row of every family, ``k`` steps
are within ``max(--slack, 0.6 × floor)`` (slack 5e-7, a few float32 ulps of a probability; the
floor, the worst error after ``--ref`` = 10 steps, grows with ``n`` to ~1e-6 at 2048) of the
error after ``--ref`` steps, so stopping at ``k`` leaves the solver at its float32 floor. Families:
those of ``study_newton_start.py``, ``study_newton_variants.py`` (adversarial crowds below the
top entry, staircases, mixed scales) and ``study_entmax_exact_step.py`` (graded, geometric and
two-level rows: a random number of tied top entries, the rest one gap below). docs/entmax.md,
"A schedule by row length", has the table.

    PYTHONPATH=. python scripts/study_newton_schedule.py [--alpha 1.25 1.5] [--n 256 512]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_entmax_exact_step import families as graded_families  # noqa: E402
from study_newton_start import families  # noqa: E402
from study_newton_variants import crowd_families  # noqa: E402

from custom_ops.entmax import torch_impl  # noqa: E402
from dash_flex.reference import entmax_bisect  # noqa: E402


def entmax_steps(z: torch.Tensor, alpha: float, steps: int) -> torch.Tensor:
    """float32 ``entmax_forward`` with exactly ``steps`` Newton steps (no bisection)."""
    mode = torch_impl.solver_schedule(alpha, z.shape[-1], torch.float32)[0]
    with mock.patch.object(torch_impl, "solver_schedule", lambda *_: (mode, 0, steps)):
        return torch_impl.entmax_forward(z, alpha)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alpha", type=float, nargs="+", default=[1.5])
    parser.add_argument("--n", type=int, nargs="+", default=[16, 64, 128, 256, 512, 1024, 2048, 4096, 8192])
    parser.add_argument("--steps", type=int, nargs="+", default=[3, 4, 5, 6])
    parser.add_argument("--ref", type=int, default=10)
    parser.add_argument("--slack", type=float, default=5e-7)
    parser.add_argument("--rows", type=int, default=32)
    args = parser.parse_args()
    print("| α | n | floor (max error, ref steps) | " + " | ".join(f"{k} steps: excess" for k in args.steps)
          + " | fewest steps |")  # fmt: skip
    print("|---" * (len(args.steps) + 4) + "|")
    for alpha in args.alpha:
        for n in args.n:
            rows = {**families(n, rows=args.rows), **crowd_families(n, rows=args.rows)}
            # graded_families gives s = (z − max z) / 2; as z for α: 2s has its max at 0 as well
            g = torch.Generator().manual_seed(n)
            rows.update({name: 2 * s for name, s in graded_families(n, 32 * args.rows, g).items()})
            floor, excess = 0.0, {k: (0.0, "") for k in args.steps}
            for name, z in rows.items():
                want = entmax_bisect(z.double(), alpha)
                ref_err = (entmax_steps(z.float(), alpha, args.ref).double() - want).abs().amax(-1)
                floor = max(floor, float(ref_err.max()))
                for k in args.steps:
                    err = (entmax_steps(z.float(), alpha, k).double() - want).abs().amax(-1)
                    excess[k] = max(excess[k], (float((err - ref_err).max()), name))
            allowed = max(args.slack, 0.6 * floor)
            enough = [k for k in args.steps if excess[k][0] <= allowed]
            cells = " | ".join(f"{e:.1e} ({name})" if e > allowed else f"{e:.1e}" for e, name in excess.values())
            fewest = min(enough) if enough else f">{max(args.steps)}"
            print(f"| {alpha} | {n} | {floor:.1e} | {cells} | {fewest} |", flush=True)


if __name__ == "__main__":
    main()
