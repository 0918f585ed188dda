-- Alerts and their delivery (see docs/alerts.md).
--
-- `outbox_events` is the durable outbox: events are inserted in the same
-- transaction as the change that caused them (the ledger batch that crossed a
-- threshold), so an event exists if and only if its cause was committed.
-- `dedup_key` is unique: a second event with the same key is dropped (fire
-- once per customer, feature, period and threshold, also across restarts).
-- `object_seq` counts per `object_key` (assigned from `outbox_objects`).

CREATE TABLE outbox_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    event_type  TEXT NOT NULL,
    customer_id TEXT,
    object_key  TEXT NOT NULL,
    object_seq  INTEGER NOT NULL,
    dedup_key   TEXT UNIQUE,
    payload     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE INDEX outbox_events_customer ON outbox_events (customer_id, seq);
CREATE INDEX outbox_events_created ON outbox_events (created_at, seq);

CREATE TABLE outbox_objects (
    object_key TEXT PRIMARY KEY NOT NULL,
    last_seq   INTEGER NOT NULL
);

CREATE TABLE webhook_endpoints (
    id            TEXT PRIMARY KEY NOT NULL,
    url           TEXT NOT NULL,
    event_types   TEXT NOT NULL,
    enabled       INTEGER NOT NULL,
    secrets       TEXT NOT NULL,
    state         TEXT NOT NULL,
    failing_since INTEGER,
    description   TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE notify_deliveries (
    id               TEXT PRIMARY KEY NOT NULL,
    event_id         TEXT NOT NULL,
    target           TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    next_attempt_at  INTEGER,
    last_status      INTEGER,
    last_error       TEXT,
    last_duration_ms INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (event_id, target)
);

CREATE INDEX notify_deliveries_due ON notify_deliveries (state, next_attempt_at);
CREATE INDEX notify_deliveries_target ON notify_deliveries (target, created_at);

CREATE TABLE notify_attempts (
    delivery_id TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

CREATE TABLE notify_cursor (
    id  INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq INTEGER NOT NULL
);
