//! Tollgate's storage layer: one [`Store`] trait, two real implementations.
//!
//! - [`sqlite::SqliteStore`]: the embedded default (one file, WAL, one writer).
//! - [`postgres::PgStore`]: the shared store for several nodes.
//!
//! The same behavioural suite (`tests/behaviour.rs`) runs against both.
//!
//! Conventions, identical on both backends so that behaviour is identical:
//! - timestamps are stored as BIGINT microseconds since the Unix epoch (UTC);
//!   sub-microsecond precision is dropped on write;
//! - quantities are stored as decimal TEXT (exact; sums are done in Rust, never
//!   by the database's floating point);
//! - JSON (properties, metadata, overrides, allocations) is stored as TEXT.
//!
//! The store holds no business rules: it persists and reads back what the engine
//! decided. Every write the hot path makes goes through [`Store::append_batch`],
//! one transaction per group commit.
//!
//! More conventions of every implementation:
//! - a `limit` of 0 means "no limit";
//! - lists come back in a stable order (ids compared byte-wise, ledger records by
//!   sequence);
//! - a row that references a customer (subscription, override, grant) is refused
//!   with `NotFound { what: "customer" }` if the customer does not exist; the
//!   ledger and reservations carry no such check (hot path: the engine only
//!   writes them for customers it knows);
//! - the ledger has no unique index on idempotency keys: the engine enforces
//!   idempotency in memory over a window rebuilt with
//!   [`Store::usage_recorded_since`];
//! - a stored value that does not parse is reported as [`StoreError::Corrupt`].
//!
//! A store is opened without touching its schema: call [`Store::migrate`] once
//! after [`connect`] (it is idempotent).

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub mod billing;
mod catalog;
pub mod changes;
mod codec;
pub mod notify;
pub mod postgres;
pub mod sqlite;

/// Errors from a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{what} {id:?} already exists")]
    Conflict { what: &'static str, id: String },
    /// A write the store's rules refuse (a payment above the amount due, a
    /// credit above the invoice total…); nothing was written.
    #[error("refused: {0}")]
    Refused(String),
    /// The SQLite ledger thread failed (its connection, or the fsync of the
    /// WAL: see `sqlite::ledger`).
    #[error("ledger write failed: {0}")]
    Ledger(String),
    #[error(
        "invalid storage URL {0:?}: expected sqlite://PATH[?synchronous=full|normal] or postgres://…"
    )]
    InvalidUrl(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Ledger(e.to_string())
    }
}

/// A batch written by [`Store::append_batch_written`] and its seqs; durable
/// once `durable` resolves (`None`: durable already).
#[derive(Debug)]
pub struct Written {
    pub seqs: Vec<i64>,
    pub durable: Option<Durable>,
}

/// Resolves once a written batch is durable: a promise completed by the
/// store's fsync thread, which runs the callback given to
/// [`Durable::on_durable`] itself (no task in between). There is no failed
/// outcome: a failed fsync aborts the process (see `sqlite::ledger`).
pub struct Durable(std::sync::Arc<std::sync::Mutex<DurableSlot>>);

#[derive(Default)]
struct DurableSlot {
    done: bool,
    then: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("done", &self.slot().done)
            .finish_non_exhaustive()
    }
}

impl Durable {
    pub(crate) fn pending() -> Durable {
        Durable(std::sync::Arc::default())
    }

    /// Another handle on the same promise (for the store side).
    pub(crate) fn handle(&self) -> Durable {
        Durable(self.0.clone())
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, DurableSlot> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Completes the promise (the store side): runs the callback if one is
    /// registered, else marks it done for the callback to come.
    pub(crate) fn complete(&self) {
        let then = {
            let mut slot = self.slot();
            slot.done = true;
            slot.then.take()
        };
        if let Some(f) = then {
            f();
        }
    }

    /// Runs `f` once the batch is durable: at once if it already is, else on
    /// the thread that completes it (keep `f` short: answer waiters). If the
    /// store stops before, `f` is dropped without running.
    pub fn on_durable(self, f: impl FnOnce() + Send + 'static) {
        {
            let mut slot = self.slot();
            if !slot.done {
                slot.then = Some(Box::new(f));
                return;
            }
        }
        f();
    }

    /// Waits for the fsync that covers the batch.
    pub async fn wait(self) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.on_durable(move || {
            let _ = tx.send(());
        });
        rx.await.map_err(|_| Durable::stopped())
    }

