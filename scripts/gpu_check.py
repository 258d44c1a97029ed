"""The steps of `bash scripts/gpu_check.sh` (see docs/gpu-check.md), after the shell has
chosen the Python and installed the carried wheels.

Each step runs its commands as child processes, each in its own process group with its own
timeout (a timed-out command is stopped whole, DataLoader workers and DDP ranks included),
under one deadline for the whole check: a step that would start past it is reported as
"skipped: time budget". A step's long output goes to a log file; the step adds one row
(step | result | seconds). The end is one markdown table for BENCHMARKS.md.

Environment (all optional): GPU_CHECK_MODE auto (default: the GPU steps run where there is
a GPU), skip (every GPU step says "no GPU: skipped", as on a CPU machine), cpu (run every
step on the CPU, with tiny sizes, to try the script); GPU_CHECK_FAMILIES (default all five);
GPU_CHECK_BUDGET_S (default 450); GPU_CHECK_OUT (the table; default $OUT/gpu_check.md, else
.cache/gpu_check.md); GPU_CHECK_WORK (tubs and models; default .cache/gpu_check).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check_report import ENGINE_COLUMNS, engine_column, env_line, write_report
from gpu_check_run import BUDGET, ROOT, Runner, failed, trained

# ONNX Runtime CPU against each engine on the replayed tub: fp32 as docs/tensorrt.md's GPU
# test (and car replay's default); fp16 and int8 are looser by nature (docs/gpu-check.md)
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "int8": 1e-1}


class Check(Runner):
    def __init__(self) -> None:
        super().__init__()
        self.env: dict[str, Any] = {}
        self.smi: list[str] = []
        self.models: dict[str, Path] = {}  # family → pilot.onnx
        self.train_s: dict[str, float] = {}
        self.engines: dict[str, dict[str, str]] = {}  # family → column → p50 text
        self.notes: dict[str, str] = {}  # column → why it is empty
        self.torch_gpu: dict[str, Any] | None = None
        self.tub = self.work / "tub"

    # ------------------------------------------------------------------ steps
    def setup_row(self) -> None:
        env = os.environ
        self.add("python", f"{env.get('GPU_CHECK_PY_HOW', sys.executable)}; wheels: "
                 f"{env.get('GPU_CHECK_WHEELS', 'not needed')}",
                 float(env.get("GPU_CHECK_SETUP_S", "0")))

    def environment(self) -> None:
        start = time.monotonic()
        if shutil.which("nvidia-smi"):
            ran = self.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                            "--format=csv,noheader"], 30, "environment")
            self.smi = [ln.strip() for ln in ran.out.splitlines() if ln.strip()] if ran.ok \
                else []
        self.env = self.probe("environment")
        self.gpu = self.mode == "cpu" or (self.mode == "auto" and bool(
            self.env.get("cuda") or self.smi))
        self.add("environment", env_line(self.env, self.smi), time.monotonic() - start)

    def gpu_extra(self) -> None:
        step = "gpu extra (onnxruntime-gpu, tensorrt, cuda-python)"
        if not self.gpu_step(step):
            return
        if self.mode == "cpu":  # no 5 GB install on a machine without a GPU
            self.add(step, "skipped: GPU_CHECK_MODE=cpu", 0)
            return
        e = self.env
        have_ort_gpu = "CUDAExecutionProvider" in (e.get("ort_providers") or [])
        if e.get("tensorrt") and have_ort_gpu and e.get("cuda_python"):
            self.add(step, "already installed", 0)
            return
        start = time.monotonic()
        pip = [self.py, "-m", "pip", "--disable-pip-version-check"]
        # can the index serve the GPU packages at all? (cuda-python's own wheel is tiny)
        probe = self.run([*pip, "download", "--no-deps", "--retries", "0", "--timeout", "5",
                          "-q", "-d", str(self.work / "pip_probe"), "cuda-python"], 40,
                         "gpu_extra")
        if not probe.ok:
            why = ("pip is missing" if "No module named pip" in probe.err
                   else "no package registry reachable")
            self.add(step, f"not installed ({why})", time.monotonic() - start)
            return
        in_venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
        if in_venv:  # the project's way; then the GPU build of onnxruntime, alone
            ran = self.run([*pip, "install", "-q", "-e", ".[gpu]"], 400, "gpu_extra")
            if ran.ok:
                self.run([*pip, "uninstall", "-y", "onnxruntime", "onnxruntime-gpu"], 60,
                         "gpu_extra")
                ran = self.run([*pip, "install", "-q", "onnxruntime-gpu>=1.17"], 200,
                               "gpu_extra")
        else:  # the machine's own Python: into the user site, ahead of the system's
            ran = self.run([*pip, "install", "-q", "--user", "onnxruntime-gpu>=1.17",
                            "tensorrt>=8.5", "cuda-python>=12"], 400, "gpu_extra")
        self.env = self.probe("gpu_extra")
        self.add(step, ("installed: " if ran.ok else f"{failed(ran)}; now: ")
                 + env_line(self.env, [], short=True), time.monotonic() - start)

    def pytest_gpu(self) -> None:
        step = "pytest -m gpu"
        if not self.gpu_step(step, 30):
            return
        files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                       if "mark.gpu" in p.read_text(encoding="utf-8", errors="replace"))
        ran = self.run([self.py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                        "--continue-on-collection-errors", *files], 180, "pytest_gpu")
        summary = next((ln.strip("= ") for ln in reversed(ran.out.splitlines())
                        if re.search(r"\d+ (passed|failed|skipped|deselected|errors?)", ln)),
                       None)
        bad = [ln.split(" - ")[0].replace("FAILED ", "").replace("ERROR ", "")
               for ln in ran.out.splitlines() if ln.startswith(("FAILED", "ERROR"))]
        result = (f"timed out after {ran.seconds:.0f} s" if ran.rc is None
                  else summary or failed(ran))
        if bad:
            result += f"; failing: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
        self.add(step, result, ran.seconds)

    def torch_cuda(self) -> None:
        step = "torch CUDA per family (benchmarks/bench_gpu.py)"
        if not self.gpu_step(step, 30):
            return
        out = self.logs / "bench_gpu.json"
        args = ["--device", "cpu", "--quick"] if self.mode == "cpu" else []
        if os.environ.get("GPU_CHECK_COMPILE") == "1":
            args.append("--compile")  # torch.compile: tens of seconds a family
        ran = self.run([self.py, "benchmarks/bench_gpu.py", *args, "--json", str(out),
                        "--families", *self.families], 300, "bench_gpu")
        try:
            self.torch_gpu = json.loads(out.read_text())
        except (OSError, ValueError):
            self.torch_gpu = None
        if not ran.ok or not self.torch_gpu:
            self.add(step, failed(ran), ran.seconds)
            return
        if "skipped" in self.torch_gpu:
            self.add(step, f"{self.torch_gpu['skipped']} (torch sees no CUDA)", ran.seconds)
            return
        results = self.torch_gpu["results"]
        errors = sum(len(r["errors"]) for r in results)
        world = self.torch_gpu.get("world", 1)
        multi = (f"DDP over {world} GPUs measured" if world > 1 else
                 "1 GPU: multi-GPU not measured" if self.env.get("cuda") else
                 "one process: multi-GPU not measured")
        self.add(step, f"ok: {len(results)} families on {self.torch_gpu['device']}, batch "
                 f"{self.torch_gpu['batch']}; {multi}"
                 + (f"; {errors} error(s), see below" if errors else ""), ran.seconds)

    def models_step(self) -> None:
        step = "models: sim tub + car train"
        if not self.gpu_step(step, 60):
            return
        quick = self.mode == "cpu"
        for sub in ("tub", "models", "frames", "models_db", "ddp"):
            shutil.rmtree(self.work / sub, ignore_errors=True)
        ran = self.run(self.car("sim", "record", "--track", "oval", "--laps", "1", "--hz",
                                "10" if quick else "20", "--seed", "1", "--out", str(self.tub)),
                       120, "models")
        self.add("sim tub (car sim record)", ran.out.strip().splitlines()[-1][:160]
                 if ran.ok and ran.out.strip() else failed(ran), ran.seconds)
        if not ran.ok:
            return
        for family in self.families:
            if self.remaining() < 40:
                self.add(f"train {family}", BUDGET, 0)
                continue
            out = self.work / "models" / family
            ran = self.run(self.car("train", "--tub", str(self.tub), "--type", family,
                                    "--epochs", "1", "--limit", "120" if quick else "300",
                                    "--no-aug", "--quiet", "--force", "--out", str(out),
                                    *self.loader(), *self.config()), 180, f"train_{family}")
            if ran.ok and (out / "pilot.onnx").is_file():
                self.models[family] = out / "pilot.onnx"
                self.train_s[family] = ran.seconds
                self.add(f"train {family}", f"ok: {trained(ran.out)}", ran.seconds)
                continue
            why = failed(ran)
            # without a trained model the engine steps still run on an untrained export
            made = self.run([self.py, "-c", "import sys; from pathlib import Path; from "
                             "training.export import export_untrained; export_untrained("
                             "sys.argv[1], Path(sys.argv[2]))", family, str(out)], 120,
                            f"train_{family}")
            if made.ok and (out / "pilot.onnx").is_file():
                self.models[family] = out / "pilot.onnx"
                why += "; using an untrained export instead"
            self.add(f"train {family}", why, ran.seconds + made.seconds)

    def engines_step(self) -> None:
        step = "engines: TensorRT fp32/fp16/int8 + checks vs ORT CPU"
        if not self.gpu_step(step, 30):
            return
        if not self.models:
            self.add(step, "no models (the models step failed)", 0)
            return
        e = self.env
        trt = bool(e.get("tensorrt") and e.get("cuda_python"))
        providers = e.get("ort_providers") or []
        if not trt:
            missing = [n for n, v in (("tensorrt", e.get("tensorrt")),
                                      ("cuda-python", e.get("cuda_python"))) if not v]
            self.add("TensorRT engines (car build)", f"not installed ({', '.join(missing)})",
                     0)
            self.notes.update({c: "not installed" for c in ENGINE_COLUMNS
                               if c.startswith("TRT ")})
        for family, onnx in self.models.items():
            if self.remaining() < 30:
                self.add(f"engines {family}", BUDGET, 0)
                continue
            start = time.monotonic()
            ref = onnx.with_name("ort_cpu.replay.json")
            base = self.run(self.car("replay", str(self.tub), "--model", str(onnx),
                                     "--provider", "cpu", "--update-ref", "--ref", str(ref),
                                     "--json"), 120, f"engines_{family}")
            if not base.ok:
                self.add(f"engines {family}", f"ORT CPU reference {failed(base)}",
                         time.monotonic() - start)
                continue
            checks = []
            torch_on = "cuda" if e.get("cuda") else "cpu"  # cpu: GPU_CHECK_MODE=cpu
            checks.append(self.check(family, onnx.with_suffix(".pt2"), torch_on, ref,
                                     f"torch {torch_on.upper()}", 1e-3))
            for provider, name in (("cuda", "ORT CUDA"), ("tensorrt", "ORT TRT-EP")):
                ep = "CUDAExecutionProvider" if provider == "cuda" else \
                    "TensorrtExecutionProvider"
                if ep in providers:
                    checks.append(self.check(family, onnx, provider, ref, name, 1e-3))
            if trt:
                checks += [self.build_and_check(family, onnx, precision, ref)
                           for precision in ("fp32", "fp16", "int8")]
            self.add(f"engines {family}", "; ".join(checks) or "nothing to check here",
                     time.monotonic() - start)

    def engine_file(self, onnx: Path, precision: str) -> Path:
        return onnx.with_name("pilot.trt" if precision == "fp32" else f"pilot_{precision}.trt")

    def build_and_check(self, family: str, onnx: Path, precision: str, ref: Path) -> str:
        out = self.engine_file(onnx, precision)
        flags = {"fp32": [], "fp16": ["--fp16"],
                 "int8": ["--int8", "--calib-tub", str(self.tub), "--calib-frames", "200"]}
        ran = self.run(self.car("build", str(onnx), "--out", str(out), "--force",
                                *flags[precision]), 300, f"build_{family}")
        if not ran.ok:
            return f"TRT {precision} build {failed(ran)}"
        built = re.search(r" in (\d+) s ", ran.out)
        return self.check(family, out, None, ref, f"TRT {precision}", TOLERANCE[precision],
                          f" (built in {built.group(1)} s)" if built else "")

    def check(self, family: str, model: Path, provider: str | None, ref: Path, name: str,
              tolerance: float, extra: str = "") -> str:
        """``model`` on the replayed tub against the ORT CPU reference: one phrase."""
        argv = self.car("replay", str(self.tub), "--model", str(model), "--ref", str(ref),
                        "--tolerance", f"{tolerance:g}", "--json")
        if provider:
            argv[argv.index("--ref"):argv.index("--ref")] = ["--provider", provider]
        ran = self.run(argv, 180, f"engines_{family}")
        c = (ran.last_json() or {}).get("comparison")
        if not isinstance(c, dict):
            return f"{name} {failed(ran)}"
        verdict = "ok" if c["passed"] else "OVER"
        return f"{name} max abs diff {c['max_abs_diff']:.1e} {verdict} (tol {tolerance:g}){extra}"

    def bench_step(self) -> None:
        step = "car bench per family"
        if not self.gpu_step(step, 20):
            return
        if not self.models:
            self.add(step, "no models (the models step failed)", 0)
            return
        runs = "20" if self.mode == "cpu" else "100"
        for family, onnx in self.models.items():
            if self.remaining() < 20:
                self.add(f"car bench {family}", BUDGET, 0)
                continue
            start, timed, skipped, problems = time.monotonic(), 0, 0, []
            cells = self.engines.setdefault(family, {})
            for model in (onnx, self.engine_file(onnx, "fp16"), self.engine_file(onnx, "int8")):
                if not model.is_file():
                    continue
                ran = self.run(self.car("bench", "--model", str(model), "--runs", runs,
                                        "--json"), 120, f"bench_{family}")
                rows = (ran.last_json() or {}).get("rows")
                if not isinstance(rows, list):
                    problems.append(f"{model.name} {failed(ran)}")
                    continue
                for r in rows:
                    column = engine_column(r)
                    if r.get("skipped"):
                        skipped += 1
                        self.notes.setdefault(column, r["skipped"][:90])
                    else:
                        timed += 1
                        cells[column] = f"{r['infer_ms']['p50']:.3f}"
            self.add(f"car bench {family}", "; ".join(problems) or
                     f"ok: {timed} engine(s) timed, {skipped} not available here",
                     time.monotonic() - start)

    def ddp_step(self) -> None:
        step = "DDP: car train --nproc"
        if not self.gpu_step(step, 45):
            return
        if not self.tub.is_dir():
            self.add(step, "no tub (the models step failed)", 0)
            return
        helped = self.run(self.car("train", "--help"), 60, "ddp")
        if "--nproc" not in helped.out:
            self.add(step, "not available: car train has no --nproc option here", helped.seconds)
            return
        gpus = len(self.env.get("gpus") or [])
        nproc = max(1, gpus) if self.mode != "cpu" else 1
        family = os.environ.get("GPU_CHECK_DDP_FAMILY", "linear")
        ran = self.run(self.car("train", "--tub", str(self.tub), "--type", family, "--epochs",
                                "1", "--limit", "120" if self.mode == "cpu" else "300",
                                "--no-aug", "--quiet", "--force", "--nproc", str(nproc),
                                "--out", str(self.work / "ddp"), *self.loader(), *self.config()),
                       240, "ddp")
        backend = "nccl" if self.env.get("cuda") else "gloo"
        if not ran.ok:
            self.add(step, f"--nproc {nproc} ({backend}) {failed(ran)}", ran.seconds)
            return
        alone = self.train_s.get(family)
        versus = f" (without --nproc: {alone:.0f} s)" if alone else ""
        note = "; 1 GPU: multi-GPU not measured" if nproc == 1 and self.env.get("cuda") else ""
        self.add(step, f"ok: {family} --nproc {nproc} ({backend}): {ran.seconds:.0f} s in all"
                 f"{versus}; {trained(ran.out)}{note}", ran.seconds)


def main() -> int:
    check = Check()
    check.logs.mkdir(parents=True, exist_ok=True)
    for old in check.logs.glob("*.log"):
        old.unlink()
    check.work.mkdir(parents=True, exist_ok=True)
    check.setup_row()
    check.environment()
    # DDP before the engines: on a lent GPU without TensorRT it is the scarcer measurement
    for step in (check.gpu_extra, check.pytest_gpu, check.torch_cuda, check.models_step,
                 check.ddp_step, check.engines_step, check.bench_step):
        try:
            step()
        except Exception as exc:  # a bug in one step must not lose the others' rows
            check.add(step.__name__, f"error in gpu_check.py: {type(exc).__name__}: {exc}", 0)
        write_report(check)  # after every step: a check stopped from outside keeps its rows
    text = write_report(check)
    print()
    print(text)
    logs = shutil.make_archive(str(check.logs), "gztar", check.logs.parent, check.logs.name)
    print(f"\nwrote {check.table}; logs in {check.logs} and {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
