# The two doors are `make book` and `make test`; README.md explains both.
# Everything else here is a step of theirs or a maintainer's tool.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
ENV_STAMP := $(VENV)/.installed
# MathJax is served from the built site so that math renders offline.
MATHJAX_VERSION := 3.2.2
MATHJAX := .mathjax/mathjax/tex-chtml-full.js
# Strict flags: nitpicky, warnings are errors, but report all of them.
JB_STRICT := -W -n --keep-going
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with chapters/nbval-sanitize.cfg

.PHONY: book test env lint unit nbval book-strict browser notebooks bench lock clean

## book: create .venv if needed and build the HTML book into _build/html
book: $(ENV_STAMP) $(MATHJAX)
	rm -rf _build/html
	$(BIN)/jupyter-book build . --all --keep-going
	@echo "The book is at file://$(CURDIR)/_build/html/index.html"

## test: lint, unit tests, notebooks under nbval, a strict book build, the browser check
test: lint unit nbval book-strict browser
	@echo "make test: all checks passed"

env: $(ENV_STAMP)

$(ENV_STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(MATHJAX):
	rm -rf .mathjax && mkdir -p .mathjax/npm .mathjax/mathjax/output/chtml/fonts
	cd .mathjax/npm && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null
	tar -xzf .mathjax/npm/mathjax-$(MATHJAX_VERSION).tgz -C .mathjax/npm
	cp .mathjax/npm/package/es5/tex-chtml-full.js .mathjax/mathjax/
	cp -r .mathjax/npm/package/es5/output/chtml/fonts/woff-v2 .mathjax/mathjax/output/chtml/fonts/
	cp .mathjax/npm/package/LICENSE .mathjax/mathjax/
	rm -rf .mathjax/npm

lint: $(ENV_STAMP)
	$(BIN)/ruff check vicourse tests benchmarks chapters tools _ext conftest.py

unit: $(ENV_STAMP)
	$(BIN)/pytest tests --ignore=tests/browser -q

nbval: $(ENV_STAMP)
	$(BIN)/pytest $(NBVAL) chapters -q

book-strict: $(ENV_STAMP) $(MATHJAX)
	rm -rf _build/html
	$(BIN)/jupyter-book build . --all $(JB_STRICT)

browser: $(ENV_STAMP)
	$(BIN)/pytest tests/browser -q -rs

## notebooks: re-execute every chapter, store the fresh outputs, refresh the equation index
notebooks: $(ENV_STAMP)
	$(BIN)/python tools/execute_notebooks.py chapters/*.ipynb
	$(BIN)/python tools/equation_index.py

## bench: run the benchmarks; they rewrite appendix/performance.md
bench: $(ENV_STAMP)
	for script in benchmarks/bench_*.py; do $(BIN)/python "$$script" || exit 1; done

## lock: re-resolve requirements.txt from pyproject.toml in a throwaway venv
lock:
	rm -rf /tmp/vicourse-lock && $(PYTHON) -m venv /tmp/vicourse-lock
	/tmp/vicourse-lock/bin/pip install --quiet "torch==2.13.0" -e ".[test,book]"
	{ sed -n '1,/^$$/p' requirements.txt | grep '^#'; \
	  /tmp/vicourse-lock/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > requirements.txt.new
	mv requirements.txt.new requirements.txt

clean:
	rm -rf _build .mathjax .pytest_cache .ruff_cache
