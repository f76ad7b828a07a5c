-- The event log. Positions come from the one-row counter `event_log_head`, updated in the
-- append transaction: its row lock serialises appends, so positions commit in order and
-- without gaps (see eventlog's crate docs for why this and not a sequence).
CREATE TABLE events (
    position        BIGINT  PRIMARY KEY,
    event_id        UUID    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    stream          TEXT    NOT NULL,
    stream_version  BIGINT  NOT NULL,
    idempotency_key TEXT    UNIQUE,
    correlation_id  TEXT,
    causation_id    TEXT,
    producer        TEXT,
    occurred_at     TEXT    NOT NULL,
    recorded_at     TEXT    NOT NULL,
    payload         JSONB   NOT NULL,
    UNIQUE (stream, stream_version)
);

CREATE TABLE event_log_head (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    position  BIGINT  NOT NULL
);
INSERT INTO event_log_head (singleton, position) VALUES (TRUE, 0);
