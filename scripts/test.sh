#!/usr/bin/env bash
# The whole test suite, set-up included: `bash scripts/test.sh [extra pytest args]`.
# On a CPU machine the Triton kernels run under the interpreter (TRITON_INTERPRET=1 is set by
# the tests that need it); GPU-only tests skip there and run on a CUDA machine with `-m gpu`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
# A fresh Inductor cache per run: a cached graph keeps the fake-kernel strides it was compiled
# with, so a stale cache can fail after an operator changes.
export TORCHINDUCTOR_CACHE_DIR="$(mktemp -d)"
trap 'rm -rf "$TORCHINDUCTOR_CACHE_DIR"' EXIT
"$DASH_FLEX_PY" -m ruff check .
"$DASH_FLEX_PY" -m pytest -q -p no:cacheprovider "$@"
