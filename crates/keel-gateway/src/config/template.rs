//! The fully commented default configuration that `keel init` writes.

/// `keel.toml` with every section, each key at its default value and a comment saying what it does.
pub const DEFAULT_CONFIG: &str = r#"# keel.toml — configuration for `keel serve`.
#
# Every key below is shown at its default value. Precedence: command-line flags, then KEEL_*
# environment variables (KEEL_LISTEN, KEEL_UPSTREAM, KEEL_STORE, KEEL_LOG_FORMAT, KEEL_LOG),
# then this file. Durations are strings with a unit ("250ms", "30s", "5m"). Unknown keys are
# errors, so a typo never goes unnoticed.

[server]
# Address keel listens on. Agents change their Ollama base URL from :11434 to this.
listen = "127.0.0.1:11435"
# Largest request body keel accepts (images in chat requests count). Larger bodies get 413.
max_request_body = "32MiB"
# A non-streamed answer is read whole before keel answers, so that one the server cuts short goes
# to the next target instead of reaching the client truncated. Larger answers get 502 (ask with
# "stream": true for them).
max_buffered_answer = "64MiB"
# On SIGTERM or Ctrl+C keel stops accepting and lets in-flight requests and streams finish,
# for at most this long; then what is still open ends with an error saying to retry.
shutdown_grace = "30s"
# keel refuses to listen on a non-loopback address without API keys ([auth] keys, or keys made
# with `keel keys create` in the store). Set to true only on a network where everyone may use
# your models.
allow_remote_without_auth = false
# Serving threads, each with its own event loop (like nginx's worker processes). 0 means one
# per CPU core.
workers = 0
# How long a client may take to send a request's headers, counted from their first byte: a
# client that dribbles headers (slowloris) is disconnected. "0s" turns it off.
header_timeout = "30s"
# How long a kept-alive client connection may stay open with no request in hand and nothing
# sent either way; then keel closes it. "0s" turns it off.
idle_timeout = "60s"
# The most client connections keel keeps open. When they are all open, the one idle the
# longest is closed to make room; if none is idle, newcomers get 503 (but /keel/health still
# answers). 0 means half of keel's open-file limit (each connection may need one to a model
# server too).
max_connections = 0
# How long a model request's body (its JSON, read whole) may take to arrive; a slower one gets
# 408. Model uploads (streamed through) are not limited by it.
body_timeout = "60s"
# keel answers only requests addressed to its listen address or a loopback name (a guard
# against DNS rebinding, as Ollama has). Add the names clients use to reach it, e.g.
# ["keel.internal"]; "*" allows any.
allowed_hosts = []
# Browser pages on http(s)://localhost, 127.0.0.1 or [::1] (any port) may call keel; add other
# origins here (like OLLAMA_ORIGINS), e.g. ["http://localhost:3000", "https://app.example:*"].
cors_origins = []

[store]
# Where sessions, incidents and run checkpoints are kept. The default is an embedded SQLite
# file next to where keel runs; postgres://user@host/db and redis://host:6379 also work.
url = "sqlite://keel.db"

# Model servers. Add one [[upstream]] per server; names are used by routes, logs and metrics.
[[upstream]]
name = "local"
url = "http://127.0.0.1:11434"
# "ollama" for Ollama; "openai" for OpenAI-compatible servers (llama.cpp llama-server, vLLM,
# LM Studio); "anthropic" for the Anthropic API. keel translates what a server does not speak.
dialect = "ollama"
# Time to open a TCP connection: short, so a dead server fails fast.
connect_timeout = "5s"
# Time from sending a request to the response head. Long: Ollama loads a cold model first,
# and a non-streamed answer is generated before anything is sent.
response_timeout = "10m"
# Longest silence allowed between two chunks of a streamed answer.
idle_timeout = "5m"
# How often keel checks the server (GET /api/version, and /api/ps to learn which models are
# loaded; /health for OpenAI-dialect servers). A successful check lets an open breaker probe
# early. "0s" turns checks off.
health_interval = "10s"
# Pass a request's `format` / `response_format` on (the server constrains its decoding). Set to
# false for servers that reject or ignore it; keel's [guard] then validates and repairs alone.
forward_format = true
# With [admission]: how many requests one model on this server answers at once (its
# OLLAMA_NUM_PARALLEL), instead of [admission] max_concurrent. Unset for a llama-server, keel
# reads its slots (GET /props total_slots, its --parallel) when it first answers; Ollama does
# not report OLLAMA_NUM_PARALLEL, so [admission] max_concurrent applies to it.
# max_concurrent = 1

