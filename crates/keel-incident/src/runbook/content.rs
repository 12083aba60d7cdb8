//! The words of a runbook as data ([`Content`]): the plain-language head, the cause (or "cause
//! unknown" and the check that would tell), failure modes, alerts, incident response steps and
//! health checks. [`template_content`] writes them from the evidence alone, by incident kind;
//! a model may write them instead (see `model.rs`); either way `render.rs` turns them into
//! Markdown around the evidence.

use serde::{Deserialize, Serialize};

use super::evidence::{Evidence, UpstreamFacts};
use crate::kinds;

/// The words of a runbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    /// What broke, in one or two sentences.
    pub what_broke: String,
    /// Who was affected.
    pub affected: String,
    /// What keel already did about it.
    pub keel_did: String,
    /// Zero to three things for a person to do, most useful first.
    pub todo: Vec<String>,
    /// The cause, as far as the evidence shows.
    pub cause: Cause,
    /// How this kind of incident happens.
    pub failure_modes: Vec<FailureMode>,
    /// Alerts that would have caught it.
    pub alerts: Vec<AlertRule>,
    /// What to do, in order.
    pub response: Vec<Step>,
    /// How to see that it is healthy.
    pub health_checks: Vec<HealthCheck>,
}

/// The cause of an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cause {
    /// Whether the evidence decides it.
    pub known: bool,
    /// The cause, or the candidate causes when unknown.
    pub text: String,
    /// When unknown: the one check that would tell the candidates apart.
    pub tell_apart: Option<String>,
}

/// One way this kind of incident happens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureMode {
    /// Its name.
    pub name: String,
    /// How it shows.
    pub signs: String,
    /// What fixes it.
    pub fix: String,
}

/// An alert that catches the incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Its name.
    pub name: String,
    /// When it fires (a PromQL expression over keel's metrics, or a plain rule).
    pub when: String,
}

/// One step of the incident response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// What to do.
    pub action: String,
    /// The command that does it, if one does.
    pub command: Option<String>,
}

/// A health check: a command and what a healthy deployment prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The command.
    pub command: String,
    /// What it prints when healthy.
    pub expect: String,
}

/// The runbook's words for `evidence`, from the evidence alone, by incident kind.
pub fn template_content(evidence: &Evidence) -> Content {
    let facts = Facts::of(evidence);
    match evidence.incident.kind.as_str() {
        kinds::UPSTREAM_DOWN => upstream_down(&facts),
        kinds::MODEL_FAILING => model_failing(&facts),
        kinds::SESSION_TIMEOUT => session_timeout(&facts),
        kinds::STRUCTURED_OUTPUT => structured_output(&facts),
        kinds::SHEDDING => shedding(&facts),
        kinds::RATE_LIMITED => rate_limited(&facts),
        _ => generic(&facts),
    }
}

/// What the content of every kind draws on, read once from the evidence.
struct Facts<'a> {
    evidence: &'a Evidence,
    upstream: UpstreamFacts,
    /// Why the breaker opened (the first reason given), or "".
    why: String,
    /// Answers served by a fallback, and by which target.
    fallback: Option<(u64, String)>,
    /// The version check's result, if keel ran one.
    version_check: Option<(bool, String)>,
    keel_url: String,
}

