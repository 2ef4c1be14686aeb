# Two commands on a fresh machine: `make demo` and `make test`. See README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-server-dev
PYTEST_ARGS ?=

.PHONY: demo test lint format install system-deps test-deps bench dashboards clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kota needs Python >= 3.11 (found %s)" % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[server,dev]'
	@touch $(STAMP)

install: $(STAMP)

system-deps:
	@bash .ci/system-deps.sh

test-deps:
	@bash .ci/system-deps.sh --with-browser

demo: install system-deps
	$(BIN)/kota demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy kota_cli edge gateway ingest storage indicators dashboards firmware_sim

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: install test-deps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install system-deps
	$(BIN)/kota bench pipeline
	$(BIN)/kota bench edge
	$(BIN)/kota bench indicators

dashboards: install
	$(BIN)/kota dashboards build

clean:
	rm -rf $(VENV) .kota out .pytest_cache .mypy_cache .ruff_cache
