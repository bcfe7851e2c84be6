"""Build the book: jupytext → papermill (with a profile's parameters) → Jupyter Book.

Chapters are MyST-markdown notebooks under ``book/``; each has exactly one cell
tagged ``parameters``. A *profile* (``ci``, ``paper``) is a set of parameter
overrides per chapter, all in ``book/profiles.yml``. The build

1. stages ``_config.yml``, ``_toc.yml``, ``references.bib``, the static pages and
   ``_vendor/`` (MathJax, fetched by ``make mathjax``) into ``_build/stage``;
2. converts each chapter with jupytext, checks the profile's parameter names
   against the chapter's ``parameters`` cell, and executes it with papermill into
   ``_build/stage/book/<chapter>.ipynb`` (papermill's ``injected-parameters`` cell
   is kept and labelled, its source collapsed by the ``hide-input`` tag);
3. checks that every figure the chapter names (``mystnb: figure: name:``) was
   saved, non-empty, as PNG and PDF;
4. runs ``jupyter-book build -W -n --keep-going`` with execution off, and
5. checks that every local file the HTML references exists.

An executed chapter is reused only if its cache key — a hash of the chapter
source, its parameters, the package source and ``pyproject.toml`` (the pins) —
is unchanged and its figures exist.

Run ``python -m p2pntk.pipeline --help``.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

from .paths import build_dir, project_root

STAGED_FILES = ("_config.yml", "_toc.yml", "references.bib")
VENDOR = "_vendor"  # third-party static files fetched at set-up time (git-ignored)


#: String parameters whose allowed values the package defines: the last word of a
#: parameter's name (``topology``, ``check_topologies``, ``algorithms``, ...) ->
#: (module, constant). The constants are the single source of the allowed values.
CHOICES = {"topology": ("graphs", "TOPOLOGIES"), "rule": ("graphs", "RULES"),
           "algorithm": ("training", "ALGORITHMS"), "dataset": ("data", "DATASETS"),
           "partition": ("data", "PARTITIONS"), "activation": ("kernels", "ACTIVATIONS"),
           "dtype": ("training", "TRAIN_DTYPES")}
_PLURALS = {"topologies": "topology"}


def allowed_values(name: str) -> tuple[str, ...] | None:
    """Allowed values of parameter ``name`` (or of each item, for a list), ``None`` if free.

    Example:
        >>> allowed_values("check_topologies")[:3], allowed_values("lr_factor")
        (('ring', 'path', 'star'), None)
    """
    import importlib

    word = name.rsplit("_", 1)[-1]
    word = _PLURALS.get(word, word[:-1] if word.endswith("s") and word[:-1] in CHOICES else word)
    if word not in CHOICES:
        return None
    module, constant = CHOICES[word]
    return tuple(getattr(importlib.import_module(f".{module}", __package__), constant))


def check_choices(chapter: str, params: dict) -> str | None:
    """Message naming the first parameter of ``params`` whose value is not allowed, or ``None``."""
    for name, value in params.items():
        allowed = allowed_values(name)
        if allowed is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v not in allowed:
                return (f"parameter {name!r} of {chapter!r}: unknown value {v!r}; allowed: {', '.join(allowed)}")
    return None


def _log(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stdout)
    sys.stdout.flush()


def toc_files(root: Path) -> list[str]:
    """Document names in ``_toc.yml`` order (``root`` first), e.g. ``book/consensus``."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                out.append(node["file"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk({k: v for k, v in toc.items() if k != "root"})
    return [re.sub(r"\.(md|ipynb)$", "", f) for f in out]


def load_profile(root: Path, profile: str) -> dict:
    """Parameter overrides per chapter of ``profile`` from ``book/profiles.yml``."""
    profiles = yaml.safe_load((root / "book" / "profiles.yml").read_text())
    if profile not in profiles:
        raise SystemExit(f"unknown profile={profile!r}; allowed: {', '.join(profiles)}")
    return profiles[profile] or {}


def is_notebook(path: Path) -> bool:
    """A MyST page is a notebook chapter if its front matter has a ``kernelspec``."""
    text = path.read_text()
    return text.startswith("---") and "kernelspec:" in text.split("\n---", 1)[0]


def chapter_parameters(nb) -> dict:
    """Names and default values of the chapter's single ``parameters`` cell."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"a chapter needs exactly one cell tagged 'parameters', found {len(cells)}")
    params = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            params[node.targets[0].id] = ast.literal_eval(node.value)
    return params


def figure_names(nb) -> list[str]:
    """Names of the figures a chapter declares in its cells' ``mystnb.figure`` metadata."""
    names = []
    for c in nb.cells:
        fig = c.get("metadata", {}).get("mystnb", {}).get("figure")
        if fig and fig.get("name"):
            names.append(fig["name"])
    return names


