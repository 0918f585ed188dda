//! Alerts, the outbox, webhook endpoints and the delivery log.
//!
//! CONTRACT shared by the engine (which writes alert events in the same
//! transaction as the ledger write that crossed a threshold:
//! [`crate::WriteOp::Outbox`]), and the delivery worker (which reads the
//! outbox, fans events out to endpoints and e-mail, and logs attempts).
//! Implemented for SQLite and PostgreSQL in `sqlite.rs` / `postgres.rs` beside
//! this file; reached from a `dyn Store` with [`crate::Store::notify`].

use async_trait::async_trait;
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Result;

pub(crate) mod postgres;
mod rows;
mod sql;
pub(crate) mod sqlite;

/// An event in the outbox. Written once; `dedup_key` makes "fire once per
/// customer, feature, period and threshold" hold even across restarts: a
/// second event with the same key is silently dropped by the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// `evt_…`, stable: the `webhook-id` of every delivery of this event.
    pub id: String,
    /// `usage.threshold_reached`, `usage.limit_exceeded`, `usage.denied`,
    /// `emergency.drawn`, `grant.exhausted`, `trial.ending`,
    /// `invoice.upcoming_above`, `invoice.issued`, `invoice.paid`,
    /// `invoice.overdue`, `subscription.changed`, …
    pub event_type: String,
    pub customer_id: Option<String>,
    /// The object the per-object sequence is counted on (`customer:acme`).
    pub object_key: String,
    /// Per `object_key`, strictly increasing; assigned by the store on insert
    /// (the value given is ignored).
    pub object_seq: i64,
    pub dedup_key: Option<String>,
    pub payload: serde_json::Value,
    pub created_at: Timestamp,
    /// Outbox order, assigned by the store (the value given is ignored).
    pub seq: i64,
}

/// Event types delivered only to the endpoints and e-mail lists that name
/// them exactly: an empty list ("every event") or a prefix (`usage.*`) does
/// not take them. `usage.daily_summary` is one a day per customer: nobody
/// gets it without asking for it.
pub const OPT_IN_EVENT_TYPES: &[&str] = &["usage.daily_summary"];

/// Whether a list of event types (an endpoint's `event_types`, the
/// configured `email_event_types`) takes `event_type`: an entry is an exact
/// type or a prefix ending in `*` (`usage.*`); an empty list takes every
/// type; except that an opt-in type ([`OPT_IN_EVENT_TYPES`]) is only taken by
/// an entry that names it exactly.
pub fn subscribed(patterns: &[String], event_type: &str) -> bool {
    if OPT_IN_EVENT_TYPES.contains(&event_type) {
        return patterns.iter().any(|p| p == event_type);
    }
    patterns.is_empty()
        || patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => event_type.starts_with(prefix),
            None => p == event_type,
        })
}

/// A customer's alert settings (`PUT /v1/customers/{id}/alert-settings`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertSettingsRecord {
    pub customer_id: String,
    /// `invoice.upcoming_above` fires when the projected upcoming invoice's
    /// total is above this amount (the customer's currency); `None` = never.
    pub upcoming_invoice_above: Option<Decimal>,
    pub updated_at: Timestamp,
}

/// A webhook endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// `whe_…`
    pub id: String,
    pub url: String,
    /// Event types delivered; empty = all but the opt-in ones ([`subscribed`]).
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Signing secrets `whsec_…` (base64 key); the first signs, all are
    /// included in `webhook-signature` during a rotation.
    pub secrets: Vec<String>,
    /// `healthy`, `failing`, `disabled` (disabled automatically after long failure).
    pub state: String,
    pub failing_since: Option<Timestamp>,
    pub description: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The endpoint state set after long failure: nothing is delivered to it.
pub const ENDPOINT_DISABLED: &str = "disabled";

impl EndpointRecord {
    /// Whether the endpoint receives deliveries now (enabled, not disabled
    /// after long failure).
    pub fn deliverable(&self) -> bool {
        self.enabled && self.state != ENDPOINT_DISABLED
    }

    /// Whether it receives deliveries of `event_type` now.
    pub fn receives(&self, event_type: &str) -> bool {
        self.deliverable() && subscribed(&self.event_types, event_type)
    }
}

