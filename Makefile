# Two commands set everything up on a fresh machine with Python 3.11+ and pip:
#   make serve   - the local all-in-one server (INNGEST_DEV=1, local file token store)
#   make test    - lint, types and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
PORT ?= 3000
# Tiers that start real outside programs live in their own folders and have their own targets;
# `make unit` is everything else (mocks, fakes in-process, loopback shims).
TIER_DIRS := tests/e2e tests/redis tests/browser tests/deploy
UNIT_ARGS := $(addprefix --ignore=,$(TIER_DIRS))

.PHONY: install test lint types unit serve bench clean redis redis-server bench-contention

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q $(UNIT_ARGS)

test: lint types unit

# The real-Redis tier (tests/redis): Debian redis-server behind an Upstash-REST shim, many OS
# processes, faults injected. Installs redis-server with apt-get when it is missing (root).
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

redis: $(STAMP) redis-server
	$(BIN)/python -m pytest -q tests/redis

# Only the contention section of BENCHMARKS.md (real Redis), merged into the existing file.
bench-contention: $(STAMP) redis-server
	$(BIN)/python -m bench --only contention --merge

serve: $(STAMP)
	$(BIN)/python -m prometei serve --port $(PORT)

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
