"""Cache keys follow what computes: results keyed without the build layer, chapters by all code.

Each test copies the package source (and pyproject.toml, two chapters, benchmarks/)
to a temporary folder, edits one file of the copy, and compares the keys before
and after: the results key (:func:`p2pntk.results.key`), the key of an ordinary
chapter and that of the benchmarks appendix (:func:`p2pntk.pipeline.cache_key`).
"""
import ast
import shutil
from pathlib import Path

import numpy as np
import pytest

from p2pntk import graphs, pipeline, plotting, results

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "p2pntk"
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def copy_project(dest: Path) -> Path:
    """A copy of the package (``dest/src/p2pntk``), the pins, two chapters and ``benchmarks/``."""
    shutil.copytree(PKG, dest / "src" / "p2pntk", ignore=SKIP)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    (dest / "book").mkdir()
    for doc in ("consensus", "benchmarks"):
        shutil.copy2(ROOT / "book" / f"{doc}.md", dest / "book" / f"{doc}.md")
    shutil.copytree(ROOT / "benchmarks", dest / "benchmarks", ignore=SKIP)
    return dest


def keys(root: Path) -> dict:
    pkg = root / "src" / "p2pntk"
    return {"results": results.key("run", {"n_agents": 8}, package_dir=pkg),
            "chapter": pipeline.cache_key(root, "book/consensus", {"n_agents": 8}, package_dir=pkg),
            "benchmarks": pipeline.cache_key(root, "book/benchmarks", {"quick": True}, package_dir=pkg)}


def edit_function(path: Path, name: str | None = None) -> None:
    """Add a statement at the end of function ``name`` (default: the first function) of ``path``."""
    src = path.read_text()
    fn = next(n for n in ast.walk(ast.parse(src))
              if isinstance(n, ast.FunctionDef) and (name is None or n.name == name))
    last = fn.body[-1]
    lines = src.splitlines(keepends=True)
    lines[last.end_lineno - 1] = lines[last.end_lineno - 1].rstrip("\n") + "\n"
    lines.insert(last.end_lineno, " " * last.col_offset + "_edited_by_test = True\n")
    path.write_text("".join(lines))
    ast.parse(path.read_text())  # still valid Python


def changed(before: dict, after: dict) -> set:
    return {k for k in before if before[k] != after[k]}


@pytest.fixture
def project(tmp_path):
    return copy_project(tmp_path / "project")


def test_hash_does_not_depend_on_where_the_package_is(tmp_path):
    a, b = copy_project(tmp_path / "a"), copy_project(tmp_path / "b")
    assert keys(a) == keys(b)
    assert results.code_hash(a / "src" / "p2pntk") == results.code_hash(b / "src" / "p2pntk")


def test_build_modules_exist_in_the_package():
    # a renamed build module would silently count as computing again: rename it in BUILD_MODULES too
    stems = {f.stem for f in PKG.rglob("*.py")}
    assert set(results.BUILD_MODULES) <= stems, set(results.BUILD_MODULES) - stems


def test_plotting_edit_keeps_results_key_and_changes_chapter_keys(project):
    before = keys(project)
    edit_function(project / "src" / "p2pntk" / "plotting.py", "save")
    assert changed(before, keys(project)) == {"chapter", "benchmarks"}


@pytest.mark.parametrize("module", results.BUILD_MODULES)
def test_any_build_module_edit_keeps_results_key(project, module):
    before = keys(project)
    edit_function(project / "src" / "p2pntk" / f"{module}.py")
    assert changed(before, keys(project)) == {"chapter", "benchmarks"}


def computing_module(pkg: Path) -> Path:
    """graphs.py, or (if renamed) the first module outside the build layer."""
    if (pkg / "graphs.py").is_file():
        return pkg / "graphs.py"
    return next(f for f in sorted(pkg.rglob("*.py"))
                if f.stem not in results.BUILD_MODULES and f.stem != "__init__")


def test_computing_module_edit_changes_every_key(project):
    before = keys(project)
    edit_function(computing_module(project / "src" / "p2pntk"))
    assert changed(before, keys(project)) == {"results", "chapter", "benchmarks"}


def test_new_module_counts_as_computing(project):
    before = keys(project)
    (project / "src" / "p2pntk" / "new_module.py").write_text("def f():\n    return 1\n")
    assert changed(before, keys(project)) == {"results", "chapter", "benchmarks"}


