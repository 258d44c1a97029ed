"""scripts/gpu_check.sh and benchmarks/bench_gpu.py where there is no GPU: every GPU step
says "no GPU: skipped" and the table is still written; bench_gpu runs its CPU mode and
prints its table; the pieces that read the commands' output read them right."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from gpu_check_report import engine_column, env_line  # noqa: E402
from gpu_check_run import Runner, trained  # noqa: E402

GPU_STEPS = ("gpu extra", "pytest -m gpu", "torch CUDA per family", "models: sim tub",
             "engines:", "car bench per family", "DDP: car train --nproc")


def load_bench_gpu():
    """benchmarks/bench_gpu.py as the module ``bench_gpu`` (importable by name, so DDP's
    spawned processes find its worker function too)."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module("bench_gpu")


def gpu_here() -> bool:
    """A real probe: nvidia-smi lists a GPU, or torch sees CUDA."""
    if shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        if listed.returncode == 0 and "GPU" in listed.stdout:
            return True
    import torch

    return torch.cuda.is_available()


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.slow
def test_without_a_gpu_every_gpu_step_says_so_and_the_table_is_written(tmp_path):
    # where a GPU answers, GPU_CHECK_MODE=skip stands in for its absence (no 8-minute run)
    mode = "skip" if gpu_here() else "auto"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_MODE": mode,
           "GPU_CHECK_OUT": str(tmp_path / "out" / "gpu_check.md"),
           "GPU_CHECK_WORK": str(tmp_path / "work")}
    env.pop("OUT", None)
    start = time.monotonic()
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.monotonic() - start < 60
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    for step in GPU_STEPS:
        row = next(r for r in rows if r.startswith(f"| {step}"))
        assert "| no GPU: skipped |" in row, row
        assert f"{step}" in proc.stdout and "no GPU: skipped" in proc.stdout
    environment = next(r for r in rows if r.startswith("| environment |"))
    assert "Python 3." in environment and "tensorrt" in environment
    assert rows[0] == "| step | result | s |"
    assert table.strip() in proc.stdout  # printed as written
    assert (tmp_path / "out" / "gpu_check_logs" / "environment.log").is_file()


@pytest.mark.slow
def test_bench_gpu_on_the_cpu_prints_its_table(tmp_path, capsys):
    bench = load_bench_gpu()
    out = tmp_path / "bench.json"
    assert bench.main(["--device", "cpu", "--quick", "--families", "linear", "categorical",
                       "--json", str(out)]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.startswith("family"))
    for column in ("input", "batch", "fp32 /s", "AMP /s", "AMP x", "infer p50 ms", "p99"):
        assert column in header
    row = next(line for line in text.splitlines() if line.startswith("linear"))
    assert "3x80x160" in row  # car train's input for 160x120 frames, top third cropped
    assert "one process: multi-GPU not measured" in text
    data = json.loads(out.read_text())
    assert data["batch"] == 4 and data["world"] == 1
    for result in data["results"]:
        assert not result["errors"], result["errors"]
        assert set(result["train_samples_s"]) == {"fp32", "amp"}
        assert all(v > 0 for v in result["train_samples_s"].values())
        assert result["infer_ms"]["eager"]["p50"] > 0


def test_bench_gpu_without_cuda_says_no_gpu_and_exits_0(monkeypatch, capsys, tmp_path):
    import torch

    bench = load_bench_gpu()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--json", str(tmp_path / "b.json")]) == 0
    assert capsys.readouterr().out.strip() == "no GPU: skipped"
    assert json.loads((tmp_path / "b.json").read_text()) == {"skipped": "no GPU: skipped"}


@pytest.mark.slow
def test_bench_gpu_trains_each_family_as_car_train_does():
    from training.train import DEFAULT_SEQ_LEN

    bench = load_bench_gpu()
    assert bench.SEQ_LEN == DEFAULT_SEQ_LEN
    assert bench.input_shape() == (3, 80, 160)
    for family in bench.FAMILIES:
        model = bench.make_model(family, bench.input_shape())
        x, y = bench.make_batch(family, 2, bench.input_shape(), "cpu")
        loss = bench.make_loss(family, model)(model(x), y)
        assert loss.ndim == 0 and bool(loss.isfinite())


@pytest.mark.slow
def test_bench_gpu_ddp_code_path_over_gloo(capsys):
    bench = load_bench_gpu()
    assert bench.main(["--device", "cpu", "--quick", "--families", "linear", "--world", "2",
                       "--no-train"]) == 0
    rate = bench.ddp_throughput("linear", 2, "cpu", 2, 1, 1, "bf16")
    assert rate > 0


def test_a_command_past_its_timeout_is_stopped_with_its_children(tmp_path, monkeypatch):
    monkeypatch.setenv("GPU_CHECK_OUT", str(tmp_path / "t.md"))
    runner = Runner()
    runner.logs.mkdir(parents=True)
    start = time.monotonic()
    ran = runner.run(["bash", "-c", "sleep 60 & sleep 60; echo never"], 1, "slow")
    assert ran.rc is None and time.monotonic() - start < 15
    assert ran.why() == "timed out after 1 s" or ran.why().startswith("timed out after")
    ok = runner.run([sys.executable, "-c", "print('{\"a\": 1}')"], 30, "fine")
    assert ok.ok and ok.last_json() == {"a": 1}
    assert "# exit None" in (runner.logs / "slow.log").read_text()


