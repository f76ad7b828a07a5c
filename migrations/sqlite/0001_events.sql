-- The event log. `position` is the rowid: gap-free and strictly increasing because exactly one
-- writer (BEGIN IMMEDIATE) assigns it per transaction.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY,
    event_id        TEXT    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    stream          TEXT    NOT NULL,
    stream_version  INTEGER NOT NULL,
    idempotency_key TEXT    UNIQUE,
    correlation_id  TEXT,
    causation_id    TEXT,
    producer        TEXT,
    occurred_at     TEXT    NOT NULL,
    recorded_at     TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    UNIQUE (stream, stream_version)
);
