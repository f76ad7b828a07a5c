-- Where each projection stands, and the events it could not apply.
CREATE TABLE projection_checkpoints (
    projection   TEXT    PRIMARY KEY,
    position     BIGINT  NOT NULL,
    fingerprint  TEXT    NOT NULL,
    -- Bumped by every rebuild swap, so a runner knows its cached rows came from old tables.
    generation   BIGINT  NOT NULL,
    -- Wall-clock bookkeeping for operators; never part of a read model's answer.
    updated_at   TEXT    NOT NULL
);

CREATE TABLE projection_dead_letters (
    projection   TEXT    NOT NULL,
    position     BIGINT  NOT NULL,
    event_id     TEXT    NOT NULL,
    event_type   TEXT    NOT NULL,
    error        TEXT    NOT NULL,
    attempts     BIGINT  NOT NULL,
    status       TEXT    NOT NULL,
    recorded_at  TEXT    NOT NULL,
    PRIMARY KEY (projection, position)
);
