#!/usr/bin/env bash
# Set up .venv (created or reused) and run the whole test suite: ruff, then pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k tub -x`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
source "$ROOT/scripts/chromium.sh"
cd "$ROOT"
ruff check .
python -m pytest "$@"
