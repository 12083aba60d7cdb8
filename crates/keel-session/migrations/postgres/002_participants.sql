-- The agents and people attached to a session, at most one per name. `position` orders them as
-- they were first added; re-adding a name updates its row in place (ON CONFLICT … DO UPDATE).
-- They go with their session (ON DELETE CASCADE).
-- IF NOT EXISTS: applying it to a schema that already has the table changes nothing.
CREATE TABLE IF NOT EXISTS participants (
    session_id TEXT COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    name       TEXT COLLATE "C" NOT NULL,
    kind       TEXT   NOT NULL,
    role       TEXT   NOT NULL,
    added_at   BIGINT NOT NULL,
    position   BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (session_id, name)
);
