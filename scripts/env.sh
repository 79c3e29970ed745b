#!/usr/bin/env bash
# Create or reuse the local virtual environment `.venv` and install what dash_flex needs.
# Sourced by scripts/test.sh and scripts/demo.sh. Idempotent and quiet when nothing changes.
#  * A Python that already has torch (e.g. a GPU machine) keeps it: the venv sees its packages.
#  * Otherwise torch is pinned to the 2.13.0 CPU build (an unpinned torch would pull a
#    multi-GB CUDA build from the registry).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY_BASE="${PYTHON:-python3}"
STAMP="$VENV/.dash_flex_installed"

if [ ! -x "$VENV/bin/python" ]; then
    if "$PY_BASE" -c "import torch" >/dev/null 2>&1; then
        echo "[env] creating .venv on top of the existing torch ($("$PY_BASE" -c 'import torch; print(torch.__version__)'))"
        "$PY_BASE" -m venv --system-site-packages "$VENV"
    else
        echo "[env] creating .venv"
        "$PY_BASE" -m venv "$VENV"
    fi
fi
PY="$VENV/bin/python"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    if ! "$PY" -c "import torch" >/dev/null 2>&1; then
        echo "[env] installing torch 2.13.0 (CPU build)"
        "$PY" -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
    fi
    echo "[env] installing dash_flex (editable) with test and demo extras"
    "$PY" -m pip install -q -e "$ROOT[test,demo]" 2>&1 | grep -v "^WARNING: Location" || true
    "$PY" -c "import torch, dash_flex" || { echo "[env] installation failed" >&2; exit 1; }
    touch "$STAMP"
fi
export DASH_FLEX_PY="$PY"
