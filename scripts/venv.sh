# Sourced by demo.sh and test.sh: create or reuse .venv at the repository root and install
# the project into it (editable) with the extras in $EXTRAS (default dev,training: the
# training tests and the demo train a model on the CPU). Reinstalls only when
# pyproject.toml or the extras change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRAS="${EXTRAS:-dev,training}"

find_python() {
    for candidate in "${PYTHON:-}" python3.12 python3.11 python3.10 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "error: Python 3.10 or newer is needed; install it or set PYTHON=/path/to/python" >&2
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    PY="$(find_python)"
    echo "setup: creating $VENV with $PY" >&2
    "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.car-installed"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16) $EXTRAS"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    echo "setup: installing the project into .venv (extras: $EXTRAS)" >&2
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e "$ROOT[$EXTRAS]"
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
