-- Discounts attached to customers: the core's `CustomerDiscount` as JSON
-- (value, duration, end, description), applied by the invoice run to the
-- period closes it covers. Removing a discount deletes its row; invoices
-- already closed keep their discount lines.

CREATE TABLE customer_discounts (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    created_at  BIGINT NOT NULL,
    document    TEXT NOT NULL
);

CREATE INDEX customer_discounts_customer ON customer_discounts (customer_id, created_at, id);

-- Answers of requests sent with an `Idempotency-Key` (a plan change), per
-- scope (`subscription_change:<customer>`): a repeat with the same key gets
-- the first answer and changes nothing. `request` is the request as JSON, to
-- refuse a key reused for another request.
CREATE TABLE idempotent_requests (
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    request    TEXT NOT NULL,
    response   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);

-- Refunds made through `POST /v1/invoices/{id}/refund` (the store's
-- `RefundRecord` as JSON): one per invoice and idempotency key, so a
-- retried request refunds once.
CREATE TABLE refunds (
    id              TEXT PRIMARY KEY,
    invoice_id      TEXT NOT NULL REFERENCES invoices (id),
    idempotency_key TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    document        TEXT NOT NULL,
    UNIQUE (invoice_id, idempotency_key)
);
