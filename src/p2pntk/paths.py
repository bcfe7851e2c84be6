"""Where the project's generated files live, and the one way they are written.

The project root is the nearest folder at or above the working directory that
holds ``_toc.yml``, else the source checkout the package was installed from (an
editable install, ``pip install -e``: ``src/p2pntk`` two levels below a folder holding
``_toc.yml``), so the ``p2pntk`` command works from any folder; the environment
variable ``P2PNTK_ROOT`` overrides both.
Everything generated goes under ``<root>/_build`` (git-ignored; ``P2PNTK_BUILD``
overrides): executed notebooks (:func:`stage_dir`), figures, results. The HTML
book is always ``<root>/_build/html``. Results computed once and kept in the
repository (the long ``paper`` runs) are read from :func:`results_store`.

Generated files are written with :func:`atomic_write`: a reader (or a build
interrupted mid-write) sees the old file or the new one, never a partial one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: mkstemp creates files 0600, written files get the usual 0666 & ~umask


#: Where the book's sources are when the package runs from its source checkout (editable install).
SOURCE_CHECKOUT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    """The repository root: ``$P2PNTK_ROOT``, else the nearest folder at or above the working
    directory holding ``_toc.yml``, else :data:`SOURCE_CHECKOUT` if it holds one, else the
    working directory (where :func:`has_book_sources` is false)."""
    if os.environ.get("P2PNTK_ROOT"):
        return Path(os.environ["P2PNTK_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents, SOURCE_CHECKOUT):
        if (folder / "_toc.yml").is_file():
            return folder
    return here


def has_book_sources(root: Path) -> bool:
    """Whether ``root`` holds the book's sources (``_toc.yml`` and ``book/profiles.yml``)."""
    return (root / "_toc.yml").is_file() and (root / "book" / "profiles.yml").is_file()


def build_dir() -> Path:
    """``<root>/_build``, or ``$P2PNTK_BUILD`` if set (used by tests to build elsewhere)."""
    if os.environ.get("P2PNTK_BUILD"):
        return Path(os.environ["P2PNTK_BUILD"]).resolve()
    return project_root() / "_build"


def results_store() -> Path | None:
    """Results kept in the repository: ``<root>/data/results``, or ``$P2PNTK_STORE`` if set
    (set and empty: no store, every result is computed or read from the build folder).

    :func:`p2pntk.results.cached` reads a result from here when the build folder lacks it and
    the file's key (parameters and code) matches; it never writes here.
    """
    if "P2PNTK_STORE" in os.environ:
        return Path(os.environ["P2PNTK_STORE"]).resolve() if os.environ["P2PNTK_STORE"] else None
    return project_root() / "data" / "results"


def stage_dir() -> Path:
    """``<build>/stage``: the staged book sources and the executed notebooks ``book/<chapter>.ipynb``."""
    return build_dir() / "stage"


def figures_dir() -> Path:
    """The single folder every chapter saves its figures to (``P2PNTK_FIG_DIR`` overrides)."""
    d = Path(os.environ["P2PNTK_FIG_DIR"]) if os.environ.get("P2PNTK_FIG_DIR") else build_dir() / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def atomic_write(path, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; return the path.

    The bytes go to a temporary file in the same folder, are flushed to disk
    (``fsync``), and the file is renamed over ``path`` (``os.replace``), so
    ``path`` is at all times the old file or the complete new one. On any error
    the temporary file is removed and ``path`` is untouched. Missing parent
    folders are created.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write: data must be bytes or str, got {type(data).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