    /// [`Durable::wait`] from a thread outside the runtime.
    pub(crate) fn blocking_wait(self) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.on_durable(move || {
            let _ = tx.send(());
        });
        rx.recv().map_err(|_| Durable::stopped())
    }

    fn stopped() -> StoreError {
        StoreError::Ledger("the fsync thread has stopped".into())
    }
}

/// A customer of the host application, addressed by the host's own id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerRecord {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// ISO-4217 code.
    pub currency: String,
    /// IANA time zone name (periods are computed in it).
    pub time_zone: String,
    pub metadata: serde_json::Value,
    /// Lifts every limit but still records usage.
    pub admin_bypass: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Soft delete: the customer is hidden and refused, its usage and invoices stay.
    pub deleted_at: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Trialing,
    Active,
    PastDue,
    Canceled,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::PastDue => "past_due",
            SubscriptionStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<SubscriptionStatus> {
        Some(match s {
            "trialing" => SubscriptionStatus::Trialing,
            "active" => SubscriptionStatus::Active,
            "past_due" => SubscriptionStatus::PastDue,
            "canceled" => SubscriptionStatus::Canceled,
            _ => return None,
        })
    }
}

/// A customer's subscription (one per customer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub customer_id: String,
    pub plan_key: String,
    pub plan_version: u32,
    pub status: SubscriptionStatus,
    /// Billing periods are computed from this instant (anniversary) or from the
    /// calendar (see the plan's anchoring).
    pub anchor: Timestamp,
    pub trial_ends_at: Option<Timestamp>,
    pub canceled_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A published plan version: the catalog's plan as JSON, frozen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanVersionRecord {
    pub plan_key: String,
    pub version: u32,
    /// The plan, serialized by the core crate (opaque to the store).
    pub definition: serde_json::Value,
    pub published_at: Timestamp,
}

/// Where a served catalog document came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogSource {
    /// The catalog file given to `tollgate serve`.
    File,
    /// `PUT /v1/catalog` (or `tollgate plans apply`).
    Api,
}

impl CatalogSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CatalogSource::File => "file",
            CatalogSource::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Option<CatalogSource> {
        match s {
            "file" => Some(CatalogSource::File),
            "api" => Some(CatalogSource::Api),
            _ => None,
        }
    }
}

/// A catalog document the server served (TOML text, as given), recorded when
/// it began to be served. Immutable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogDocumentRecord {
    /// Ascending in recording order (assigned by the store; ignored on insert).
    pub id: i64,
    pub source: CatalogSource,
    /// The file name, or the name the API caller gave.
    pub name: String,
    /// SHA-256 of `document`, hex.
    pub fingerprint: String,
    pub document: String,
    pub applied_at: Timestamp,
}

/// A per-customer override of one feature's entitlement (the entitlement as JSON,
/// in the core crate's serialized form; opaque to the store).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OverrideRecord {
    pub customer_id: String,
    pub feature: String,
    pub entitlement: serde_json::Value,
    pub updated_at: Timestamp,
}

/// A grant of extra units: emergency pool, top-up, promotional credit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// `grt_…`
    pub id: String,
    pub customer_id: String,
    pub feature: String,
    /// `emergency`, `top_up` or `promotional`.
    pub kind: String,
    pub quantity: Decimal,
    /// Lower numbers burn first.
    pub priority: i32,
    pub effective_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub voided_at: Option<Timestamp>,
    pub metadata: serde_json::Value,
    pub created_at: Timestamp,
}

/// An API key of the HTTP server. The secret itself is never stored: only its
/// SHA-256 digest (hex) and its first characters (`prefix`), to recognise it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// `key_…`
    pub id: String,
    pub name: String,
    /// `admin`, `server` or `customer` (opaque to the store).
    pub scope: String,
    /// The one customer a `customer` key may read.
    pub customer_id: Option<String>,
    /// Hex SHA-256 of the secret; unique.
    pub digest: String,
    pub prefix: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// What produced a usage record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// An atomic check-and-consume on the hot path.
    Consume,
    /// The commit of a reservation.
    Commit,
    /// An ingested event that happened elsewhere.
    Event,
    /// A gauge set to an absolute level (quantity = the new level).
    GaugeSet,
    /// A gauge moved by a signed delta (quantity = the delta).
    GaugeDelta,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Consume => "consume",
            UsageSource::Commit => "commit",
            UsageSource::Event => "event",
            UsageSource::GaugeSet => "gauge_set",
            UsageSource::GaugeDelta => "gauge_delta",
        }
    }

    pub fn parse(s: &str) -> Option<UsageSource> {
        Some(match s {
            "consume" => UsageSource::Consume,
            "commit" => UsageSource::Commit,
            "event" => UsageSource::Event,
            "gauge_set" => UsageSource::GaugeSet,
            "gauge_delta" => UsageSource::GaugeDelta,
            _ => return None,
        })
    }
}

