# The two commands of the README:
#   make book [PROFILE=ci|paper]   set up .venv if needed, execute every chapter, build _build/html
#   make test                      set up .venv if needed, run the test suite
PYTHON  ?= python3.11
VENV    ?= .venv
PROFILE ?= ci
BIN     := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL := 3

FASHION := /usr/share/datasets/fashion-mnist
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: book test setup clean fashion-mnist

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

book: setup $(if $(filter paper,$(PROFILE)),fashion-mnist)
	$(BIN)/python -m p2pntk.pipeline --profile $(PROFILE)

# Fashion-MNIST (paper profile) from Debian's package; never downloaded at run time.
fashion-mnist:
	test -s $(FASHION)/train-images-idx3-ubyte.gz || \
	  { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist; }

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf _build
