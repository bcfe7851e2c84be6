"""Results as data: computed once, saved with the parameters that made them, cached safely.

Every expensive result is a dictionary of NumPy arrays saved as one ``.npz``
file under ``<build>/results/`` (``<root>/_build/results/`` unless
``P2PNTK_BUILD`` is set) together with its parameters (JSON). The file name
carries a hash of the parameters *and* of the code that computes them, so a
change of either never serves a stale result. That code is every module of the
package except the build layer (:data:`BUILD_MODULES`: the pipeline, the
command line, the figure helpers and the bad-input cases, which read results but
never change one), plus ``pyproject.toml`` (the pins): a plotting tweak keeps
the results cache, a change of a computing module or of a pin recomputes it.
(The executed chapters are keyed by every module, see :mod:`p2pntk.pipeline`.)

Files are written atomically (:func:`p2pntk.paths.atomic_write`) and
byte-for-byte deterministically (fixed zip time stamps), so an interrupted run
leaves the old file or the new one, and a rerun with the same parameters gives
identical bytes. A file that cannot be read back is recomputed, never used.
Wall-clock timings (arrays named ``seconds_*``) differ from run to run; they go
to a JSON file beside the results (``<file>.timings.json``) so that the results
file itself stays byte-for-byte reproducible.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .paths import atomic_write, build_dir

_EPOCH = (1980, 1, 1, 0, 0, 0)

#: The build layer: package modules (file stems) that present results but never
#: compute one, left out of the results-cache key. An exclusion list on purpose: a
#: new or renamed module counts as computing (its change recomputes) until it is
#: named here.
BUILD_MODULES = ("pipeline", "cli", "plotting", "bad_input")


def code_hash(package_dir=None, exclude=()) -> str:
    """Hash of the package's ``.py`` files, except the modules named in ``exclude``, and of the pins.

    Args:
        package_dir: the package folder (default: the package imported); the pins are
            ``pyproject.toml`` two levels up (``<root>/src/p2pntk`` -> ``<root>``), if there.
        exclude: module file stems to leave out, e.g. :data:`BUILD_MODULES`.
    """
    pkg = Path(package_dir).resolve() if package_dir else Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        if f.stem in exclude:
            continue
        h.update(f.relative_to(pkg).as_posix().encode())
        h.update(f.read_bytes())
    pyproject = pkg.parents[1] / "pyproject.toml"
    if pyproject.is_file():
        h.update(pyproject.read_bytes())
    return h.hexdigest()


def key(name: str, params: dict, *, package_dir=None) -> str:
    """Cache key of a result: its name, its parameters (JSON) and the hash of the code computing it.

    That code is :func:`code_hash` without the build layer (:data:`BUILD_MODULES`).
    """
    blob = json.dumps({"name": name, "params": params}, sort_keys=True, default=str)
    code = code_hash(package_dir, exclude=BUILD_MODULES)
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


def cached(name: str, params: dict, compute, *, folder=None, verbose: bool = True) -> dict:
    """Return ``compute()`` for ``params``, from ``<folder>/<name>-<key>.npz`` if it is there and intact.

    Args:
        name: kind of result (file name prefix).
        params: JSON-serialisable parameters (everything that changes the result).
        compute: function returning a dict of arrays.
        folder: defaults to ``<build>/results`` (:func:`p2pntk.paths.build_dir`).
        verbose: warn (``RuntimeWarning``) when a corrupt file is found and recomputed.
    """
    folder = Path(folder) if folder else build_dir() / "results"
    path = folder / f"{name}-{key(name, params)}.npz"
    if path.is_file():
        try:
            arrays, stored = load(path)
            if stored == json.loads(json.dumps(params, sort_keys=True, default=str)):
                side = path.with_suffix(".timings.json")
                if side.is_file():
                    try:
                        arrays.update({k: np.asarray(v) for k, v in json.loads(side.read_text()).items()})
                    except ValueError:
                        pass  # timings are informative only
                return arrays
        except ValueError as err:
            if verbose:
                warnings.warn(f"{err}: recomputing it (a corrupt file is never used)", RuntimeWarning, stacklevel=2)
    arrays = {k: np.asarray(v) for k, v in compute().items()}
    timings = {k: v.tolist() for k, v in arrays.items() if k.startswith("seconds_")}
    save(path, {k: v for k, v in arrays.items() if k not in timings}, params)
    atomic_write(path.with_suffix(".timings.json"), json.dumps(timings, indent=1, sort_keys=True))
    return arrays
