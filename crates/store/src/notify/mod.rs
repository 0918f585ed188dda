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

/// A webhook endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// `whe_…`
    pub id: String,
    pub url: String,
    /// Event types delivered; empty = all.
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

    /// The worker's cursor over the outbox (the last `seq` fanned out), 0 at first.
    async fn fanout_cursor(&self) -> Result<i64>;
    async fn set_fanout_cursor(&self, seq: i64) -> Result<()>;
}
