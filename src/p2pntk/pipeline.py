"""Build the book: jupytext → papermill (with a profile's parameters) → Jupyter Book.

Chapters are MyST-markdown notebooks under ``book/``; each has exactly one cell
tagged ``parameters``. A *profile* (``ci``, ``paper``) is a set of parameter
overrides per chapter, all in ``book/profiles.yml`` (read by :func:`read_profiles`
only). The build

1. takes the build lock (:func:`build_lock`): one build at a time per build folder
   (``<build>`` = :func:`p2pntk.paths.build_dir`, ``<root>/_build`` unless
   ``P2PNTK_BUILD`` is set); a second build stops at once naming the running one,
   or waits for it with ``wait=True`` (``--wait``);
2. stages ``_config.yml``, ``_toc.yml``, ``references.bib``, the static pages and
   ``_vendor/`` (MathJax, fetched by ``make mathjax``) into ``<build>/stage``
   (:func:`p2pntk.paths.stage_dir`);
3. converts each chapter with jupytext, checks the profile's parameter names
   against the chapter's ``parameters`` cell, and executes it with papermill into
   a temporary notebook beside ``<build>/stage/book/<chapter>.ipynb``, its figures
   into a temporary folder (papermill's ``injected-parameters`` cell is kept and
   labelled, its source collapsed by the ``hide-input`` tag);
4. checks that every figure the chapter names (``mystnb: figure: name:``) was
   saved, non-empty, as PNG and PDF; only then do the figures move to
   ``<build>/figures`` and the executed notebook replace ``<chapter>.ipynb``
   (atomic renames). A chapter that fails leaves the last good notebook and
   figures in place: its executed notebook, with the traceback, goes to
   ``<chapter>.failed.ipynb`` beside it (removed by the next successful run);
5. runs ``jupyter-book build -W -n --keep-going`` with execution off, on a staged
   ``_config.yml`` completed at build time (:func:`site_config`): the repository of the
   launch buttons (Binder, Colab) read from the git remote (:func:`github_repository`;
   no GitHub remote, no launch buttons) and the front page's sentence naming the
   profile (the MyST substitution ``build_profile``); each figure's caption links its
   CSV of plotted values (:func:`p2pntk.plotting.figure_data`), staged in
   ``<stage>/figure-data/``; and
6. checks that every local file the HTML references exists.

``provenance.json`` records, per chapter, its parameters, run time and the device it
ran on (``device``: JAX's platform and device kind in the chapter's kernel, read by a
last cell the pipeline adds and removes). A failing chapter's traceback is printed
without colour codes unless the output is a terminal (:func:`strip_ansi`), followed by
the path of its failed executed notebook. ``--export-notebooks DIR`` writes the
executed notebooks for Colab (:func:`export_notebooks`).

An executed chapter is reused only if its cache key (:func:`cache_key`) is
unchanged and its figures exist. The key hashes the chapter source, its
parameters, every module of the package imported (the figure helpers included,
or figures would go stale) and ``pyproject.toml`` (the pins); the benchmarks
appendix (``book/benchmarks``) also hashes the code it runs, ``benchmarks/*.py``
(:data:`CHAPTER_CODE`). The results files the chapters compute have their own,
narrower key (the package without its build layer, :mod:`p2pntk.results`), so a
figure tweak re-executes chapters but reuses their results.

Run ``python -m p2pntk.pipeline --help``.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

from .paths import atomic_write, build_dir, project_root, results_store, stage_dir

STAGED_FILES = ("_config.yml", "_toc.yml", "references.bib")
VENDOR = "_vendor"  # third-party static files fetched at set-up time (git-ignored)
LOCK_FILE = "build.lock"  # in the build folder; holds the running build's pid, command and start time
WAIT_HELP = "if another build is running in the build folder, wait for it (default: stop at once)"

#: Code outside the package that a chapter runs, by document: glob patterns
#: relative to the project root, added to that chapter's cache key only.
CHAPTER_CODE = {"book/benchmarks": ("benchmarks/*.py",)}

FIGURE_DATA = "figure-data"  # stage folder of the figures' CSV files, linked from the captions
NOTEBOOKS_BRANCH = "notebooks"  # the branch the workflow writes the executed notebooks to (Colab, Binder)
DEVICE_TAG = "p2pntk-device"  # tag of the last cell, added and removed by the pipeline, that reads the device
DEVICE_CELL = """\
import json as _p2pntk_json, platform as _p2pntk_platform, sys as _p2pntk_sys
if "jax" in _p2pntk_sys.modules:  # the chapter used JAX: the devices it ran on
    import jax as _p2pntk_jax
    _p2pntk_d = _p2pntk_jax.devices()
    print("p2pntk-device", _p2pntk_json.dumps({"platform": _p2pntk_d[0].platform, "jax": True,
          "device_kind": _p2pntk_d[0].device_kind, "device_count": len(_p2pntk_d)}))
