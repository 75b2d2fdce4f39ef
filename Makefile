# The two commands of the README. Both create .venv on first use and reuse it after. Each set of
# extras has its own stamp, so that `make demo` installs only what the demo needs (tqdm,
# matplotlib, threadpoolctl) and `make test` the test extra (torch among it); a stamp
# re-installs its set only when what the install is made from changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-progress-plot-threads
TEST_STAMP := $(VENV)/.installed-test-progress-plot-bench
# the install compiles the kernels (setup.py): a changed C source re-installs too
INSTALLED_FROM := pyproject.toml setup.py $(wildcard src/bptt/kernels/*.c) src/bptt/kernels/contract.h

.PHONY: test demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(DEMO_STAMP): $(INSTALLED_FROM) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[progress,plot,threads]'
	touch $@

$(TEST_STAMP): $(INSTALLED_FROM) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,progress,plot,bench]'
	touch $@

# pytest exits 5 when it selects no tests; that is not a failure of the suite
test: $(TEST_STAMP)
	$(BIN)/python -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests selected"; exit 0; fi; exit $$rc

demo: $(DEMO_STAMP)
	$(BIN)/bptt train --minutes 2

clean:
	rm -rf $(VENV) build src/*.egg-info src/bptt/kernels/_kernels_*.so
