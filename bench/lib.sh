# Shared set-up of the whole-process benchmarks; sourced from the repository root, not run.
# Sets WORK (a temporary folder, removed at exit), RESULTS, KEEL (a release build of keel),
# `pids` (processes killed at exit) and `log`. A script may define `extra_cleanup` to run at exit.
# `wait_up URL` waits for a server to answer; `vm_kib PID FIELD` and `mib` read a process's memory.
# `keel_toml FILE [SERVER_LINES]` writes a keel.toml in front of the mock on $MOCK_PORT.
# Also `need` (installs missing tools) and `nginx_conf` / `canned_upstream` (nginx processes,
# stopped at exit) for the benchmarks that put nginx in front of or behind keel.
# KEEL_BIN=/path/to/keel measures another build (e.g. of an earlier commit) instead.
WORK="$(mktemp -d /tmp/keel-bench.XXXXXX)"
RESULTS="bench/results"
mkdir -p "$RESULTS"
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -z "${KEEL_BIN:-}" ]; then
  log "building keel (release)"
  cargo build --release -p keel-cli --locked -q
fi
KEEL="${KEEL_BIN:-target/release/keel}"

pids=()
nginxes=()
cleanup() {
  if declare -F extra_cleanup >/dev/null; then extra_cleanup; fi
  for conf in "${nginxes[@]}"; do "$NGINX" -p "$WORK" -c "$WORK/$conf.conf" -s stop 2>/dev/null || true; done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# need TOOL...: installs the Debian packages of those names whose command is missing (as root).
need() {
  local missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]} from Debian's packages"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

# The answer of the canned upstream: a whole Ollama /api/chat reply.
CHAT_REPLY='{"model":"llama3.2","created_at":"2026-01-01T00:00:00Z","message":{"role":"assistant","content":"Hello! How can I help you today?"},"done":true,"done_reason":"stop","total_duration":1000,"load_duration":10,"prompt_eval_count":12,"prompt_eval_duration":100,"eval_count":9,"eval_duration":800}'

# nginx_conf NAME WORKERS SERVER_BLOCK: starts an nginx serving SERVER_BLOCK, with an upstream
# `canned` (127.0.0.1:$UPSTREAM_PORT, kept-alive) for a proxy to use; stopped at exit.
nginx_conf() {
  cat >"$WORK/$1.conf" <<CONF
worker_processes $2;
error_log $WORK/$1-error.log warn;
pid $WORK/$1.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/$1-body;
  proxy_temp_path $WORK/$1-proxy;
  keepalive_requests 1000000;
  upstream canned { server 127.0.0.1:$UPSTREAM_PORT; keepalive 128; }
  $3
}
CONF
  "$NGINX" -p "$WORK" -c "$WORK/$1.conf"
  nginxes+=("$1")
}

# canned_upstream: one nginx worker on 127.0.0.1:$UPSTREAM_PORT answering every request with
# $CHAT_REPLY — an upstream as fast as can be, so that what is measured is keel.
canned_upstream() {
  nginx_conf upstream 1 "server { listen 127.0.0.1:$UPSTREAM_PORT; location / { default_type application/json; return 200 '$CHAT_REPLY'; } }"
}

# wait_up URL: waits up to 10 s for URL to answer 2xx; fails (with a message) if it never does.
wait_up() {
  for _ in $(seq 100); do curl -fs "$1" >/dev/null 2>&1 && return; sleep 0.1; done
  log "$1 did not answer within 10 s"
  return 1
}

# vm_kib PID FIELD: a memory figure of a running process from /proc/PID/status, in KiB
# (FIELD: VmRSS for the resident set now, VmHWM for its peak so far); 0 once it has exited.
vm_kib() { awk -v field="$2:" '$1 == field {kib = $2} END {print kib + 0}' "/proc/$1/status" 2>/dev/null || echo 0; }

# mib KIB: KiB as MiB with one decimal.
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# keel_toml FILE [SERVER_LINES]: a keel.toml listening on $KEEL_PORT (with SERVER_LINES in its
# [server] table), its store in $WORK, one upstream: the mock on $MOCK_PORT.
keel_toml() {
  cat >"$1" <<TOML
[server]
listen = "127.0.0.1:$KEEL_PORT"
${2:-}
[store]
url = "sqlite://$WORK/keel.db"
[[upstream]]
name = "default"
url = "http://127.0.0.1:$MOCK_PORT"
TOML
}