impl<'a> Facts<'a> {
    fn of(evidence: &'a Evidence) -> Facts<'a> {
        let name = evidence.incident.upstream.clone().unwrap_or_default();
        let upstream = evidence.deployment.upstream(&name).cloned().unwrap_or(UpstreamFacts {
            address: first_detail(evidence, "address").unwrap_or_else(|| "its address in keel.toml".to_owned()),
            kind: "ollama".to_owned(),
            name,
        });
        let fallback = evidence
            .events
            .iter()
            .filter(|event| event.event == "fallback.served")
            .filter_map(|event| {
                Some((event.detail["answers"].as_u64()?, event.detail["served_by"].as_str()?.to_owned()))
            })
            .max_by_key(|(answers, _)| *answers);
        let version_check = evidence
            .checks
            .iter()
            .find(|check| check.command.ends_with("/api/version") || check.command.ends_with("/health"))
            .map(|check| (check.ok, check.output.clone()));
        let keel_url = if evidence.deployment.keel_url.is_empty() {
            "http://127.0.0.1:11435".to_owned()
        } else {
            evidence.deployment.keel_url.clone()
        };
        Facts {
            evidence,
            why: first_detail(evidence, "why").unwrap_or_default(),
            upstream,
            fallback,
            version_check,
            keel_url,
        }
    }

    /// Whether the timeline holds an event named `name`.
    fn saw(&self, name: &str) -> bool {
        self.evidence.events.iter().any(|event| event.event == name)
    }

    fn model(&self) -> &str {
        self.evidence.incident.model.as_deref().unwrap_or("the model")
    }

    fn ollama(&self) -> bool {
        self.upstream.kind != "openai"
    }

    /// `curl` of the upstream's liveness endpoint.
    fn liveness(&self) -> String {
        let path = if self.ollama() { "/api/version" } else { "/health" };
        format!("curl -sS --max-time 5 {}{path}", self.upstream.address.trim_end_matches('/'))
    }

    /// The command that lists loaded models (with OLLAMA_HOST when not the default address).
    fn loaded_models(&self) -> String {
        if !self.ollama() {
            return format!("curl -sS {}/v1/models", self.upstream.address.trim_end_matches('/'));
        }
        match self.upstream.address.trim_end_matches('/').strip_prefix("http://") {
            Some("127.0.0.1:11434" | "localhost:11434") | None => "ollama ps".to_owned(),
            Some(host) => format!("OLLAMA_HOST={host} ollama ps"),
        }
    }

    fn service(&self) -> &'static str {
        if self.ollama() { "ollama" } else { "llama-server" }
    }

    fn routes(&self) -> String {
        let routes = self.evidence.deployment.routes_through(&self.upstream.name);
        if routes.is_empty() {
            return format!("requests routed to upstream {}", self.upstream.name);
        }
        if routes.iter().any(|route| route.model == "*") {
            return format!("requests for any model routed to upstream {}", self.upstream.name);
        }
        let names: Vec<String> = routes.iter().map(|route| format!("`{}`", route.model)).collect();
        format!("requests for {} (routed to upstream {})", names.join(", "), self.upstream.name)
    }

    fn keel_did(&self, what: &str) -> String {
        match &self.fallback {
            Some((answers, by)) => format!(
                "{what} {answers} request{} were answered by {by} instead; clients saw no error for those.",
                if *answers == 1 { "" } else { "s" }
            ),
            None => format!("{what} No fallback answered for it, so clients got 503 answers with Retry-After."),
        }
    }

    fn keel_status(&self) -> Step {
        Step {
            action: "See what keel sees now: breakers, upstreams, incidents".to_owned(),
            command: Some(format!("keel status --url {}", self.keel_url)),
        }
    }
}

fn first_detail(evidence: &Evidence, key: &str) -> Option<String> {
    evidence.events.iter().find_map(|event| event.detail.get(key)?.as_str().map(str::to_owned))
}