def cache_key(root: Path, source: Path, params: dict) -> str:
    """Hash of everything that changes a chapter's results."""
    h = hashlib.sha256()
    h.update(source.read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    from .results import code_hash

    h.update(code_hash().encode())  # the package actually imported, and the pins
    for f in sorted((root / "benchmarks").glob("*.py")):  # code the benchmarks appendix runs
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def _missing_figures(fig_dir: Path, names: list[str]) -> list[str]:
    """Return the missing or empty figure files among ``names``."""
    bad = []
    for n in names:
        for ext in ("png", "pdf"):
            f = fig_dir / f"{n}.{ext}"
            if not f.is_file() or f.stat().st_size == 0:
                bad.append(f.name)
    return bad


def execute_chapter(root: Path, doc: str, params: dict, stage: Path, fig_dir: Path, force: bool) -> dict:
    """Execute one chapter with papermill; return its provenance record."""
    import jupytext
    import nbformat
    import papermill

    source = root / f"{doc}.md"
    nb = jupytext.read(source)
    defaults = chapter_parameters(nb)
    unknown = set(params) - set(defaults)
    if unknown:
        raise SystemExit(f"{doc}: unknown parameters {sorted(unknown)}; the chapter's parameters are {sorted(defaults)}")
    names = figure_names(nb)
    out = stage / f"{doc}.ipynb"
    src_nb = out.with_suffix(".input.ipynb")
    out.parent.mkdir(parents=True, exist_ok=True)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    jupytext.write(nb, src_nb)
    seen = set(papermill.inspect_notebook(str(src_nb)))
    if seen != set(defaults):  # e.g. an '=' in a comment confuses papermill's parser
        src_nb.unlink()
        raise SystemExit(f"{doc}: papermill reads the parameters cell as {sorted(seen)}, "
                         f"the pipeline as {sorted(defaults)}; simplify the parameters cell")
    key = cache_key(root, source, params)
    if not force and out.is_file():
        old = nbformat.read(out, as_version=4)
        rec = old.metadata.get("p2pntk", {})
        if rec.get("cache_key") == key and not _missing_figures(fig_dir, names):
            _log(f"[pipeline] {doc}: up to date (cache key {key[:12]})")
            src_nb.unlink(missing_ok=True)
            return rec
    _log(f"[pipeline] {doc}: executing with {params or 'defaults'}")
    t0 = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(src_nb), str(out), parameters=params, kernel_name="python3",
            cwd=str(source.parent), progress_bar=False, log_output=False,
        )
    except papermill.PapermillExecutionError as err:
        print(f"\n[pipeline] {doc} FAILED in cell {err.exec_count}:\n{err.ename}: {err.evalue}", file=sys.stderr)
        print("\n".join(err.traceback), file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        src_nb.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    missing = _missing_figures(fig_dir, names)
    if missing:
        raise SystemExit(f"{doc}: figures missing or empty after execution: {missing}")
    executed = nbformat.read(out, as_version=4)
    for cell in executed.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            cell.source = f"# Parameters of this run (profile values injected by papermill)\n{cell.source}"
            cell.metadata["tags"] = tags + ["hide-input"]
    rec = {"cache_key": key, "parameters": {**defaults, **params}, "seconds": round(seconds, 1), "figures": names}
    executed.metadata["p2pntk"] = rec
    nbformat.write(executed, out)
    _log(f"[pipeline] {doc}: done in {seconds:.1f} s")
    return rec


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") and v:
                self.refs.append(v)


def check_html(html_dir: Path) -> list[str]:
    """Local files referenced by the HTML (``src``/``href``) that do not exist."""
    missing = []
    for page in sorted(html_dir.rglob("*.html")):
        if "_static" in page.relative_to(html_dir).parts:  # theme templates, not pages
            continue
        parser = _Refs()
        parser.feed(page.read_text(errors="replace"))
        for ref in parser.refs:
            url = urlparse(ref)
            if url.scheme or url.netloc or ref.startswith(("#", "mailto:", "data:", "javascript:")):
                continue
            target = (page.parent / unquote(url.path)).resolve()
            if url.path and not target.exists():
                missing.append(f"{page.relative_to(html_dir)} -> {ref}")
    return missing


def _check_mathjax(stage: Path) -> None:
    """Fail early if ``mathjax_path`` is a local file that no static folder of the stage holds."""
    config = yaml.safe_load((stage / "_config.yml").read_text()).get("sphinx", {}).get("config", {})
    path = config.get("mathjax_path")
    if path and "://" not in path:
        folders = config.get("html_static_path", [])
        if not any((stage / d / path).is_file() for d in folders):
            raise SystemExit(f"MathJax ({path}) not found in the static folders {folders}; run `make mathjax`")


def build(profile: str = "ci", chapters: list[str] | None = None, force: bool = False, html: bool = True,
          extra: dict | None = None) -> None:
    """Execute the chapters of ``profile`` and build the HTML book into ``_build/html``.

    ``extra`` maps chapter names to parameter overrides applied on top of the profile.
    """
    root = project_root()
    overrides = load_profile(root, profile)
    for chapter, params in (extra or {}).items():
        overrides[chapter] = {**overrides.get(chapter, {}), **params}
    docs = toc_files(root)
    names = {Path(d).name for d in docs}
    unknown = set(overrides) - names
    if unknown:
        raise SystemExit(f"profile {profile!r} names unknown chapters {sorted(unknown)}; chapters: {sorted(names)}")
    if chapters:
        bad = set(chapters) - names
        if bad:
            raise SystemExit(f"unknown chapters {sorted(bad)}; chapters: {sorted(names)}")
    for chapter, params in overrides.items():
        msg = check_choices(chapter, params)
        if msg:
            raise SystemExit(f"profile {profile!r}: {msg}")
    stage = build_dir() / "stage"
    stage.mkdir(parents=True, exist_ok=True)
    fig_dir = build_dir() / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    os.environ["P2PNTK_FIG_DIR"] = str(fig_dir)
    os.environ["P2PNTK_ROOT"] = str(root)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for f in STAGED_FILES:
        shutil.copy2(root / f, stage / f)
    if (root / "book" / "_static").is_dir():
        shutil.copytree(root / "book" / "_static", stage / "book" / "_static", dirs_exist_ok=True)
    shutil.rmtree(stage / VENDOR, ignore_errors=True)
    if (root / VENDOR).is_dir():
        shutil.copytree(root / VENDOR, stage / VENDOR)
    if html:
        _check_mathjax(stage)  # before executing anything
    prov_file = build_dir() / "provenance.json"
    prov = json.loads(prov_file.read_text()) if prov_file.is_file() else {}
    if prov.get("profile") != profile:
        prov = {"profile": profile, "chapters": {}}
    prov["profile"] = profile
    from tqdm import tqdm

    todo = []
    for doc in docs:
        source = root / f"{doc}.md"
        if not is_notebook(source):
            (stage / doc).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, stage / f"{doc}.md")
        elif not chapters or Path(doc).name in chapters:
            todo.append(doc)
    # a progress bar on a terminal only (disable=None): logs keep the [pipeline] lines
    bar = tqdm(todo, desc="chapters", unit="chapter", file=sys.stderr, disable=None if len(todo) > 1 else True)
    for doc in bar:
        bar.set_postfix_str(Path(doc).name)
        prov["chapters"][doc] = execute_chapter(
            root, doc, overrides.get(Path(doc).name, {}), stage, fig_dir, force)
    prov.update(python=platform.python_version(), machine=platform.machine(), cpus=os.cpu_count())
    prov_file.write_text(json.dumps(prov, indent=2, sort_keys=True))
    if not html:
        return
    cmd = ["jupyter-book", "build", str(stage), "--path-output", str(root), "-W", "-n", "--keep-going", "--all"]
    print("[pipeline] " + " ".join(cmd), flush=True)
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or "jupyter-book"
    subprocess.run([jb, *cmd[1:]], check=True)
    missing = check_html(root / "_build" / "html")
    if missing:
        raise SystemExit("HTML references files that do not exist:\n  " + "\n  ".join(missing))
    print(f"[pipeline] book built: {root / '_build' / 'html' / 'index.html'}", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m p2pntk.pipeline", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="ci", help="parameter profile from book/profiles.yml (default: ci)")
    ap.add_argument("--chapter", action="append", dest="chapters", help="only (re)execute this chapter (repeatable)")
    ap.add_argument("--force", action="store_true", help="re-execute even if the cache key is unchanged")
    ap.add_argument("--no-html", action="store_true", help="execute chapters only, do not build the HTML")
    a = ap.parse_args(argv)
    try:
        build(a.profile, a.chapters, a.force, html=not a.no_html)
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"[pipeline] jupyter-book build failed (exit {err.returncode})") from None


if __name__ == "__main__":
    main()
