"""Inference latency of every model family on every engine and provider this machine has.

    python benchmarks/bench_infer.py [--models DIR] [--runs 300]

``--models DIR`` takes trained models in DIR/<family>/pilot.onnx (with pilot.pt2 beside);
without it, each family is built untrained and exported (latency does not depend on the
weights). Batch 1, 160x120 frames, preprocessing timed separately from inference.
The baseline is the training framework itself: the exported torch program (pilot.pt2) on the
CPU in the same run; ``vs torch cpu`` is its p50 over the row's p50.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from car.bench import bench_model  # noqa: E402

FAMILIES = ("linear", "categorical", "resnet18", "3d", "rnn")


def untrained(root: Path) -> dict[str, Path]:
    from training.export import export_untrained

    return {family: export_untrained(family, root / family) for family in FAMILIES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="DIR/<family>/pilot.onnx")
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.models:
            models = {f: args.models / f / "pilot.onnx" for f in FAMILIES
                      if (args.models / f / "pilot.onnx").is_file()}
        else:
            models = untrained(Path(tmp))
        print(f"{'FAMILY':<10}{'ENGINE':<12}{'PROVIDER':<24}{'PRE p50':>9}{'p99':>8}"
              f"{'INFER p50':>11}{'p99':>8}{'vs torch cpu':>14}   (ms, batch 1)")
        for family, path in models.items():
            rows = bench_model(path, runs=args.runs)
            base = next((r.infer_ms["p50"] for r in rows if r.engine == "torch"
                         and r.provider == "cpu" and r.infer_ms), None)
            for r in rows:
                if r.skipped:
                    print(f"{family:<10}{r.engine:<12}{r.provider:<24}  skipped: "
                          f"{r.skipped[:60]}")
                    continue
                p, i = r.preprocess_ms, r.infer_ms
                ratio = f"{base / i['p50']:.2f}x" if base and i["p50"] else "-"
                print(f"{family:<10}{r.engine:<12}{r.provider[:23]:<24}{p['p50']:>9.3f}"
                      f"{p['p99']:>8.3f}{i['p50']:>11.3f}{i['p99']:>8.3f}{ratio:>14}")


if __name__ == "__main__":
    main()
