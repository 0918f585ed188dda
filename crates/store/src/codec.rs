//! Conversions between the record types and their stored columns, shared by both
//! backends so that both store and read back exactly the same representation.
//!
//! Rows are first read into plain "raw" structs (strings and integers, decoded by
//! sqlx on either backend), then converted into records here. Any stored value
//! that does not parse is reported as [`StoreError::Corrupt`], never a panic.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{
    ApiKeyRecord, CatalogDocumentRecord, CatalogSource, CounterSnapshot, CustomerRecord,
    GrantRecord, NewUsageRecord, OverrideRecord, PlanVersionRecord, ReservationRecord,
    ReservationState, StoreError, SubscriptionRecord, SubscriptionStatus, UsageRecord, UsageSource,
};

/// Microseconds since the Unix epoch (sub-microsecond precision is dropped).
pub(crate) fn micros(ts: Timestamp) -> i64 {
    ts.as_microsecond()
}

pub(crate) fn opt_micros(ts: Option<Timestamp>) -> Option<i64> {
    ts.map(micros)
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}

pub(crate) fn timestamp(what: &str, us: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_microsecond(us)
        .map_err(|e| corrupt(what, format_args!("{us} is not a timestamp ({e})")))
}

fn opt_timestamp(what: &str, us: Option<i64>) -> Result<Option<Timestamp>, StoreError> {
    us.map(|v| timestamp(what, v)).transpose()
}

pub(crate) fn decimal(what: &str, s: &str) -> Result<Decimal, StoreError> {
    Decimal::from_str_exact(s)
        .map_err(|e| corrupt(what, format_args!("{s:?} is not a decimal ({e})")))
}

pub(crate) fn json<T: DeserializeOwned>(what: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| corrupt(what, format_args!("invalid JSON ({e})")))
}

/// Serializes a value the store writes as JSON text. The record types only hold
/// JSON values, strings and decimals, which always serialize.
pub(crate) fn to_json<T: Serialize>(what: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v)
        .map_err(|e| StoreError::Corrupt(format!("{what}: cannot serialize ({e})")))
}

/// Adds one row's allocation map into a running per-bucket sum.
pub(crate) fn add_allocation(
    sums: &mut BTreeMap<String, Decimal>,
    allocation: &str,
) -> Result<(), StoreError> {
    let map: BTreeMap<String, String> = json("usage.allocation", allocation)?;
    for (bucket, qty) in map {
        let q = decimal("usage.allocation", &qty)?;
        let slot = sums.entry(bucket).or_default();
        *slot = slot
            .checked_add(q)
            .ok_or_else(|| corrupt("usage.allocation", "sum overflows a decimal"))?;
    }
    Ok(())
}

/// Maps a database error from an insert to `Conflict` (duplicate key) or
/// `NotFound` (the referenced customer does not exist); other errors pass through.
pub(crate) fn insert_error(
    e: sqlx::Error,
    what: &'static str,
    id: &str,
    customer_id: &str,
) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation => {
                return StoreError::Conflict {
                    what,
                    id: id.to_string(),
                };
            }
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                return StoreError::NotFound {
                    what: "customer",
                    id: customer_id.to_string(),
                };
            }
            _ => {}
        }
    }
    StoreError::Database(e)
}

/// Refuses a snapshot holding two counters for the same (customer, feature,
/// window) with `Conflict`.
pub(crate) fn unique_counters(counters: &[CounterSnapshot]) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::with_capacity(counters.len());
    for c in counters {
        if !seen.insert((&c.customer_id, &c.feature, c.window_start, c.window_end)) {
            return Err(StoreError::Conflict {
                what: "counter snapshot",
                id: format!(
                    "{}/{}/{}..{}",
                    c.customer_id, c.feature, c.window_start, c.window_end
                ),
            });
        }
    }
    Ok(())
}

/// A list limit: 0 means none.
pub(crate) fn limit(limit: u32) -> Option<i64> {
    (limit > 0).then_some(i64::from(limit))
}

