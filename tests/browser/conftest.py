"""Shared state of the browser test: one row per page, printed after the run and
written to ``_build/screenshots/report.json``."""
import json
from pathlib import Path

import pytest

ROWS = pytest.StashKey[dict]()
REPORT = Path(__file__).resolve().parents[2] / "_build" / "screenshots" / "report.json"


@pytest.fixture(scope="session")
def page_report(request) -> dict:
    """``{page: {check: value}}``, filled by the page tests."""
    return request.config.stash.setdefault(ROWS, {})


def pytest_terminal_summary(terminalreporter, config):
    rows = config.stash.get(ROWS, None)
    if not rows:
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(rows, indent=2, sort_keys=True))
    cols = ("images", "figures", "src_maths", "maths", "typeset", "boxes", "outputs", "external", "known",
            "problems")
    tr = terminalreporter
    tr.section("browser test: pages")
    tr.line(f"{'page':<14}" + "".join(f"{c:>10}" for c in cols))
    for page, row in rows.items():
        tr.line(f"{page:<14}" + "".join(f"{row.get(c, ''):>10}" for c in cols))
    tr.line("src_maths: maths expressions in the source (figure captions included); maths: .math\n"
            "elements on the page; typeset: MathJax containers; known: tolerated toolchain console errors")
    tr.line(f"screenshots and {REPORT.name}: {REPORT.parent}")
