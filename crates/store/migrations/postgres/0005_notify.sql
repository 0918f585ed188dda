-- Alerts and their delivery (see docs/alerts.md).
--
-- `outbox_events` is the durable outbox: events are inserted in the same
-- transaction as the change that caused them (the ledger batch that crossed a
-- threshold), so an event exists if and only if its cause was committed.
-- `dedup_key` is unique: a second event with the same key is dropped (fire
-- once per customer, feature, period and threshold, also across restarts).
-- `object_seq` counts per `object_key` (assigned from `outbox_objects`).

CREATE TABLE outbox_events (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    event_type  TEXT NOT NULL,
    customer_id TEXT,
    object_key  TEXT NOT NULL,
    object_seq  BIGINT NOT NULL,
    dedup_key   TEXT UNIQUE,
    payload     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE INDEX outbox_events_customer ON outbox_events (customer_id, seq);
CREATE INDEX outbox_events_created ON outbox_events (created_at, seq);

CREATE TABLE outbox_objects (
    object_key TEXT PRIMARY KEY,
    last_seq   BIGINT NOT NULL
);

CREATE TABLE webhook_endpoints (
    id            TEXT PRIMARY KEY,
    url           TEXT NOT NULL,
    event_types   TEXT NOT NULL,
    enabled       BOOLEAN NOT NULL,
    secrets       TEXT NOT NULL,
    state         TEXT NOT NULL,
    failing_since BIGINT,
    description   TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE notify_deliveries (
    id               TEXT PRIMARY KEY,
    event_id         TEXT NOT NULL,
    target           TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    next_attempt_at  BIGINT,
    last_status      BIGINT,
    last_error       TEXT,
    last_duration_ms BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (event_id, target)
);

CREATE INDEX notify_deliveries_due ON notify_deliveries (state, next_attempt_at);
CREATE INDEX notify_deliveries_target ON notify_deliveries (target, created_at);

CREATE TABLE notify_attempts (
    delivery_id TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    status      BIGINT,
    error       TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

CREATE TABLE notify_cursor (
    id  BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
