-- Discounts attached to customers: the core's `CustomerDiscount` as JSON
-- (value, duration, end, description), applied by the invoice run to the
-- period closes it covers. Removing a discount deletes its row; invoices
-- already closed keep their discount lines.

CREATE TABLE customer_discounts (
    id          TEXT PRIMARY KEY NOT NULL,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    created_at  INTEGER NOT NULL,
    document    TEXT NOT NULL
);

CREATE INDEX customer_discounts_customer ON customer_discounts (customer_id, created_at, id);
