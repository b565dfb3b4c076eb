# Every target installs what it needs into .venv first, so a fresh clone works;
# each installs only its own extras (make run: what running and reports need).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# setuptools warns on every editable install that a folder named like the
# package may shadow it; that is this checkout, on purpose.
PIP    := PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install -q

.PHONY: run test bench bench-accuracy clean interop test-slurm

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.run: pyproject.toml | $(PY)
	$(PIP) -e '.[report]'
	touch $@

$(VENV)/.test: pyproject.toml | $(PY)
	$(PIP) -e '.[test,report]'
	touch $@

$(VENV)/.bench: pyproject.toml | $(PY)
	$(PIP) -e '.[bench,report]'
	touch $@

run: $(VENV)/.run
	$(VENV)/bin/streamrun job jobs/sample.toml

test: $(VENV)/.test
	$(PY) -m pytest -q

bench: $(VENV)/.bench
	$(PY) bench/bench.py

bench-accuracy: $(VENV)/.bench
	$(PY) bench/accuracy.py --warm --repeat 3
	$(PY) bench/replay.py

# Not part of `make test`: real OpenAI-compatible servers from PyPI, installed
# into .interop/ (cached) and run on 127.0.0.1; see interop/README.md.
interop: $(VENV)/.run
	PYTHON=$(PYTHON) bash interop/run.sh

# Not part of `make test`: submits jobs/slurm-array.sh as written to a one-node
# Slurm cluster (brought up by deploy/slurm-up.sh if none answers: apt-get and
# daemons, so root), merges the shards and checks them; see deploy/README-section.md.
test-slurm: $(VENV)/.run
	bash deploy/test-slurm.sh

# What `make run` (jobs/sample.toml) and the shipped sharded sample (jobs/sharded.toml,
# jobs/slurm-array.sh, then the merge their comments show) write, by name: never a
# whole folder nor a file of your own (a report.html, a file in out/); out/ itself
# goes only once it is empty.
SAMPLE_FILES := results.jsonl results.jsonl.lock results.summary.json results.summary.json.tmp \
	results.server_metrics.jsonl streamrun-sample-*.log \
	out/sample-????-??-??-*.jsonl out/sample-????-??-??-*.jsonl.lock out/sample-????-??-??-*.summary.json \
	out/sample-????-??-??-*.summary.json.tmp out/all.jsonl out/all.jsonl.tmp out/missing.jsonl

clean:
	rm -rf $(VENV)
	rm -f $(SAMPLE_FILES)
	rmdir out 2>/dev/null || true
