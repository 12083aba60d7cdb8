#!/usr/bin/env bash
# The whole keel test suite, from a fresh clone. Installs what the tests need (the official Ollama
# Python and JS clients and the OpenAI Python SDK, pinned, under target/test-clients), then runs
# every test in the workspace (starting the local PostgreSQL and Redis when they are not running). Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-clients.sh
# PostgreSQL and Redis for the backend tests (started if installed and not running).
bash scripts/start-services.sh
# faketime runs one keel with its clock shifted (shared rate limits), from Debian's packages.
if ! command -v faketime >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "test.sh: installing faketime from Debian's packages" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends faketime; } >/dev/null ||
    echo "test.sh: could not install faketime; the clock-skew test will say so" >&2
fi

# Chromium for the dashboard test (driven by playwright-core, installed with the test clients).
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "test.sh: installing chromium from Debian's packages (once)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >/dev/null ||
    echo "test.sh: could not install chromium; the dashboard test will say so" >&2
fi
# promtool checks deploy/prometheus (from Debian's prometheus package, unpacked, not installed).
bash scripts/install-promtool.sh

# Client and tool tests must run, never skip, when this script runs them.
export KEEL_REQUIRE_CLIENTS=1
export KEEL_REQUIRE_TOOLS=1
cargo test --workspace --locked "$@"
