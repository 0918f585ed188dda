-- Billing: invoices, gapless document numbers, payments, credit notes and
-- processed provider webhook events. Documents (invoices, credit notes) are the
-- core crate's JSON, stored as TEXT next to the columns that are filtered on.

CREATE TABLE invoices (
    id            TEXT PRIMARY KEY NOT NULL,
    customer_id   TEXT NOT NULL REFERENCES customers (id),
    -- `cycle` (one per customer and billing period) or `off_cycle`.
    kind          TEXT NOT NULL,
    status        TEXT NOT NULL,
    number        TEXT UNIQUE,
    currency      TEXT NOT NULL,
    period_start  INTEGER NOT NULL,
    period_end    INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    -- JSON array of the pending item ids whose lines the invoice carries.
    pending_items TEXT NOT NULL,
    document      TEXT NOT NULL
);

-- One cycle invoice per customer and period: a rerun of a period close finds
-- the invoice of the first run instead of writing a second one.
CREATE UNIQUE INDEX invoices_cycle ON invoices (customer_id, period_start) WHERE kind = 'cycle';
CREATE INDEX invoices_period ON invoices (period_start);
CREATE INDEX invoices_status ON invoices (status, id);

-- The last number handed out per prefix (invoices and credit notes alike).
-- Incremented in the same transaction as the document it numbers.
CREATE TABLE document_numbers (
    prefix      TEXT PRIMARY KEY NOT NULL,
    last_number INTEGER NOT NULL
);

CREATE TABLE payments (
    id          TEXT PRIMARY KEY NOT NULL,
    invoice_id  TEXT NOT NULL REFERENCES invoices (id),
    provider    TEXT NOT NULL,
    reference   TEXT NOT NULL,
    amount      TEXT NOT NULL,
    currency    TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    metadata    TEXT NOT NULL,
    UNIQUE (provider, reference)
);

CREATE INDEX payments_invoice ON payments (invoice_id, received_at);

CREATE TABLE credit_notes (
    id          TEXT PRIMARY KEY NOT NULL,
    number      TEXT NOT NULL UNIQUE,
    invoice_id  TEXT NOT NULL REFERENCES invoices (id),
    customer_id TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    document    TEXT NOT NULL
);

CREATE INDEX credit_notes_invoice ON credit_notes (invoice_id, created_at);

CREATE TABLE provider_events (
    provider    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (provider, event_id)
);