fn upstream_down(facts: &Facts<'_>) -> Content {
    let up = &facts.upstream;
    let why = if facts.why.is_empty() { String::new() } else { format!(" The last failure: {}.", facts.why) };
    let cause = match &facts.version_check {
        Some((false, output)) if output.contains("could not connect") || output.contains("refused") => Cause {
            known: true,
            text: format!(
                "Nothing accepts connections at {}: the {} server is not running (stopped, crashed, or not started after a reboot), or listens on another address.",
                up.address,
                facts.service()
            ),
            tell_apart: None,
        },
        Some((false, output)) if output.contains("timed out") => Cause {
            known: false,
            text: format!(
                "{} accepts connections but does not answer: the server hangs, or it is overloaded (swapping, loading a model too large for memory).",
                up.address
            ),
            tell_apart: Some(format!(
                "`{}` and `free -h`: a loaded model with no free memory means overload; an empty list with an idle CPU means it hangs.",
                facts.loaded_models()
            )),
        },
        Some((true, _)) => Cause {
            known: false,
            text: "The server answers again now, so the failure did not last: it crashed and was restarted, or it was overloaded for a while.".to_owned(),
            tell_apart: Some(format!(
                "`journalctl -u {} --since \"{}\"`: a restart in the log means a crash; none means overload.",
                facts.service(),
                crate::webhook::rfc3339(facts.evidence.incident.opened_at)
            )),
        },
        _ => Cause {
            known: false,
            text: "keel could not check the server itself, so the evidence does not decide between: the server is stopped, it crashed, or it hangs.".to_owned(),
            tell_apart: Some(format!("`{}`: \"connection refused\" means stopped or crashed; no answer means it hangs.", facts.liveness())),
        },
    };
    Content {
        what_broke: format!("The model server {} at {} stopped answering.{why}", up.name, up.address),
        affected: format!("Every agent sending {}.", facts.routes()),
        keel_did: facts.keel_did(&if facts.saw("breaker.opened") {
            format!(
                "keel opened the circuit breaker of {} so requests stopped waiting on it, and probes it until it answers.",
                up.name
            )
        } else {
            format!("keel recorded the report that {} is down (its own breaker had not opened).", up.name)
        }),
        todo: vec![
            format!("Check the server: `{}`.", facts.liveness()),
            format!("If it does not answer, restart it: `sudo systemctl restart {}`.", facts.service()),
            "If no fallback answered for it, add a fallback target to its route in keel.toml.".to_owned(),
        ],
        cause,
        failure_modes: vec![
            mode(
                "Server stopped or crashed",
                "connection refused at the address",
                &format!("sudo systemctl restart {}", facts.service()),
            ),
            mode(
                "Server hangs on a cold model load",
                "connections accepted, no answer; `ollama ps` shows the model loading",
                "wait for the load, or restart the server and pick a smaller model",
            ),
            mode(
                "Model too large for memory",
                "the server is killed by the OOM killer (`journalctl -k | grep -i oom`)",
                "use a smaller model or quantization; add memory",
            ),
            mode(
                "Disk full",
                "the server fails to start or to load models; `df -h` shows 100%",
                "free disk space, then restart the server",
            ),
        ],
        alerts: vec![
            AlertRule {
                name: "KeelBreakerOpen".to_owned(),
                when: format!("keel_breaker_state{{target=\"{}\"}} == 2 for 2m", up.name),
            },
            AlertRule {
                name: "KeelServing503".to_owned(),
                when: "sum(rate(keel_requests_total{status=\"503\"}[5m])) > 0".to_owned(),
            },
        ],
        response: vec![
            Step { action: "Check whether the server answers".to_owned(), command: Some(facts.liveness()) },
            Step {
                action: "Look at the server's log around the time the incident opened".to_owned(),
                command: Some(format!("journalctl -u {} --since \"1 hour ago\" | tail -50", facts.service())),
            },
            Step { action: "See memory and disk".to_owned(), command: Some("free -h && df -h".to_owned()) },
            Step {
                action: "Restart the server".to_owned(),
                command: Some(format!("sudo systemctl restart {}", facts.service())),
            },
            facts.keel_status(),
        ],
        health_checks: vec![
            HealthCheck {
                command: facts.liveness(),
                expect: if facts.ollama() {
                    "{\"version\":\"…\"}".to_owned()
                } else {
                    "{\"status\":\"ok\"}".to_owned()
                },
            },
            HealthCheck {
                command: format!("keel status --url {}", facts.keel_url),
                expect: format!("upstream {} healthy, its breaker closed", up.name),
            },
        ],
    }
}

