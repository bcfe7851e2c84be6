"""Results as data: computed once, saved with the parameters that made them, cached safely.

Every expensive result is a dictionary of NumPy arrays saved as one ``.npz``
file under ``<build>/results/`` (``<root>/_build/results/`` unless
``P2PNTK_BUILD`` is set) together with its parameters (JSON). The file name
carries a hash of the parameters *and* of the code that computes them, so a
change of either never serves a stale result. That code is the module that
defines the computation (the ``compute`` function's module, e.g.
:mod:`p2pntk.reproduction`) and every package module it imports, directly or
through others (:func:`dependencies`, read from the ``import`` statements), plus
``pyproject.toml`` (the pins). The build layer (:data:`BUILD_MODULES`: the
pipeline, the command line, the figure helpers and the bad-input cases, which
read results but never change one) is never part of it. So a plotting tweak keeps
the results cache, and so does an edit of :mod:`p2pntk.tuning` for a result of
:mod:`p2pntk.reproduction` (which does not import it), while a change of a module
the computation imports, or of a pin, recomputes it. A ``compute`` defined outside
the package (a chapter, a test) is keyed by every module but the build layer.
The sources are read once, when this module is imported (:data:`SOURCES`), so a
long run keys its results by the code it imported, not by files edited since.
(The executed chapters are keyed by every module, see :mod:`p2pntk.pipeline`.)

A result missing from the build folder is also looked up, read-only, in the
repository's store ``data/results`` (:func:`p2pntk.paths.results_store`): the
``paper`` profile's long runs (hours on two cores) are committed there once
computed, so a fresh clone rebuilds that profile from them, and a run cut short
resumes from the configurations kept. The same key rule applies: a stored file
made by other code or other parameters is never read.

Files are written atomically (:func:`p2pntk.paths.atomic_write`) and
byte-for-byte deterministically (fixed zip time stamps), so an interrupted run
leaves the old file or the new one, and a rerun with the same parameters gives
identical bytes. A file that cannot be read back is recomputed, never used.
Wall-clock timings (arrays named ``seconds_*``) differ from run to run; they go
to a JSON file beside the results (``<file>.timings.json``) so that the results
file itself stays byte-for-byte reproducible.
"""
from __future__ import annotations

import ast
import hashlib
import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .paths import atomic_write, build_dir, results_store

_EPOCH = (1980, 1, 1, 0, 0, 0)

#: The build layer: package modules (file stems) that present results but never
#: compute one, left out of the results-cache key. An exclusion list on purpose: a
#: new or renamed module counts as computing (its change recomputes) until it is
#: named here.
BUILD_MODULES = ("pipeline", "cli", "plotting", "bad_input")


def _sources(package_dir=None) -> dict:
    """The package's ``.py`` files (relative path -> bytes) and the pins (key ``"pyproject.toml"``)."""
    pkg = Path(package_dir).resolve() if package_dir else Path(__file__).resolve().parent
    files = {f.relative_to(pkg).as_posix(): f.read_bytes() for f in sorted(pkg.rglob("*.py"))}
    pyproject = pkg.parents[1] / "pyproject.toml"
    if pyproject.is_file():
        files["pyproject.toml"] = pyproject.read_bytes()
    return files


#: The sources of the package as imported (read when this module is imported): the
#: results keys of this process (:func:`key` without ``package_dir``) hash these bytes.
SOURCES = _sources()


def _hash(files: dict, exclude=(), modules=None) -> str:
    h = hashlib.sha256()
    for rel, data in files.items():
        stem = Path(rel).stem
        if rel != "pyproject.toml" and (stem in exclude or (modules is not None and stem not in modules)):
            continue
        h.update(rel.encode())
        h.update(data)
    return h.hexdigest()


def code_hash(package_dir=None, exclude=(), modules=None) -> str:
    """Hash of the package's ``.py`` files (read now), except the modules named in ``exclude``, and of the pins.

    Args:
        package_dir: the package folder (default: the package imported); the pins are
            ``pyproject.toml`` two levels up (``<root>/src/p2pntk`` -> ``<root>``), if there.
        exclude: module file stems to leave out, e.g. :data:`BUILD_MODULES`.
        modules: if given, only these module file stems (and the pins), e.g. :func:`dependencies`.
    """
    return _hash(_sources(package_dir), exclude, modules)