/// One event to one endpoint (or e-mail recipient): its state and next try.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// `dlv_…`
    pub id: String,
    pub event_id: String,
    /// `webhook:<endpoint id>` or `email:<address>`.
    pub target: String,
    /// `pending`, `succeeded`, `failed` (gave up), `canceled`.
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: Option<Timestamp>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub last_duration_ms: Option<u64>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One HTTP (or SMTP) attempt, for the delivery log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub delivery_id: String,
    pub attempt: u32,
    pub at: Timestamp,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

#[async_trait]
pub trait NotifyStore: Send + Sync {
    /// Inserts events outside the hot path (invoice events, plan changes…);
    /// an event whose `dedup_key` exists is dropped. Returns the events
    /// actually inserted, with `seq` and `object_seq` assigned.
    async fn insert_events(&self, events: &[OutboxEvent]) -> Result<Vec<OutboxEvent>>;
    /// Events with `seq > after`, in order, at most `limit` (0 = no limit).
    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<OutboxEvent>>;
    /// A customer's events (its alerts), newest first, at most `limit`.
    async fn customer_events(&self, customer_id: &str, limit: u32) -> Result<Vec<OutboxEvent>>;
    async fn get_event(&self, id: &str) -> Result<Option<OutboxEvent>>;
    /// Events created in `[from, to)` (replay), in order.
    async fn events_between(&self, from: Timestamp, to: Timestamp) -> Result<Vec<OutboxEvent>>;

    async fn put_endpoint(&self, endpoint: &EndpointRecord) -> Result<()>;
    async fn get_endpoint(&self, id: &str) -> Result<Option<EndpointRecord>>;
    async fn endpoints(&self) -> Result<Vec<EndpointRecord>>;
    /// Whether it existed.
    async fn delete_endpoint(&self, id: &str) -> Result<bool>;

    /// Creates deliveries; one per (event, target): an existing pair is kept.
    async fn insert_deliveries(&self, deliveries: &[DeliveryRecord]) -> Result<()>;
    /// Replaces a delivery's state and appends its attempt, in one transaction.
    async fn record_attempt(
        &self,
        delivery: &DeliveryRecord,
        attempt: &AttemptRecord,
    ) -> Result<()>;
    /// `pending` deliveries with `next_attempt_at <= at`, oldest first, at most `limit`.
    async fn due_deliveries(&self, at: Timestamp, limit: u32) -> Result<Vec<DeliveryRecord>>;
    async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryRecord>>;
    /// Deliveries of an endpoint or event (filter by either), newest first.
    async fn deliveries(
        &self,
        target: Option<&str>,
        event_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>>;
    async fn attempts(&self, delivery_id: &str) -> Result<Vec<AttemptRecord>>;

    /// Creates or replaces a customer's alert settings.
    async fn put_alert_settings(&self, settings: &AlertSettingsRecord) -> Result<()>;
    async fn get_alert_settings(&self, customer_id: &str) -> Result<Option<AlertSettingsRecord>>;
    /// The settings with an `upcoming_invoice_above` amount (only those: an
    /// indexed read), by customer.
    async fn upcoming_invoice_thresholds(&self) -> Result<Vec<AlertSettingsRecord>>;

    /// A time-driven notice's mark (`usage.daily_summary` → the last day
    /// done), `None` at first.
    async fn notice_mark(&self, name: &str) -> Result<Option<String>>;
    async fn set_notice_mark(&self, name: &str, value: &str) -> Result<()>;

    /// The worker's cursor over the outbox (the last `seq` fanned out), 0 at first.
    async fn fanout_cursor(&self) -> Result<i64>;
    async fn set_fanout_cursor(&self, seq: i64) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::subscribed;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn opt_in_types_need_an_exact_entry() {
        let daily = "usage.daily_summary";
        assert!(subscribed(&[], "usage.threshold_reached"));
        assert!(!subscribed(&[], daily));
        assert!(subscribed(&list(&["usage.*"]), "usage.denied"));
        assert!(!subscribed(&list(&["usage.*"]), daily));
        assert!(!subscribed(&list(&["*"]), daily));
        assert!(subscribed(&list(&["invoice.paid", daily]), daily));
        assert!(!subscribed(&list(&[daily]), "usage.denied"));
    }
}
