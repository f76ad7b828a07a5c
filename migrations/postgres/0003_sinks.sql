-- Sinks: where each sink stands, the events it could not deliver, and the action logs the
-- action-log sink writes (with the event ids folded into them, which make delivery exact).

CREATE TABLE sink_checkpoints (
    sink         TEXT    PRIMARY KEY,
    -- Last position delivered (or skipped as unwanted, or dead-lettered).
    position     BIGINT  NOT NULL,
    -- Wall-clock bookkeeping for operators.
    updated_at   TEXT    NOT NULL
);

CREATE TABLE sink_dead_letters (
    sink         TEXT    NOT NULL,
    position     BIGINT  NOT NULL,
    event_id     TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    error        TEXT    NOT NULL,
    attempts     BIGINT  NOT NULL,
    -- 'dead' until a replay delivers it, then 'replayed'.
    status       TEXT    NOT NULL,
    recorded_at  TEXT    NOT NULL,
    PRIMARY KEY (sink, position)
);

CREATE TABLE action_logs (
    -- 'al_' + the first event's id (or a deterministic key for health findings).
    action_log_id          TEXT    PRIMARY KEY,
    kind                   TEXT    NOT NULL,
    severity               TEXT    NOT NULL,
    title                  TEXT    NOT NULL,
    subject                TEXT    NOT NULL,
    -- Rendered from templates/<kind>.hbs with the latest event folded in.
    instructions           TEXT    NOT NULL,
    event_id               TEXT    NOT NULL,
    position               BIGINT  NOT NULL,
    last_event_id          TEXT    NOT NULL,
    -- The position of the latest event folded into this row: readers that tail action logs
    -- (the CloudWatch log sink) order by it.
    last_position          BIGINT  NOT NULL,
    first_occurred_at      TEXT    NOT NULL,
    last_occurred_at       TEXT    NOT NULL,
    correlation_id         TEXT,
    occurrences            BIGINT  NOT NULL,
    acknowledged           BIGINT  NOT NULL DEFAULT 0,
    acknowledged_by        TEXT,
    ack_note               TEXT,
    acknowledged_position  BIGINT,
    -- The template's input, as JSON.
    context                TEXT    NOT NULL
);

CREATE INDEX action_logs_by_last_position ON action_logs (last_position);
CREATE INDEX action_logs_by_kind_subject ON action_logs (kind, subject, last_position);

-- One row per event (or health finding) folded into an action log: the primary key makes a
-- re-delivery of the same event a no-op, in the same transaction as the action-log write.
CREATE TABLE action_log_events (
    event_id       TEXT    PRIMARY KEY,
    action_log_id  TEXT    NOT NULL,
    position       BIGINT  NOT NULL
);
