-- The agents and people attached to a session, at most one per name. `position` orders them as
-- they were first added (an INTEGER PRIMARY KEY, so VACUUM keeps its values); re-adding a name
-- updates its row in place. Deleted with their session by the store (no foreign keys here).
-- IF NOT EXISTS: applying it to a database that already has the table changes nothing.
CREATE TABLE IF NOT EXISTS participants (
    position   INTEGER PRIMARY KEY,
    session_id TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    added_at   INTEGER NOT NULL,
    UNIQUE (session_id, name)
);
