//! Stored rows of the notify tables and their conversions, shared by both
//! backends (same columns, same representation: BIGINT microseconds, JSON text).

use crate::StoreError;
use crate::codec::{decimal, json, timestamp};

use super::{AlertSettingsRecord, AttemptRecord, DeliveryRecord, EndpointRecord, OutboxEvent};

/// A stored integer as the record's integer type.
fn int<T: TryFrom<i64>>(what: &str, v: i64) -> Result<T, StoreError> {
    T::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what}: {v} is out of range")))
}

fn opt_int<T: TryFrom<i64>>(what: &str, v: Option<i64>) -> Result<Option<T>, StoreError> {
    v.map(|v| int(what, v)).transpose()
}

fn opt_timestamp(what: &str, us: Option<i64>) -> Result<Option<jiff::Timestamp>, StoreError> {
    us.map(|v| timestamp(what, v)).transpose()
}

pub(crate) const EVENT_COLUMNS: &str =
    "seq, id, event_type, customer_id, object_key, object_seq, dedup_key, payload, created_at";

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawEvent {
    pub seq: i64,
    pub id: String,
    pub event_type: String,
    pub customer_id: Option<String>,
    pub object_key: String,
    pub object_seq: i64,
    pub dedup_key: Option<String>,
    pub payload: String,
    pub created_at: i64,
}

impl TryFrom<RawEvent> for OutboxEvent {
    type Error = StoreError;
    fn try_from(r: RawEvent) -> Result<Self, StoreError> {
        Ok(OutboxEvent {
            payload: json("outbox_events.payload", &r.payload)?,
            created_at: timestamp("outbox_events.created_at", r.created_at)?,
            id: r.id,
            event_type: r.event_type,
            customer_id: r.customer_id,
            object_key: r.object_key,
            object_seq: r.object_seq,
            dedup_key: r.dedup_key,
            seq: r.seq,
        })
    }
}

pub(crate) const ENDPOINT_COLUMNS: &str = "id, url, event_types, enabled, secrets, state, \
     failing_since, description, created_at, updated_at";

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawEndpoint {
    pub id: String,
    pub url: String,
    pub event_types: String,
    pub enabled: bool,
    pub secrets: String,
    pub state: String,
    pub failing_since: Option<i64>,
    pub description: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TryFrom<RawEndpoint> for EndpointRecord {
    type Error = StoreError;
    fn try_from(r: RawEndpoint) -> Result<Self, StoreError> {
        Ok(EndpointRecord {
            event_types: json("webhook_endpoints.event_types", &r.event_types)?,
            secrets: json("webhook_endpoints.secrets", &r.secrets)?,
            failing_since: opt_timestamp("webhook_endpoints.failing_since", r.failing_since)?,
            created_at: timestamp("webhook_endpoints.created_at", r.created_at)?,
            updated_at: timestamp("webhook_endpoints.updated_at", r.updated_at)?,
            id: r.id,
            url: r.url,
            enabled: r.enabled,
            state: r.state,
            description: r.description,
        })
    }
}

pub(crate) const DELIVERY_COLUMNS: &str = "id, event_id, target, state, attempts, \
     next_attempt_at, last_status, last_error, last_duration_ms, created_at, updated_at";

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawDelivery {
    pub id: String,
    pub event_id: String,
    pub target: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub last_duration_ms: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TryFrom<RawDelivery> for DeliveryRecord {
    type Error = StoreError;
    fn try_from(r: RawDelivery) -> Result<Self, StoreError> {
        Ok(DeliveryRecord {
            attempts: int("notify_deliveries.attempts", r.attempts)?,
            next_attempt_at: opt_timestamp("notify_deliveries.next_attempt_at", r.next_attempt_at)?,
            last_status: opt_int("notify_deliveries.last_status", r.last_status)?,
            last_duration_ms: opt_int("notify_deliveries.last_duration_ms", r.last_duration_ms)?,
            created_at: timestamp("notify_deliveries.created_at", r.created_at)?,
            updated_at: timestamp("notify_deliveries.updated_at", r.updated_at)?,
            id: r.id,
            event_id: r.event_id,
            target: r.target,
            state: r.state,
            last_error: r.last_error,
        })
    }
}

pub(crate) const ATTEMPT_COLUMNS: &str = "delivery_id, attempt, at, status, error, duration_ms";

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawAttempt {
    pub delivery_id: String,
    pub attempt: i64,
    pub at: i64,
    pub status: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

impl TryFrom<RawAttempt> for AttemptRecord {
    type Error = StoreError;
    fn try_from(r: RawAttempt) -> Result<Self, StoreError> {
        Ok(AttemptRecord {
            attempt: int("notify_attempts.attempt", r.attempt)?,
            at: timestamp("notify_attempts.at", r.at)?,
            status: opt_int("notify_attempts.status", r.status)?,
            duration_ms: int("notify_attempts.duration_ms", r.duration_ms)?,
            delivery_id: r.delivery_id,
            error: r.error,
        })
    }
}

/// A `u64` as a BIGINT (saturating: durations never get near it).
pub(crate) fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) const SETTINGS_COLUMNS: &str = "customer_id, upcoming_invoice_above, updated_at";

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawAlertSettings {
    pub customer_id: String,
    pub upcoming_invoice_above: Option<String>,
    pub updated_at: i64,
}

impl TryFrom<RawAlertSettings> for AlertSettingsRecord {
    type Error = StoreError;
    fn try_from(r: RawAlertSettings) -> Result<Self, StoreError> {
        Ok(AlertSettingsRecord {
            upcoming_invoice_above: r
                .upcoming_invoice_above
                .map(|a| decimal("customer_alert_settings.upcoming_invoice_above", &a))
                .transpose()?,
            updated_at: timestamp("customer_alert_settings.updated_at", r.updated_at)?,
            customer_id: r.customer_id,
        })
    }
}