# A second server to fall back to:
# [[upstream]]
# name = "backup"
# url = "http://127.0.0.1:11436"

# A cloud API as the last resort (data leaves the premises: only routes with allow_remote = true
# use it, and only after their local targets are out):
# [[upstream]]
# name = "cloud"
# url = "https://api.anthropic.com"
# dialect = "anthropic"
# api_key_env = "ANTHROPIC_API_KEY"   # or api_key_file; sent instead of whatever the client sent
# headers = { "X-Team" = "shop" }     # more headers; headers_env = { "X-Secret" = "ENV_VAR" }
# ca_file = "certs/ca.pem"            # a private CA, besides the system's roots
# remote = true                       # implied by an address outside loopback/private networks
# tokens_per_day = 2000000            # what it may spend per UTC day; 0 = no cap

# Routes map the model name a client asks for to targets, tried in order. A target is an
# upstream name ("local") or an upstream and the model to ask it for ("local:qwen2.5:0.5b").
# "*" matches every name that no other route matches.
[[route]]
model = "*"
targets = ["local"]

# [[route]]
# model = "llama3.2"
# targets = ["local", "backup", "local:qwen2.5:0.5b"]
# prefer_loaded = true   # try targets that already have the model in memory first
# requests_per_minute = 30   # per key (or client) on this route, besides [limits]; 0: none
# tokens_per_minute = 20000
# allow_remote = false     # true: remote upstreams (targets = [..., "cloud:claude-haiku-4-5"]) may answer
#
# [[route]]                # a route for structured answers (see [guard])
# model = "classifier"
# targets = ["local", "backup"]
# schema = "schemas/ticket.json"   # or an inline table; used when a request sends format: "json"
# canned = { label = "unknown", confidence = 0 }   # last resort; checked against schema at startup

[breaker]
# Each target (an upstream and a model: "local:llama3.2") has a circuit breaker, also for every
# model asked for through the "*" route, so one model that fails (a 5xx, a model that cannot be
# loaded, time-outs, broken answers) never refuses another model's requests. Each upstream also
# has one server-wide breaker for failures of the server itself (connection refused, connect
# time-out, reset before any answer): when it opens, every model there fails fast at once, and
# one successful health probe lets them all try again. When a breaker opens, requests skip the
# target (going to the next target of their route) until it is probed back.
# A client's bad request or an unknown model says nothing about the server and is ignored, and
# so is keel running out of its own open files or memory ("local").
# Consecutive failures that open a target's breaker (0 turns this condition off).
failure_threshold = 5
# Share of failures among the calls of the last `window` that opens it, once `min_calls` calls
# are in the window (0 turns it off).
failure_rate = 0.5
window = "60s"
min_calls = 10
# Calls slower than this (to the first byte) count as slow; slow_call_rate > 0 opens the
# breaker when that share of calls is slow.
slow_call_duration = "30s"
slow_call_rate = 0.0
# Open when fewer than this share of recent answers were usable (0 = off).
min_success_ratio = 0.0
# Open when a target burns more tokens per minute than this: a runaway agent (0 = off).
max_tokens_per_minute = 0
# How long an open breaker rejects calls before it lets a probe through; "exponential" doubles
# it each time a probe fails, up to cooldown_max.
cooldown = "30s"
cooldown_strategy = "exponential"
cooldown_max = "5m"
# "single": one probe decides; "gradual": up to `probes` probes, all must succeed.
half_open = "single"
probes = 3
# Result classes that never count, and ones that count only against min_success_ratio.
ignore = ["bad_request", "model_not_found", "local"]
quality_failures = ["invalid_output"]
# Breakers kept for models asked for through the "*" route (names come from clients); past it
# the least recently used closed one is dropped. Configured targets are always kept.
max_breakers = 1024
# When every target of a route is out but the failures are partial (some calls succeeded: a
# failure rate, not a dead server or a model that cannot load), this share of requests still
# tries the least-bad target, so keel is never less available than going direct. 1.0 sends
# every such request (Envoy's panic mode); lower it to shed load from a struggling server; 0 = off.
panic_share = 1.0
# Share breaker openings with other keel instances through Redis: when one opens a target's
# breaker, the others open theirs within a second (and probe it on their own). Off by default.
# shared = "redis://127.0.0.1:6379"
shared_prefix = "keel"            # instances with the same prefix share; others are not affected

