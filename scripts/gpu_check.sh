#!/usr/bin/env bash
# The GPU check (docs/gpu-check.md): on a machine with an NVIDIA GPU, in under 8 minutes from
# a fresh checkout, what runs on the GPU and how fast: pytest -m gpu, torch CUDA training and
# inference per family, models trained by car train on a quick sim tub, TensorRT engines
# (fp32, fp16, int8) checked against ONNX Runtime on the CPU, car bench on every engine, and
# car train --nproc (DDP). Ends with one markdown table for BENCHMARKS.md. On a machine
# without a GPU every GPU step says "no GPU: skipped" (in seconds).
#
#   bash scripts/gpu_check.sh                    # table: $OUT/gpu_check.md or .cache/
#   PYTHON=python3 bash scripts/gpu_check.sh     # this Python, as it is
#   GPU_CHECK_MODE=cpu GPU_CHECK_FAMILIES=linear bash scripts/gpu_check.sh  # try it on a CPU
#
# The Python: $PYTHON if set; else, on a GPU machine without .venv, python3; else .venv
# (created or reused by scripts/venv.sh, as the README's commands do). A Python that lacks
# what the project imports (fastai, tomlkit, pyserial, smbus2, pytest-timeout) gets the
# wheels carried in .whl/ (or $CAR_WHEELS; docs/gpu-check.md says how to make them),
# installed with no network into $CAR_SITE (default /tmp/car-site), ahead of its own packages.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
export GPU_CHECK_T0="${GPU_CHECK_T0:-$(date +%s)}"
SITE="${CAR_SITE:-/tmp/car-site}"
WHEEL_DIR="${CAR_WHEELS:-$ROOT/.whl}"

if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
    HOW="PYTHON=$PYTHON"
elif nvidia-smi -L >/dev/null 2>&1 && [ ! -x "$ROOT/.venv/bin/python" ]; then
    PY=python3
    HOW="python3 (a GPU machine without .venv)"
elif (source "$ROOT/scripts/venv.sh") >&2; then
    PY="$ROOT/.venv/bin/python"
    HOW=".venv (scripts/venv.sh)"
else
    PY=python3
    HOW="python3 (scripts/venv.sh failed)"
fi
if ! command -v "$PY" >/dev/null 2>&1; then
    echo "gpu_check: no Python ($PY); set PYTHON=/path/to/python3" >&2
    exit 1
fi
HOW="$HOW: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])' 2>&1)"

NEEDED='import fastai, fastprogress, tomlkit, serial, smbus2, pytest_timeout'
WHEELS="not needed"
if ! "$PY" -c "$NEEDED" >/dev/null 2>&1; then
    shopt -s nullglob
    whl=("$WHEEL_DIR"/*.whl)
    shopt -u nullglob
    if [ "${#whl[@]}" -eq 0 ]; then
        WHEELS="needed, but there is no $WHEEL_DIR/*.whl (the steps say what is missing)"
    else
        mkdir -p "$SITE"
        if "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps \
            --no-compile --no-cache-dir --upgrade --target "$SITE" "${whl[@]}" \
            >"$SITE.log" 2>&1; then
            WHEELS="${#whl[@]} from $WHEEL_DIR installed into $SITE"
        elif "$PY" - "$SITE" "${whl[@]}" <<'EOF' >>"$SITE.log" 2>&1; then
import sys, zipfile  # no pip: a wheel is a zip laid out for site-packages
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])
EOF
            WHEELS="${#whl[@]} from $WHEEL_DIR unzipped into $SITE (pip failed: $SITE.log)"
        else
            WHEELS="install from $WHEEL_DIR failed (see $SITE.log)"
        fi
    fi
    export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
    if ! "$PY" -c "$NEEDED" >/dev/null 2>&1; then
        WHEELS="$WHEELS; still missing: $("$PY" -c "$NEEDED" 2>&1 | tail -n 1)"
    fi
else
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
export GPU_CHECK_PY_HOW="$HOW" GPU_CHECK_WHEELS="$WHEELS"
export GPU_CHECK_SETUP_S="$(( $(date +%s) - GPU_CHECK_T0 ))"
export PYTHONUNBUFFERED=1
"$PY" "$ROOT/scripts/gpu_check.py"
