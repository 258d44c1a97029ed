"""The markdown that `bash scripts/gpu_check.sh` prints and writes (to paste into
BENCHMARKS.md): the machine, one row per step, then per-family tables of torch on the GPU
(benchmarks/bench_gpu.py) and of `car bench`'s inference p50 on every engine."""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from typing import Any

ENGINE_COLUMNS = ("ORT CPU", "ORT CUDA", "ORT TRT-EP", "torch CPU", "torch CUDA", "TRT fp32",
                  "TRT fp16", "TRT int8")


@dataclass
class Row:
    step: str
    result: str
    seconds: float


def engine_column(row: dict[str, Any]) -> str:
    """The table column of one `car bench --json` row."""
    engine, provider = row.get("engine", "?"), str(row.get("provider", "")).lower()
    if engine == "onnxruntime":
        return ("ORT TRT-EP" if "tensorrt" in provider else
                "ORT CUDA" if "cuda" in provider else "ORT CPU")
    if engine == "torch":
        return "torch CUDA" if "cuda" in provider else "torch CPU"
    if engine == "tensorrt":
        name = str(row.get("file", ""))
        return ("TRT fp16" if "fp16" in name else "TRT int8" if "int8" in name else
                "TRT fp32")
    return engine


def env_line(env: dict[str, Any], smi: list[str], short: bool = False) -> str:
    """What the machine has, in one line (``short``: the GPU inference stack only)."""
    providers = [p.replace("ExecutionProvider", "") for p in env.get("ort_providers") or []]
    ort = (f"onnxruntime {env['onnxruntime']} [{', '.join(providers)}]"
           if env.get("onnxruntime") else
           f"onnxruntime: not importable ({env.get('onnxruntime_error', '?')})")
    ort_gpu = (f"onnxruntime-gpu {env['onnxruntime_gpu']}" if env.get("onnxruntime_gpu")
               else "onnxruntime-gpu: not installed")
    trt = f"tensorrt {env['tensorrt']}" if env.get("tensorrt") else "tensorrt: not installed"
    cuda_py = (f"cuda-python {env['cuda_python']}" if env.get("cuda_python")
               else "cuda-python: not installed")
    stack = f"{trt}; {ort}; {ort_gpu}; {cuda_py}"
    if short:
        return stack
    if smi:
        names = sorted(set(smi))
        gpu = "GPU: " + "; ".join(f"{n} (x{smi.count(n)})" for n in names)
    else:
        gpu = "GPU: none found (no working nvidia-smi)"
    if env.get("torch"):
        flags = [f"CUDA {env.get('torch_cuda') or '-'}",
                 "available" if env.get("cuda") else "not available"]
        flags += [f for f, on in (("bf16", env.get("bf16")), ("NCCL", env.get("nccl"))) if on]
        torch = f"torch {env['torch']} ({', '.join(flags)})"
        if env.get("gpus"):
            torch += f", {len(env['gpus'])} device(s)"
    else:
        torch = f"torch: not importable ({env.get('torch_error') or env.get('probe_error')})"
    fastai = f"fastai {env['fastai']}" if env.get("fastai") else "fastai: not installed"
    return f"{gpu}; Python {env.get('python', '?')}; {torch}; {stack}; {fastai}"


def cell(text: Any) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def step_table(rows: list[Row]) -> list[str]:
    lines = ["| step | result | s |", "|---|---|---:|"]
    lines += [f"| {cell(r.step)} | {cell(r.result)} | {r.seconds:.1f} |" for r in rows]
    return lines


def torch_table(data: dict[str, Any] | None) -> list[str]:
    if not data or "results" not in data:
        return []
    world = int(data.get("world", 1))
    multi = f"AMP over {world} GPUs (DDP) samples/s" if world > 1 else None
    compiled = any("compiled" in r["infer_ms"] for r in data["results"])
    head = ["family", "input", "fp32 samples/s", f"AMP {data.get('amp_dtype')} + "
            "channels_last samples/s", "AMP speed-up", *([multi] if multi else []),
            "infer batch 1 p50 ms", "p99 ms", *(["compiled p50 ms"] if compiled else [])]
    lines = ["", f"### Torch on {cell(data['device'])} (benchmarks/bench_gpu.py: batch "
             f"{data['batch']}, {data['steps']} timed steps, synthetic data)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    errors = []
    for r in data["results"]:
        s = r["train_samples_s"]
        fp32, amp = s.get("fp32"), s.get("amp")
        row = [r["family"], r["input"], _num(fp32), _num(amp),
               f"{amp / fp32:.2f}x" if fp32 and amp else "-"]
        if multi:
            ddp = r.get("ddp") or {}
            row.append(_num(ddp.get("samples_s")) if "samples_s" in ddp else "failed")
        eager = r["infer_ms"].get("eager", {})
        row += [_num(eager.get("p50"), 3), _num(eager.get("p99"), 3)]
        if compiled:
            row.append(_num(r["infer_ms"].get("compiled", {}).get("p50"), 3))
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
        errors += [f"{r['family']} {what}: {why}" for what, why in r["errors"].items()]
    if world <= 1:
        lines += ["", "1 GPU: multi-GPU not measured." if "cuda" in data["device"]
                  else "One process: multi-GPU not measured."]
    lines += [f"- {cell(e)}" for e in errors]
    return lines


def engine_table(engines: dict[str, dict[str, str]], train_s: dict[str, float],
                 notes: dict[str, str]) -> list[str]:
    if not engines:
        return []
    columns = [c for c in ENGINE_COLUMNS if any(c in e for e in engines.values())]
    lines = ["", "### Inference p50 per engine (car bench, batch 1, ms; trained 1 epoch by "
             "car train, s)", "",
             "| family | car train s | " + " | ".join(columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for family, cells in engines.items():
        trained = f"{train_s[family]:.0f}" if family in train_s else "-"
        lines.append(f"| {family} | {trained} | "
                     + " | ".join(cells.get(c, "n/a") for c in columns) + " |")
    missing = [f"{c}: {cell(notes.get(c, 'not tried'))}" for c in ENGINE_COLUMNS
               if c not in columns]
    if missing:
        lines += ["", "Not available here: " + "; ".join(missing) + "."]
    return lines


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def write_report(check: Any) -> str:
    """The markdown for ``check`` (a gpu_check.Check that has run), written to its table."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    total = time.time() - check.t0
    lines = [f"## GPU check (scripts/gpu_check.sh), {when}", "",
             cell(env_line(check.env, check.smi)), "",
             *step_table(check.rows), "",
             f"Total {total:.0f} s (budget {check.budget_s:.0f} s); families: "
             f"{', '.join(check.families)}; GPU_CHECK_MODE={check.mode}.",
             *torch_table(check.torch_gpu),
             *engine_table(check.engines, check.train_s, check.notes)]
    text = "\n".join(lines) + "\n"
    check.table.parent.mkdir(parents=True, exist_ok=True)
    check.table.write_text(text, encoding="utf-8")
    return text
