-- Incidents (keel_session::IncidentStore) and durable jobs (keel_session::JobStore).
-- Timestamps are unix milliseconds; `detail` and `payload` are JSON text.
-- IF NOT EXISTS: applying it to a database that already has the tables changes nothing.

-- One row per incident. A fingerprint is unique among the incidents not resolved: events with
-- it join that one; once it is resolved, the next event opening it starts a new incident.
CREATE TABLE IF NOT EXISTS incidents (
    id           TEXT    NOT NULL PRIMARY KEY,
    fingerprint  TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    title        TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    upstream     TEXT,
    model        TEXT,
    opened_at    INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    mitigated_at INTEGER,
    resolved_at  INTEGER,
    event_count  INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_unresolved_fingerprint ON incidents (fingerprint)
    WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS incidents_by_opened ON incidents (opened_at, id);

-- An incident's timeline: seq 1, 2, 3… (`event_count` of the incident is the last).
CREATE TABLE IF NOT EXISTS incident_events (
    incident_id TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    event       TEXT    NOT NULL,
    effect      TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    PRIMARY KEY (incident_id, seq)
);

-- The runbook of an incident (one; a new one replaces it).
CREATE TABLE IF NOT EXISTS runbooks (
    incident_id  TEXT    NOT NULL PRIMARY KEY,
    markdown     TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    generated_at INTEGER NOT NULL
);

-- Fixes people confirmed, by fingerprint; `id` orders entries of one millisecond.
CREATE TABLE IF NOT EXISTS playbook (
    id          INTEGER PRIMARY KEY,
    fingerprint TEXT    NOT NULL,
    fix         TEXT    NOT NULL,
    incident_id TEXT    NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS playbook_by_fingerprint ON playbook (fingerprint, at);

-- Durable jobs: (kind, key) is unique, so a job is made once however often its cause is seen.
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT    NOT NULL PRIMARY KEY,
    kind         TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    run_at       INTEGER NOT NULL,
    worker       TEXT,
    lease_until  INTEGER,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (kind, key)
);
-- Claims: queued jobs by when they are due, running ones by when their lease ends.
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (status, run_at);
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at, id);
