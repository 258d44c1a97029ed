"""How scripts/gpu_check.py runs its commands: each in its own process group, with its own
timeout under one deadline for the whole check, its output kept in a log file, and each
step's outcome as one table row."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_check_report import Row

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("linear", "categorical", "resnet18", "3d", "rnn")
NO_GPU = "no GPU: skipped"
BUDGET = "skipped: time budget"


@dataclass
class Ran:
    rc: int | None  # None: timed out (and stopped)
    out: str
    err: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def why(self) -> str:
        """One line saying how it failed: the timeout, or the last line of stderr."""
        if self.rc is None:
            return f"timed out after {self.seconds:.0f} s"
        lines = [ln.strip() for ln in (self.err or self.out).splitlines() if ln.strip()]
        return f"exit {self.rc}: {lines[-1][:200] if lines else '(no output)'}"

    def last_json(self) -> dict[str, Any] | None:
        """The last stdout line as a JSON object (what `car ... --json` prints), or None."""
        try:
            value = json.loads(self.out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None
        return value if isinstance(value, dict) else None


def failed(ran: Ran) -> str:
    return f"failed: {ran.why()}"


def trained(out: str) -> str:
    """`car train`'s summary in a few words: samples, device, time, validation loss."""
    done = re.search(r"^trained \S+ on (\d+) samples, validated on (\d+) .* on (\S+) in "
                     r"(\d+) s", out, re.M)
    loss = re.search(r"^best validation: loss ([\d.naninf]+)", out, re.M)
    if not done:
        lines = [ln for ln in out.splitlines() if ln.startswith("trained")]
        return lines[-1][:160] if lines else "trained"
    train, val, device, seconds = done.groups()
    return (f"{train} training + {val} validation samples, 1 epoch on {device}, {seconds} s "
            f"in training{f', validation loss {loss.group(1)}' if loss else ''}")


class Runner:
    """The check's settings (from the environment), its rows, and running commands."""

    def __init__(self) -> None:
        env = os.environ
        self.t0 = float(env.get("GPU_CHECK_T0") or time.time())
        self.budget_s = float(env.get("GPU_CHECK_BUDGET_S", "450"))
        self.mode = env.get("GPU_CHECK_MODE", "auto")
        if self.mode not in ("auto", "skip", "cpu"):
            sys.exit(f"gpu_check: GPU_CHECK_MODE={self.mode!r}: use auto, skip or cpu")
        self.py = sys.executable
        out = env.get("GPU_CHECK_OUT") or (str(Path(env["OUT"]) / "gpu_check.md")
                                           if env.get("OUT") else ".cache/gpu_check.md")
        self.table = Path(out) if Path(out).is_absolute() else ROOT / out
        self.logs = self.table.parent / "gpu_check_logs"
        self.work = Path(env.get("GPU_CHECK_WORK") or ROOT / ".cache" / "gpu_check")
        wanted = env.get("GPU_CHECK_FAMILIES", "").replace(",", " ").split()
        self.families = [f for f in FAMILIES if f in wanted] if wanted else list(FAMILIES)
        self.rows: list[Row] = []
        self.gpu = False  # whether the GPU steps run (set by the environment step)

    def remaining(self) -> float:
        return self.t0 + self.budget_s - time.time()

    def add(self, step: str, result: str, seconds: float) -> None:
        self.rows.append(Row(step, result, round(seconds, 1)))
        short = result if len(result) <= 110 else result[:107] + "..."  # the table has it all
        print(f"[{time.time() - self.t0:4.0f} s] {step}: {short} ({seconds:.1f} s)", flush=True)

    def run(self, argv: list[str], timeout: float, log: str) -> Ran:
        """``argv`` in its own process group, stopped whole (DataLoader workers and DDP ranks
        too) after ``timeout`` seconds or at the deadline; its output appended to ``log``.
        Output goes through files, so a stray grandchild holding a pipe cannot hang us."""
        timeout = max(1.0, min(timeout, self.remaining()))
        start = time.monotonic()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err, text=True,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                rc: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                rc = None
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.killpg(proc.pid, sig)
                        proc.wait(timeout=10)
                        break
                    except ProcessLookupError:
                        break
                    except subprocess.TimeoutExpired:
                        continue
                proc.wait()
            texts = []
            for f in (out, err):
                f.seek(0)
                texts.append(f.read())
        ran = Ran(rc, texts[0], texts[1], time.monotonic() - start)
        with open(self.logs / f"{log}.log", "a", encoding="utf-8", errors="replace") as f:
            f.write(f"$ {' '.join(argv)}\n# exit {rc}, {ran.seconds:.1f} s\n{ran.out}\n"
                    f"--- stderr\n{ran.err}\n")
        return ran

    def car(self, *args: str) -> list[str]:
        """`car ARGS` with this Python (no `car` script is installed on a lent machine)."""
        return [self.py, "-m", "car.entry", *args]

    def config(self) -> list[str]:
        """Keep the models database and the frame cache in the work folder."""
        return ["--set", f"paths.models_dir={self.work / 'models_db'}",
                "--set", f"paths.frame_cache={self.work / 'frames'}"]

    def loader(self) -> list[str]:
        """`car train`'s loader workers: 0 unless GPU_CHECK_WORKERS says otherwise. On the lent
        H200 (2026-12-04) the default 8 workers cost 60-85 s a training outside the training
        itself, where 0 took 38 s in all (docs/gpu-check.md); the check times the GPU."""
        return ["--workers", os.environ.get("GPU_CHECK_WORKERS", "0")]

    def probe(self, log: str) -> dict[str, Any]:
        """What this Python has: torch and CUDA, TensorRT, ONNX Runtime, cuda-python."""
        ran = self.run([self.py, str(ROOT / "scripts" / "gpu_probe.py")], 120, log)
        return ran.last_json() or {"probe_error": ran.why()}

    def gpu_step(self, step: str, min_s: float = 20) -> bool:
        """Whether a GPU step may run; if not, its row says why."""
        if not self.gpu:
            self.add(step, NO_GPU, 0)
            return False
        if self.remaining() < min_s:
            self.add(step, BUDGET, 0)
            return False
        return True