/// One immutable entry of the usage ledger, before the store assigns its sequence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewUsageRecord {
    pub customer_id: String,
    pub feature: String,
    pub quantity: Decimal,
    /// When the usage happened (event time; may be backdated for ingested events).
    pub timestamp: Timestamp,
    /// When Tollgate recorded it.
    pub recorded_at: Timestamp,
    pub source: UsageSource,
    pub properties: BTreeMap<String, serde_json::Value>,
    /// A retried failure can be free: it counts against limits but is not invoiced.
    pub billable: bool,
    pub idempotency_key: Option<String>,
    /// Which allowance the quantity was drawn from: `"plan"`, `"overage"`,
    /// `"emergency"` or a grant id, with the quantity drawn from each.
    pub allocation: BTreeMap<String, Decimal>,
    /// The answer given to the caller, replayed for idempotent retries (opaque
    /// JSON; `null` for an unkeyed consume, which is never replayed).
    pub answer: serde_json::Value,
}

/// A usage record as stored, with its ledger sequence number (strictly increasing
/// in commit order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub seq: i64,
    #[serde(flatten)]
    pub record: NewUsageRecord,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    Open,
    Committed,
    Released,
    Expired,
}

impl ReservationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationState::Open => "open",
            ReservationState::Committed => "committed",
            ReservationState::Released => "released",
            ReservationState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<ReservationState> {
        Some(match s {
            "open" => ReservationState::Open,
            "committed" => ReservationState::Committed,
            "released" => ReservationState::Released,
            "expired" => ReservationState::Expired,
            _ => return None,
        })
    }
}

/// Quantity held against a limit until the work's real size is known.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReservationRecord {
    /// `res_…`
    pub id: String,
    pub customer_id: String,
    pub feature: String,
    pub quantity: Decimal,
    pub state: ReservationState,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub idempotency_key: Option<String>,
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// A cached counter value: the sum of the ledger for one (customer, feature,
/// window) up to and including ledger sequence `as_of_seq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    pub customer_id: String,
    pub feature: String,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    /// Per allocation bucket ("plan", "overage", grant ids…) as in the ledger.
    pub used: BTreeMap<String, Decimal>,
}

/// One write of a group commit. All writes of a batch commit in one transaction,
/// in order, or none does.
#[derive(Clone, Debug, PartialEq)]
pub enum WriteOp {
    AppendUsage(NewUsageRecord),
    PutReservation(ReservationRecord),
    SetReservationState {
        id: String,
        state: ReservationState,
    },
    /// An event for the outbox, committed with the writes that caused it. An
    /// event whose `dedup_key` (or id) is already stored is dropped silently:
    /// it never fails the batch. `seq` and `object_seq` are assigned by the
    /// store (see [`notify::NotifyStore`]).
    Outbox(notify::OutboxEvent),
}

/// Filters for listing customers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CustomerFilter {
    pub plan_key: Option<String>,
    pub include_deleted: bool,
    /// Cursor: customers with an id greater than this one.
    pub starting_after: Option<String>,
    /// At most this many customers, by id; 0 = no limit.
    pub limit: u32,
}

/// A query over the ledger.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageQuery {
    pub customer_id: Option<String>,
    pub feature: Option<String>,
    /// Event time range `[from, to)`.
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// Cursor: records with a sequence greater than this.
    pub after_seq: Option<i64>,
    /// At most this many records, in sequence order; 0 = no limit.
    pub limit: u32,
}