else:  # NumPy only
    print("p2pntk-device", _p2pntk_json.dumps({"platform": "cpu", "jax": False, "device_count": 1,
          "device_kind": _p2pntk_platform.processor() or _p2pntk_platform.machine()}))
"""

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences (terminal colours of IPython's tracebacks).

    Example:
        >>> strip_ansi("\\x1b[0;31mValueError\\x1b[0m: bad")
        'ValueError: bad'
    """
    return _ANSI.sub("", text)


def _plain_unless_terminal(text: str, stream) -> str:
    """``text`` as is on a terminal (colours kept, unless ``NO_COLOR`` is set), else without colour codes."""
    isatty = getattr(stream, "isatty", None)
    return text if isatty and isatty() and not os.environ.get("NO_COLOR") else strip_ansi(text)


_GITHUB = re.compile(r"^(?:https?://(?:[^@/]+@)?github\.com/|git@github\.com:|ssh://git@github\.com(?::\d+)?/)"
                     r"(?P<owner>[\w.-]+)/(?P<repo>[\w.-]+?)(?:\.git)?/?$")


def github_url(remote: str) -> str | None:
    """``https://github.com/<owner>/<repo>`` of a git remote URL on GitHub (https or ssh form), else ``None``.

    Example:
        >>> github_url("git@github.com:someone/p2pntk.git"), github_url("https://github.com/someone/p2pntk")
        ('https://github.com/someone/p2pntk', 'https://github.com/someone/p2pntk')
        >>> github_url("ssh://git@github.com/someone/p2pntk.git"), github_url("/srv/git/p2pntk.git")
        ('https://github.com/someone/p2pntk', None)
    """
    m = _GITHUB.match(remote.strip())
    return f"https://github.com/{m['owner']}/{m['repo']}" if m else None


def _git(root: Path, *args: str) -> str | None:
    """Output of ``git -C root ARGS``, ``None`` if git is missing or fails (not a repository, ...)."""
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def github_repository(root: Path) -> str | None:
    """The GitHub repository of ``root``'s git remotes (``origin`` first), ``None`` without one.

    Read at build time: the launch buttons and the Colab notebooks point there.
    """
    names = (_git(root, "remote") or "").split()
    for name in sorted(names, key=lambda n: n != "origin"):
        url = github_url(_git(root, "remote", "get-url", name) or "")
        if url:
            return url
    return None


def profile_sentence(profile: str, profiles, chapters: dict, commit: str | None = None) -> str:
    """The front page's sentence naming the profile the site was built with (MyST substitution ``build_profile``).

    ``profiles``: the profile names of ``book/profiles.yml``; ``chapters``: the provenance
    records of the executed chapters (their parameters describe the reproduction's size).

    Example:
        >>> profile_sentence("ci", ["ci", "paper"], {"book/reproduction": {"parameters": {
        ...     "dataset": "digits", "n_train": 128, "n_agents": 8, "width": 1024}}}, "abc1234")  # doctest: +NORMALIZE_WHITESPACE
        'This site shows the **`ci`** profile of `book/profiles.yml` (reproduction chapter: digits, 128 training
        points, Q = 8 agents, width 1024), built from commit `abc1234`; the chapters were executed with its
        parameters, shown at the top of each chapter. The other profile, `paper`, is built with `make book
        PROFILE=paper`.'
    """
    text = f"This site shows the **`{profile}`** profile of `book/profiles.yml`"
    rep = chapters.get("book/reproduction", {}).get("parameters", {})
    size = [str(rep["dataset"])] if "dataset" in rep else []
    size += [f"{rep['n_train']} training points"] if "n_train" in rep else []
    size += [f"Q = {rep['n_agents']} agents"] if "n_agents" in rep else []
    size += [f"width {rep['width']}"] if "width" in rep else []
    if size:
        text += f" (reproduction chapter: {', '.join(size)})"
    if commit:
        text += f", built from commit `{commit}`"
    text += "; the chapters were executed with its parameters, shown at the top of each chapter."
    others = [p for p in profiles if p != profile]
    if others:
        names = ", ".join(f"`{p}`" for p in others)
        text += (f" The other profile{'s' if len(others) > 1 else ''}, {names}, "
                 f"{'are' if len(others) > 1 else 'is'} built with `make book PROFILE={others[0]}`.")
    return text


