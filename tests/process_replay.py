"""Process replay for the fixture models (openpilot's idea, for the pilot): every
``tests/fixtures/pilot_*.onnx`` is replayed through the drive loop on the real donkeycar tub
with a deleted stretch (records 300 to 319), and its outputs must match the committed
``pilot_*.replay.json`` beside it within the reference's tolerance. The deleted stretch
makes the rnn's and the 3d model's temporal state start afresh mid-tub, so the references
gate that rule too.

Update the references on purpose (after a change that is meant to change the outputs), from
the repository root::

    .venv/bin/python -m tests.process_replay --update

and commit the changed ``tests/fixtures/*.replay.json`` with the reason in the message.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REAL_TUB_ARCHIVE = FIXTURES / "donkeycar_real_tub_2020.tar.gz"
DELETED = "300:320"  # a gap in the record indexes: temporal state starts afresh there


def fixture_models() -> list[Path]:
    return sorted(FIXTURES.glob("pilot_*.onnx"))


def replay_tub(root: Path) -> Path:
    """The real tub, extracted under ``root``, with records 300 to 319 soft-deleted."""
    from car.cli import main

    with tarfile.open(REAL_TUB_ARCHIVE) as archive:
        archive.extractall(root, filter="data")
    tub = root / "tub"
    if main(["tub", "delete", str(tub), DELETED]) != 0:
        raise RuntimeError(f"could not delete {DELETED} in {tub}")
    return tub


def replay_args(tub: Path, model: Path) -> list[str]:
    """`car replay` on ``tub`` against the reference beside ``model``; the latency budget is
    not what this checks (a loaded machine must not fail it)."""
    return ["replay", str(tub), "--model", str(model), "--budget-ms", "10000"]


def update() -> int:
    from car.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        tub = replay_tub(Path(tmp))
        for model in fixture_models():
            code = main([*replay_args(tub, model), "--update-ref"])
            if code != 0:
                return code
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="process replay of the fixture models")
    parser.add_argument("--update", action="store_true",
                        help="rewrite tests/fixtures/pilot_*.replay.json from this code")
    if not parser.parse_args().update:
        parser.error("say --update to rewrite the references (the test compares with them)")
    sys.exit(update())
