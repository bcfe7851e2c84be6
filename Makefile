# The two commands of the README:
#   make book [PROFILE=ci|paper]   set up .venv if needed, execute every chapter, build _build/html
#   make test                      set up .venv if needed, run the test suite
PYTHON  ?= python3.11
VENV    ?= .venv
PROFILE ?= ci
BIN     := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: book test setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

book: setup
	$(BIN)/python -m p2pntk.pipeline --profile $(PROFILE)

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf _build
