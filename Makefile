# Two commands on a fresh machine with Python 3.11 and pip:
#   make repro   create .venv, install the pinned dependencies, run the pipeline
#   make test    create .venv if missing, run every test
# python3.11 if it is on PATH, else python3 (the recipe checks that it is 3.11).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Stage commands in dvc.yaml call `python`: make it the venv's.
export PATH := $(BIN):$(PATH)

.PHONY: venv params repro test test-fast browser bench lock mlflow-ui mlflow-server clean

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version.split()[0]' || { echo "set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet --requirement requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --editable .
	touch $(STAMP)

venv: $(STAMP)

## Compose conf/ into params.yaml (what `dvc repro` reads) and regenerate dvc.yaml's code deps.
params: venv
	$(BIN)/python -m pipeline.config
	$(BIN)/python -m pipeline.dvcfile

## Run the pipeline on the default config; only what changed reruns.
repro: params
	$(BIN)/dvc repro
	@echo
	@echo "Results:"
	@echo "  report:   reports/report.html  (also reports/summary.md, summary.csv, plots/)"
	@echo "  DVC:      $(BIN)/dvc metrics show   and   $(BIN)/dvc plots show"
	@echo "  MLflow:   $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db   (or: make mlflow-ui)"
	@echo "            registry: models:/$$($(BIN)/python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["tracking"]["registered_model"])')@candidate"

## Every test, the slow end-to-end ones included (as CI runs them).
test: venv browser
	$(BIN)/python -m pytest

## Debian's Chromium, for the test that renders the report page (root, as on CI).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

## Only the fast tests.
test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

## Performance figures of the lab itself (printed, not asserted); runs the pipeline first.
bench: repro
	$(BIN)/python -m pipeline.bench

## Re-pin requirements.lock from the current .venv.
lock: venv
	{ echo "# Exact versions of every package in .venv (pip freeze). Regenerate: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable; } > requirements.lock

## Browse the default store.
mlflow-ui: venv
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

## A tracking server on 127.0.0.1:5000 (SQLite backend, artifacts in mlartifacts/). Then:
##   MLFLOW_TRACKING_URI=http://127.0.0.1:5000 make repro
mlflow-server: venv
	$(BIN)/mlflow server --host 127.0.0.1 --port 5000 \
	  --backend-store-uri sqlite:///mlflow-server.db --artifacts-destination mlartifacts

clean:
	rm -rf $(VENV)