// ---- raw rows ----------------------------------------------------------------------

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawCustomer {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub currency: String,
    pub time_zone: String,
    pub metadata: String,
    pub admin_bypass: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

pub(crate) const CUSTOMER_COLUMNS: &str = "c.id, c.name, c.email, c.currency, c.time_zone, \
     c.metadata, c.admin_bypass, c.created_at, c.updated_at, c.deleted_at";

impl TryFrom<RawCustomer> for CustomerRecord {
    type Error = StoreError;
    fn try_from(r: RawCustomer) -> Result<Self, StoreError> {
        Ok(CustomerRecord {
            metadata: json("customers.metadata", &r.metadata)?,
            created_at: timestamp("customers.created_at", r.created_at)?,
            updated_at: timestamp("customers.updated_at", r.updated_at)?,
            deleted_at: opt_timestamp("customers.deleted_at", r.deleted_at)?,
            id: r.id,
            name: r.name,
            email: r.email,
            currency: r.currency,
            time_zone: r.time_zone,
            admin_bypass: r.admin_bypass,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawCatalogDocument {
    pub id: i64,
    pub source: String,
    pub name: String,
    pub fingerprint: String,
    pub document: String,
    pub applied_at: i64,
}

impl TryFrom<RawCatalogDocument> for CatalogDocumentRecord {
    type Error = StoreError;
    fn try_from(r: RawCatalogDocument) -> Result<Self, StoreError> {
        Ok(CatalogDocumentRecord {
            source: CatalogSource::parse(&r.source).ok_or_else(|| {
                corrupt("catalog_documents.source", format_args!("{:?}", r.source))
            })?,
            applied_at: timestamp("catalog_documents.applied_at", r.applied_at)?,
            id: r.id,
            name: r.name,
            fingerprint: r.fingerprint,
            document: r.document,
        })
    }
}

/// A plan version already published under `plan`'s key and version: the
/// same definition is a no-op, another one a `Conflict`.
pub(crate) fn same_definition(plan: &PlanVersionRecord, stored: &str) -> Result<(), StoreError> {
    let stored: serde_json::Value = json("plan_versions.definition", stored)?;
    if stored == plan.definition {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            what: "plan version",
            id: format!("{}@{}", plan.plan_key, plan.version),
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawPlanVersion {
    pub plan_key: String,
    pub version: i64,
    pub definition: String,
    pub published_at: i64,
}

impl TryFrom<RawPlanVersion> for PlanVersionRecord {
    type Error = StoreError;
    fn try_from(r: RawPlanVersion) -> Result<Self, StoreError> {
        Ok(PlanVersionRecord {
            version: u32::try_from(r.version)
                .map_err(|_| corrupt("plan_versions.version", r.version))?,
            definition: json("plan_versions.definition", &r.definition)?,
            published_at: timestamp("plan_versions.published_at", r.published_at)?,
            plan_key: r.plan_key,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawSubscription {
    pub customer_id: String,
    pub plan_key: String,
    pub plan_version: i64,
    pub status: String,
    pub anchor: i64,
    pub trial_ends_at: Option<i64>,
    pub canceled_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub(crate) const SUBSCRIPTION_COLUMNS: &str = "customer_id, plan_key, plan_version, status, \
     anchor, trial_ends_at, canceled_at, created_at, updated_at";

impl TryFrom<RawSubscription> for SubscriptionRecord {
    type Error = StoreError;
    fn try_from(r: RawSubscription) -> Result<Self, StoreError> {
        Ok(SubscriptionRecord {
            plan_version: u32::try_from(r.plan_version)
                .map_err(|_| corrupt("subscriptions.plan_version", r.plan_version))?,
            status: SubscriptionStatus::parse(&r.status)
                .ok_or_else(|| corrupt("subscriptions.status", format_args!("{:?}", r.status)))?,
            anchor: timestamp("subscriptions.anchor", r.anchor)?,
            trial_ends_at: opt_timestamp("subscriptions.trial_ends_at", r.trial_ends_at)?,
            canceled_at: opt_timestamp("subscriptions.canceled_at", r.canceled_at)?,
            created_at: timestamp("subscriptions.created_at", r.created_at)?,
            updated_at: timestamp("subscriptions.updated_at", r.updated_at)?,
            customer_id: r.customer_id,
            plan_key: r.plan_key,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawOverride {
    pub customer_id: String,
    pub feature: String,
    pub entitlement: String,
    pub updated_at: i64,
}

impl TryFrom<RawOverride> for OverrideRecord {
    type Error = StoreError;
    fn try_from(r: RawOverride) -> Result<Self, StoreError> {
        Ok(OverrideRecord {
            entitlement: json("overrides.entitlement", &r.entitlement)?,
            updated_at: timestamp("overrides.updated_at", r.updated_at)?,
            customer_id: r.customer_id,
            feature: r.feature,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawGrant {
    pub id: String,
    pub customer_id: String,
    pub feature: String,
    pub kind: String,
    pub quantity: String,
    pub priority: i32,
    pub effective_at: i64,
    pub expires_at: Option<i64>,
    pub voided_at: Option<i64>,
    pub metadata: String,
    pub created_at: i64,
}

pub(crate) const GRANT_COLUMNS: &str = "id, customer_id, feature, kind, quantity, priority, \
     effective_at, expires_at, voided_at, metadata, created_at";

impl TryFrom<RawGrant> for GrantRecord {
    type Error = StoreError;
    fn try_from(r: RawGrant) -> Result<Self, StoreError> {
        Ok(GrantRecord {
            quantity: decimal("grants.quantity", &r.quantity)?,
            effective_at: timestamp("grants.effective_at", r.effective_at)?,
            expires_at: opt_timestamp("grants.expires_at", r.expires_at)?,
            voided_at: opt_timestamp("grants.voided_at", r.voided_at)?,
            metadata: json("grants.metadata", &r.metadata)?,
            created_at: timestamp("grants.created_at", r.created_at)?,
            id: r.id,
            customer_id: r.customer_id,
            feature: r.feature,
            kind: r.kind,
            priority: r.priority,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawUsage {
    pub seq: i64,
    pub customer_id: String,
    pub feature: String,
    pub quantity: String,
    pub ts: i64,
    pub recorded_at: i64,
    pub source: String,
    pub properties: String,
    pub billable: bool,
    pub idempotency_key: Option<String>,
    pub allocation: String,
    pub answer: String,
}

pub(crate) const USAGE_COLUMNS: &str = "seq, customer_id, feature, quantity, ts, recorded_at, \
     source, properties, billable, idempotency_key, allocation, answer";

impl TryFrom<RawUsage> for UsageRecord {
    type Error = StoreError;
    fn try_from(r: RawUsage) -> Result<Self, StoreError> {
        Ok(UsageRecord {
            seq: r.seq,
            record: NewUsageRecord {
                quantity: decimal("usage.quantity", &r.quantity)?,
                timestamp: timestamp("usage.ts", r.ts)?,
                recorded_at: timestamp("usage.recorded_at", r.recorded_at)?,
                source: UsageSource::parse(&r.source)
                    .ok_or_else(|| corrupt("usage.source", format_args!("{:?}", r.source)))?,
                properties: json("usage.properties", &r.properties)?,
                allocation: {
                    let raw: BTreeMap<String, String> = json("usage.allocation", &r.allocation)?;
                    raw.iter()
                        .map(|(k, v)| Ok((k.clone(), decimal("usage.allocation", v)?)))
                        .collect::<Result<_, StoreError>>()?
                },
                answer: json("usage.answer", &r.answer)?,
                customer_id: r.customer_id,
                feature: r.feature,
                billable: r.billable,
                idempotency_key: r.idempotency_key,
            },
        })
    }
}

/// A usage record's columns, ready to bind (everything but `seq`).
#[derive(Debug)]
pub(crate) struct UsageColumns {
    pub customer_id: String,
    pub feature: String,
    pub quantity: String,
    pub ts: i64,
    pub recorded_at: i64,
    pub source: &'static str,
    pub properties: String,
    pub billable: bool,
    pub idempotency_key: Option<String>,
    pub allocation: String,
    pub answer: String,
}

impl UsageColumns {
    pub(crate) fn new(r: &NewUsageRecord) -> Result<Self, StoreError> {
        Ok(UsageColumns {
            customer_id: r.customer_id.clone(),
            feature: r.feature.clone(),
            quantity: r.quantity.to_string(),
            ts: micros(r.timestamp),
            recorded_at: micros(r.recorded_at),
            source: r.source.as_str(),
            properties: to_json("usage.properties", &r.properties)?,
            billable: r.billable,
            idempotency_key: r.idempotency_key.clone(),
            allocation: to_json("usage.allocation", &r.allocation)?,
            answer: to_json("usage.answer", &r.answer)?,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawReservation {
    pub id: String,
    pub customer_id: String,
    pub feature: String,
    pub quantity: String,
    pub state: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub idempotency_key: Option<String>,
    pub properties: String,
}

pub(crate) const RESERVATION_COLUMNS: &str = "id, customer_id, feature, quantity, state, \
     created_at, expires_at, idempotency_key, properties";

impl TryFrom<RawReservation> for ReservationRecord {
    type Error = StoreError;
    fn try_from(r: RawReservation) -> Result<Self, StoreError> {
        Ok(ReservationRecord {
            quantity: decimal("reservations.quantity", &r.quantity)?,
            state: ReservationState::parse(&r.state)
                .ok_or_else(|| corrupt("reservations.state", format_args!("{:?}", r.state)))?,
            created_at: timestamp("reservations.created_at", r.created_at)?,
            expires_at: timestamp("reservations.expires_at", r.expires_at)?,
            properties: json("reservations.properties", &r.properties)?,
            id: r.id,
            customer_id: r.customer_id,
            feature: r.feature,
            idempotency_key: r.idempotency_key,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawSnapshot {
    pub customer_id: String,
    pub feature: String,
    pub window_start: i64,
    pub window_end: i64,
    pub used: String,
}

impl TryFrom<RawSnapshot> for CounterSnapshot {
    type Error = StoreError;
    fn try_from(r: RawSnapshot) -> Result<Self, StoreError> {
        let raw: BTreeMap<String, String> = json("counter_snapshots.used", &r.used)?;
        Ok(CounterSnapshot {
            window_start: timestamp("counter_snapshots.window_start", r.window_start)?,
            window_end: timestamp("counter_snapshots.window_end", r.window_end)?,
            used: raw
                .iter()
                .map(|(k, v)| Ok((k.clone(), decimal("counter_snapshots.used", v)?)))
                .collect::<Result<_, StoreError>>()?,
            customer_id: r.customer_id,
            feature: r.feature,
        })
    }
}

/// Converts a batch of raw rows, failing on the first corrupt one.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RawApiKey {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub customer_id: Option<String>,
    pub digest: String,
    pub prefix: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

pub(crate) const API_KEY_COLUMNS: &str =
    "id, name, scope, customer_id, digest, prefix, created_at, revoked_at";

impl TryFrom<RawApiKey> for ApiKeyRecord {
    type Error = StoreError;
    fn try_from(r: RawApiKey) -> Result<Self, StoreError> {
        Ok(ApiKeyRecord {
            created_at: timestamp("api_keys.created_at", r.created_at)?,
            revoked_at: opt_timestamp("api_keys.revoked_at", r.revoked_at)?,
            id: r.id,
            name: r.name,
            scope: r.scope,
            customer_id: r.customer_id,
            digest: r.digest,
            prefix: r.prefix,
        })
    }
}

pub(crate) fn convert<R, T>(rows: Vec<R>) -> Result<Vec<T>, StoreError>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}
