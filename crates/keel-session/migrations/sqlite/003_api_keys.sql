-- API keys (keel_session::KeyStore). Only the SHA-256 hash of a key's secret is kept, and the
-- secret's first characters (`prefix`) to recognise it in lists. A revoked key keeps its row with
-- `revoked_at` set; its name may then be given to a new key, so a name is unique among the keys
-- that are not revoked only. `scopes` is a JSON array of strings. Timestamps are unix milliseconds.
-- IF NOT EXISTS: applying it to a database that already has the table changes nothing.
CREATE TABLE IF NOT EXISTS api_keys (
    id                  INTEGER PRIMARY KEY,
    name                TEXT    NOT NULL,
    hash                BLOB    NOT NULL,
    prefix              TEXT    NOT NULL,
    scopes              TEXT    NOT NULL,
    requests_per_minute INTEGER,
    tokens_per_minute   INTEGER,
    priority            TEXT,
    created_at          INTEGER NOT NULL,
    revoked_at          INTEGER
);
-- Backs the uniqueness of active names, and serves `active_keys` (WHERE revoked_at IS NULL).
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;