/// The storage backend. Implementations: SQLite and PostgreSQL.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Which backend this is ("sqlite" or "postgres"), for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;

    /// Invoices, payments, credit notes and run aggregations.
    fn billing(&self) -> &dyn billing::BillingStore;

    // ---- catalog -------------------------------------------------------------
    /// Publishes a plan version. A published version is frozen: publishing the
    /// same definition again is a no-op, a different definition under the same
    /// `(plan_key, version)` is a `Conflict`.
    async fn put_plan_version(&self, plan: &PlanVersionRecord) -> Result<()>;
    /// Every published version of every plan.
    async fn plan_versions(&self) -> Result<Vec<PlanVersionRecord>>;
    /// Publishes the plan versions a catalog document introduces and records
    /// the document, in one transaction: a version published before with the
    /// same definition is kept; a different definition under a published
    /// `(plan_key, version)` is a `Conflict` and nothing is written.
    async fn publish_catalog(
        &self,
        document: &CatalogDocumentRecord,
        versions: &[PlanVersionRecord],
    ) -> Result<()>;
    /// The catalog document recorded last (of `source`, or of any source).
    async fn latest_catalog_document(
        &self,
        source: Option<CatalogSource>,
    ) -> Result<Option<CatalogDocumentRecord>>;

    // ---- customers and subscriptions -------------------------------------------
    /// Creates a customer; `Conflict` if the id exists (deleted or not).
    async fn insert_customer(&self, customer: &CustomerRecord) -> Result<()>;
    /// Replaces a customer's mutable fields; `NotFound` if absent.
    async fn update_customer(&self, customer: &CustomerRecord) -> Result<()>;
    async fn get_customer(&self, id: &str) -> Result<Option<CustomerRecord>>;
    async fn list_customers(&self, filter: &CustomerFilter) -> Result<Vec<CustomerRecord>>;
    /// Every customer, deleted or not (for rebuilding the engine's memory).
    async fn all_customers(&self) -> Result<Vec<CustomerRecord>>;

    /// Creates or replaces the customer's subscription (every field);
    /// `NotFound` if the customer does not exist.
    async fn put_subscription(&self, sub: &SubscriptionRecord) -> Result<()>;
    async fn get_subscription(&self, customer_id: &str) -> Result<Option<SubscriptionRecord>>;
    async fn all_subscriptions(&self) -> Result<Vec<SubscriptionRecord>>;

    /// Creates or replaces the override of one feature; `NotFound` if the
    /// customer does not exist.
    async fn put_override(&self, ov: &OverrideRecord) -> Result<()>;
    /// Whether an override existed.
    async fn delete_override(&self, customer_id: &str, feature: &str) -> Result<bool>;
    async fn all_overrides(&self) -> Result<Vec<OverrideRecord>>;

    // ---- grants --------------------------------------------------------------
    /// Inserts a grant and the outbox events that announce it (an emergency
    /// draw's `emergency.drawn`) in one transaction: both or neither (an event
    /// whose dedup key exists is skipped). `Conflict` if the id exists;
    /// `NotFound` if the customer does not exist.
    async fn insert_grant(&self, grant: &GrantRecord, events: &[notify::OutboxEvent])
    -> Result<()>;
    /// Marks a grant voided at `at`; a grant already voided keeps its first void
    /// time. `NotFound` if absent.
    async fn void_grant(&self, id: &str, at: Timestamp) -> Result<()>;
    async fn all_grants(&self) -> Result<Vec<GrantRecord>>;

    // ---- the ledger ------------------------------------------------------------
    /// Commits a group of writes in one transaction. Returns the ledger sequence
    /// assigned to each `AppendUsage`, in order (strictly increasing, above every
    /// seq committed before; not necessarily contiguous). `PutReservation`
    /// creates or replaces; `SetReservationState` of an absent reservation is
    /// `NotFound`. `Outbox` events are inserted in the same transaction (an
    /// event whose dedup key exists is skipped, never an error), so an event is
    /// stored if and only if the writes of its batch are. If any write fails,
    /// nothing of the batch is written.
    async fn append_batch(&self, ops: &[WriteOp]) -> Result<Vec<i64>>;

    /// [`Store::append_batch`] in two steps: returns once the batch is
    /// committed and visible, with what to wait for before it is durable (a
    /// backend that syncs in a thread of its own lets the caller write the
    /// next batch meanwhile: see `sqlite::ledger`). The caller must not
    /// acknowledge the batch to anyone before `durable` resolves `Ok`.
    async fn append_batch_written(&self, ops: &[WriteOp]) -> Result<Written> {
        Ok(Written {
            seqs: self.append_batch(ops).await?,
            durable: None,
        })
    }

    /// Whether [`Store::append_batch_written`] returns before the batch is
    /// durable (the fsync runs in a thread of its own): the group-commit
    /// writer then keeps its batches small so that several are in flight.
    fn syncs_in_background(&self) -> bool {
        false
    }

    /// Waits until every batch written so far is durable.
    async fn wait_durable(&self) -> Result<()> {
        Ok(())
    }
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRecord>>;
    /// Records with `recorded_at >= since` (rebuilding the idempotency window), in
    /// sequence order.
    async fn usage_recorded_since(&self, since: Timestamp) -> Result<Vec<UsageRecord>>;
    /// Records with a sequence greater than `seq`, in order, at most `limit`
    /// (0 = no limit).
    async fn usage_after(&self, seq: i64, limit: u32) -> Result<Vec<UsageRecord>>;
    /// The highest sequence in the ledger (0 when empty).
    async fn max_seq(&self) -> Result<i64>;
    /// Sum of quantities per allocation bucket for a customer and feature over
    /// event time `[from, to)`, computed from the ledger itself (the consistency
    /// check compares counters against this): the bucket-wise sum of the
    /// records' `allocation` maps (a record with an empty allocation adds
    /// nothing), exact in decimal.
    async fn sum_usage(
        &self,
        customer_id: &str,
        feature: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<BTreeMap<String, Decimal>>;

    // ---- reservations ------------------------------------------------------------
    /// Reservations in state `Open`, by id.
    async fn open_reservations(&self) -> Result<Vec<ReservationRecord>>;
    async fn get_reservation(&self, id: &str) -> Result<Option<ReservationRecord>>;

    // ---- counter snapshots -------------------------------------------------------
    /// Replaces the snapshot with these counters, valid up to ledger `as_of_seq`
    /// (atomically: a reader sees the old snapshot or the new one). Two counters
    /// with the same (customer, feature, window) are a `Conflict`.
    async fn save_snapshot(&self, as_of_seq: i64, counters: &[CounterSnapshot]) -> Result<()>;
    /// The latest snapshot and the ledger sequence it covers, if any; counters by
    /// (customer, feature, window start, window end).
    async fn load_snapshot(&self) -> Result<Option<(i64, Vec<CounterSnapshot>)>>;

    // ---- API keys ------------------------------------------------------------------
    /// Stores a new key; `Conflict` if its id or digest exists.
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()>;
    /// Every key, revoked ones included, by id.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>>;
    /// Marks a key revoked at `at`; a key already revoked keeps its first
    /// revocation time. `NotFound` if absent.
    async fn revoke_api_key(&self, id: &str, at: Timestamp) -> Result<()>;

    // ---- sub-stores -------------------------------------------------------------------
    /// Alerts: the outbox, webhook endpoints, deliveries and their attempts.
    fn notify(&self) -> &dyn notify::NotifyStore;
    /// Plan-change history, scheduled changes and pending invoice items.
    fn changes(&self) -> &dyn changes::ChangeStore;
}

