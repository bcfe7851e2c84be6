"""The package layout: layers, import rules, the facade, one copy of each primitive.

The imports are read from the source (``ast``, imports inside functions included: that
is where import cycles hide), not from ``sys.modules``; one test also imports the
closed-form side in a fresh interpreter and checks that JAX was never loaded.
"""
import ast
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import networkx as nx
import pytest

import p2pntk

PKG = Path(p2pntk.__file__).resolve().parent
ROOT = PKG.parents[1]
LAYER = {m: i for i, mods in enumerate(p2pntk.LAYERS.values()) for m in mods}
NETWORK_LIBS = {"jax", "jaxlib", "neural_tangents", "tensorflow", "flax"}


def _imports(module: str):
    """(package modules imported, private names imported from them, external top-level packages)."""
    tree = ast.parse((PKG / f"{module}.py").read_text())
    mods, private, external = set(), [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.module or "").startswith("p2pntk"):
                base = (node.module or "").removeprefix("p2pntk").lstrip(".") if node.level == 0 else (node.module or "")
                if base:
                    mods.add(base.split(".")[0])
                    private += [f"{base}.{a.name}" for a in node.names if a.name.startswith("_")]
                else:
                    mods |= {a.name for a in node.names}
            elif node.level == 0:
                external.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("p2pntk."):
                    mods.add(a.name.split(".")[1])
                else:
                    external.add(a.name.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and str(arg.value).startswith("p2pntk."):
                mods.add(str(arg.value).split(".")[1])
    return mods, private, external


GRAPH = nx.DiGraph()
INFO = {}
for _m in p2pntk.MODULES:
    INFO[_m] = _imports(_m)
    GRAPH.add_node(_m)
    GRAPH.add_edges_from((_m, t) for t in INFO[_m][0])


def test_every_module_is_in_one_layer_and_every_layer_module_exists():
    files = {f.stem for f in PKG.glob("*.py")} - {"__init__"}
    assert files == set(p2pntk.MODULES)
    assert len(p2pntk.MODULES) == len(set(p2pntk.MODULES))


def test_no_import_cycle():
    cycles = list(nx.simple_cycles(GRAPH))
    assert not cycles, f"import cycles: {cycles}"


def test_no_private_name_imported_from_another_module():
    bad = {m: INFO[m][1] for m in INFO if INFO[m][1]}
    assert not bad, bad


def test_modules_import_only_their_layer_or_below():
    bad = [(m, t) for m, t in GRAPH.edges if LAYER[t] > LAYER[m]]
    assert not bad, f"imports from a higher layer: {bad}"
    build = set(p2pntk.LAYERS["build"])
    below = [(m, t) for m, t in GRAPH.edges if t in build and m not in build]
    assert not below, below


def test_closed_form_side_never_reaches_jax():
    side = set(p2pntk.LAYERS["bottom"]) | set(p2pntk.LAYERS["closed_form"])
    for m in side:
        reach = nx.descendants(GRAPH, m) | {m}
        libs = set().union(*(INFO[r][2] for r in reach)) & NETWORK_LIBS
        assert not libs, f"{m} reaches {libs} through {sorted(reach)}"
    code = ("import sys; import p2pntk; " + "; ".join(f"import p2pntk.{m}" for m in sorted(side))
            + "; bad = sorted(NET & set(sys.modules)); print(bad); raise SystemExit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", f"NET = {sorted(NETWORK_LIBS)!r}; NET = set(NET); " + code],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_neural_tangents_only_in_kernels():
    users = sorted(m for m in INFO if "neural_tangents" in INFO[m][2])
    assert users == ["kernels"]


def test_facade_names_resolve_lazily():
    out = subprocess.run([sys.executable, "-c", "import sys, p2pntk; print('jax' in sys.modules)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr        # import p2pntk loads nothing heavy
    for name, module in p2pntk.PUBLIC.items():
        assert getattr(p2pntk, name) is getattr(__import__(f"p2pntk.{module}", fromlist=[name]), name), name
    for name in ("simulate", "linearized_outputs", "linearized_sweep", "linearized_flow_outputs", "spectral_radius"):
        assert name in p2pntk.__all__
    with pytest.raises(AttributeError):
        p2pntk.no_such_name


# --- one copy of each primitive ------------------------------------------------------------

def _sources():
    """(label, code) of every package module, test, benchmark and chapter code cell."""
    out = [(f"src/{f.name}", f.read_text()) for f in sorted(PKG.glob("*.py"))]
    out += [(str(f.relative_to(ROOT)), f.read_text()) for d in ("tests", "benchmarks") for f in sorted((ROOT / d).rglob("*.py"))]
    for f in sorted((ROOT / "book").glob("*.md")):
        nb = jupytext.read(f)
        out.append((f"book/{f.name}", "\n".join(c.source for c in nb.cells if c.cell_type == "code")))
    return out


SOURCES = _sources()
#: primitive -> the one module that defines it
PRIMITIVES = {"row_space_factor": "geometry", "agent_weights": "checks", "check_lr": "checks",
              "traced_kernel": "coefficients", "loglog_slope": "metrics", "atomic_write": "paths",
              "relative_error": "metrics", "load_profile": "pipeline"}
#: code patterns that belong to one primitive only: (regex, the label allowed to contain it)
PATTERNS = [(r"np\.polyfit\(np\.log", "src/metrics.py"),
            (r"einsum\(\"icjc->ij\"", "src/coefficients.py"),
            (r"np\.sqrt\(s\[keep\]\)", "src/geometry.py"),
            (r"== np\.arange\([^)]*\)\[:, None\]\) / ", "src/checks.py"),
            (r"lr <= 0", "src/checks.py")]


@pytest.mark.parametrize("name,module", sorted(PRIMITIVES.items()))
def test_each_primitive_is_defined_once(name, module):
    where = [label for label, code in SOURCES if re.search(rf"^\s*def {name}\(", code, re.M)]
    assert where == [f"src/{module}.py"], where


@pytest.mark.parametrize("pattern,home", PATTERNS)
def test_primitive_code_is_not_rewritten_elsewhere(pattern, home):
    where = [label for label, code in SOURCES if re.search(pattern, code) and label != "tests/test_layout.py"]
    assert where == [home], where


def test_one_name_per_concept():
    for label, code in SOURCES:
        if label == "tests/test_layout.py":
            continue
        assert "lr_fraction" not in code, label                      # the concept is lr_factor
        assert not re.search(r"def disagreement\(", code), label     # parameter_ vs output_disagreement
    assert "lr_fraction" not in (ROOT / "book" / "profiles.yml").read_text()
