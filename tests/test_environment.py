"""The pins live in pyproject.toml; environment.yml must install exactly the same."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"])
    extras = dict(project.get("optional-dependencies", {}))
    cuda = extras.pop("cuda12")  # GPU builds only: not in the CPU environment of environment.yml
    assert cuda == [next(p for p in pins if p.startswith("jax==")).replace("jax==", "jax[cuda12]==")]
    for extra in extras.values():
        pins |= set(extra)
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", p) for p in pins), "every pin must be exact (==)"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {p for p in pip if not p.startswith("-e")} == pins
    py = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert py == "python=3.11"


def test_only_kernels_module_imports_neural_tangents():
    src = ROOT / "src" / "p2pntk"
    importers = sorted(p.name for p in src.glob("*.py") if re.search(r"^\s*(import|from)\s+neural_tangents",
                                                                       p.read_text(), re.M))
    assert importers == ["kernels.py"]
