-- Plan changes: the history of a customer's plans (read by invoice runs to
-- split a period into plan segments), changes scheduled for later (downgrade
-- or cancellation at period end, trial expiry) and amounts waiting for the
-- customer's next invoice (proration lines).

CREATE TABLE plan_changes (
    id           TEXT PRIMARY KEY NOT NULL,
    customer_id  TEXT NOT NULL REFERENCES customers (id),
    kind         TEXT NOT NULL,
    from_plan    TEXT,
    from_version INTEGER,
    to_plan      TEXT NOT NULL,
    to_version   INTEGER NOT NULL,
    effective_at INTEGER NOT NULL,
    requested_at INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    reason       TEXT,
    details      TEXT NOT NULL
);

CREATE INDEX plan_changes_customer ON plan_changes (customer_id, effective_at, id);
CREATE INDEX plan_changes_effective ON plan_changes (effective_at, customer_id, id);

CREATE TABLE scheduled_changes (
    id           TEXT PRIMARY KEY NOT NULL,
    customer_id  TEXT NOT NULL REFERENCES customers (id),
    action       TEXT NOT NULL,
    to_plan      TEXT,
    to_version   INTEGER,
    effective_at INTEGER NOT NULL,
    state        TEXT NOT NULL,
    actor        TEXT NOT NULL,
    reason       TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

-- At most one pending change per customer.
CREATE UNIQUE INDEX scheduled_changes_one_pending ON scheduled_changes (customer_id)
    WHERE state = 'pending';
CREATE INDEX scheduled_changes_due ON scheduled_changes (effective_at, id)
    WHERE state = 'pending';

CREATE TABLE pending_items (
    id          TEXT PRIMARY KEY NOT NULL,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    line        TEXT NOT NULL,
    amount      TEXT NOT NULL,
    currency    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    invoice_id  TEXT
);

CREATE INDEX pending_items_customer ON pending_items (customer_id, created_at, id);
