#!/usr/bin/env bash
# The whole keel test suite, from a fresh clone. Installs what the tests need (the official Ollama
# Python and JS clients and the OpenAI Python SDK, pinned, under target/test-clients), then runs
# every test in the workspace (starting the local PostgreSQL and Redis when they are not running). Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-clients.sh
# PostgreSQL and Redis for the backend tests (started if installed and not running).
bash scripts/start-services.sh

# Client tests must run, never skip, when this script runs them.
export KEEL_REQUIRE_CLIENTS=1
cargo test --workspace --locked "$@"
