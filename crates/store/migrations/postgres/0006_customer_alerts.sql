-- Per-customer alert settings and the billing worker's notice marks (see
-- docs/alerts.md).
--
-- `customer_alert_settings`: `upcoming_invoice_above` is the amount (decimal
-- TEXT, in the customer's currency) above which the projected upcoming invoice
-- fires `invoice.upcoming_above`; NULL = no threshold. The billing worker reads
-- only the rows with a threshold (the partial index).
--
-- `notice_marks`: what a time-driven notice has done up to (`usage.daily_summary`
-- → the last UTC day summarized), so a tick does not redo a finished day.

CREATE TABLE customer_alert_settings (
    customer_id            TEXT PRIMARY KEY REFERENCES customers (id),
    upcoming_invoice_above TEXT,
    updated_at             BIGINT NOT NULL
);

CREATE INDEX customer_alert_settings_upcoming ON customer_alert_settings (customer_id)
    WHERE upcoming_invoice_above IS NOT NULL;

CREATE TABLE notice_marks (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
