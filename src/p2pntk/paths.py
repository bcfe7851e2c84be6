"""Where the project's generated files live.

The project root is the nearest folder at or above the working directory that
holds ``_toc.yml`` (override with the environment variable ``P2PNTK_ROOT``).
Everything generated goes under ``<root>/_build`` (git-ignored; ``P2PNTK_BUILD``
overrides): executed notebooks, figures, results. The HTML book is always
``<root>/_build/html``.
"""
from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The repository root (folder holding ``_toc.yml``), or the working directory."""
    if os.environ.get("P2PNTK_ROOT"):
        return Path(os.environ["P2PNTK_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file():
            return folder
    return here


def build_dir() -> Path:
    """``<root>/_build``, or ``$P2PNTK_BUILD`` if set (used by tests to build elsewhere)."""
    if os.environ.get("P2PNTK_BUILD"):
        return Path(os.environ["P2PNTK_BUILD"]).resolve()
    return project_root() / "_build"


def figures_dir() -> Path:
    """The single folder every chapter saves its figures to (``P2PNTK_FIG_DIR`` overrides)."""
    d = Path(os.environ["P2PNTK_FIG_DIR"]) if os.environ.get("P2PNTK_FIG_DIR") else build_dir() / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d
