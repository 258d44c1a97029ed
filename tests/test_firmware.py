"""The C firmware core (firmware/car_mcu/src) against the Python reference (car.mcu): built
with the host gcc, driven through firmware/test/harness.c.

The shared vectors (CRC, frame encodings, parser streams, MCU scenarios), the watchdog under
the fake clock (at the timeout and across a uint32 millis wrap), one received byte that
completes five frames, and a seeded differential test: random scripts of valid, invalid and
corrupted frames, split anywhere across receptions, must print the same lines through
``run_script`` and through the harness.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from car.mcu import protocol as p
from tests.conftest import FIXTURES, ROOT
from tests.mcu_script import run_script

SRC = ROOT / "firmware" / "car_mcu" / "src"
HARNESS_C = ROOT / "firmware" / "test" / "harness.c"
CFLAGS = ["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Wconversion",
          "-Wshadow", "-Wstrict-prototypes", "-Wmissing-prototypes"]
VECTORS = json.loads((FIXTURES / "serial_vectors.json").read_text())
U32 = 1 << 32

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None,
                                reason="probe: no gcc on PATH to build the C firmware core")


class Harness:
    """The compiled harness: lines in, lines out, one process per call."""

    def __init__(self, exe: Path) -> None:
        self.exe = exe

    def run(self, lines: Sequence[str]) -> list[str]:
        done = subprocess.run([str(self.exe)], input="\n".join(lines) + "\n",
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    def run_scripts(self, scripts: Sequence[Sequence[str]]) -> list[list[str]]:
        """Many scripts in one process, each from the boot state (``reset`` between them)."""
        lines = [line for script in scripts for line in (*script, "reset")]
        outputs: list[list[str]] = [[]]
        for line in self.run(lines):
            if line == "reset":
                outputs.append([])
            else:
                outputs[-1].append(line)
        assert outputs.pop() == []
        return outputs


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    exe = tmp_path_factory.mktemp("firmware") / "harness"
    sources = sorted(str(path) for path in SRC.glob("*.c"))
    build = subprocess.run(["gcc", *CFLAGS, "-I", str(SRC), *sources, str(HARNESS_C),
                            "-o", str(exe)], capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, f"the firmware core does not build clean:\n{build.stderr}"
    return Harness(exe)


def rx(t: int, message: p.Message, seq: int) -> str:
    return f"rx {t} {p.encode(message, seq).hex()}"


# ------------------------------------------------------------------------- shared vectors


@pytest.mark.parametrize("vector", VECTORS["crc"], ids=lambda v: v.get("ascii", v.get("hex")))
def test_crc_vectors(harness: Harness, vector: dict) -> None:
    data = vector["ascii"].encode().hex() if "ascii" in vector else vector["hex"]
    assert harness.run([f"crc {data}"]) == [f"crc {vector['crc']:04x}"]


@pytest.mark.parametrize("vector", VECTORS["frames"], ids=lambda v: v["name"])
def test_frame_encodings(harness: Harness, vector: dict) -> None:
    command = f"encode {vector['type']} {vector['seq']} {vector['payload_hex']}"
    assert harness.run([command]) == [f"encoded {vector['frame_hex']}"]


@pytest.mark.parametrize("vector", VECTORS["streams"], ids=lambda v: v["name"])
def test_parser_streams(harness: Harness, vector: dict) -> None:
    frames = [f"frame {f['type']} {f['seq']} {f['payload_hex'] or '-'}"
              for f in vector["frames"]]
    c = vector["counts"]
    counts = (c["frames"], c["bad_crc"], c["bad_length"], c["unknown_type"],
              c["skipped_bytes"], vector["pending"])
    expected = [*frames, "parsed " + " ".join(map(str, counts))]
    assert harness.run([f"parse {vector['hex']}"]) == expected


@pytest.mark.parametrize("scenario", VECTORS["scenarios"], ids=lambda s: s["name"])
def test_scenarios(harness: Harness, scenario: dict) -> None:
    assert harness.run(scenario["script"]) == scenario["expect"]


# ------------------------------------------------------------------------- the watchdog

CONFIG = p.Config(250, 1100, 1500, 1900, 1200, 1500, 1800)
ENGAGED = "state 1600 1650 8 2"  # the DRIVE's pulses, CONFIGURED
TRIPPED = "state 1500 1500 9 2"  # neutral, FAILSAFE | CONFIGURED


def watchdog_script(timeout_ms: int, drive_at: int, ticks: Sequence[int]) -> list[str]:
    config = dataclasses.replace(CONFIG, timeout_ms=timeout_ms)
    lines = [rx(drive_at, config, 1), rx(drive_at, p.Drive(1600, 1650), 2)]
    for t in ticks:
        lines += [f"tick {t % U32}", "state"]
    return lines


@pytest.mark.parametrize("timeout_ms", [20, 250, 5000])
def test_watchdog_trips_exactly_at_the_timeout(harness: Harness, timeout_ms: int) -> None:
    drive_at = 1000
    script = watchdog_script(timeout_ms, drive_at, [drive_at + timeout_ms - 1,
                                                    drive_at + timeout_ms])
    expected = ["tx " + p.encode(p.ConfigAck(1), 0).hex(), "tx -", ENGAGED, TRIPPED]
    assert harness.run(script) == expected
    assert run_script(script) == expected


@pytest.mark.parametrize(("drive_at", "timeout_ms"), [
    (0xFFFFFF00, 1000), (0xFFFFFFF0, 250), (0xFFFFFFFF, 20)])
def test_watchdog_across_the_millis_wrap(harness: Harness, drive_at: int,
                                         timeout_ms: int) -> None:
    """millis() wraps after 49.7 days: the elapsed time is an unsigned difference. The Python
    core's clock never wraps, so only the C core is held to this."""
    ticks = [U32 - 1, U32 + 5, drive_at + timeout_ms - 1, drive_at + timeout_ms]
    script = watchdog_script(timeout_ms, drive_at, ticks)
    assert harness.run(script)[2:] == [ENGAGED, ENGAGED, ENGAGED, TRIPPED]