def _imports(source: bytes, known: set) -> set:
    """Package modules that a module's source imports (``from . import a``, ``from .a import b``, ``p2pntk.a``)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.split(".")[0] != "p2pntk":
                continue
            parts = (node.module or "").split(".")
            parts = parts[1:] if node.level == 0 else parts
            if parts and parts[0]:
                found.add(parts[0])
            else:  # from . import a, b  /  from p2pntk import a
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "p2pntk":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
    return found & known


def dependencies(module: str, package_dir=None, files: dict | None = None) -> tuple:
    """The package modules ``module`` imports, directly or through others, itself included (file stems, sorted).

    Read from the ``import`` statements anywhere in each module (also inside functions).
    Importing the facade (``import p2pntk``) counts as importing every module, since the
    facade reaches all of them.

    Example:
        >>> "tuning" in dependencies("reproduction"), {"graphs", "results"} <= set(dependencies("reproduction"))
        (False, True)
    """
    files = _sources(package_dir) if files is None else files
    by_stem = {Path(rel).stem: data for rel, data in files.items() if rel.endswith(".py")}
    known = set(by_stem)
    if module not in known:
        raise ValueError(f"module must be a module of the package, one of {sorted(known)}; got {module!r}")
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(known - seen if m == "__init__" else _imports(by_stem[m], known) - seen)
    return tuple(sorted(seen))


def key(name: str, params: dict, *, package_dir=None, module: str | None = None) -> str:
    """Cache key of a result: its name, its parameters (JSON) and the hash of the code computing it.

    That code is :func:`dependencies` of ``module`` (a module file stem, e.g. ``"reproduction"``), or
    every module if ``module`` is None; never the build layer (:data:`BUILD_MODULES`). Without
    ``package_dir`` the sources are those read at import (:data:`SOURCES`).
    """
    blob = json.dumps({"name": name, "params": params}, sort_keys=True, default=str)
    files = SOURCES if package_dir is None else _sources(package_dir)
    modules = None if module is None else dependencies(module, files=files)
    code = _hash(files, exclude=BUILD_MODULES, modules=modules)
    return hashlib.sha256((blob + code).encode()).hexdigest()[:20]


def save(path, arrays: dict, params: dict) -> Path:
    """Write ``arrays`` and ``params`` to ``path`` (.npz) atomically and deterministically."""
    path = Path(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        entries = {k: np.asarray(v) for k, v in sorted(arrays.items())}
        entries["__params__"] = np.asarray(json.dumps(params, sort_keys=True, default=str))
        for k, v in entries.items():
            info = zipfile.ZipInfo(f"{k}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, v, allow_pickle=False)
    return atomic_write(path, buf.getvalue())


def load(path) -> tuple[dict, dict]:
    """Read a results file; returns ``(arrays, params)``. Raises ``ValueError`` if it is corrupt."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        params = json.loads(str(arrays.pop("__params__")))
    except Exception as err:  # truncated zip, bad CRC, bad header, no parameters: all mean "recompute"
        raise ValueError(f"results file {path} is corrupt ({type(err).__name__}: {err})") from None
    return arrays, params


def _read(path: Path, params: dict, verbose: bool) -> dict | None:
    """The arrays of results file ``path`` (with its timings) if it is there, intact and made
    with ``params``; else None (a corrupt file is reported when ``verbose``)."""
    if not path.is_file():
        return None
    try:
        arrays, stored = load(path)
    except ValueError as err:
        if verbose:
            warnings.warn(f"{err}: recomputing it (a corrupt file is never used)", RuntimeWarning, stacklevel=3)
        return None
    if stored != json.loads(json.dumps(params, sort_keys=True, default=str)):
        return None
    side = path.with_suffix(".timings.json")
    if side.is_file():
        try:
            arrays.update({k: np.asarray(v) for k, v in json.loads(side.read_text()).items()})
        except ValueError:
            pass  # timings are informative only
    return arrays


def cached(name: str, params: dict, compute, *, folder=None, verbose: bool = True) -> dict:
    """Return ``compute()`` for ``params``, from ``<folder>/<name>-<key>.npz`` if it is there and intact.

    Args:
        name: kind of result (file name prefix).
        params: JSON-serialisable parameters (everything that changes the result).
        compute: function returning a dict of arrays; the code of its module and of what that
            module imports is part of the key (:func:`key`).
        folder: defaults to ``<build>/results`` (:func:`p2pntk.paths.build_dir`); then a file
            missing there is also looked up (read-only) in the repository's store
            (:func:`p2pntk.paths.results_store`), where the long ``paper`` runs are kept.
        verbose: warn (``RuntimeWarning``) when a corrupt file is found and recomputed.
    """
    store = None if folder else results_store()
    folder = Path(folder) if folder else build_dir() / "results"
    owner = getattr(compute, "__module__", None) or ""
    module = owner.split(".", 1)[1] if owner.startswith("p2pntk.") else None
    path = folder / f"{name}-{key(name, params, module=module)}.npz"
    for candidate in (path, *([store / path.name] if store else [])):
        arrays = _read(candidate, params, verbose)
        if arrays is not None:
            return arrays
    arrays = {k: np.asarray(v) for k, v in compute().items()}
    timings = {k: v.tolist() for k, v in arrays.items() if k.startswith("seconds_")}
    save(path, {k: v for k, v in arrays.items() if k not in timings}, params)
    atomic_write(path.with_suffix(".timings.json"), json.dumps(timings, indent=1, sort_keys=True))
    return arrays
