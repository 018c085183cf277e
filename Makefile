# Two commands on a fresh machine: `make run` serves the sandbox, `make test` runs the suite (it installs
# Debian's chromium and postgresql when missing: the browser test and the PostgreSQL tests need them).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench,spark]"
	touch $(STAMP)

# Sandbox mode unless CDS_SANDBOX is set; CDS_HOST, CDS_PORT and every other CDS_* variable pass through.
CDS_SANDBOX ?= 1

run: $(STAMP)
	CDS_SANDBOX=$(CDS_SANDBOX) $(BIN)/cds-trials serve

test: $(STAMP)
	bash tests/browser/ensure-chromium.sh
	bash tests/pg/ensure-postgresql.sh
	bash tests/spark/ensure-java.sh
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) instance .pytest_cache test-artifacts