def test_pins_change_every_key(project):
    before = keys(project)
    with open(project / "pyproject.toml", "a") as f:
        f.write("\n# a changed pin\n")
    assert changed(before, keys(project)) == {"results", "chapter", "benchmarks"}


def test_benchmarks_edit_changes_only_the_benchmarks_chapter(project):
    before = keys(project)
    bench = sorted((project / "benchmarks").glob("*.py"))
    assert bench, "benchmarks/*.py expected"
    edit_function(bench[0])
    assert changed(before, keys(project)) == {"benchmarks"}
    (project / "benchmarks" / "bench_new.py").write_text("x = 1\n")  # a new benchmark file too
    after_edit = keys(project)
    (project / "benchmarks" / "bench_new.py").unlink()
    assert after_edit["benchmarks"] != keys(project)["benchmarks"]


def test_chapter_source_and_parameters_change_only_that_chapter(project):
    pkg = project / "src" / "p2pntk"
    before = keys(project)
    assert pipeline.cache_key(project, "book/consensus", {"n_agents": 9}, package_dir=pkg) != before["chapter"]
    with open(project / "book" / "consensus.md", "a") as f:
        f.write("\nOne more sentence.\n")
    assert changed(before, keys(project)) == {"chapter"}


def test_default_package_is_the_one_imported():
    assert results.code_hash() == results.code_hash(PKG)
    assert results.key("run", {"a": 1}) == results.key("run", {"a": 1}, package_dir=PKG)


def module_key(root: Path, module: str) -> str:
    return results.key("run", {"n_agents": 8}, package_dir=root / "src" / "p2pntk", module=module)


def test_a_result_is_keyed_by_the_modules_its_computation_imports(project):
    """reproduction does not import tuning: editing tuning keeps reproduction's results and
    changes tuning's; editing graphs (imported by both, through others too) changes both."""
    pkg = project / "src" / "p2pntk"
    deps = results.dependencies("reproduction", package_dir=pkg)
    assert "tuning" not in deps and {"reproduction", "results", "graphs", "kernels", "training"} <= set(deps)
    assert not set(deps) & set(results.BUILD_MODULES)
    before = {m: module_key(project, m) for m in ("reproduction", "tuning")}
    edit_function(pkg / "tuning.py")
    assert module_key(project, "reproduction") == before["reproduction"]
    assert module_key(project, "tuning") != before["tuning"]
    edit_function(pkg / "graphs.py")
    assert module_key(project, "reproduction") != before["reproduction"]


def test_an_import_inside_a_function_or_of_the_facade_counts(project):
    pkg = project / "src" / "p2pntk"
    before = results.dependencies("metrics", package_dir=pkg)
    with open(pkg / "metrics.py", "a") as f:
        f.write("\n\ndef _late():\n    from .modes import mode_expansion\n    return mode_expansion\n")
    assert set(results.dependencies("metrics", package_dir=pkg)) >= set(before) | {"modes"}
    with open(pkg / "metrics.py", "a") as f:
        f.write("\n\ndef _facade():\n    import p2pntk\n    return p2pntk\n")
    everything = {f.stem for f in pkg.glob("*.py")}
    assert set(results.dependencies("metrics", package_dir=pkg)) == everything
    with pytest.raises(ValueError, match="module must be a module of the package"):
        results.dependencies("no_such_module", package_dir=pkg)


def test_cached_keys_by_the_module_of_compute_and_by_the_code_imported(tmp_path, monkeypatch):
    """cached() keys a function of the package by its module's dependencies and anything else by
    every module; the sources are those read at import, so a file edited during a run changes no key."""
    outside = lambda: {"x": np.zeros(1)}
    inside = lambda: {"x": np.ones(1)}
    inside.__module__ = "p2pntk.reproduction"
    results.cached("demo", {"a": 1}, outside, folder=tmp_path / "a")
    results.cached("demo", {"a": 1}, inside, folder=tmp_path / "b")
    names = [{p.name for p in (tmp_path / d).glob("*.npz")} for d in "ab"]
    assert names == [{f"demo-{results.key('demo', {'a': 1})}.npz"},
                     {f"demo-{results.key('demo', {'a': 1}, module='reproduction')}.npz"}]
    assert names[0] != names[1]
    before = results.key("demo", {"a": 1}, module="reproduction")
    monkeypatch.setattr(results, "_sources", lambda package_dir=None: {"edited.py": b"x = 1"})
    assert results.key("demo", {"a": 1}, module="reproduction") == before       # SOURCES, read at import
