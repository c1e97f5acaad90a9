# Every target creates or reuses .venv, so `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The dashboard's browser tests use Debian's /usr/bin/chromium, never a browser Playwright fetches.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: install run test test-all lint check bench chaos clean compose-images compose-up compose-down

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[server,test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/cfs dev-cluster --nodes 3 --data-dir .cfs-data

test: $(STAMP)
	$(BIN)/pytest -q -m "not slow and not chaos"

test-all: $(STAMP)
	$(BIN)/pytest -q -m "not chaos"

# Randomized hand-overs under composed faults (tests/cluster/test_chaos.py, needs root + iproute2 +
# iptables): CHAOS_SCHEDULES=100 schedules or CHAOS_SECONDS=3600, whichever ends first; CHAOS_SEED
# to replay a run, CHAOS_ONLY=3,17 to replay single schedules of it. Prints the report and writes
# chaos-report.json and chaos-report.md (P1-P4 per fault kind).
# Also: 5 rounds of power loss of every node on a FUSE layer (tests/cluster/test_powerloss.py, root).
CHAOS_SCHEDULES ?= 100
CHAOS_SECONDS ?= 3600
chaos: $(STAMP)
	CHAOS_SCHEDULES=$(CHAOS_SCHEDULES) CHAOS_SECONDS=$(CHAOS_SECONDS) $(BIN)/pytest -q -s -m chaos tests/cluster/test_chaos.py tests/cluster/test_powerloss.py

# The compose cluster with no registry (compose/README.md): a debootstrap base image cached in
# ~/.cache/cfs-images, node and HAProxy images from Debian's packages and host-built wheels,
# 3 nodes + HAProxy on port 5590 (stats 127.0.0.1:8404), secrets from compose/.env (made with
# random values when missing). compose-down keeps the data volumes unless VOLUMES=1.
compose-images:
	PYTHON=$(PYTHON) compose/cluster.sh images

compose-up:
	PYTHON=$(PYTHON) compose/cluster.sh up

compose-down:
	VOLUMES=$(VOLUMES) compose/cluster.sh down

lint: $(STAMP)
	$(BIN)/ruff format cfs_cluster tests bench
	$(BIN)/ruff check --fix cfs_cluster tests bench

check: $(STAMP)
	$(BIN)/ruff format --diff cfs_cluster tests bench
	$(BIN)/ruff check cfs_cluster tests bench
	$(BIN)/mypy

# Benchmarks (issues 6 and 16, docs/benchmarks.md), in the production configuration (auth required,
# Raft password, synced journal; --dev is an extra column). Select items with BENCH="throughput
# capacity costmodel failover leaderkill reads durability"; options with BENCH_ARGS, e.g.
#   make bench BENCH=costmodel BENCH_ARGS="--sessions 1000,5000,20000 --nodes 3"
#   make bench BENCH=capacity BENCH_ARGS="--no-stretch"
# Each run writes bench/results/<UTC>.json and regenerates docs/benchmarks.md (the other items
# keep their newest earlier result).
BENCH ?=
BENCH_ARGS ?=
bench: $(STAMP)
	@command -v wrk >/dev/null && command -v etcd >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk etcd-server etcd-client; }
	@$(BIN)/python -c "import matplotlib" 2>/dev/null && test -x $(BIN)/py-spy || $(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench $(BENCH) $(BENCH_ARGS)

clean:
	rm -rf .cfs-data .pytest_cache .mypy_cache .ruff_cache
