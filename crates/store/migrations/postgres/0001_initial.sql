-- Tollgate storage schema, PostgreSQL. Same semantics as the SQLite schema:
-- timestamps are BIGINT microseconds since the Unix epoch (UTC); quantities are
-- decimal TEXT (summed exactly in Rust, as on SQLite); JSON is TEXT (stored
-- byte-for-byte as the engine wrote it, as on SQLite).

CREATE TABLE customers (
    id           TEXT PRIMARY KEY,
    name         TEXT,
    email        TEXT,
    currency     TEXT NOT NULL,
    time_zone    TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    admin_bypass BOOLEAN NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    deleted_at   BIGINT
);

CREATE TABLE plan_versions (
    plan_key     TEXT NOT NULL,
    version      BIGINT NOT NULL,
    definition   TEXT NOT NULL,
    published_at BIGINT NOT NULL,
    PRIMARY KEY (plan_key, version)
);

CREATE TABLE subscriptions (
    customer_id   TEXT PRIMARY KEY REFERENCES customers (id),
    plan_key      TEXT NOT NULL,
    plan_version  BIGINT NOT NULL,
    status        TEXT NOT NULL,
    anchor        BIGINT NOT NULL,
    trial_ends_at BIGINT,
    canceled_at   BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE INDEX subscriptions_plan ON subscriptions (plan_key);

CREATE TABLE overrides (
    customer_id TEXT NOT NULL REFERENCES customers (id),
    feature     TEXT NOT NULL,
    entitlement TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (customer_id, feature)
);

CREATE TABLE grants (
    id           TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL REFERENCES customers (id),
    feature      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    quantity     TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    effective_at BIGINT NOT NULL,
    expires_at   BIGINT,
    voided_at    BIGINT,
    metadata     TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

CREATE INDEX grants_customer ON grants (customer_id, feature);

-- The usage ledger: immutable, append-only. `seq` comes from the sequence in
-- insertion order; one writer per deployment commits batches, so sequence order
-- is commit order (see the crate docs). No foreign key and no unique index on
-- the idempotency key: the engine enforces both in memory.
CREATE TABLE usage (
    seq             BIGSERIAL PRIMARY KEY,
    customer_id     TEXT NOT NULL,
    feature         TEXT NOT NULL,
    quantity        TEXT NOT NULL,
    ts              BIGINT NOT NULL,
    recorded_at     BIGINT NOT NULL,
    source          TEXT NOT NULL,
    properties      TEXT NOT NULL,
    billable        BOOLEAN NOT NULL,
    idempotency_key TEXT,
    allocation      TEXT NOT NULL,
    answer          TEXT NOT NULL
);

CREATE INDEX usage_customer_feature_ts ON usage (customer_id, feature, ts);
CREATE INDEX usage_recorded_at ON usage (recorded_at);

CREATE TABLE reservations (
    id              TEXT PRIMARY KEY,
    customer_id     TEXT NOT NULL,
    feature         TEXT NOT NULL,
    quantity        TEXT NOT NULL,
    state           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    idempotency_key TEXT,
    properties      TEXT NOT NULL
);

CREATE INDEX reservations_open ON reservations (id) WHERE state = 'open';

CREATE TABLE counter_snapshots (
    customer_id  TEXT NOT NULL,
    feature      TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    window_end   BIGINT NOT NULL,
    used         TEXT NOT NULL,
    PRIMARY KEY (customer_id, feature, window_start, window_end)
);

CREATE TABLE snapshot_meta (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    as_of_seq BIGINT NOT NULL
);
