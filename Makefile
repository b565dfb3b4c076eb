# Every target installs what it needs into .venv first, so a fresh clone works.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench bench-accuracy clean interop

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,report,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/streamrun job jobs/sample.toml

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/bench.py

bench-accuracy: $(STAMP)
	$(PY) bench/accuracy.py

# Not part of `make test`: real OpenAI-compatible servers from PyPI, installed
# into .interop/ (cached) and run on 127.0.0.1; see interop/README.md.
interop: $(STAMP)
	PYTHON=$(PYTHON) bash interop/run.sh

clean:
	rm -rf $(VENV) results.jsonl results.summary.json report.html
