"""Book sources: MyST notebooks without outputs, one parameters cell, valid profiles."""
from pathlib import Path

import jupytext
import pytest

from p2pntk import pipeline

ROOT = Path(__file__).resolve().parents[1]
DOCS = pipeline.toc_files(ROOT)
CHAPTERS = [d for d in DOCS if pipeline.is_notebook(ROOT / f"{d}.md")]


def test_toc_lists_existing_sources_and_no_notebooks_committed():
    for d in DOCS:
        assert (ROOT / f"{d}.md").is_file(), d
    assert not list((ROOT / "book").rglob("*.ipynb")), "commit MyST sources only, never .ipynb with outputs"
    assert CHAPTERS


@pytest.mark.parametrize("doc", CHAPTERS)
def test_chapter_has_one_parameters_cell_and_named_figures(doc):
    nb = jupytext.read(ROOT / f"{doc}.md")
    assert pipeline.chapter_parameters(nb)
    names = pipeline.figure_names(nb)
    assert len(names) == len(set(names)) and all(n.startswith("fig-") for n in names)
    for name in names:  # every declared figure is saved under its name by the chapter
        assert f'"{name}"' in "".join(c.source for c in nb.cells)


@pytest.mark.parametrize("profile", ["ci", "paper"])
def test_profiles_name_existing_chapters_and_parameters(profile):
    overrides = pipeline.load_profile(ROOT, profile)
    by_name = {Path(d).name: d for d in CHAPTERS}
    for chapter, params in overrides.items():
        assert chapter in by_name, chapter
        defaults = pipeline.chapter_parameters(jupytext.read(ROOT / f"{by_name[chapter]}.md"))
        assert set(params) <= set(defaults), (chapter, set(params) - set(defaults))
        for k, v in params.items():
            assert type(v) is type(defaults[k]), (chapter, k)
        assert pipeline.check_choices(chapter, {**defaults, **params}) is None


def test_figure_names_unique_across_the_book():
    names = [n for d in CHAPTERS for n in pipeline.figure_names(jupytext.read(ROOT / f"{d}.md"))]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_prf_labels_unique_across_the_book():
    """sphinx-proof labels live in one namespace for the whole book: a repeated label is a
    "duplicate ... label" warning, an error under -W (unlabeled proofs get no label)."""
    import re

    labels = []
    for d in DOCS:
        text = (ROOT / f"{d}.md").read_text()
        labels += re.findall(r"^[`:]{3,}\{prf:\w+\}[^\n]*\n(?::[a-z]+:[^\n]*\n)*?:label: (\S+)", text, flags=re.M)
    assert len(labels) > 10  # the regular expression finds them
    assert len(labels) == len(set(labels)), sorted({n for n in labels if labels.count(n) > 1})


MAX_CODE_CELL_LINES = 25   # the architecture rule: chapters read as prose with short calls


@pytest.mark.parametrize("path", sorted((ROOT / "book").glob("*.md")), ids=lambda p: p.stem)
def test_code_cells_are_short(path):
    """No code cell of a chapter has more than 25 lines, comments and blank lines not counted:
    compute, assert and show go in separate cells."""
    long = []
    for cell in jupytext.read(path).cells:
        if cell.cell_type != "code":
            continue
        code = [l for l in cell.source.splitlines() if l.strip() and not l.strip().startswith("#")]
        if len(code) > MAX_CODE_CELL_LINES:
            first = next(l for l in cell.source.splitlines() if l.strip())
            long.append(f"{path.relative_to(ROOT)}: {len(code)} lines, cell starting {first.strip()!r}")
    assert not long, f"code cells over {MAX_CODE_CELL_LINES} lines:\n" + "\n".join(long)


@pytest.mark.parametrize("doc", DOCS)
def test_no_python_domain_roles(doc):
    """The book has no API pages, so a {py:func} (or any {py:...}) reference has no target and
    fails the -W build: name the API in code literals instead."""
    text = (ROOT / f"{doc}.md").read_text()
    assert "{py:" not in text, f"{doc}.md uses a py: role; write `p2pntk.name` instead"


@pytest.mark.parametrize("doc", DOCS)
def test_display_maths_mathjax_can_render(doc):
    """Display maths ($$ on a line of its own) starts after a blank line (else MyST leaves it as
    raw TeX in the paragraph, as it did in the modes chapter's theorems), and uses no environment
    that MathJax lacks without the mathtools extension (psmallmatrix, bsmallmatrix)."""
    lines = (ROOT / f"{doc}.md").read_text().splitlines()
    inside = False
    for n, line in enumerate(lines):
        if line.strip().startswith("$$"):
            if not inside:
                assert n == 0 or not lines[n - 1].strip(), f"{doc}.md:{n + 1}: $$ block needs a blank line before it"
            inside = not inside
    text = "\n".join(lines)
    for env in ("psmallmatrix", "bsmallmatrix"):
        assert env not in text, f"{doc}.md uses {env}, unknown to MathJax: use \\left(\\begin{{smallmatrix}}...\\right)"