def site_config(config: dict, repository: str | None, sentence: str) -> dict:
    """The staged ``_config.yml``: ``config`` with the launch buttons' repository and the front page's sentence.

    ``repository`` (:func:`github_repository`) becomes ``repository.url``; the buttons open
    the executed notebooks of ``repository.branch`` (default :data:`NOTEBOOKS_BRANCH`),
    ``book/<chapter>.ipynb``. Without a repository the launch buttons are left out. The
    MyST substitution ``build_profile`` is ``sentence`` (:func:`profile_sentence`).
    """
    config = json.loads(json.dumps(config))  # a deep copy
    repo = dict(config.get("repository") or {})
    if repository:
        repo.update(url=repository, branch=repo.get("branch", NOTEBOOKS_BRANCH), path_to_book=repo.get("path_to_book", ""))
        config["repository"] = repo
    else:
        config.pop("launch_buttons", None)
        repo.pop("url", None)
        if repo:
            config["repository"] = repo
    parse = config.setdefault("parse", {})
    extensions = parse.setdefault("myst_enable_extensions", [])
    if "substitution" not in extensions:
        extensions.append("substitution")
    parse.setdefault("myst_substitutions", {})["build_profile"] = sentence
    return config


def colab_cell(repository: str, branch: str = NOTEBOOKS_BRANCH) -> str:
    """First cell of an exported notebook: on Colab only, install p2pntk with its pins from ``branch``."""
    return f"""\
# On Google Colab only: fetch the repository (branch {branch!r}: the book's sources and these notebooks)
# and install p2pntk with its pinned dependencies. Elsewhere this cell does nothing (install with
# `pip install -e .` in the repository). If Colab asks to restart the session, restart and run again.
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    if not os.path.isdir("/content/p2pntk"):
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", {branch!r},
                        {repository + '.git'!r}, "/content/p2pntk"], check=True)
    flags = [] if sys.version_info[:2] == (3, 11) else ["--ignore-requires-python"]
    if flags:
        print(f"p2pntk is tested on Python 3.11; this runtime has {{sys.version.split()[0]}}")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *flags, "/content/p2pntk"], check=True)
    os.environ["P2PNTK_ROOT"] = "/content/p2pntk"
    os.chdir("/content/p2pntk/book")
"""


def export_notebooks(dest: Path, repository: str, stage: Path | None = None, branch: str = NOTEBOOKS_BRANCH) -> list:
    """Write the executed notebooks ``<stage>/book/<chapter>.ipynb`` to ``<dest>/book/``, each with a first
    cell that installs p2pntk on Colab (:func:`colab_cell`); return the paths written.

    The workflow commits them to ``branch``, which the Colab and Binder buttons open.
    Failed executions (``*.failed.ipynb``) are not exported.
    """
    import nbformat

    stage = stage if stage is not None else stage_dir()
    written = []
    for src in sorted((stage / "book").glob("*.ipynb")):
        if src.name.startswith(".") or src.name.endswith((".failed.ipynb", ".input.ipynb")):
            continue
        nb = nbformat.read(src, as_version=4)
        nb.cells.insert(0, nbformat.v4.new_code_cell(colab_cell(repository, branch),
                                                     metadata={"tags": ["colab-install"]}))
        written.append(atomic_write(Path(dest) / "book" / src.name, nbformat.writes(nb) + "\n"))
    if not written:
        raise SystemExit(f"no executed notebooks in {stage / 'book'}: build the book first")
    return written