/// Opens a store from a URL: `sqlite://PATH` (created if missing; optionally
/// `?synchronous=normal`, see [`sqlite::Durability`]) or `postgres://…`.
/// Call [`Store::migrate`] on it before use.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let (path, durability) =
            sqlite_url(rest).ok_or_else(|| StoreError::InvalidUrl(url.to_string()))?;
        Ok(std::sync::Arc::new(
            sqlite::SqliteStore::open_with(path, durability).await?,
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(postgres::PgStore::connect(url).await?))
    } else {
        Err(StoreError::InvalidUrl(url.to_string()))
    }
}

/// Splits `PATH[?synchronous=full|normal]`; `None` for an empty path or an
/// unknown parameter.
fn sqlite_url(rest: &str) -> Option<(&str, sqlite::Durability)> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() {
        return None;
    }
    let durability = match query {
        "" | "synchronous=full" => sqlite::Durability::Full,
        "synchronous=normal" => sqlite::Durability::Process,
        _ => return None,
    };
    Some((path, durability))
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_a_path_and_optionally_the_durability() {
        assert_eq!(
            sqlite_url("./data/t.db"),
            Some(("./data/t.db", sqlite::Durability::Full))
        );
        assert_eq!(
            sqlite_url("/d/t.db?synchronous=normal"),
            Some(("/d/t.db", sqlite::Durability::Process))
        );
        assert_eq!(sqlite_url("/d/t.db?synchronous=off"), None);
        assert_eq!(sqlite_url("?synchronous=normal"), None);
    }

    #[tokio::test]
    async fn a_store_opened_with_process_durability_works() {
        let dir = tempfile::tempdir().map_err(|e| e.to_string());
        let dir = match dir {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let url = format!(
            "sqlite://{}?synchronous=normal",
            dir.path().join("t.db").display()
        );
        let store = match connect(&url).await {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert!(store.migrate().await.is_ok());
        assert_eq!(store.max_seq().await.ok(), Some(0));
        assert!(matches!(
            connect("sqlite://x.db?synchronous=off").await,
            Err(StoreError::InvalidUrl(_))
        ));
    }
}
