# The two commands of the README:
#   make book [PROFILE=ci|paper]   set up .venv if needed, execute every chapter, build _build/html
#   make test                      set up .venv if needed, run the test suite
#   make browser-test              open every page of the built book in headless Chromium
#   make bench                     run the benchmark suite (benchmarks/run.py), table + _build/benchmarks/benchmarks.json
#   make keep-results              after a paper build: keep its trained configurations in data/results (to commit)
PYTHON  ?= python3.11
VENV    ?= .venv
PROFILE ?= ci
BIN     := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL := 3

FASHION := /usr/share/datasets/fashion-mnist
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CHROMIUM ?= /usr/bin/chromium

# MathJax is served by the book itself (_static/mathjax), never from a CDN. It is
# fetched from the npm registry at set-up time into the git-ignored _vendor/
# (which the pipeline stages as a Sphinx static folder), checked against a pinned
# hash, and trimmed of the combined bundles the book does not load.
MATHJAX_VERSION := 3.2.2
MATHJAX_SHA256  := 1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09
MATHJAX         := _vendor/mathjax
MATHJAX_UNUSED  := tex-chtml-full.js tex-chtml-full-speech.js tex-svg.js tex-svg-full.js \
                   tex-mml-svg.js mml-chtml.js mml-svg.js node-main.js

.PHONY: book test setup clean fashion-mnist mathjax browser-test bench keep-results

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

book: setup mathjax $(if $(filter paper,$(PROFILE)),fashion-mnist)
	$(BIN)/python -m p2pntk.pipeline --profile $(PROFILE)

mathjax: $(MATHJAX)/.version-$(MATHJAX_VERSION)

$(MATHJAX)/.version-$(MATHJAX_VERSION):
	@command -v npm >/dev/null || { echo "npm is needed to fetch MathJax (e.g. apt-get install npm)" >&2; exit 1; }
	rm -rf $(MATHJAX) && mkdir -p $(MATHJAX)
	tmp=$$(mktemp -d) && \
	  npm pack --silent --pack-destination "$$tmp" mathjax@$(MATHJAX_VERSION) >/dev/null && \
	  echo "$(MATHJAX_SHA256)  $$tmp/mathjax-$(MATHJAX_VERSION).tgz" | sha256sum -c --quiet && \
	  tar -xzf "$$tmp/mathjax-$(MATHJAX_VERSION).tgz" -C $(MATHJAX) --strip-components=2 package/es5 && \
	  tar -xzf "$$tmp/mathjax-$(MATHJAX_VERSION).tgz" -C $(MATHJAX) --strip-components=1 package/LICENSE; \
	  status=$$?; rm -rf "$$tmp"; exit $$status
	cd $(MATHJAX) && rm -f $(MATHJAX_UNUSED)
	touch $@

# Fashion-MNIST (paper profile) from Debian's package; never downloaded at run time.
fashion-mnist:
	test -s $(FASHION)/train-images-idx3-ubyte.gz || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist; }

test: setup
	$(BIN)/python -m pytest

# Benchmark suite (full sizes, tens of minutes on 2 cores); BENCH_ARGS=--quick for small sizes.
bench: setup
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# Browser test of an already built book (make book first): every page of _toc.yml
# in headless Chromium from Debian (installed here if missing), no network.
browser-test: setup
	test -x $(CHROMIUM) || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }
	P2PNTK_BROWSER_TEST=1 P2PNTK_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest tests/browser

# The long results of a build (the paper profile's trained configurations, hours on 2 cores)
# copied to the repository's read-only store data/results, which p2pntk.results.cached reads
# when _build lacks a file (same key rule: only a file made by the same code and parameters).
keep-results: setup
	$(BIN)/python -m p2pntk.pipeline --keep-results

clean:
	rm -rf _build
