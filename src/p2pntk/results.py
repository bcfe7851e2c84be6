"""Results as data: computed once, saved with the parameters that made them, cached safely.

Every expensive result is a dictionary of NumPy arrays saved as one ``.npz``
file under ``<root>/_build/results/`` together with its parameters (JSON). The
file name carries a hash of the parameters *and* of the code that computes them
(the package source and ``pyproject.toml``), so a change of either never serves
a stale result. Files are written atomically (temporary file, then rename) and
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
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .paths import build_dir

_EPOCH = (1980, 1, 1, 0, 0, 0)


def code_hash() -> str:
    """Hash of the package source and of the dependency pins."""
    pkg = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        h.update(f.relative_to(pkg).as_posix().encode())
        h.update(f.read_bytes())
    pyproject = pkg.parents[1] / "pyproject.toml"
    if pyproject.is_file():
        h.update(pyproject.read_bytes())
    return h.hexdigest()


def key(name: str, params: dict) -> str:
    """Cache key of a result: its name, its parameters (JSON) and :func:`code_hash`."""
    blob = json.dumps({"name": name, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256((blob + code_hash()).encode()).hexdigest()[:20]


def save(path, arrays: dict, params: dict) -> Path:
    """Write ``arrays`` and ``params`` to ``path`` (.npz) atomically and deterministically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        entries = {k: np.asarray(v) for k, v in sorted(arrays.items())}
        entries["__params__"] = np.asarray(json.dumps(params, sort_keys=True, default=str))
        for k, v in entries.items():
            info = zipfile.ZipInfo(f"{k}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, v, allow_pickle=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


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
        folder: defaults to ``<root>/_build/results``.
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
    _atomic_text(path.with_suffix(".timings.json"), json.dumps(timings, indent=1, sort_keys=True))
    return arrays


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