#: String parameters whose allowed values the package defines: the last word of a
#: parameter's name (``topology``, ``check_topologies``, ``algorithms``, ...) ->
#: (module, constant). The constants are the single source of the allowed values.
CHOICES = {"topology": ("graphs", "TOPOLOGIES"), "rule": ("graphs", "RULES"),
           "algorithm": ("algorithms", "ALGORITHMS"), "dataset": ("data", "DATASETS"),
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


def read_profiles(root: Path) -> dict:
    """Every profile of ``book/profiles.yml``: profile -> chapter -> parameter overrides.

    The one reader of the file (the pipeline and the command line use it). A profile
    or chapter listed without values (``ci:`` alone) has no overrides (``{}``).
    """
    path = root / "book" / "profiles.yml"
    profiles = yaml.safe_load(path.read_text()) or {}
    if not isinstance(profiles, dict) or not all(isinstance(v, (dict, type(None))) for v in profiles.values()):
        raise SystemExit(f"{path}: must map each profile name to chapters and their parameter overrides")
    return {name: {chapter: params or {} for chapter, params in (chapters or {}).items()}
            for name, chapters in profiles.items()}


def load_profile(root: Path, profile: str) -> dict:
    """Parameter overrides per chapter of ``profile`` from ``book/profiles.yml``."""
    profiles = read_profiles(root)
    if profile not in profiles:
        raise SystemExit(f"unknown profile={profile!r}; allowed: {', '.join(profiles)}")
    return profiles[profile]


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


def cache_key(root: Path, doc: str, params: dict, *, package_dir=None) -> str:
    """Hash of everything that changes an executed chapter ``doc`` (e.g. ``book/consensus``).

    The chapter source ``<root>/<doc>.md``, its parameters, every module of the
    package (``package_dir``, default the one imported; figure helpers included) and
    the pins, and the code outside the package the chapter runs (:data:`CHAPTER_CODE`).
    """
    from .results import code_hash

    h = hashlib.sha256()
    h.update((root / f"{doc}.md").read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(code_hash(package_dir).encode())  # all modules, and the pins
    for pattern in CHAPTER_CODE.get(doc, ()):
        for f in sorted(root.glob(pattern)):
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _lock_holder(text: str) -> str:
    """The running build, as its lock file describes it (``pid ..., started ..., command: ...``)."""
    try:
        info = json.loads(text)
        return f"pid {info['pid']}, started {info['started']}, command: {info['command']}"
    except (ValueError, TypeError, KeyError):
        return "its pid, command and start time not written yet"


@contextlib.contextmanager
def build_lock(folder: Path | None = None, wait: bool = False):
    """Hold the lock of build folder ``folder`` (default :func:`p2pntk.paths.build_dir`).

    An exclusive ``flock`` on ``<folder>/build.lock``; the holder writes its pid,
    command line and start time into the file (JSON), and empties it when done. If another build holds it, stop at
    once (``SystemExit`` naming that build and how to proceed) or, with ``wait``,
    wait until it is released. The lock is released when the block ends, also on
    an error (and by the system if the process dies).
    """
    folder = Path(folder) if folder else build_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = _lock_holder(f.read())
            if not wait:
                raise SystemExit(
                    f"[pipeline] another build is running in {folder} ({holder}; lock file {path}). "
                    f"Wait for it to finish, rerun with --wait (wait=True) to start when it ends, "
                    f"or build elsewhere with P2PNTK_BUILD=<another folder>.") from None
            _log(f"[pipeline] waiting for the build running in {folder} ({holder})")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                                "command": shlex.join(getattr(sys, "orig_argv", sys.argv))}, indent=1) + "\n")
            f.flush()
            yield path
        finally:
            f.seek(0)
            f.truncate()  # still locked: nobody reads a finished build as the holder
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)


def _missing_figures(fig_dir: Path, names: list[str]) -> list[str]:
    """Return the missing or empty figure files among ``names``."""
    bad = []
    for n in names:
        for ext in ("png", "pdf"):
            f = fig_dir / f"{n}.{ext}"
            if not f.is_file() or f.stat().st_size == 0:
                bad.append(f.name)
    return bad


def executed_notebook(doc: str, stage: Path | None = None) -> Path:
    """The executed notebook of chapter ``doc`` (e.g. ``book/consensus``): ``<stage>/<doc>.ipynb``.

    ``stage`` defaults to :func:`p2pntk.paths.stage_dir` (``<build>/stage``).
    """
    return (stage if stage is not None else stage_dir()) / f"{doc}.ipynb"


def failed_notebook(out: Path) -> Path:
    """Where a failed execution of the chapter whose notebook is ``out`` goes: ``<chapter>.failed.ipynb``."""
    return out.with_name(f"{out.stem}.failed.ipynb")


