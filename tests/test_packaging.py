"""The install: the car runtime must never pull torch, and car/ and deploy/ never import it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"torch", "torchvision", "fastai", "tensorflow"}

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_runtime_dependencies_have_no_torch() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {dep.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
             for dep in project["dependencies"]}
    assert not names & HEAVY, names
    assert {"numpy", "opencv-python-headless", "pyserial", "onnxruntime"} <= names
    extras = project["optional-dependencies"]
    assert any(d.startswith("torch>=2.14") for d in extras["training"])
    assert any(d.startswith("torchvision>=0.29") for d in extras["training"])
    assert {"onnxruntime-gpu", "tensorrt"} <= {d.split(">")[0] for d in extras["gpu"]}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", ["car", "deploy"])
def test_runtime_packages_never_import_torch(package: str) -> None:
    allowed = {ROOT / "deploy" / "torch_engine.py"}  # the .pt2 debugging engine, lazily
    offenders = {str(p.relative_to(ROOT)): imported_modules(p) & HEAVY
                 for p in (ROOT / package).rglob("*.py") if p not in allowed}
    assert not {k: v for k, v in offenders.items() if v}


def test_importing_the_car_cli_loads_no_torch() -> None:
    import subprocess

    code = ("import sys, car.cli, car.tub; "
            f"print(sorted(m for m in sys.modules if m in {sorted(HEAVY)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