def test_one_byte_completes_five_frames(harness: Harness) -> None:
    """A header whose LEN (32) swallows five PINGs: the byte that completes it fails the CRC,
    the search resumes inside it, and that one byte yields five PONGs."""
    pings = p.encode(p.Ping(), 1) * 5
    body = bytes.fromhex("aa5520") + pings
    last = next(b for b in range(256) if p.crc16_ccitt_false(body[2:-1]) != body[-1] | b << 8)
    script = [f"rx 0 {body.hex()}", f"rx 1 {last:02x}", "counts"]
    pongs = b"".join(p.encode(p.Pong(p.PROTOCOL_VERSION, "car-mcu"), seq) for seq in range(5))
    out = harness.run(script)
    assert out[:2] == ["tx -", f"tx {pongs.hex()}"]
    assert out == run_script(script)


# ------------------------------------------------------------------------- differential

SEQ_WINDOW = 4  # DRIVE SEQs drawn near the last one, so duplicates are common
STEPS_MS = (0, 0, 1, 5, 19, 20, 21, 100, 249, 250, 251, 1000, 5001)


def pulse(rng: random.Random) -> int:
    return rng.choice((rng.randrange(900, 2100), rng.randrange(0, 3000), rng.randrange(1 << 16)))


def drive_frame(rng: random.Random, state: dict) -> bytes:
    state["seq"] = (state["seq"] + rng.randrange(-1, SEQ_WINDOW)) % 256
    flags = rng.choice((p.ENGAGE, p.ENGAGE, p.ENGAGE, p.ENGAGE, 0, p.ESTOP, p.ENGAGE | p.ESTOP,
                        rng.randrange(256)))
    return p.encode(p.Drive(pulse(rng), pulse(rng), flags), state["seq"])


def config_frame(rng: random.Random, _state: dict) -> bytes:
    def rng3() -> list[int]:
        neutral = rng.randrange(1300, 1700)
        return [neutral - rng.randrange(1, 600), neutral, neutral + rng.randrange(1, 600)]

    values = [rng.choice((20, 100, 250, 5000, rng.randrange(20, 5001))), *rng3(), *rng3()]
    if rng.random() < 0.5:  # a bound, just in or just out, or anything at all
        values[rng.randrange(7)] = rng.choice((0, 19, 20, 499, 500, 2500, 2501, 5000, 5001,
                                               rng.randrange(1 << 16)))
    flags = rng.choice((0, p.CFG_RC_PASSTHROUGH, rng.randrange(256)))
    return p.encode(p.Config(*values, flags), rng.randrange(256))


