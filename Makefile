# Égide: developer commands. `make help` lists them; docs/development.md explains them.
# Two commands from a fresh clone: `make demo` and `make test` (both build .venv first).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory
.DELETE_ON_ERROR:

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.egide-installed
PG_SCRIPT := scripts/pg-test-cluster.sh
PG := bash $(PG_SCRIPT)
# Python used to create the virtualenv: python3.11, else python3 if it is 3.11 or newer.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
PIP := $(BIN)/python -m pip --disable-pip-version-check --no-input
LINT_PATHS := $(wildcard src tests bench)
PYTEST_ARGS ?=
# Extra pip-compile options for `make lock`, e.g. --upgrade or --upgrade-package cryptography.
PIP_COMPILE_ARGS ?=
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet \
	--generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host $(PIP_COMPILE_ARGS)

# Shell snippet: use $EGIDE_TEST_POSTGRES_URL if the caller set one, else start the throwaway
# cluster and export its URL.
WITH_PG = url="$${EGIDE_TEST_POSTGRES_URL:-}"; \
	if [ -z "$$url" ]; then $(PG) start; url="$$($(PG) url)"; fi; \
	export EGIDE_TEST_POSTGRES_URL="$$url"

.PHONY: help venv demo test lint check-api bench docs lock pg-start pg-stop clean

help: ## list the targets (the default goal)
	@echo "Égide development targets:"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-9s %s\n", $$1, $$2}' \
		$(firstword $(MAKEFILE_LIST))

venv: $(STAMP) ## create .venv (Python 3.11) from requirements/dev.lock and install egide editable
	@:

$(STAMP): requirements/dev.lock pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
		py="$(PYTHON)"; \
		if [ -z "$$py" ] || ! "$$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
			echo "error: Python 3.11 or newer is needed (python3.11 or python3); set PYTHON=..." >&2; \
			exit 1; \
		fi; \
		echo "==> creating $(VENV) with $$("$$py" -c 'import sys; print(sys.executable, sys.version.split()[0])')"; \
		"$$py" -m venv $(VENV); \
	elif ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
		echo "error: $(VENV) is broken or older than Python 3.11: run 'make clean venv'" >&2; \
		exit 1; \
	fi
	@echo "==> installing requirements/dev.lock (hash-checked)"
	@out="$$($(PIP) install --quiet --require-hashes -r requirements/dev.lock 2>&1)" \
		|| { printf '%s\n' "$$out" >&2; exit 1; }
	@echo "==> installing egide in editable mode"
	@out="$$($(PIP) install --quiet --no-deps --no-build-isolation -e . 2>&1)" \
		|| { printf '%s\n' "$$out" >&2; exit 1; }
	@touch $@

demo: venv ## run the demonstration: .venv/bin/egide demo
	@$(BIN)/egide demo

lint: venv ## ruff, mypy (strict) and the import-linter contracts
	@status=0; \
	echo "==> ruff check $(LINT_PATHS)"; $(BIN)/ruff check --quiet $(LINT_PATHS) || status=1; \
	echo "==> mypy"; $(BIN)/mypy || status=1; \
	echo "==> lint-imports"; $(BIN)/lint-imports --no-logo || status=1; \
	exit $$status

test: venv ## lint, then the test suite on SQLite and PostgreSQL, with coverage
	@$(MAKE) lint
	@$(WITH_PG); \
	echo "==> pytest (PostgreSQL: $$EGIDE_TEST_POSTGRES_URL)"; \
	$(BIN)/pytest --cov=egide --cov-report=term:skip-covered $(PYTEST_ARGS)

check-api: venv ## schemathesis on the OpenAPI of the sign-in pages (PostgreSQL too if EGIDE_TEST_POSTGRES_URL)
	@echo "==> schemathesis: tests/integration/test_auth_schemathesis.py"
	@$(BIN)/pytest -q -p no:cacheprovider tests/integration/test_auth_schemathesis.py $(PYTEST_ARGS)

bench: venv ## run every bench/*.py in name order (PostgreSQL test cluster up)
	@shopt -s nullglob; \
	files=(); for f in bench/*.py; do case "$${f##*/}" in _*) ;; *) files+=("$$f");; esac; done; \
	if [ $${#files[@]} -eq 0 ]; then echo "==> no benchmarks in bench/"; exit 0; fi; \
	$(WITH_PG); \
	for f in "$${files[@]}"; do echo "==> $$f"; $(BIN)/python "$$f"; done

docs: venv ## regenerate the generated parts of docs/ (the access matrix in docs/access.md)
	@$(BIN)/python scripts/gen-access-doc.py

lock: ## regenerate requirements/*.lock from pyproject.toml (PIP_COMPILE_ARGS=--upgrade)
	@if [ ! -x $(BIN)/pip-compile ]; then \
		[ -x $(BIN)/python ] || "$(PYTHON)" -m venv $(VENV); \
		echo "==> installing pip-tools into $(VENV)"; \
		out="$$($(PIP) install --quiet pip-tools 2>&1)" || { printf '%s\n' "$$out" >&2; exit 1; }; \
	fi
	@mkdir -p requirements
	@echo "==> requirements/main.lock: project dependencies"
	@out="$$($(PIP_COMPILE) -o requirements/main.lock pyproject.toml 2>&1)" \
		|| { printf '%s\n' "$$out" >&2; exit 1; }
	@echo "==> requirements/dev.lock: main + [dev] extra + build backend, constrained by main.lock"
	@out="$$($(PIP_COMPILE) --extra dev --build-deps-for editable -c requirements/main.lock \
		-o requirements/dev.lock pyproject.toml 2>&1)" || { printf '%s\n' "$$out" >&2; exit 1; }
	@git --no-pager diff --stat -- requirements 2>/dev/null || true

pg-start: ## start the PostgreSQL test cluster (installs PostgreSQL if absent) and print its URL
	@$(PG) start
	@$(PG) url

pg-stop: ## stop the PostgreSQL test cluster
	@$(PG) stop

clean: ## stop the test cluster; remove .venv, .pg, .egide, caches and build output
	@if [ -f $(PG_SCRIPT) ]; then $(PG) destroy; fi
	@echo "==> removing .venv, .egide, caches and build output"
	@rm -rf $(VENV) .pg .egide .pytest_cache .mypy_cache .ruff_cache .hypothesis \
		.import_linter_cache .coverage .coverage.* htmlcov build dist src/*.egg-info
	@find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
