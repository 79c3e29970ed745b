"""``benchmarks/bench_attention.py`` with ``ops.FINE_KERNEL`` set, counting which fine kernel ran (GPU).

    PYTHONPATH=. python scripts/bench_fine_kernel.py KERNEL [bench_attention.py's arguments]

A Gluon ``FINE_KERNEL`` is taken only where ``gluon_forward.supports`` says, else the Triton
kernel runs: the counts printed at the end show that the timed inference calls ran the kernel
named (every launch of the rows op, warm-up and timing alike).
"""

from __future__ import annotations

import runpy
import sys
from collections import Counter
from pathlib import Path

from custom_ops.sparse_attention import gluon_forward, ops, triton_kernels

ROOT = Path(__file__).resolve().parents[1]


def counted(module, name: str, label: str, counts: Counter) -> None:
    launch = getattr(module, name)

    def wrapper(*args, **kwargs):
        counts[label] += 1
        return launch(*args, **kwargs)

    setattr(module, name, wrapper)


def main() -> None:
    kernel, bench_args = sys.argv[1], sys.argv[2:]
    ops.FINE_KERNEL = kernel
    counts: Counter = Counter()
    counted(triton_kernels, "sparse_attention_rows_launch", "triton", counts)
    if kernel != "triton":
        counted(gluon_forward, f"sparse_attention_rows_{kernel}", kernel, counts)
    sys.argv = ["bench_attention.py", *bench_args]
    runpy.run_path(str(ROOT / "benchmarks" / "bench_attention.py"), run_name="__main__")
    print(f"fine kernel launches (FINE_KERNEL={kernel}): " + ", ".join(f"{k} {n}" for k, n in counts.items()))


if __name__ == "__main__":
    main()