fn model_failing(facts: &Facts<'_>) -> Content {
    let (up, model) = (&facts.upstream, facts.model());
    let why = facts.why.to_lowercase();
    let pull = if facts.ollama() {
        format!("ollama pull {model}")
    } else {
        format!("start {} with the model file of {model}", facts.service())
    };
    let cause = if why.contains("not found") || why.contains("model_not_found") {
        Cause {
            known: true,
            text: format!("The model {model} is not on {}: it was never pulled, or it was deleted.", up.name),
            tell_apart: None,
        }
    } else if why.contains("load") || why.contains("memory") {
        Cause {
            known: true,
            text: format!("{} cannot load {model}: it is most likely too large for the memory left.", up.name),
            tell_apart: None,
        }
    } else {
        Cause {
            known: false,
            text: format!(
                "{model} on {} fails, and the evidence does not decide why: not pulled, too large for memory, or giving answers keel cannot use.",
                up.name
            ),
            tell_apart: Some(format!(
                "`curl -sS {}/api/show -d '{{\"model\": \"{model}\"}}'`: 404 means not pulled; an answer means it is there, so look at memory with `{}`.",
                up.address.trim_end_matches('/'),
                facts.loaded_models()
            )),
        }
    };
    Content {
        what_broke: format!(
            "The model {model} on {} ({}) failed repeatedly.{}",
            up.name,
            up.address,
            if facts.why.is_empty() { String::new() } else { format!(" The last failure: {}.", facts.why) }
        ),
        affected: format!("Agents asking for {model}; other models on {} were not refused.", up.name),
        keel_did: facts
            .keel_did(&format!("keel opened the breaker of {}:{model} only, and probes it until it answers.", up.name)),
        todo: vec![
            format!(
                "Check the model is there: `{}`.",
                if facts.ollama() { "ollama list".to_owned() } else { format!("curl -sS {}/v1/models", up.address) }
            ),
            format!("If it is missing: `{pull}`."),
        ],
        cause,
        failure_modes: vec![
            mode("Model not pulled", "404 model not found", &pull),
            mode(
                "Model too large for memory",
                "load errors, OOM kills, very slow first tokens",
                "a smaller model or quantization, or fewer models loaded at once",
            ),
            mode(
                "Context overflow",
                "answers cut off, or errors on long conversations",
                "shorter prompts, or a model with a larger context",
            ),
            mode(
                "Malformed structured output",
                "keel_structured_outputs_total{outcome=\"failed\"} rises",
                "a larger model for structured output, or a route fallback that handles it",
            ),
        ],
        alerts: vec![AlertRule {
            name: "KeelModelBreakerOpen".to_owned(),
            when: format!("keel_breaker_state{{target=\"{}:{model}\"}} == 2 for 5m", up.name),
        }],
        response: vec![
            Step {
                action: "List the models the server has".to_owned(),
                command: Some(if facts.ollama() {
                    "ollama list".to_owned()
                } else {
                    format!("curl -sS {}/v1/models", up.address)
                }),
            },
            Step {
                action: "See what is loaded and how much memory it takes".to_owned(),
                command: Some(facts.loaded_models()),
            },
            Step { action: "Pull the model if it is missing".to_owned(), command: Some(pull.clone()) },
            Step {
                action: "Try the model directly".to_owned(),
                command: Some(format!(
                    "curl -sS {}/api/generate -d '{{\"model\": \"{model}\", \"prompt\": \"hi\", \"stream\": false}}'",
                    up.address.trim_end_matches('/')
                )),
            },
            facts.keel_status(),
        ],
        health_checks: vec![HealthCheck {
            command: format!(
                "curl -sS {}/api/chat -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}], \"stream\": false}}'",
                facts.keel_url
            ),
            expect: "an answer with \"done\": true".to_owned(),
        }],
    }
}

fn session_timeout(facts: &Facts<'_>) -> Content {
    let session = first_detail(facts.evidence, "session_id").unwrap_or_else(|| "the session".to_owned());
    let agent = first_detail(facts.evidence, "agent").map(|agent| format!(" (agent {agent})")).unwrap_or_default();
    Content {
        what_broke: format!("The session {session}{agent} got no activity within its timeout."),
        affected: format!("The work of session {session}; it is kept and can be resumed by its id."),
        keel_did: "keel kept the session's transcript and recorded the timeout; nothing was lost.".to_owned(),
        todo: vec![
            format!("Read the transcript: `keel sessions show {session}`."),
            "Check that the agent's process still runs.".to_owned(),
        ],
        cause: Cause {
            known: false,
            text: "The agent stopped (crashed, was killed, or waits on something), or the model stopped answering it."
                .to_owned(),
            tell_apart: Some(format!(
                "`keel status --url {}`: open breakers mean the model side; all closed means the agent side.",
                facts.keel_url
            )),
        },
        failure_modes: vec![
            mode("Agent crashed", "its process is gone", "restart it; it resumes from the session by id"),
            mode(
                "Agent loop",
                "many near-identical messages at the end of the transcript",
                "cap the agent's steps; fix its stop condition",
            ),
            mode("Model stopped answering", "open breakers, 503 answers", "see the upstream incident's runbook"),
        ],
        alerts: vec![AlertRule {
            name: "KeelSessionTimeouts".to_owned(),
            when: "increase(keel_sessions_timed_out_total[15m]) > 0".to_owned(),
        }],
        response: vec![
            Step {
                action: "Read the end of the transcript".to_owned(),
                command: Some(format!("keel sessions show {session}")),
            },
            facts.keel_status(),
            Step { action: "Restart the agent; it continues the session by its id".to_owned(), command: None },
        ],
        health_checks: vec![HealthCheck {
            command: format!("keel sessions show {session}"),
            expect: "new messages after the restart".to_owned(),
        }],
    }
}

