-- Per-minute samples of keel's counters (keel_session::HistoryStore), for the dashboard's
-- timeline: one row per source (a keel instance) and Unix minute; a put for the same source and
-- minute replaces the row. `sample` is a JSON object as text.
-- IF NOT EXISTS: applying it to a database that already has the table changes nothing.
CREATE TABLE IF NOT EXISTS metric_minutes (
    source TEXT    NOT NULL,
    minute INTEGER NOT NULL,
    sample TEXT    NOT NULL,
    PRIMARY KEY (source, minute)
);
-- Prunes delete by minute across sources.
CREATE INDEX IF NOT EXISTS metric_minutes_by_minute ON metric_minutes (minute);