[retry]
# When every target of a route failed (unreachable, 5xx, "server busy") before anything was sent
# to the client, keel waits and tries the targets again, this many more rounds.
attempts = 1
# Random wait before a retry round, up to backoff × 2^(round−1), at most backoff_max.
backoff = "100ms"
backoff_max = "2s"
# Retries may add at most this share of recent traffic (plus budget_min_per_second), so a
# struggling server is not buried under retries. The floor (as in Finagle's retry budgets) lets
# a small site with little traffic retry every failed request once.
budget_ratio = 0.2
budget_min_per_second = 10
# No attempt starts or waits past a request's deadline. Clients may ask for a shorter one with
# the header `X-Keel-Deadline: 30s`.
deadline = "10m"

[guard]
# Requests that ask for JSON (Ollama `format`, OpenAI `response_format`) get an answer that is valid
# against their schema: repaired when it is broken, re-asked with the validation error as
# feedback, then the next target, then the route's canned value, else a 422 naming the problems.
enabled = true
# Re-asks of the same target before the next target is tried.
reasks = 1
# Streamed structured answers: "buffer" validates the whole answer, then streams it;
# "passthrough" relays them unchecked (tokens arrive sooner, broken JSON can reach the client).
stream = "buffer"
# Largest answer buffered for validation.
max_answer = "8MiB"

[sessions]
# Clients that send `X-Keel-Session: <id>` get a durable conversation kept in [store].
# Most context (tokens) sent with a managed session's request: system messages plus the newest
# messages that fit. Unset, it follows the model: the request's options.num_ctx, else the context
# length the server reports in /api/show, less a quarter for the answer (8192 if neither says).
# 0 means no limit.
# max_context_tokens = 8192
# What happens to the oldest messages when the context is over budget: "sliding_window" leaves
# them out, "summarize" has the model summarize them once (stored, reused until the window moves;
# a truncation when the model cannot), "error" refuses the request with 400.
# "hybrid" keeps the newest keep_newest messages as they are and summarizes everything older.
overflow = "sliding_window"
keep_newest = 8
# A session without a new message for this long is marked timed_out. "0s" turns it off.
idle_timeout = "30m"

# API keys. Without keys no key is required and keel only listens on loopback.
# Clients send `Authorization: Bearer <key>` (what the Ollama and OpenAI clients send).
# Keys are read from environment variables or files, never written here. Scopes: "inference"
# (model endpoints), "admin" (/keel/* and /metrics), "models" (model management), "events"
# (POST /keel/events and /keel/events/alertmanager only: for monitors such as Alertmanager).
# Model management (/api/pull, /api/push, /api/create, /api/copy, /api/delete, /api/blobs/*)
# is refused for everyone unless allow_model_management = true; then, with keys, only keys with
# the "admin" or "models" scope may use it. (An [auth] section with only that setting opens it
# without requiring keys, on loopback.)
# [auth]
# allow_model_management = false
# A key may carry its own requests_per_minute and tokens_per_minute (instead of [limits]) and a
# priority in admission queues: "interactive", "normal" (default) or "batch". Keys can also live
# in the store: `keel keys create NAME` (see `keel keys --help`).
# keys = [
#   { name = "agent", key_env = "KEEL_KEY_AGENT", scopes = ["inference"],
#     requests_per_minute = 60, tokens_per_minute = 20000, priority = "batch" },
#   { name = "ops",   key_env = "KEEL_KEY_OPS",   scopes = ["inference", "admin"] },
# ]

# Rate limits for every key (for every client address when there are no keys); a key's own
# requests_per_minute / tokens_per_minute replace them. A whole minute's budget may be used at
# once and comes back steadily. Tokens are reserved from the request's size and num_predict /
# max_tokens before the call and settled from the counts the model server reports after it.
# Refused requests get 429 with Retry-After and RateLimit-* headers.
[limits]
# 0 means no limit.
requests_per_minute = 0
tokens_per_minute = 0
# Share the limits between keel instances through Redis (its clock decides, so instances with
# skewed clocks agree). Unset: each keel limits on its own.
# store = "redis://127.0.0.1:6379"
# While that store cannot be reached: "open" lets requests through, "closed" answers 503.
on_store_error = "open"

