# hai-tools: `make demo` installs and runs the main job on the embedded defaults; `make test` installs and
# runs lint, type checks and the tests. Both are idempotent: the install is redone only when the lock changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= out
export HF_HUB_OFFLINE := 1
export USE_TF := 0
export TOKENIZERS_PARALLELISM := false
export DEEPEVAL_TELEMETRY_OPT_OUT := 1
export DEEPEVAL_DISABLE_DOTENV := 1
export RAGAS_DO_NOT_TRACK := true
LOCK_HASH := $(shell cat requirements/lock-main.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(LOCK_HASH)
# The TFLite converter (litert-torch) needs typing-extensions<4.13, the MCP SDK >=4.13: its own venv.
TFLITE_VENV ?= .venv-tflite
TFLITE_STAMP := $(TFLITE_VENV)/.installed-$(shell cat requirements/lock-tflite-converter.txt | sha256sum | cut -c1-16)
# The agent side (langchain-mcp-adapters needs mcp<2) and the client-only install (clients/python): its own venv.
AGENTS_VENV ?= .venv-agents
AGENTS_STAMP := $(AGENTS_VENV)/.installed-$(shell cat requirements/lock-agents-client.txt clients/python/pyproject.toml | sha256sum | cut -c1-16)
# The MLflow tracking server the tests start (full mlflow pins pyarrow<26; the main venv has mlflow-skinny): its own venv.
MLFLOW_VENV ?= .venv-mlflow
MLFLOW_STAMP := $(MLFLOW_VENV)/.installed-$(shell cat requirements/lock-mlflow-server.txt | sha256sum | cut -c1-16)
# Node: MCP clients from npm the tests drive (the MCP Inspector CLI, tests/node) and the TypeScript client and
# React hook (clients/typescript), installed from their lock files and built with tsc; rebuilt when a source changes.
TS_SOURCES := $(shell ls clients/typescript/package-lock.json clients/typescript/tsconfig.json clients/typescript/src/*.ts clients/typescript/test/*.ts* 2>/dev/null)
NODE_STAMP := clients/typescript/node_modules/.installed-$(shell cat tests/node/package-lock.json $(TS_SOURCES) | sha256sum | cut -c1-16)

.PHONY: install tflite-env agents-env node-env browser-env mlflow-env postgres-env lint test test-full demo demo-data demo-train demo-export demo-eval demo-release bench clean

install: $(STAMP)

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements/lock-main.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

tflite-env: $(TFLITE_STAMP)

$(TFLITE_STAMP):
	@test -x $(TFLITE_VENV)/bin/python || $(PYTHON) -m venv $(TFLITE_VENV)
	$(TFLITE_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements/lock-tflite-converter.txt
	@rm -f $(TFLITE_VENV)/.installed-*
	@touch $@

agents-env: $(AGENTS_STAMP)

$(AGENTS_STAMP):
	@test -x $(AGENTS_VENV)/bin/python || $(PYTHON) -m venv $(AGENTS_VENV)
	$(AGENTS_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements/lock-agents-client.txt
	$(AGENTS_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e clients/python
	@rm -f $(AGENTS_VENV)/.installed-*
	@touch $@

mlflow-env: $(MLFLOW_STAMP)

$(MLFLOW_STAMP):
	@test -x $(MLFLOW_VENV)/bin/python || $(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements/lock-mlflow-server.txt
	@rm -f $(MLFLOW_VENV)/.installed-*
	@touch $@

node-env: $(NODE_STAMP)

$(NODE_STAMP):
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error && rm -rf dist && npm run --silent build
	@rm -f clients/typescript/node_modules/.installed-*
	@touch $@

# Debian's chromium for the review page's browser tests (Playwright drives it; no browser is downloaded).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser-env:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	    $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

# Debian's PostgreSQL binaries: the tests start a server of their own from them (replicas sharing one database).
postgres-env:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	    $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; }

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy hai_tools trainer skills export evals governance mcp_server.py

# quick mode for CI: pytest fails the run past 25 minutes of its own wall time (tests/suite_budget.py);
# test-full adds the release-build checks (marked `full`). Both print the ten slowest tests at the end.
PYTEST := $(VENV)/bin/pytest -q -p no:cacheprovider

test: lint tflite-env agents-env node-env browser-env mlflow-env postgres-env
	$(PYTEST)

test-full: lint tflite-env agents-env node-env browser-env mlflow-env postgres-env
	$(PYTEST) --full

# The demo build, one definition: `make demo` and the model-build workflow (.github/workflows) run these
# targets and nothing else. The release is written only when the lenient gate passes; REQUIRE_RELEASE=1 (the
# workflow) turns a refused release into a failed build.
REQUIRE_RELEASE ?= 0
DEMO_EVAL := $(OUT)/evals/screening-lora

demo: demo-data demo-train demo-export demo-eval demo-release

demo-data: install
	$(PY) -m trainer data generate-demo --output_dir $(OUT)/demo-data --n_patients 500 --train_fraction 0.6
	$(PY) -m trainer data register demo-screening@2 \
	    --train $(OUT)/demo-data/train.jsonl --validation $(OUT)/demo-data/validation.jsonl \
	    --test $(OUT)/demo-data/test.jsonl --license CC0-1.0 --patient-id-column patient_id \
	    --deid-attestation "synthetic: generated by hai_tools.demo_data, contains no real patients" \
	    --description "synthetic pediatric developmental-screening cases (see DATASHEET.md)"
	$(PY) -m trainer data generate-guard --output_dir $(OUT)/guard-data --register guard@2

demo-train: install
	$(PY) -m trainer --config configs/demo_lora.yaml --output_dir $(OUT)/adapters/screening-lora
	$(PY) -m trainer verify $(OUT)/adapters/screening-lora
	$(PY) -m trainer guard --dataset guard@2 --output_dir $(OUT)/guard

demo-export: install tflite-env
	$(PY) -m export merge $(OUT)/adapters/screening-lora --output_dir $(OUT)/merged/screening-lora
	$(PY) -m export vllm-recipe $(OUT)/merged/screening-lora --output_dir $(OUT)/serving/screening-lora
	$(PY) -m export tflite --embedder embedded:all-minilm-l6-v2 --output_dir $(OUT)/edge/minilm
	$(PY) -m export tflite --causal_lm $(OUT)/merged/screening-lora --output_dir $(OUT)/edge/reasoner \
	    --seq_len 192 --prefill_len 128 --int8_recipe weight_only \
	    --dataset demo-screening@2 --agreement_limit 40 --agreement_steps 16
	$(PY) -m export verify $(OUT)/edge/reasoner

demo-eval: install
	$(PY) -m evals run $(OUT)/merged/screening-lora --dataset demo-screening@2 --output_dir $(DEMO_EVAL) \
	    --n_resamples 300 --policy configs/gate_lenient.yaml \
	    --suite evals/suites/screening_safety.yaml --suite_limit 1 --calibration_limit 2 \
	    --guard $(OUT)/guard --red_team_size quick
	$(PY) -m evals parity $(OUT)/merged/screening-lora --tflite $(OUT)/edge/reasoner --dataset demo-screening@2 \
	    --limit 100 --output_dir $(OUT)/evals/parity
	$(PY) -m evals guard $(OUT)/guard --dataset guard@2 --output_dir $(OUT)/evals/guard \
	    --policy configs/gate_guard.yaml || { echo "guard gate: FAILED: make demo stops here (figures above; report: $(OUT)/evals/guard/report.html)"; exit 1; }

demo-release: install
	$(PY) -m evals gate $(DEMO_EVAL) --policy configs/gate_strict.yaml \
	    || echo "strict gate: FAILED (reasons above)"
	@if $(PY) -m evals gate $(DEMO_EVAL) --policy configs/gate_lenient.yaml; then \
	    test -f $(OUT)/keys/release.key || $(PY) -m governance keygen --out $(OUT)/keys/release; \
	    $(PY) -m governance release $(OUT)/merged/screening-lora --report $(DEMO_EVAL) \
	        --policy configs/gate_lenient.yaml --key $(OUT)/keys/release.key --guard $(OUT)/guard \
	        --export $(OUT)/edge/reasoner --backend_parity $(OUT)/evals/parity \
	        --output_dir $(OUT)/releases/screening-lora && \
	    $(PY) -m governance verify $(OUT)/releases/screening-lora --public_key $(OUT)/keys/release.pub && \
	    echo "model card: $(OUT)/releases/screening-lora/README.md"; \
	else \
	    echo "lenient gate: FAILED: the demo adapter is not released (reasons above; report: $(DEMO_EVAL)/report.html)"; \
	    test "$(REQUIRE_RELEASE)" != 1; \
	fi

# Every bench, figures into bench/results.json and docs/benchmarks.md (the edge and guard benches use make demo's
# artifacts; train_overhead trains on the registered demo dataset, which demo-data registers, idempotently).
bench: install tflite-env demo-data
	$(PY) bench/run_all.py --out $(OUT)

clean:
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache
