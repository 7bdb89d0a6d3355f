# The Reset Book: two commands do everything on a fresh machine.
#   make book   bring every published chapter up to date (reusing stored results) and build _build/html
#   make test   run the test suite
# Both create or refresh .venv from pyproject.toml first.

PROFILE ?= published
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.zaplib-installed

# The offline datasets of this workplace; elsewhere set ZAPLIB_DATA yourself (default ~/.cache/zaplib).
ifeq ($(origin ZAPLIB_DATA), undefined)
  ifneq ($(wildcard ../shared/data/README.md),)
    export ZAPLIB_DATA := $(abspath ../shared/data)
  endif
endif

.PHONY: venv test l2l book book-html book-check book-status bench bench-l2l clean-book help

help:
	@echo "make book [PROFILE=smoke|quick|long|paper]  re-execute stale published chapters and build _build/html"
	@echo "                                       (a named PROFILE builds a staging copy in _build/PROFILE)"
	@echo "make test                              run the tests"
	@echo "make book-check                        load every page of _build/html in headless Chromium"
	@echo "make book-status                       are the committed notebooks up to date? (exit 1 if not)"
	@echo "make bench                             speed benchmarks (benchmarks/results/*.json)"
	@echo "make l2l                               optional: build learn2learn 0.2.0 (tests/test_l2l.py cross-check)"
	@echo "make bench-l2l                         one meta-ASB step, zaplib against learn2learn"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dask,browser]'
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# Optional extra: learn2learn 0.2.0 for the meta-gradient cross-check; needs a patched build
# (see tools/install_l2l.sh), so it is not a pyproject extra.
l2l: $(STAMP)
	tools/install_l2l.sh $(PY)

# published (default): each chapter at the profile the book publishes (long where it has one, else
# quick), in place: book/*.ipynb are the committed, executed notebooks. A named profile executes into a
# staging copy (_build/PROFILE) so it never overwrites the published notebooks.
book: $(STAMP)
	$(PY) -m zaplib book --profile $(PROFILE)

book-check: $(STAMP)
	$(PY) tools/check_book_html.py $(if $(filter published,$(PROFILE)),_build/html,_build/$(PROFILE)/_build/html)

book-status: $(STAMP)
	$(PY) -m zaplib status

bench: $(STAMP)
	$(PY) benchmarks/bench_core.py

bench-l2l: l2l
	$(PY) benchmarks/bench_meta_l2l.py

clean-book:
	rm -rf _build