# Admission control: how many requests each model on each upstream ("local:llama3.2") serves at
# once, with a bounded queue in front of it. Ollama queues without bound (OLLAMA_NUM_PARALLEL at
# once, the rest wait in memory); with this section keel bounds both: a request gets a slot,
# waits at most max_wait in a queue of at most max_queue, or gets 503 with Retry-After at once.
# Queued requests go by priority (a key's priority, or the header X-Keel-Priority: interactive,
# normal or batch, which may lower a key's priority but never raise it), then fair share between
# keys (client addresses without keys), then arrival. Answers that waited carry
# X-Keel-Queue-Wait-Ms. A target that sheds is not held against its breaker: the route's next
# target is tried. Off while this section is absent; uncomment it to turn it on.
# [admission]
# max_concurrent = 4          # per upstream:model; set it to Ollama's OLLAMA_NUM_PARALLEL
#                             # (a llama-server's own slot count replaces it, see [[upstream]])
# max_queue = 64              # waiting per upstream:model; 0 = no queue (shed when all slots run)
# max_wait = "30s"            # the longest a request waits (a shorter X-Keel-Deadline wins)
# upstream_max_concurrent = 8 # all models of one upstream together; unset = no cap
# aging = "5s"                # each wait this long raises a request one priority level

# Traces: one OpenTelemetry trace per request, a span per stage, model calls following the GenAI
# conventions. Where they go comes from the environment: OTEL_EXPORTER_OTLP_ENDPOINT (or
# OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME) for a
# collector, Jaeger or Tempo; LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY and LANGFUSE_HOST for
# Langfuse. Neither set: no traces, no cost.
[tracing]
# Put prompts and answers on the model-call spans (gen_ai.input.messages / gen_ai.output.messages).
# Off by default: traces then hold models, timings and token counts, never what was said.
content = false

[incidents]
# Record incidents: a breaker opening (the upstream or a model failing), answers served from a
# fallback (the incident is then "mitigated"), sessions timing out, and events posted to
# POST /keel/events or Alertmanager's webhook (POST /keel/events/alertmanager). Each incident
# gets a runbook at once (from a template, by incident kind) and its state changes go to the
# [[notify]] webhooks. They are kept in the store: GET /keel/incidents, `keel incidents list`.
enabled = true
# The route (a model name of a [[route]]) that writes runbooks from the evidence, asked through
# keel itself (its answer repaired and validated). Usually unset: a local model is often what
# failed, and the template's runbook is written either way; the model's replaces it when it
# answers. E.g. model = "llama3.2"
# model = ""
# Runbooks are also written here as INCIDENT_ID.md (beside this file when relative; "" for the
# store only).
runbook_dir = "runbooks"
# How long one keel holds a claimed job (a webhook delivery, a runbook) before another keel
# sharing the store, or this one after a restart, may run it again.
job_lease = "1m"
# When the model's runbook is not usable, it is asked again after this long (doubling, 5 tries).
model_retry = "30s"
# Some failures are an incident only when they keep coming: structured answers that could not be
# made valid (per model), requests shed by [admission] (per target), rate-limit refusals (per
# key or client). This many within a minute open one; burst_quiet without any resolves it.
burst_threshold = 10
burst_quiet = "5m"

# Webhooks told of every incident state change (opened, mitigated, open again, resolved), never
# of single events. Signed per the Standard Webhooks spec (webhook-id, webhook-timestamp,
# webhook-signature) when a secret is set; retried with backoff (the same webhook-id each time),
# 429 Retry-After honoured; a receiver answering 410 Gone gets no more until keel restarts.
# Receivers may be http:// or https:// (the system's and Mozilla's certificate authorities are
# trusted; ca_file adds a PEM file of your own CA's certificates).
# [[notify]]
# url = "http://127.0.0.1:9000/hook"
# format = "json"                    # "json", "slack" or "discord"
# secret_env = "KEEL_WEBHOOK_SECRET" # the variable holding "whsec_" + base64 (openssl rand -base64 32)
# ca_file = "receiver-ca.pem"        # only for an https receiver with a private CA

[log]
# "text" for people, "json" for log shippers (one JSON object per line on stderr).
format = "text"
# Filter in RUST_LOG syntax, e.g. "debug" or "keel_gateway=debug,info". RUST_LOG wins if set.
level = "info"
"#;
