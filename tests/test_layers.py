"""Layering: the pure core never imports ray, directly or through another module."""

import ast
import subprocess
import sys
from pathlib import Path

import fatlib

CORE = ["audio", "config", "features", "labels", "metrics", "models", "synth", "augment",
        "folds", "scoring", "errors"]


def _core_modules():
    root = Path(fatlib.__file__).parent
    missing = [m for m in CORE if not (root / f"{m}.py").exists()]
    assert not missing, f"core modules renamed or removed: {missing}"
    return CORE


def test_core_sources_have_no_ray_import():
    root = Path(fatlib.__file__).parent
    for module in _core_modules():
        tree = ast.parse((root / f"{module}.py").read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n == "ray" or n.startswith("ray.") for n in names), module


def test_importing_the_core_loads_no_ray():
    imports = "; ".join(f"import fatlib.{m}" for m in _core_modules())
    check = "any(m == 'ray' or m.startswith('ray.') for m in sys.modules)"
    code = f"import sys; {imports}; print({check})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
