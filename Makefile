# Fedsite: `make demo` runs two installations through the main flow; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | sha1sum | cut -c1-12)
ONCE ?=
PYTEST_ARGS ?=

.PHONY: setup system-deps demo test test-fast lint protos protos-check bench bench-quick clean static

$(STAMP): requirements.txt
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP) static system-deps ## create .venv and install everything

system-deps: ## Debian's chromium for the browser tests (installed when running as root)
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: chromium is missing and this is not root: install Debian's chromium for the browser tests"; fi; \
	fi

static: ## front-end libraries from npm (package-lock.json) into static/vendor; the committed copy serves without npm
	@if command -v npm >/dev/null 2>&1; then scripts/vendor_static.sh; \
	elif [ -f static/vendor/chart.umd.min.js ]; then echo "npm not found: serving the committed static/vendor"; \
	else echo "npm is needed once to fetch Chart.js into static/vendor" >&2; exit 1; fi

demo: setup ## two installations on loopback through the whole main flow (ONCE=1 exits after the summary; STREAM=1: the streaming act; NATS=1: beta's events through NATS JetStream)
	$(PY) scripts/demo.py $(if $(ONCE),--once,) $(if $(STREAM),--stream,) $(if $(NATS),--nats,)

test: setup ## every test, including peer, launcher, kubernetes, browser and e2e
	$(PY) -m pytest --durations=15 $(PYTEST_ARGS)

test-fast: setup ## unit tests only (no live servers)
	$(PY) -m pytest -m "not peer and not launcher and not kubernetes and not browser and not e2e and not runtime" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

protos: setup ## regenerate fedsite_proto/ from protos/
	scripts/gen_protos.sh

protos-check: setup
	scripts/gen_protos.sh --check

bench: setup ## every benchmark at full size; tables printed, figures in bench/results/
	for b in bench/*.py; do $(PY) $$b || exit 1; done
	$(PY) bench/train.py --small

bench-quick: setup
	for b in bench/*.py; do $(PY) $$b --quick || exit 1; done
	$(PY) bench/train.py --small

clean:
	rm -rf var test-artifacts
