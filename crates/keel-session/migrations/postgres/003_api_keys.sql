-- API keys (keel_session::KeyStore). Only the SHA-256 hash of a key's secret is kept, and the
-- secret's first characters (`prefix`) to recognise it in lists. A revoked key keeps its row with
-- `revoked_at` set; its name may then be given to a new key, so a name is unique among the keys
-- that are not revoked only. Timestamps are unix milliseconds. Names compare bytewise
-- (COLLATE "C") so list order matches the other backends.
-- IF NOT EXISTS: applying it to a schema that already has the table changes nothing.
CREATE TABLE IF NOT EXISTS api_keys (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                TEXT COLLATE "C" NOT NULL,
    hash                BYTEA  NOT NULL,
    prefix              TEXT   NOT NULL,
    scopes              TEXT[] NOT NULL,
    requests_per_minute BIGINT,
    tokens_per_minute   BIGINT,
    priority            TEXT,
    created_at          BIGINT NOT NULL,
    revoked_at          BIGINT
);
-- Backs the uniqueness of active names, and serves `active_keys` (WHERE revoked_at IS NULL).
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;