def ping_frame(rng: random.Random, _state: dict) -> bytes:
    return p.encode(p.Ping(), rng.randrange(256))


def noise(rng: random.Random, _state: dict) -> bytes:
    return bytes(rng.choice((0xAA, 0x55, 0x00, rng.randrange(256)))
                 for _ in range(rng.randrange(1, 12)))


def corrupted_frame(rng: random.Random, state: dict) -> bytes:
    frame = bytearray(rng.choice(GOOD_FRAMES)(rng, state))
    how = rng.randrange(3)
    if how == 0:  # one flipped bit
        frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
    elif how == 1:  # one byte lost
        del frame[rng.randrange(len(frame))]
    else:  # cut short
        del frame[rng.randrange(1, len(frame)):]
    return bytes(frame)


def misfit_frame(rng: random.Random, _state: dict) -> bytes:
    """Good CRC, but refused: an MCU -> host or unknown type, a wrong length for its type, or
    a header whose LEN is above MAX_PAYLOAD."""
    how = rng.randrange(4)
    if how == 0:
        return p.encode(p.Telemetry(1500, 1500, 7400, 0, 1, 1500, 1500), rng.randrange(256))
    if how == 1:
        return p.encode_frame(rng.randrange(4, 256), rng.randrange(256),
                              bytes(rng.randrange(4)))
    if how == 2:
        msg_type = rng.choice((p.DRIVE, p.CONFIG, p.PING))
        return p.encode_frame(msg_type, rng.randrange(256), bytes(rng.choice((1, 4, 6, 14, 16))))
    return bytes((0xAA, 0x55, rng.randrange(p.MAX_PAYLOAD + 1, 256)))


GOOD_FRAMES: tuple[Callable[[random.Random, dict], bytes], ...] = (
    drive_frame, drive_frame, drive_frame, config_frame, ping_frame)
PIECES = (*GOOD_FRAMES, noise, corrupted_frame, misfit_frame)


def receptions(rng: random.Random, data: bytes, t: int) -> tuple[list[str], int]:
    """``data`` cut at random points into rx lines, at non-decreasing times."""
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(4))))
    lines = []
    for start, end in zip([0, *cuts], [*cuts, len(data)]):
        lines.append(f"rx {t} {data[start:end].hex()}")
        t += rng.choice((0, 0, 1, 3))
    return lines, t


def random_script(rng: random.Random) -> list[str]:
    lines: list[str] = []
    t = rng.randrange(0, 100_000)
    state = {"seq": rng.randrange(256)}
    for _ in range(rng.randrange(5, 40)):
        roll = rng.random()
        if roll < 0.5:
            data = b"".join(rng.choice(PIECES)(rng, state) for _ in range(rng.randrange(1, 5)))
            more, t = receptions(rng, data, t)
            lines += more
        elif roll < 0.6:
            lines.append(f"tick {t}")
        elif roll < 0.7:
            lines.append(rng.choice(("rc 0 0", f"rc {pulse(rng)} {pulse(rng)}",
                                     f"rc {pulse(rng)} 0")))
        elif roll < 0.73:
            lines.append(f"bat {rng.randrange(1 << 16)}")
        elif roll < 0.76:
            lines.append(f"rx {t}")
        else:
            lines.append(rng.choice(("state", "state", "telemetry", "counts")))
        t += rng.choice(STEPS_MS)
    return [*lines, "state", "counts"]


@pytest.mark.parametrize("batch", range(4))
def test_random_scripts_match_the_python_core(harness: Harness, batch: int) -> None:
    rng = random.Random(0xCA5 + batch)
    scripts = [random_script(rng) for _ in range(250)]
    for script, got in zip(scripts, harness.run_scripts(scripts), strict=True):
        expected = run_script(script)
        if got != expected:
            first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b),
                         min(len(got), len(expected)))
            pytest.fail(f"C and Python differ from output line {first}: C {got[first:]}, "
                        f"Python {expected[first:]}\nscript:\n" + "\n".join(script))
