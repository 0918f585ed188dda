-- Tollgate storage schema, SQLite.
-- Conventions: timestamps are INTEGER microseconds since the Unix epoch (UTC);
-- quantities are decimal TEXT (summed exactly in Rust); JSON is TEXT.

CREATE TABLE customers (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT,
    email        TEXT,
    currency     TEXT NOT NULL,
    time_zone    TEXT NOT NULL,
    metadata     TEXT NOT NULL,
    admin_bypass INTEGER NOT NULL CHECK (admin_bypass IN (0, 1)),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    deleted_at   INTEGER
);

CREATE TABLE plan_versions (
    plan_key     TEXT NOT NULL,
    version      INTEGER NOT NULL,
    definition   TEXT NOT NULL,
    published_at INTEGER NOT NULL,
    PRIMARY KEY (plan_key, version)
);

CREATE TABLE subscriptions (
    customer_id   TEXT PRIMARY KEY NOT NULL REFERENCES customers (id),
    plan_key      TEXT NOT NULL,
    plan_version  INTEGER NOT NULL,
    status        TEXT NOT NULL,
    anchor        INTEGER NOT NULL,
    trial_ends_at INTEGER,
    canceled_at   INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE INDEX subscriptions_plan ON subscriptions (plan_key);

CREATE TABLE overrides (
    customer_id TEXT NOT NULL REFERENCES customers (id),
    feature     TEXT NOT NULL,
    entitlement TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (customer_id, feature)
);

CREATE TABLE grants (
    id           TEXT PRIMARY KEY NOT NULL,
    customer_id  TEXT NOT NULL REFERENCES customers (id),
    feature      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    quantity     TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    effective_at INTEGER NOT NULL,
    expires_at   INTEGER,
    voided_at    INTEGER,
    metadata     TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);

CREATE INDEX grants_customer ON grants (customer_id, feature);

-- The usage ledger: immutable, append-only. `seq` is assigned by the single
-- writer in commit order. No foreign key and no unique index on the
-- idempotency key: the engine enforces both in memory (see the crate docs), and
-- every index here is paid on every appended row.
--
-- `block` is `seq >> 13`: the ledger is cut into blocks of 8,192 consecutive
-- seqs. The per-customer index leads with the block, so a group commit only
-- touches the index pages of the current block (under a hundred pages) instead
-- of one page per active (customer, feature) anywhere in the whole index; a
-- query by customer probes each block whose zone map (usage_blocks) overlaps
-- its time range. The block size is fixed for the life of a database.
CREATE TABLE usage (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    block           INTEGER NOT NULL,
    customer_id     TEXT NOT NULL,
    feature         TEXT NOT NULL,
    quantity        TEXT NOT NULL,
    ts              INTEGER NOT NULL,
    recorded_at     INTEGER NOT NULL,
    source          TEXT NOT NULL,
    properties      TEXT NOT NULL,
    billable        INTEGER NOT NULL,
    idempotency_key TEXT,
    allocation      TEXT NOT NULL,
    answer          TEXT NOT NULL
);

CREATE INDEX usage_block_customer ON usage (block, customer_id, feature, ts);

-- Zone map: the event-time and recorded-time ranges of each block. Kept exact
-- or wider (never narrower) by the writer in the same transaction as the rows.
-- usage_recorded_since reads only the blocks whose max_recorded_at reaches the
-- window (recorded_at grows with seq, so these are the last few blocks) by seq
-- range: no index on recorded_at is needed.
CREATE TABLE usage_blocks (
    block           INTEGER PRIMARY KEY,
    min_ts          INTEGER NOT NULL,
    max_ts          INTEGER NOT NULL,
    min_recorded_at INTEGER NOT NULL,
    max_recorded_at INTEGER NOT NULL
);

CREATE TABLE reservations (
    id              TEXT PRIMARY KEY NOT NULL,
    customer_id     TEXT NOT NULL,
    feature         TEXT NOT NULL,
    quantity        TEXT NOT NULL,
    state           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    idempotency_key TEXT,
    properties      TEXT NOT NULL
);

CREATE INDEX reservations_open ON reservations (id) WHERE state = 'open';

-- The latest counter snapshot (replaced whole by each save).
CREATE TABLE counter_snapshots (
    customer_id  TEXT NOT NULL,
    feature      TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    window_end   INTEGER NOT NULL,
    used         TEXT NOT NULL,
    PRIMARY KEY (customer_id, feature, window_start, window_end)
);

CREATE TABLE snapshot_meta (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    as_of_seq INTEGER NOT NULL
);
