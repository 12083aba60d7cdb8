#!/usr/bin/env bash
# Installs the real clients that keel's compatibility tests drive (crates/keel-gateway/tests/clients.rs):
#   - target/test-clients/venv          Python venv with the official `ollama` client, the
#                                        OpenAI SDK and the Anthropic SDK, versions pinned in tests/clients/requirements.txt
#   - target/test-clients/node          the official `ollama` npm package, pinned by
#                                        tests/clients/js/package.json + package-lock.json (npm ci)
# Idempotent: each part is skipped when its stamp file matches the hash of its pin files.
# Needs python3 (with venv) and node + npm; only the package registries are contacted.
# Usage: scripts/install-test-clients.sh [--python-only | --node-only | --force]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/target/test-clients"
req="$root/tests/clients/requirements.txt"
js_src="$root/tests/clients/js"
venv="$dest/venv"
node_dir="$dest/node"

do_python=1
do_node=1
force=0
for arg in "$@"; do
    case "$arg" in
        --python-only) do_node=0 ;;
        --node-only) do_python=0 ;;
        --force) force=1 ;;
        -h|--help) sed -n '2,10p' "$0" >&2; exit 0 ;;
        *) echo "install-test-clients: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
    esac
done

log() { echo "install-test-clients: $*" >&2; }

hash_files() {
    # Hash of the given files' contents (and names), stable across machines.
    if command -v sha256sum >/dev/null 2>&1; then
        (for f in "$@"; do echo "== ${f##*/}"; cat "$f"; done) | sha256sum | cut -d' ' -f1
    else
        (for f in "$@"; do echo "== ${f##*/}"; cat "$f"; done) | shasum -a 256 | cut -d' ' -f1
    fi
}

mkdir -p "$dest"

if [[ "$do_python" == 1 ]]; then
    python="${PYTHON:-python3}"
    command -v "$python" >/dev/null 2>&1 || { log "error: $python not found (set PYTHON=...)"; exit 1; }
    want="$(hash_files "$req") $("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    stamp="$venv/.keel-stamp"
    if [[ "$force" == 0 && -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        log "python clients up to date in ${venv#"$root"/} (skipping)"
    else
        if [[ -d "$venv" ]]; then
            log "removing stale venv ${venv#"$root"/}"
            rm -rf "$venv"
        fi
        log "creating venv ${venv#"$root"/} with $("$python" --version 2>&1)"
        "$python" -m venv "$venv"
        log "pip install -r ${req#"$root"/}"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
            --require-virtualenv -r "$req" >&2
        "$venv/bin/python" -c 'import anthropic, ollama, openai; print("install-test-clients: python: openai", openai.__version__, "anthropic", anthropic.__version__)' >&2
        echo "$want" > "$stamp"
        log "python clients installed"
    fi
fi

if [[ "$do_node" == 1 ]]; then
    command -v node >/dev/null 2>&1 || { log "error: node not found"; exit 1; }
    command -v npm >/dev/null 2>&1 || { log "error: npm not found"; exit 1; }
    want="$(hash_files "$js_src/package.json" "$js_src/package-lock.json") node-$(node --version)"
    stamp="$node_dir/.keel-stamp"
    if [[ "$force" == 0 && -d "$node_dir/node_modules/ollama" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        log "node client up to date in ${node_dir#"$root"/} (skipping)"
    else
        log "npm ci in ${node_dir#"$root"/} from ${js_src#"$root"/}"
        mkdir -p "$node_dir"
        rm -f "$stamp"
        cp "$js_src/package.json" "$js_src/package-lock.json" "$node_dir/"
        (cd "$node_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
        node -e 'console.error("install-test-clients: node: ollama " + require(process.argv[1] + "/node_modules/ollama/package.json").version)' "$node_dir"
        echo "$want" > "$stamp"
        log "node client installed"
    fi
fi

log "done"