def execute_chapter(root: Path, doc: str, params: dict, stage: Path, fig_dir: Path, force: bool) -> dict:
    """Execute one chapter with papermill; return its provenance record.

    Only a successful execution with every named figure present replaces
    ``<stage>/<doc>.ipynb`` and the figures in ``fig_dir``; a failed one goes to
    ``<doc>.failed.ipynb`` (:func:`failed_notebook`) and stops the build.
    """
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
    out = executed_notebook(doc, stage)
    failed = failed_notebook(out)
    src_nb = out.with_suffix(".input.ipynb")
    out.parent.mkdir(parents=True, exist_ok=True)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    nb.cells.append(nbformat.v4.new_code_cell(DEVICE_CELL, metadata={"tags": [DEVICE_TAG, "remove-cell"]}))
    jupytext.write(nb, src_nb)
    seen = set(papermill.inspect_notebook(str(src_nb)))
    if seen != set(defaults):  # e.g. an '=' in a comment confuses papermill's parser
        src_nb.unlink()
        raise SystemExit(f"{doc}: papermill reads the parameters cell as {sorted(seen)}, "
                         f"the pipeline as {sorted(defaults)}; simplify the parameters cell")
    key = cache_key(root, doc, params)
    if not force and out.is_file():
        old = nbformat.read(out, as_version=4)
        rec = old.metadata.get("p2pntk", {})
        if rec.get("cache_key") == key and not _missing_figures(fig_dir, names):
            _log(f"[pipeline] {doc}: up to date (cache key {key[:12]})")
            src_nb.unlink(missing_ok=True)
            return rec
    _log(f"[pipeline] {doc}: executing with {params or 'defaults'}")
    # papermill writes into a temporary notebook beside the target, the chapter its
    # figures into a temporary folder beside the figures: neither replaces anything
    # until the execution succeeded with all its figures.
    tmp_out = out.with_name(f".{out.stem}.{os.getpid()}.running.ipynb")  # unique: the build lock is held
    tmp_figs = Path(tempfile.mkdtemp(dir=fig_dir, prefix=f".{out.stem}.", suffix=".running"))
    fig_env = os.environ.get("P2PNTK_FIG_DIR")
    os.environ["P2PNTK_FIG_DIR"] = str(tmp_figs)  # inherited by the kernel papermill starts

    def fail(what: str) -> SystemExit:
        kept = f"the last good one is kept: {out}" if out.is_file() else f"there is no earlier good one ({out})"
        if tmp_out.is_file():
            os.replace(tmp_out, failed)
            where = f"executed notebook of the failed run, with the full traceback: {failed}"
        else:
            failed.unlink(missing_ok=True)  # an earlier failure's, not this one's
            where = "papermill wrote no executed notebook"
        return SystemExit(strip_ansi(f"[pipeline] {doc} FAILED: {what}\n[pipeline] {where}; {kept}"))

    t0 = time.perf_counter()
    try:
        try:
            papermill.execute_notebook(
                str(src_nb), str(tmp_out), parameters=params, kernel_name="python3",
                cwd=str(source.parent), progress_bar=False, log_output=False,
            )
        except papermill.PapermillExecutionError as err:
            print(_plain_unless_terminal("\n".join(err.traceback), sys.stderr), file=sys.stderr, flush=True)
            raise fail(f"cell {err.exec_count} raised {err.ename}: {err.evalue}") from None
        except Exception as err:  # the kernel died, a time-out, ...
            raise fail(f"{type(err).__name__}: {err}") from err
        seconds = time.perf_counter() - t0
        missing = _missing_figures(tmp_figs, names)
        if missing:
            raise fail(f"figures missing or empty after execution: {missing}")
        executed = nbformat.read(tmp_out, as_version=4)
        device = None
        for cell in executed.cells:
            tags = cell.get("metadata", {}).get("tags", [])
            if "injected-parameters" in tags:
                cell.source = f"# Parameters of this run (profile values injected by papermill)\n{cell.source}"
                cell.metadata["tags"] = tags + ["hide-input"]
            if DEVICE_TAG in tags:
                device = _read_device(cell)
            fig = cell.get("metadata", {}).get("mystnb", {}).get("figure", {})
            if fig.get("name") and fig.get("caption") and (tmp_figs / f"{fig['name']}.csv").is_file():
                fig["caption"] = (f"{fig['caption'].rstrip()} Plotted values: "
                                  f"{{download}}`{fig['name']}.csv </{FIGURE_DATA}/{fig['name']}.csv>`.")
        executed.cells = [c for c in executed.cells if DEVICE_TAG not in c.get("metadata", {}).get("tags", [])]
        rec = {"cache_key": key, "parameters": {**defaults, **params}, "seconds": round(seconds, 1), "figures": names,
               "device": device}
        executed.metadata["p2pntk"] = rec
        for f in sorted(tmp_figs.iterdir()):  # same file system: atomic renames
            os.replace(f, fig_dir / f.name)
        atomic_write(out, nbformat.writes(executed) + "\n")
        failed.unlink(missing_ok=True)  # a stale failure of an earlier run
    finally:
        if fig_env is None:
            os.environ.pop("P2PNTK_FIG_DIR", None)
        else:
            os.environ["P2PNTK_FIG_DIR"] = fig_env
        src_nb.unlink(missing_ok=True)
        tmp_out.unlink(missing_ok=True)
        shutil.rmtree(tmp_figs, ignore_errors=True)
    _log(f"[pipeline] {doc}: done in {seconds:.1f} s")
    return rec


