# The two doors are `make book` and `make test`; README.md explains both.
# Everything else here is a step of theirs or a maintainer's tool.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
ENV_STAMP := $(VENV)/.installed
LAB_STAMP := $(VENV)/.installed-lab
# PyTorch's CPU wheels. torch is installed from here first, so that pip never
# takes a CUDA build (several GB). Point it at a mirror, or set it empty to let
# pip's own configuration choose: `make env TORCH_INDEX_URL=`. If the index does
# not answer, tools/torch_index.py says so and the install goes on without it.
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
# Served from the built site, so that the book needs no network: MathJax renders
# the math; axe-core is the accessibility audit of the browser check.
MATHJAX_VERSION := 3.2.2
MATHJAX := .mathjax/mathjax/tex-chtml-full.js
AXE_VERSION := 4.14.1
AXE := .axe/axe.min.js
# Strict flags: nitpicky, warnings are errors, but report all of them.
JB_STRICT := -W -n --keep-going
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with chapters/nbval-sanitize.cfg
# The unit tests and the notebooks run on every core (pytest-xdist); a notebook's
# cells stay together, in order, on one worker (--dist loadscope).  WORKERS=0 runs
# them in this process, one after another.
WORKERS ?= auto

.PHONY: book test env lint unit nbval book-strict pdf browser notebooks twins install-cells \
        lab lab-check kernel bench lock clean

## book: create .venv if needed, build the HTML book into _build/html, and its PDF if Chromium is there
book: $(ENV_STAMP) $(MATHJAX)
	rm -rf _build/html
	$(BIN)/jupyter-book build . --all --keep-going
	$(BIN)/python tools/book_pdf.py --optional
	@echo "The book is at file://$(CURDIR)/_build/html/index.html"

## test: lint, unit tests, notebooks under nbval, a strict book build, its PDF, the browser check
TEST_STEPS := lint unit nbval book-strict pdf browser
test: $(ENV_STAMP)
	@for step in $(TEST_STEPS); do \
	    start=$$SECONDS; $(MAKE) --no-print-directory $$step || exit 1; \
	    echo "make test: $$step took $$((SECONDS - start)) s"; \
	done; echo "make test: all checks passed in $$SECONDS s"

env: $(ENV_STAMP)

# torch first, from the CPU index (with the versions of requirements.txt as
# constraints), then the rest, which finds torch already installed.
$(ENV_STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -c requirements.txt \
	    $$($(PYTHON) tools/torch_index.py "$(TORCH_INDEX_URL)") torch
	$(PIP) install --quiet -r requirements.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(MATHJAX):
	rm -rf .mathjax && mkdir -p .mathjax/npm .mathjax/mathjax/output/chtml/fonts
	cd .mathjax/npm && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null
	tar -xzf .mathjax/npm/mathjax-$(MATHJAX_VERSION).tgz -C .mathjax/npm
	cp .mathjax/npm/package/es5/tex-chtml-full.js .mathjax/mathjax/
	cp -r .mathjax/npm/package/es5/output/chtml/fonts/woff-v2 .mathjax/mathjax/output/chtml/fonts/
	cp .mathjax/npm/package/LICENSE .mathjax/mathjax/
	rm -rf .mathjax/npm

$(AXE):
	rm -rf .axe && mkdir -p .axe/npm
	cd .axe/npm && npm pack --silent axe-core@$(AXE_VERSION) >/dev/null
	tar -xzf .axe/npm/axe-core-$(AXE_VERSION).tgz -C .axe/npm
	cp .axe/npm/package/axe.min.js .axe/npm/package/LICENSE .axe/
	rm -rf .axe/npm

lint: $(ENV_STAMP)
	$(BIN)/ruff check vicourse tests benchmarks chapters tools _ext conftest.py

unit: $(ENV_STAMP)
	$(BIN)/pytest tests --ignore=tests/browser -q -n $(WORKERS)

nbval: $(ENV_STAMP)
	$(BIN)/pytest $(NBVAL) chapters -q -n $(WORKERS) --dist loadscope

book-strict: $(ENV_STAMP) $(MATHJAX)
	rm -rf _build/html
	$(BIN)/jupyter-book build . --all $(JB_STRICT)

## pdf: print the built book to _build/html/vicourse.pdf (needs Chromium)
pdf: $(ENV_STAMP)
	$(BIN)/python tools/book_pdf.py

browser: $(ENV_STAMP) $(AXE)
	$(BIN)/pytest tests/browser -q -rs

## notebooks: re-execute every chapter, store the fresh outputs, refresh what is made from them
notebooks: $(ENV_STAMP)
	$(BIN)/python tools/execute_notebooks.py chapters/[0-9][0-9]_*.ipynb
	$(BIN)/python tools/equation_index.py
	$(BIN)/python tools/claims_ledger.py
	$(BIN)/python tools/twins.py

## twins: rewrite each chapter's markdown twin (chapters/md/) from its notebook
twins: $(ENV_STAMP)
	$(BIN)/python tools/twins.py

## install-cells: insert or refresh each chapter's first cell (installs the course on Colab)
install-cells: $(ENV_STAMP)
	$(BIN)/python tools/install_cell.py
	$(BIN)/python tools/claims_ledger.py
	$(BIN)/python tools/twins.py

## lab: JupyterLab with MyST rendering, rooted at the repository, on the first chapter
# (LAB_ARGS passes options on, e.g. LAB_ARGS=--allow-root in a container run as root)
lab: $(LAB_STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" $(LAB_ARGS) chapters/01_elbo.ipynb

## lab-check: start `make lab` headless after `make kernel` and check the server, root, kernels, MyST
lab-check: $(LAB_STAMP)
	$(BIN)/python tools/check_lab.py

$(LAB_STAMP): $(ENV_STAMP) requirements-lab.txt
	$(PIP) install --quiet -c requirements.txt -r requirements-lab.txt
	touch $@

## kernel: register the course's Python as the Jupyter kernel "vicourse", for another Jupyter
kernel: $(ENV_STAMP)
	$(BIN)/python -m ipykernel install --user --name vicourse --display-name "Python 3 (vicourse)"

## bench: run the benchmarks; they rewrite appendix/performance.md
bench: $(ENV_STAMP)
	for script in benchmarks/bench_*.py; do $(BIN)/python "$$script" || exit 1; done

## lock: re-resolve requirements.txt from pyproject.toml in a throwaway venv
lock:
	rm -rf /tmp/vicourse-lock && $(PYTHON) -m venv /tmp/vicourse-lock
	/tmp/vicourse-lock/bin/pip install --quiet \
	    $$($(PYTHON) tools/torch_index.py "$(TORCH_INDEX_URL)") "torch==2.13.0" -e ".[test,book]"
	{ sed -n '1,/^$$/p' requirements.txt | grep '^#'; \
	  /tmp/vicourse-lock/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > requirements.txt.new
	mv requirements.txt.new requirements.txt

clean:
	rm -rf _build .mathjax .axe .pytest_cache .ruff_cache
