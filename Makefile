# Two commands set everything up on a fresh machine with Python 3.11+ and pip:
#   make serve   - the local all-in-one server (INNGEST_DEV=1, local file token store)
#   make test    - the whole suite: lint, types, the unit tier, then every tier that runs a real
#                  program (e2e: Inngest dev server; redis; browser: Chromium; deploy-check:
#                  the Vercel CLI). Each tier installs what it needs (pip, apt-get, npm).
#   make check   - the quick part alone: lint, types and the unit tier
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
PORT ?= 3000
# Tiers that start real outside programs live in their own folders and have their own targets;
# `make unit` is everything else (mocks, fakes in-process, loopback shims).
TIER_DIRS := tests/e2e tests/redis tests/browser tests/deploy
UNIT_ARGS := $(addprefix --ignore=,$(TIER_DIRS))

.PHONY: install test check lint types unit e2e serve bench clean requirements deploy-check browser redis redis-server bench-contention

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

check: lint types unit

test: check e2e redis browser deploy-check

# Headless Chromium (Debian's, driven by Playwright) runs the connect flow against a fake amoCRM;
# the script installs chromium (apt) and axe-core (npm) when they are missing.
browser: $(STAMP)
	bash tests/browser/setup.sh $(VENV)
	AXE_CORE_JS=$(abspath $(VENV))/axe/node_modules/axe-core/axe.min.js \
		$(BIN)/python -m pytest -q tests/browser

# The end-to-end tier against the real Inngest dev server: INNGEST_CLI names its binary or
# command line; without it `inngest-cli` on PATH, else `npx --yes inngest-cli@latest`.
e2e: $(STAMP)
	$(BIN)/python -m pytest -q --durations=8 tests/e2e

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

# Serving needs the runtime set only (requirements.txt, what Vercel installs), not the test tools.
SERVE_STAMP := $(VENV)/.serving-$(shell cksum < requirements.txt | cut -d' ' -f1)

$(SERVE_STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.serving-* && touch $(SERVE_STAMP)

serve: $(SERVE_STAMP)
	$(BIN)/python -m prometei serve --port $(PORT)

bench: $(STAMP)
	$(BIN)/python -m bench

# requirements.txt (what Vercel installs into every function) is generated: every package
# pinned, transitive ones included, resolved for Python 3.12 (what Vercel runs; the set is the
# same on 3.11). Edit requirements.in, then run this and commit both files.
requirements: $(STAMP)
	$(BIN)/uv pip compile requirements.in --python-version 3.12 --output-file requirements.txt \
		--custom-compile-command "make requirements" --quiet

# The deploy check: the real Vercel CLI (pinned in tests/deploy/package-lock.json) builds a
# copy of this tree with a dummy .env, .prometei/ and .venv planted in it, and the tier in
# tests/deploy/ asserts what the output would publish and bundle. Needs Node.js/npm and a
# Python 3.12 (`python3.12` on PATH, or DEPLOY_CHECK_PYTHON=/path/to/python3.12).
DEPLOY_TOOLS := tests/deploy
VERCEL_STAMP := $(DEPLOY_TOOLS)/node_modules/.installed-$(shell cksum < $(DEPLOY_TOOLS)/package-lock.json | cut -d' ' -f1)

# Not `npm ci`: it refuses this lock because the registry has no vc-native builds of the CLI for
# other platforms (optional dependencies), so the lock cannot list them. `npm install` follows
# the lock; if it rewrites it anyway, the pinned lock is put back and the install fails.
$(VERCEL_STAMP): $(DEPLOY_TOOLS)/package.json $(DEPLOY_TOOLS)/package-lock.json
	rm -rf $(DEPLOY_TOOLS)/node_modules
	cd $(DEPLOY_TOOLS) && pinned=$$(mktemp) && cp package-lock.json $$pinned && { \
	  npm install --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error; \
	  status=$$?; cmp -s package-lock.json $$pinned || { cp $$pinned package-lock.json; status=1; \
	    echo "npm rewrote tests/deploy/package-lock.json (restored): not the pinned CLI" >&2; }; \
	  rm -f $$pinned; exit $$status; }
	touch $@

deploy-check: $(STAMP) $(VERCEL_STAMP)
	$(BIN)/python -m pytest -q $(DEPLOY_TOOLS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis $(DEPLOY_TOOLS)/node_modules
