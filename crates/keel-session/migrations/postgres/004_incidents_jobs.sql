-- Incidents (keel_session::IncidentStore) and durable jobs (keel_session::JobStore).
-- Timestamps are unix milliseconds. `detail` and `payload` are JSON (not JSONB: the keys keep
-- their order, as in the other backends). Ids compare bytewise (COLLATE "C").
-- IF NOT EXISTS: applying it to a schema that already has the tables changes nothing.

-- One row per incident. A fingerprint is unique among the incidents not resolved: concurrent
-- events opening it insert with ON CONFLICT DO NOTHING and then lock the one row.
CREATE TABLE IF NOT EXISTS incidents (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    fingerprint  TEXT COLLATE "C" NOT NULL,
    kind         TEXT   NOT NULL,
    title        TEXT   NOT NULL,
    status       TEXT   NOT NULL,
    upstream     TEXT,
    model        TEXT,
    opened_at    BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    mitigated_at BIGINT,
    resolved_at  BIGINT,
    event_count  BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS incidents_unresolved_fingerprint ON incidents (fingerprint)
    WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS incidents_by_opened ON incidents (opened_at, id);

-- An incident's timeline: seq 1, 2, 3… (`event_count` of the incident is the last).
CREATE TABLE IF NOT EXISTS incident_events (
    incident_id TEXT COLLATE "C" NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    event       TEXT   NOT NULL,
    effect      TEXT   NOT NULL,
    detail      JSON   NOT NULL,
    PRIMARY KEY (incident_id, seq)
);

-- The runbook of an incident (one; a new one replaces it).
CREATE TABLE IF NOT EXISTS runbooks (
    incident_id  TEXT COLLATE "C" NOT NULL PRIMARY KEY REFERENCES incidents (id) ON DELETE CASCADE,
    markdown     TEXT   NOT NULL,
    source       TEXT   NOT NULL,
    generated_at BIGINT NOT NULL
);

-- Fixes people confirmed, by fingerprint; `id` orders entries of one millisecond.
CREATE TABLE IF NOT EXISTS playbook (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint TEXT COLLATE "C" NOT NULL,
    fix         TEXT   NOT NULL,
    incident_id TEXT COLLATE "C" NOT NULL,
    at          BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS playbook_by_fingerprint ON playbook (fingerprint, at);

-- Durable jobs: (kind, key) is unique, so a job is made once however often its cause is seen.
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    kind         TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    payload      JSON   NOT NULL,
    status       TEXT   NOT NULL,
    attempts     BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    run_at       BIGINT NOT NULL,
    worker       TEXT,
    lease_until  BIGINT,
    last_error   TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (kind, key)
);
-- Claims: queued jobs by when they are due, running ones by when their lease ends.
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (status, run_at);
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at, id);
