"""Browser test of the built book: ``make browser-test`` (after ``make book``).

Serves ``_build/html`` on localhost and opens every page of ``_toc.yml`` in
headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright; no
browser is ever downloaded). Every request that does not go to the local server
is blocked and recorded: the book must work offline. On each page it checks

* no console error, no page error, no failed local request;
* every ``<img>`` loaded (``naturalWidth > 0``), and every figure the chapter
  names (``mystnb: figure: name:``) is on the page;
* MathJax (served from the book's ``_static/mathjax``) typeset every maths
  expression of the source (``$..$``, ``$$..$$``, amsmath, also inside
  directives): each Sphinx ``.math`` element holds an ``mjx-container``, there
  is no MathJax error or undefined macro, and no ``$``, ``$$`` or TeX command is
  left in the text;
* one theorem/proof box per ``{prf:...}`` directive of the source, of the same
  kind, with its title;
* no cell output holds a Python traceback.

A full-page screenshot of each page is saved to ``_build/screenshots/<page>.png``.

Skipped unless ``P2PNTK_BROWSER_TEST=1`` (``make browser-test`` sets it): the
normal ``make test`` needs neither a built book nor a browser.
"""
import collections
import functools
import http.server
import os
import re
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

if not os.environ.get("P2PNTK_BROWSER_TEST"):
    pytest.skip("browser test: run `make browser-test` (needs a built book and Chromium)",
                allow_module_level=True)

import yaml  # noqa: E402

