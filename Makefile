# Everyday commands. Only Python 3.11+ and make are needed: the first target that needs the
# virtual environment creates it.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test test-ha protos lint clean bench bench-quick bench-login

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: start the embedded registry (SQLite + filesystem under ./data) on localhost:5000
run: $(STAMP)
	$(BIN)/lading serve

## test: install what the tests need and run them all
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## test-ha: only the HA harness (two of each plane behind HAProxy, PostgreSQL, SeaweedFS)
test-ha: $(STAMP)
	$(BIN)/python -m pytest -m ha tests/ha $(PYTEST_ARGS)

## bench: Lading vs CNCF Distribution side by side, full run (~10 min); results also in bench-results.json
bench: $(STAMP)
	$(BIN)/python -m bench --json bench-results.json $(BENCH_ARGS)

## bench-quick: the same benchmark in about a minute (smaller sizes, one round)
bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

## bench-login: a correct login's latency while 64 clients guess passwords (docs/benchmarks.md)
bench-login: $(STAMP)
	$(BIN)/python -m bench.login_attack $(BENCH_ARGS)

## protos: regenerate the committed gRPC code from protos/**/*.proto
protos: $(STAMP)
	$(BIN)/python -m services.common.protogen

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) data .pytest_cache
