#!/usr/bin/env bash
# The main job, set-up included: `bash scripts/demo.sh` (prints a summary, writes demo_selection.png).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
"$DASH_FLEX_PY" -m dash_flex.demo "$@"
