#!/usr/bin/env bash
# What the browser tier needs beyond requirements-dev.txt (Playwright for Python), on a fresh
# machine: Debian's chromium (apt; Playwright never downloads a browser here) and axe-core
# (npm, pinned, into the virtualenv so `make clean` removes it).
#   bash tests/browser/setup.sh [VENV]
set -euo pipefail
VENV=${1:-.venv}
AXE_VERSION=4.14.1

if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/lib/chromium/chromium ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "chromium is missing: run 'sudo apt-get install -y chromium' (Debian) first" >&2
    exit 1
  fi
  echo "installing chromium (apt-get)..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

AXE_DIR="$VENV/axe"
if ! grep -qs "\"version\": \"$AXE_VERSION\"" "$AXE_DIR/node_modules/axe-core/package.json"; then
  echo "installing axe-core $AXE_VERSION (npm)..."
  mkdir -p "$AXE_DIR"
  npm install --silent --no-audit --no-fund --prefix "$AXE_DIR" "axe-core@$AXE_VERSION"
fi
