# Everyday commands. Only Python 3.11+ and make are needed: the first target that needs the
# virtual environment creates it.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# Two installs into one .venv: RUNTIME (what the registry needs; `make run`) and STAMP (that plus
# the test extras; `make test` and the tools). The full install also satisfies `make run`, so the
# two targets take turns without reinstalling.
STAMP   = $(VENV)/.installed
RUNTIME = $(VENV)/.runtime

.PHONY: run test test-ha protos lint clean bench bench-quick bench-login bench-console bench-coherence bench-regions bench-governance image

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# A current full install already holds the runtime: nothing to add then.
$(RUNTIME): pyproject.toml | $(BIN)/python
	[ $(STAMP) -nt pyproject.toml ] || $(BIN)/pip install --quiet -e .
	touch $(RUNTIME)

## run: start the embedded registry (SQLite + filesystem under ./data) on localhost:5000
run: $(RUNTIME)
	@echo "For the lading command in another shell: . $(VENV)/bin/activate"
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

## bench-quick: the same benchmark in a few minutes (smaller sizes, one round)
bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick $(BENCH_ARGS)

## bench-login: a correct login's latency while 64 clients guess passwords (docs/benchmarks.md)
bench-login: $(STAMP)
	$(BIN)/python -m bench.login_attack $(BENCH_ARGS)

## bench-console: console page timings on 10,000 repositories and 100,000 tags (docs/benchmarks.md)
bench-console: $(STAMP)
	$(BIN)/python -m bench.console $(BENCH_ARGS)

## bench-coherence: a moved tag across two gateways (p50/p99 over 1,000 moves) and read-your-writes
## with a hot standby (1,000 pushes); needs PostgreSQL (LADING_TEST_DATABASE_URL) (docs/benchmarks.md)
bench-coherence: $(STAMP)
	$(BIN)/python -m bench.coherence $(BENCH_ARGS)
	$(BIN)/python -m bench.coherence --read-your-writes 1000

## bench-regions: fetch on miss between two regions (local, cold, warm pulls by size; concurrent cold
## pulls); needs the PostgreSQL server binaries and haproxy (docs/benchmarks.md)
bench-regions: $(STAMP)
	$(BIN)/python -m bench.regions $(BENCH_ARGS)

## bench-governance: the cost of immutable rules, quotas and the pull policies on pushes and pulls,
## with and without them (two runs of 150 requests per row, about a minute; README "Cost of the policies")
bench-governance: $(STAMP)
	$(BIN)/python -m bench.governance $(BENCH_ARGS)

## protos: regenerate the committed gRPC code from protos/**/*.proto
protos: $(STAMP)
	$(BIN)/python -m services.common.protogen

lint: $(STAMP)
	$(BIN)/ruff check .

## image: build the container image (podman, buildah or docker; see Containerfile). Override
## IMAGE, BASE_IMAGE, PIP_OPTIONS (e.g. a mirror: --index-url URL), ENGINE, IMAGE_BUILD_FLAGS.
ENGINE            ?= $(firstword $(foreach tool,podman buildah docker,$(shell command -v $(tool) 2>/dev/null)))
IMAGE_VERSION     ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE             ?= localhost/lading:$(IMAGE_VERSION)
BASE_IMAGE        ?= docker.io/library/python:3.12-slim-bookworm
IMAGE_REVISION    ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
PIP_OPTIONS       ?=
IMAGE_BUILD_FLAGS ?=
image:
	@test -n "$(ENGINE)" || { echo "make image needs podman, buildah or docker on PATH (or ENGINE=...)" >&2; exit 2; }
	$(ENGINE) build --file Containerfile --tag $(IMAGE) \
	  --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg PIP_OPTIONS="$(PIP_OPTIONS)" \
	  --build-arg VERSION=$(IMAGE_VERSION) --build-arg REVISION=$(IMAGE_REVISION) \
	  $(IMAGE_BUILD_FLAGS) .

clean:
	rm -rf $(VENV) data .pytest_cache
