"""Run one case of tests/test_gpu_attention.py several times in one process and print each run's
measured errors (forward and every gradient): how much a case moves from run to run (the prior's
gradient goes through FlexAttention's atomic adds, issue #4).

    PYTHONPATH=. python scripts/repeat_gpu_case.py --case 1 --dtype float32 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", type=int, default=1, help="index into tests/test_gpu_attention.py CASES")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    log = Path(tempfile.mkdtemp()) / "errors.jsonl"
    os.environ["DASH_FLEX_GPU_LOG"] = str(log)
    from tests import test_gpu_attention as t

    t.LOG = str(log)
    case, dtype = t.CASES[args.case], getattr(torch, args.dtype)
    for i in range(args.repeats):
        try:
            t.test_matches_reference_cuda(case, dtype)
            verdict = "passed"
        except AssertionError as exc:
            verdict = f"FAILED: {str(exc).splitlines()[0]}"
        errors = json.loads(log.read_text().splitlines()[-1]) if log.exists() else {}
        shown = {k: f"{v:.2e}" for k, v in errors.items() if isinstance(v, float)}
        print(f"run {i}: {verdict} {shown}", flush=True)


if __name__ == "__main__":
    main()