/// The last sample of a burst's failures, as text ("" when none).
fn sample(facts: &Facts<'_>, key: &str) -> String {
    facts
        .evidence
        .events
        .iter()
        .rev()
        .find_map(|event| event.detail.get("sample")?.get(key)?.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn burst_size(facts: &Facts<'_>) -> String {
    let most =
        facts.evidence.events.iter().filter_map(|event| event.detail.get("failures_last_minute")?.as_u64()).max();
    most.map_or_else(|| "many".to_owned(), |count| count.to_string())
}

fn structured_output(facts: &Facts<'_>) -> Content {
    let model = facts.model();
    let problem = sample(facts, "problem");
    let problem_line = if problem.is_empty() { String::new() } else { format!(" The last problem: {problem}.") };
    Content {
        what_broke: format!("Structured answers from {model} could not be made valid, even after repair and re-asking ({} a minute).{problem_line}", burst_size(facts)),
        affected: format!("Agents asking {model} for JSON: they got 422 answers, or the route's canned value where one is set."),
        keel_did: "keel repaired what could be repaired, re-asked the model with the validation error, tried the route's other targets, and answered from the canned value where the route has one. It never passed broken JSON on.".to_owned(),
        todo: vec![
            format!("Try the schema by hand: `keel chat --model {model}` with the same prompt, or `keel repair --schema schema.json` on a saved answer."),
            "If the model is small, route structured requests to a larger one (a [[route]] with a fallback target).".to_owned(),
        ],
        cause: Cause {
            known: false,
            text: format!("{model} does not follow the schema: it is too small for it, the prompt does not ask for JSON, or the schema is stricter than the agent needs."),
            tell_apart: Some(format!("`keel_repair_fixes_total{{model=\"{model}\"}}` in {}/metrics: many repairs mean output close to valid (a larger model or a looser schema helps); no repairs mean it answers something else entirely (the prompt).", facts.keel_url)),
        },
        failure_modes: vec![
            mode("Malformed structured output", "keel_structured_outputs_total{outcome=\"failed\"} rises", "a larger model, or a route fallback for structured requests"),
            mode("Tool-call JSON errors", "tool arguments that are not JSON, or miss required fields", "describe the tool's parameters more simply; fewer tools per request"),
            mode("Context overflow", "answers cut off mid-JSON", "shorter prompts, or a model with a larger context"),
        ],
        alerts: vec![AlertRule { name: "KeelStructuredOutputFailing".to_owned(), when: format!("sum(rate(keel_structured_outputs_total{{model=\"{model}\",outcome=\"failed\"}}[15m])) > 0") }],
        response: vec![
            Step { action: "See how structured answers end, by outcome".to_owned(), command: Some(format!("curl -s {}/metrics | grep keel_structured_outputs_total", facts.keel_url)) },
            Step { action: "Repair a saved answer by hand to see what is wrong with it".to_owned(), command: Some("keel repair --schema schema.json < answer.txt".to_owned()) },
            facts.keel_status(),
        ],
        health_checks: vec![HealthCheck { command: format!("curl -s {}/metrics | grep 'keel_structured_outputs_total.*outcome=\"failed\"'", facts.keel_url), expect: "a count that no longer grows".to_owned() }],
    }
}

fn shedding(facts: &Facts<'_>) -> Content {
    let target =
        facts.evidence.incident.fingerprint.split_once(':').map_or("the target", |(_, target)| target).to_owned();
    let reason = sample(facts, "reason");
    Content {
        what_broke: format!("Requests for {target} were shed by admission control ({} a minute; {}).", burst_size(facts), if reason.is_empty() { "queue full" } else { reason.as_str() }),
        affected: format!("Agents asking {target}: they got 503 with Retry-After, or a fallback target answered."),
        keel_did: "keel kept the number of requests the model server runs at once within [admission], queued what fit and shed the rest at once instead of letting the server fill its memory.".to_owned(),
        todo: vec![
            "See the queue and what runs: `keel status`.".to_owned(),
            "If the load is real, add a fallback target or raise [admission] max_concurrent if the server has the memory for it.".to_owned(),
        ],
        cause: Cause {
            known: false,
            text: "More requests arrive than the server answers: a burst of agent traffic, an agent stuck in a loop, or a server that became slower (a larger model, a cold load, swapping).".to_owned(),
            tell_apart: Some(format!("`curl -s {}/metrics | grep keel_time_to_first_chunk_seconds`: a slower first chunk means the server slowed down; the same speed means more traffic.", facts.keel_url)),
        },
        failure_modes: vec![
            mode("Queue full", "keel_admission_shed_total{reason=\"queue_full\"} rises", "more capacity, a fallback target, or fewer agents at once"),
            mode("Slow first token under load", "keel_time_to_first_chunk_seconds p95 rises", "fewer requests at once; a smaller model"),
            mode("Agent loops", "one key sends most requests", "cap the agent's steps; give it its own rate limit"),
        ],
        alerts: vec![AlertRule { name: "KeelShedding".to_owned(), when: "sum(rate(keel_admission_shed_total[5m])) > 0".to_owned() }],
        response: vec![
            facts.keel_status(),
            Step { action: "See who sends the most requests".to_owned(), command: Some(format!("curl -s {}/metrics | grep keel_requests_total", facts.keel_url)) },
            Step { action: "See what the model server runs now".to_owned(), command: Some(facts.loaded_models()) },
        ],
        health_checks: vec![HealthCheck { command: format!("curl -s {}/metrics | grep keel_admission_shed_total", facts.keel_url), expect: "counts that no longer grow".to_owned() }],
    }
}

fn rate_limited(facts: &Facts<'_>) -> Content {
    let who = facts.evidence.incident.fingerprint.split_once(':').map_or("a client", |(_, who)| who).to_owned();
    Content {
        what_broke: format!("{who} was refused by its rate limit {} times a minute.", burst_size(facts)),
        affected: format!("The agent behind {who}: it got 429 answers with Retry-After; other keys were not affected."),
        keel_did: "keel refused the requests over the limit at once (429 with Retry-After and RateLimit headers), so one busy agent could not starve the others.".to_owned(),
        todo: vec![format!("Find out why {who} sends so much: a loop, a retry storm, or real growth."), "If it is real growth, raise its limit: `keel keys` or [limits] in keel.toml.".to_owned()],
        cause: Cause {
            known: false,
            text: "The agent sends more than its limit: it loops, retries without waiting for Retry-After, or its work grew.".to_owned(),
            tell_apart: Some("The agent's own log: the same request again and again means a loop or a retry storm; different requests mean growth.".to_owned()),
        },
        failure_modes: vec![
            mode("Agent loops", "the same prompt repeated", "cap the agent's steps; fix its stop condition"),
            mode("Retry storm", "requests right after each 429", "make the client honour Retry-After"),
            mode("Limit too low for the work", "steady load just over the limit", "raise requests_per_minute or tokens_per_minute"),
        ],
        alerts: vec![AlertRule { name: "KeelRateLimited".to_owned(), when: "sum(rate(keel_rate_limited_total[5m])) > 1".to_owned() }],
        response: vec![facts.keel_status(), Step { action: "See the limits refused, by kind".to_owned(), command: Some(format!("curl -s {}/metrics | grep keel_rate_limited_total", facts.keel_url)) }],
        health_checks: vec![HealthCheck { command: format!("curl -s {}/metrics | grep keel_rate_limited_total", facts.keel_url), expect: "counts that no longer grow".to_owned() }],
    }
}

fn generic(facts: &Facts<'_>) -> Content {
    let incident = &facts.evidence.incident;
    let message = first_detail(facts.evidence, "message").map(|message| format!(" {message}")).unwrap_or_default();
    Content {
        what_broke: format!("{}.{message}", incident.title),
        affected: "What depends on it; keel has no more detail than the events below.".to_owned(),
        keel_did: "keel recorded the events and notified the configured webhooks.".to_owned(),
        todo: vec!["Read the events below and the source that sent them.".to_owned()],
        cause: Cause {
            known: false,
            text: "The events do not say why.".to_owned(),
            tell_apart: first_detail(facts.evidence, "generator_url")
                .map(|url| format!("Open {url} to see the rule that fired.")),
        },
        failure_modes: vec![mode(&incident.title, "the events below", "see the source's own runbook")],
        alerts: vec![AlertRule { name: "KeelIncidentOpen".to_owned(), when: "keel_incidents_open > 0".to_owned() }],
        response: vec![facts.keel_status()],
        health_checks: vec![HealthCheck {
            command: format!("keel incidents show {} --url {}", incident.id, facts.keel_url),
            expect: "status resolved".to_owned(),
        }],
    }
}

fn mode(name: &str, signs: &str, fix: &str) -> FailureMode {
    FailureMode { name: name.to_owned(), signs: signs.to_owned(), fix: fix.to_owned() }
}