def _read_device(cell) -> dict | None:
    """The device record the pipeline's last cell (:data:`DEVICE_CELL`) printed."""
    for output in cell.get("outputs", []):
        for line in "".join(output.get("text", "")).splitlines():
            if line.startswith("p2pntk-device "):
                return json.loads(line.split(" ", 1)[1])
    return None


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
          extra: dict | None = None, wait: bool = False) -> None:
    """Execute the chapters of ``profile`` and build the HTML book into ``<root>/_build/html``.

    ``extra`` maps chapter names to parameter overrides applied on top of the profile.
    Everything is checked before the build lock (:func:`build_lock`) is taken; if
    another build holds it, stop at once with a message naming that build, or, with
    ``wait``, wait for it. Building the HTML also locks ``<root>/_build``, where
    Jupyter Book writes, when the build folder is elsewhere (``P2PNTK_BUILD``).
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
    folders = sorted({build_dir(), *([root / "_build"] if html else [])})  # one order: no deadlock
    with contextlib.ExitStack() as locks:
        for folder in folders:
            locks.enter_context(build_lock(folder, wait=wait))
        _build_locked(root, profile, docs, chapters, overrides, force, html)


def _remove_stale_temporaries(stage: Path, fig_dir: Path) -> None:
    """Remove what an execution killed before its clean-up left (only called under the build lock)."""
    for f in stage.rglob(".*.running.ipynb"):
        f.unlink(missing_ok=True)
    for d in fig_dir.glob(".*.running"):
        shutil.rmtree(d, ignore_errors=True)


def _build_locked(root: Path, profile: str, docs: list[str], chapters, overrides: dict, force: bool,
                  html: bool) -> None:
    stage = stage_dir()
    stage.mkdir(parents=True, exist_ok=True)
    fig_dir = build_dir() / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(stage, fig_dir)
    os.environ["P2PNTK_FIG_DIR"] = str(fig_dir)
    os.environ["P2PNTK_ROOT"] = str(root)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for f in STAGED_FILES:
        shutil.copy2(root / f, stage / f)  # _config.yml is completed below, once the chapters ran
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
    atomic_write(prov_file, json.dumps(prov, indent=2, sort_keys=True))
    if not html:
        return
    stage_site(root, stage, profile, prov["chapters"], fig_dir)
    cmd = ["jupyter-book", "build", str(stage), "--path-output", str(root), "-W", "-n", "--keep-going", "--all"]
    print("[pipeline] " + " ".join(cmd), flush=True)
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or "jupyter-book"
    _run_plain([jb, *cmd[1:]])
    missing = check_html(root / "_build" / "html")
    if missing:
        raise SystemExit("HTML references files that do not exist:\n  " + "\n  ".join(missing))
    print(f"[pipeline] book built: {root / '_build' / 'html' / 'index.html'}", flush=True)


def _run_plain(cmd: list) -> None:
    """Run ``cmd``, its output passed to ``sys.stdout``, without colour codes unless that is a terminal.

    Jupyter Book colours Sphinx's log whatever the output is; CI logs and files get plain text.
    Raises ``subprocess.CalledProcessError`` if the command fails.
    """
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        for line in proc.stdout:
            sys.stdout.write(_plain_unless_terminal(line, sys.stdout))
        sys.stdout.flush()
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)


def stage_site(root: Path, stage: Path, profile: str, chapters: dict, fig_dir: Path) -> dict:
    """Write the staged ``_config.yml`` (:func:`site_config`) and the figures' CSV files; return the config.

    The repository is read from ``root``'s git remote now, at build time; the CSV files of
    ``fig_dir`` are copied to ``<stage>/figure-data/``, which the captions link to.
    """
    config = yaml.safe_load((root / "_config.yml").read_text()) or {}
    sentence = profile_sentence(profile, read_profiles(root), chapters, _git(root, "rev-parse", "--short", "HEAD"))
    config = site_config(config, github_repository(root), sentence)
    atomic_write(stage / "_config.yml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    data = stage / FIGURE_DATA
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    for f in sorted(fig_dir.glob("*.csv")):
        shutil.copy2(f, data / f.name)
    return config


#: Results that took at least this long to compute (seconds, the sum of their ``seconds_*``
#: timings) are kept in the repository's store by :func:`keep_results`.
KEEP_SECONDS = 120.0


def keep_results(source: Path | None = None, store: Path | None = None,
                 min_seconds: float = KEEP_SECONDS) -> list[Path]:
    """Copy the long results of a build into the repository's store, to be committed.

    Every results file ``<source>/*.npz`` (default ``<build>/results``) whose timings
    (``<file>.timings.json``, the ``seconds_*`` arrays) add up to at least ``min_seconds``
    is copied with its timings to ``store`` (default :func:`p2pntk.paths.results_store`,
    ``data/results``) unless a file of that name is there already (the bytes are
    deterministic). :func:`p2pntk.results.cached` reads the store when the build folder
    lacks a file, under the same key rule. Quick results (the ``ci`` profile's, seconds
    each) are left out on purpose: CI computes them, so its run exercises the code.
    Returns the files copied.
    """
    import numpy as np

    source = Path(source) if source else build_dir() / "results"
    store = Path(store) if store else results_store()
    if store is None:
        raise SystemExit("[pipeline] no results store: P2PNTK_STORE is set and empty")
    kept = []
    for path in sorted(source.glob("*.npz")):
        side = path.with_suffix(".timings.json")
        try:
            seconds = sum(float(np.sum(np.asarray(v, float))) for v in json.loads(side.read_text()).values())
        except (OSError, ValueError):
            continue  # no timings: not a result of results.cached
        if seconds < min_seconds or (store / path.name).exists():
            continue
        store.mkdir(parents=True, exist_ok=True)
        for f in (path, side):
            shutil.copyfile(f, store / f.name)
        kept.append(store / path.name)
    return kept


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m p2pntk.pipeline", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="ci", help="parameter profile from book/profiles.yml (default: ci)")
    ap.add_argument("--chapter", action="append", dest="chapters", help="only (re)execute this chapter (repeatable)")
    ap.add_argument("--force", action="store_true", help="re-execute even if the cache key is unchanged")
    ap.add_argument("--no-html", action="store_true", help="execute chapters only, do not build the HTML")
    ap.add_argument("--wait", action="store_true", help=WAIT_HELP)
    ap.add_argument("--export-notebooks", metavar="DIR", type=Path,
                    help="build nothing: write the executed notebooks to DIR/book/, each with a first cell "
                         "that installs p2pntk on Colab (the repository read from the git remote)")
    ap.add_argument("--keep-results", action="store_true",
                    help=f"build nothing: copy the results of <build>/results that took at least {KEEP_SECONDS:.0f} s "
                         "to compute (the paper profile's trained configurations) to the repository's store "
                         "data/results, to be committed; later builds read them from there")
    a = ap.parse_args(argv)
    if a.keep_results:
        kept = keep_results()
        print(f"[pipeline] kept {len(kept)} new results file(s) in {results_store()}")
        return
    if a.export_notebooks:
        repository = github_repository(project_root())
        if not repository:
            raise SystemExit(f"[pipeline] no GitHub remote in {project_root()}: the notebooks' install cell "
                             "needs the repository (git remote add origin https://github.com/OWNER/REPO)")
        for path in export_notebooks(a.export_notebooks, repository):
            print(f"[pipeline] exported {path}")
        return
    try:
        build(a.profile, a.chapters, a.force, html=not a.no_html, wait=a.wait)
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"[pipeline] jupyter-book build failed (exit {err.returncode})") from None


if __name__ == "__main__":
    main()
