-- Sessions and their messages. Timestamps are unix milliseconds (UTC); counts are >= 0.
CREATE TABLE sessions (
    id          TEXT    NOT NULL PRIMARY KEY,
    owner       TEXT,
    model       TEXT,
    status      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    token_count INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    metadata    TEXT    NOT NULL
);
CREATE INDEX sessions_by_updated ON sessions (updated_at, id);

CREATE TABLE messages (
    session_id      TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    role            TEXT    NOT NULL,
    content         TEXT    NOT NULL,
    tool_calls      TEXT,
    token_count     INTEGER NOT NULL,
    idempotency_key TEXT,
    complete        INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE UNIQUE INDEX messages_by_key ON messages (session_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