from p2pntk import pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("P2PNTK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = pipeline.toc_files(ROOT)

# Console errors that come from the pinned toolchain, not from the book, and are
# harmless; matched exactly, counted as "known" in the report.
KNOWN_CONSOLE_ERRORS = {
    # sphinx-thebe 0.3.1 registers its inline configuration script after the HTML
    # builder is initialised, and Sphinx 7.4 then emits it twice on every page (once
    # as filename None, once as ''): the second `const THEBE_JS_URL` throws. The
    # first copy defines the constants; thebe (live code) is not enabled anyway.
    "uncaught: Identifier 'THEBE_JS_URL' has already been declared",
}

# Directives whose body MyST does not parse as markdown (no maths, no nested directives).
LITERAL_DIRECTIVES = {"code-cell", "code", "code-block", "sourcecode", "raw", "bibliography", "math",
                      "literalinclude", "include", "eval-rst"}


# --------------------------------------------------------------------------- the source

def _markdown():
    from markdown_it import MarkdownIt
    from mdit_py_plugins.amsmath import amsmath_plugin
    from mdit_py_plugins.colon_fence import colon_fence_plugin
    from mdit_py_plugins.dollarmath import dollarmath_plugin
    from mdit_py_plugins.front_matter import front_matter_plugin
    from mdit_py_plugins.myst_blocks import myst_block_plugin
    from mdit_py_plugins.myst_role import myst_role_plugin

    return (MarkdownIt("commonmark").use(front_matter_plugin).use(myst_block_plugin).use(myst_role_plugin)
            .use(dollarmath_plugin).use(amsmath_plugin).use(colon_fence_plugin))


def _directive_body(content: str) -> str:
    """A directive's body without its ``:option:`` lines or ``---`` option block."""
    lines = content.splitlines()
    if lines and lines[0].strip() == "---":
        end = next((i for i, ln in enumerate(lines[1:], 1) if ln.strip() == "---"), 0)
        lines = lines[end + 1:]
    while lines and re.match(r"\s*:[\w-]+:", lines[0]):
        lines = lines[1:]
    return "\n".join(lines)


def source_expectations(text: str, md=None) -> tuple[int, collections.Counter]:
    """Number of maths expressions and ``{prf:kind}`` directives in a MyST page."""
    md = md or _markdown()
    maths, boxes = 0, collections.Counter()
    for tok in md.parse(text):
        if tok.type in ("math_inline", "math_block", "math_block_label", "amsmath"):
            maths += 1
        for child in tok.children or []:
            maths += child.type == "math_inline"
        m = re.match(r"\{([\w:-]+)\}", tok.info) if tok.type in ("fence", "colon_fence") else None
        if m:
            name = m.group(1)
            if name.startswith("prf:"):
                boxes[name.removeprefix("prf:")] += 1
            maths += name == "math"
            if name not in LITERAL_DIRECTIVES:
                m2, b2 = source_expectations(_directive_body(tok.content), md)
                maths, boxes = maths + m2, boxes + b2
    return maths, boxes


@functools.cache
def expected(doc: str) -> tuple[int, collections.Counter, list[str]]:
    """Maths expressions (figure captions included), ``{prf:kind}`` directives and
    named figures of a page's source."""
    source = ROOT / f"{doc}.md"
    md = _markdown()
    maths, boxes = source_expectations(source.read_text(), md)
    if not pipeline.is_notebook(source):
        return maths, boxes, []
    import jupytext

    nb = jupytext.read(source)
    for cell in nb.cells:
        caption = cell.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("caption", "")
        maths += source_expectations(caption, md)[0]
    return maths, boxes, pipeline.figure_names(nb)


# --------------------------------------------------------------------------- server and browser

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(HTML), **kwargs)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    if not (HTML / "index.html").is_file():
        pytest.fail(f"no built book in {HTML}: run `make book` first")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: `make browser-test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Visit:
    """One page opened in a fresh context, with everything that went wrong on the way."""

    def __init__(self, browser, server: str, path: str):
        self.host = urlparse(server).netloc
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.external, self.console, self.failed = [], [], []
        self.context.route("**/*", self._route)
        self.page.on("console", lambda m: m.type == "error" and self.console.append(
            f"{m.text} ({m.location.get('url', '')}:{m.location.get('lineNumber', '')})"))
        self.page.on("pageerror", lambda e: self.console.append(f"uncaught: {e.message}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.status} {r.url}"))
        self.page.goto(f"{server}/{path}", wait_until="load")

    def _is_local(self, url: str) -> bool:
        return urlparse(url).netloc == self.host

    def _route(self, route):
        url = route.request.url
        if self._is_local(url) or url.startswith(("data:", "blob:", "about:")):
            route.continue_()
        else:
            self.external.append(url)
            route.abort()

    def _failed(self, request):
        if self._is_local(request.url):
            self.failed.append(f"{request.failure} {request.url}")

    def close(self):
        self.context.close()


# Everything the checks need from the rendered page, after MathJax and the images are done.
INSPECT = r"""async () => {
  await Promise.all([...document.images].map(img => {
    img.loading = "eager";
    return img.complete ? null : new Promise(done => { img.onload = img.onerror = done; });
  }));
  const mj = window.MathJax && window.MathJax.startup ? window.MathJax : null;
  if (mj) await mj.startup.promise;
  await document.fonts.ready;
  const article = document.querySelector("article") || document.body;
  const prose = article.cloneNode(true);
  prose.querySelectorAll("pre, code, script, style, mjx-container, .math, .highlight")
       .forEach(e => e.remove());
  const short = e => e.textContent.replace(/\s+/g, " ").trim().slice(0, 100);
  return {
    mathjax: mj ? {version: mj.version,
                   scripts: [...document.scripts].map(s => s.src).filter(s => /mathjax/i.test(s))} : null,
    images: [...document.images].map(i => ({src: i.getAttribute("src"), width: i.naturalWidth,
                                            ok: i.complete && i.naturalWidth > 0})),
    figures: [...article.querySelectorAll("figure[id]")].map(f => ({
      id: f.id, ok: [...f.querySelectorAll("img")].some(i => i.naturalWidth > 0)})),
    maths: article.querySelectorAll(".math").length,
    untypeset: [...article.querySelectorAll(".math")].filter(e => !e.querySelector("mjx-container")).map(short),
    typeset: article.querySelectorAll("mjx-container").length,
    mathErrors: [...document.querySelectorAll("mjx-merror")].map(short),
    undefinedMacros: [...document.querySelectorAll('mjx-container [style*="color: red"]')].map(short),
    prose: prose.textContent,
    boxes: [...article.querySelectorAll("div.proof")].map(b => ({
      kind: [...b.classList].find(c => c !== "proof" && c !== "admonition") || "proof",
      title: short(b.querySelector(".admonition-title") || b.querySelector("p") || b),
      height: b.getBoundingClientRect().height})),
    outputs: article.querySelectorAll(".cell_output").length,
    tracebacks: [...article.querySelectorAll(".cell_output")]
      .filter(o => o.querySelector(".traceback, .highlight-ipythontb")
                   || /Traceback \(most recent call last\)/.test(o.textContent)).map(short),
  };
}"""


def _math_pages() -> list[str]:
    return [d for d in DOCS if expected(d)[0]]


def _problems(doc: str, r: dict, visit: Visit) -> list[str]:
    maths, boxes, figures = expected(doc)
    problems = [f"blocked non-local request: {u}" for u in visit.external]
    problems += [f"console error: {m}" for m in visit.console if m not in KNOWN_CONSOLE_ERRORS]
    problems += [f"failed request: {m}" for m in visit.failed]
    problems += [f"image not loaded: {i['src']}" for i in r["images"] if not i["ok"]]
    on_page = {f["id"]: f["ok"] for f in r["figures"]}
    problems += [f"figure {n!r} missing or without a loaded image" for n in figures
                 if not on_page.get(n)]
    if maths:
        if r["mathjax"] is None:
            problems.append(f"the source has {maths} maths expressions but MathJax did not load")
        if r["maths"] < maths:
            problems.append(f"the source has {maths} maths expressions, the page {r['maths']} .math elements")
    problems += [f"maths not typeset: {t}" for t in r["untypeset"]]
    problems += [f"MathJax error: {t}" for t in r["mathErrors"]]
    problems += [f"undefined TeX macro: {t}" for t in r["undefinedMacros"]]
    problems += [f"raw TeX in the text: ...{r['prose'][max(m.start() - 40, 0):m.end() + 40]!r}..."
                 for m in re.finditer(r"\$|\\[A-Za-z]{2,}|\\[(\[]", r["prose"])]
    got = collections.Counter(b["kind"] for b in r["boxes"])
    if got != boxes:
        problems.append(f"theorem/proof boxes: source {dict(boxes)}, page {dict(got)}")
    for b in r["boxes"]:
        if b["height"] <= 0 or not b["title"].lower().startswith(b["kind"]):
            problems.append(f"{b['kind']} box without a title or not displayed: {b['title']!r}")
    problems += [f"traceback in a cell output: {t}" for t in r["tracebacks"]]
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=[Path(d).name for d in DOCS])
def test_page(doc, server, browser, page_report):
    name = Path(doc).name
    visit = Visit(browser, server, f"{doc}.html")
    try:
        r = visit.page.evaluate(INSPECT)
        SHOTS.mkdir(parents=True, exist_ok=True)
        visit.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        problems = _problems(doc, r, visit)
    finally:
        visit.close()
    page_report[name] = {
        "images": len(r["images"]), "figures": len(expected(doc)[2]), "src_maths": expected(doc)[0],
        "maths": r["maths"], "typeset": r["typeset"], "boxes": len(r["boxes"]),
        "outputs": r["outputs"], "external": len(visit.external), "problems": len(problems),
        "known": sum(m in KNOWN_CONSOLE_ERRORS for m in visit.console),
        "details": problems,
    }
    assert not problems, f"{doc}.html:\n  " + "\n  ".join(problems)


def test_index_redirects_to_the_root_page(server, browser):
    visit = Visit(browser, server, "index.html")
    try:
        visit.page.wait_for_url(f"**/{DOCS[0]}.html")
        assert not set(visit.console) - KNOWN_CONSOLE_ERRORS and not visit.failed and not visit.external
    finally:
        visit.close()


def test_mathjax_is_the_pinned_local_copy_with_the_book_macros(server, browser):
    """MathJax comes from ``_static/mathjax`` (once), is the version the Makefile pins,
    and knows every macro of ``_config.yml``."""
    pinned = re.search(r"^MATHJAX_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    macros = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]["mathjax3_config"]["tex"]["macros"]
    visit = Visit(browser, server, f"{_math_pages()[0]}.html")
    try:
        r = visit.page.evaluate(INSPECT)
        assert r["mathjax"]["version"] == pinned
        [src] = r["mathjax"]["scripts"]
        assert urlparse(src).netloc == visit.host and "/_static/mathjax/" in src
        tex = " ".join(f"\\{m}" for m in macros)
        out = visit.page.evaluate("""async tex => {
            const node = await MathJax.tex2chtmlPromise(tex, {display: true});
            return {errors: node.querySelectorAll("mjx-merror").length,
                    undefined: node.querySelectorAll('[style*="color: red"]').length,
                    text: node.textContent};
        }""", tex)
        assert out["errors"] == 0 and out["undefined"] == 0, (tex, out)
        assert not set(visit.console) - KNOWN_CONSOLE_ERRORS and not visit.failed and not visit.external
    finally:
        visit.close()
