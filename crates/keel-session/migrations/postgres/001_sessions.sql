-- Sessions and their messages. Timestamps are unix milliseconds (UTC); counts are >= 0.
-- Ids compare bytewise (COLLATE "C") so list order matches the other backends.
CREATE TABLE sessions (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    owner       TEXT,
    model       TEXT,
    status      TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    token_count BIGINT NOT NULL,
    last_seq    BIGINT NOT NULL,
    metadata    JSONB  NOT NULL
);
CREATE INDEX sessions_by_updated ON sessions (updated_at, id);

CREATE TABLE messages (
    session_id      TEXT COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq             BIGINT  NOT NULL,
    role            TEXT    NOT NULL,
    content         TEXT    NOT NULL,
    tool_calls      JSON,
    token_count     BIGINT  NOT NULL,
    idempotency_key TEXT,
    complete        BOOLEAN NOT NULL,
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE UNIQUE INDEX messages_by_key ON messages (session_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