def test_car_bench_rows_go_to_their_columns():
    assert engine_column({"engine": "onnxruntime", "provider": "CPUExecutionProvider"}) == \
        "ORT CPU"
    assert engine_column({"engine": "onnxruntime", "provider": "cuda"}) == "ORT CUDA"
    assert engine_column({"engine": "onnxruntime", "provider": "TensorrtExecutionProvider"}) \
        == "ORT TRT-EP"
    assert engine_column({"engine": "torch", "provider": "cuda:0"}) == "torch CUDA"
    assert engine_column({"engine": "tensorrt", "file": "pilot.trt"}) == "TRT fp32"
    assert engine_column({"engine": "tensorrt", "file": "pilot_int8.trt"}) == "TRT int8"


def test_the_environment_line_and_the_train_summary():
    line = env_line({"python": "3.12.3", "torch": "2.11.0", "torch_cuda": "12.8", "cuda": True,
                     "gpus": ["NVIDIA H200"], "bf16": True, "nccl": True,
                     "onnxruntime": "1.30.0", "ort_providers": ["CPUExecutionProvider"]},
                    ["NVIDIA H200, 570.1, 143771 MiB"])
    assert line.startswith("GPU: NVIDIA H200, 570.1, 143771 MiB (x1); Python 3.12.3; "
                           "torch 2.11.0 (CUDA 12.8, available, bf16, NCCL), 1 device(s)")
    assert "tensorrt: not installed" in line and "onnxruntime 1.30.0 [CPU]" in line
    assert "cuda-python: not installed" in line and "fastai: not installed" in line
    out = ("data: ...\ntrained rnn on 90 samples, validated on 20 (by blocks) on cuda in 7 s, "
           "lr 0.002\nbest validation: loss 0.1677, steering MAE 0.1\n")
    assert trained(out) == ("90 training + 20 validation samples, 1 epoch on cuda, 7 s in "
                            "training, validation loss 0.1677")


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="probe: torch sees no CUDA GPU")
def test_bench_gpu_quick_on_cuda(capsys):
    bench = load_bench_gpu()
    assert bench.main(["--device", "cuda", "--quick", "--families", "linear", "rnn"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("torch on cuda (")
    assert "linear" in text and "rnn" in text and "error" not in text.lower()


# ------------------------------------------- the GPU steps' logic, on canned command output
def fake_gpu_check(tmp_path, monkeypatch, env):
    """A gpu_check.Check that believes it has a GPU (``env``: what the probe found) and
    whose commands answer as the real ones do on a GPU machine, recording their argv."""
    import gpu_check
    from gpu_check_run import Ran

    monkeypatch.setenv("GPU_CHECK_OUT", str(tmp_path / "out" / "gpu_check.md"))
    monkeypatch.setenv("GPU_CHECK_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("GPU_CHECK_FAMILIES", "linear rnn")
    check = gpu_check.Check()
    check.logs.mkdir(parents=True)
    check.gpu, check.env = True, env
    check.calls = []

    def value(argv, flag):
        return argv[argv.index(flag) + 1]

    def run(argv, timeout, log):
        check.calls.append(argv)
        if argv[1:3] == ["-m", "pip"]:
            return Ran(1, "", "ERROR: Could not find a version (no network)", 0.1)
        what = argv[3] if argv[1:3] == ["-m", "car.entry"] else ""
        if what == "sim":
            Path(value(argv, "--out")).mkdir(parents=True)
            return Ran(0, "648 records written to tub: 2 lap(s)\n", "", 2.0)
        if what == "train" and "--help" in argv:
            return Ran(0, "  --nproc N  worker processes\n", "", 0.5)
        if what == "train":
            out = Path(value(argv, "--out"))
            out.mkdir(parents=True, exist_ok=True)
            (out / "pilot.onnx").write_bytes(b"onnx")
            return Ran(0, "trained x on 480 samples, validated on 120 (blocks) on cuda in 9 s,"
                       " lr 0.002\nbest validation: loss 0.0412, steering MAE 0.1\n", "", 20.0)
        if what == "build":
            Path(value(argv, "--out")).write_bytes(b"engine")
            return Ran(0, "built pilot.trt (fp16, 1.0 MB) in 12 s with TensorRT 10.3 on "
                       "NVIDIA H200 (sm_90); manifest pilot.json\n", "", 13.0)
        if what == "replay":
            out = {"records": 648} if "--update-ref" in argv else {"comparison": {
                "passed": True, "max_abs_diff": 2e-6 if "--provider" in argv else 4e-3}}
            return Ran(0, json.dumps(out) + "\n", "", 3.0)
        if what == "bench":
            model = Path(value(argv, "--model"))
            timed = {"infer_ms": {"p50": 0.5}, "preprocess_ms": {"p50": 0.1}}
            rows = ([{"engine": "onnxruntime", "provider": "CPUExecutionProvider", **timed},
                     {"engine": "onnxruntime", "provider": "cuda",
                      "skipped": "provider not in this onnxruntime build"},
                     {"engine": "tensorrt", "provider": "gpu", "file": "pilot.trt", **timed},
                     {"engine": "torch", "provider": "cuda:0", "file": "pilot.pt2", **timed}]
                    if model.suffix == ".onnx" else
                    [{"engine": "tensorrt", "provider": "gpu", "file": model.name, **timed}])
            return Ran(0, json.dumps({"rows": rows}) + "\n", "", 4.0)
        raise AssertionError(f"unexpected command {argv}")

    check.run = run
    return check


def test_the_gpu_steps_with_tensorrt_build_check_and_time_every_engine(tmp_path, monkeypatch):
    from gpu_check_report import write_report

    env = {"python": "3.12.3", "torch": "2.11.0", "cuda": True, "gpus": ["NVIDIA H200"],
           "tensorrt": "10.3.0", "cuda_python": "12.6.0", "onnxruntime": "1.30.0",
           "ort_providers": ["CPUExecutionProvider"]}
    check = fake_gpu_check(tmp_path, monkeypatch, env)
    check.gpu_extra()
    check.models_step()
    check.ddp_step()
    check.engines_step()
    check.bench_step()
    table = write_report(check)
    rows = {r.step: r.result for r in check.rows}
    assert rows["gpu extra (onnxruntime-gpu, tensorrt, cuda-python)"] == \
        "not installed (no package registry reachable)"
    assert rows["train rnn"] == ("ok: 480 training + 120 validation samples, 1 epoch on cuda, "
                                 "9 s in training, validation loss 0.0412")
    assert rows["DDP: car train --nproc"].startswith("ok: linear --nproc 1 (nccl): 20 s in all "
                                                     "(without --nproc: 20 s)")
    assert rows["DDP: car train --nproc"].endswith("1 GPU: multi-GPU not measured")
    engines = rows["engines linear"]
    assert "torch CUDA max abs diff 2.0e-06 ok (tol 0.001)" in engines
    assert "TRT fp32 max abs diff 4.0e-03 ok (tol 0.001) (built in 12 s)" in engines
    assert "TRT int8 max abs diff 4.0e-03 ok (tol 0.1)" in engines
    builds = [a for a in check.calls if a[3] == "build"]
    assert len(builds) == 6  # fp32, fp16, int8 for each of the two families
    assert builds[2][-5:] == ["--int8", "--calib-tub", str(check.tub), "--calib-frames", "200"]
    assert rows["car bench linear"] == "ok: 5 engine(s) timed, 1 not available here"
    line = next(ln for ln in table.splitlines() if ln.startswith("| linear | 20 |"))
    assert line.count("0.500") == 5 and "n/a" not in line
    assert "| ORT CPU | torch CUDA | TRT fp32 | TRT fp16 | TRT int8 |" in table
    assert "Not available here: ORT CUDA: provider not in this onnxruntime build;" in table


def test_the_gpu_steps_without_tensorrt_say_not_installed(tmp_path, monkeypatch):
    env = {"python": "3.12.3", "torch": "2.11.0", "cuda": True, "gpus": ["NVIDIA H200"] * 2,
           "onnxruntime": "1.30.0", "ort_providers": ["CPUExecutionProvider"]}
    check = fake_gpu_check(tmp_path, monkeypatch, env)
    check.models_step()
    check.ddp_step()
    check.engines_step()
    rows = {r.step: r.result for r in check.rows}
    assert rows["TensorRT engines (car build)"] == "not installed (tensorrt, cuda-python)"
    assert not [a for a in check.calls if a[3] == "build"]
    assert "--nproc 2 (nccl)" in rows["DDP: car train --nproc"]
    assert "multi-GPU not measured" not in rows["DDP: car train --nproc"]
    assert rows["engines rnn"] == "torch CUDA max abs diff 2.0e-06 ok (tol 0.001)"


def test_the_torch_table_shows_the_ddp_column_only_with_several_gpus():
    from gpu_check_report import torch_table

    result = {"family": "linear", "input": "3x80x160", "batch": 128,
              "train_samples_s": {"fp32": 1000.0, "amp": 2500.0}, "train_loss": {},
              "ddp": {"gpus": 2, "samples_s": 4800.0}, "compile_s": None, "errors": {},
              "infer_ms": {"eager": {"p50": 0.4, "p99": 0.6, "mean": 0.45}}}
    data = {"device": "cuda (NVIDIA H200, torch 2.11.0)", "amp_dtype": "fp16", "world": 2,
            "gpus": 2, "batch": 128, "steps": 20, "results": [result]}
    lines = torch_table(data)
    assert "AMP over 2 GPUs (DDP) samples/s" in lines[3]
    assert lines[5] == "| linear | 3x80x160 | 1000 | 2500 | 2.50x | 4800 | 0.400 | 0.600 |"
    one = torch_table({**data, "world": 1, "gpus": 1, "results": [{**result, "ddp": None}]})
    assert "DDP" not in one[3] and "1 GPU: multi-GPU not measured." in one
