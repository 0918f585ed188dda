//! The engine: state, plumbing between the hot path and the group-commit
//! writer, and the low-rate admin operations (customers, subscriptions,
//! overrides, grants).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use dashmap::DashMap;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use parking_lot::Mutex;
use rust_decimal::Decimal;
use tokio::sync::{Notify, mpsc, oneshot};
use tollgate_core::catalog::{Catalog, Entitlement};
use tollgate_store::{
    CustomerRecord, GrantRecord, OverrideRecord, Store, StoreError, SubscriptionRecord,
    SubscriptionStatus,
};

use crate::clock::Clock;
use crate::compile;
use crate::error::EngineError;
use crate::grants::{GrantState, insert_sorted};
use crate::hash::{CustKey, FxBuild};
use crate::ids::IdGen;
use crate::model::{CompiledPlan, Ent, Kind};
use crate::served::Served;
use crate::state::{CustomerState, Meter, Slot, SubState, cycle_for};
use crate::types::{CustomerUpdate, NewCustomer, NewGrant};
use crate::writer::{Msg, Ops, WriterConfig};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub writer: WriterConfig,
    /// How long idempotency keys are remembered, by recorded time (default 24 h).
    pub idempotency_window: SignedDuration,
    /// How far back an ingested event may be dated (default 48 h).
    pub backdate_window: SignedDuration,
    /// How far in the future an ingested event may be dated (default 5 min).
    pub future_skew: SignedDuration,
    /// Most events per ingest call (default 100,000).
    pub max_ingest: usize,
    /// Reservation time-to-live when the caller gives none (default 5 min).
    pub reservation_ttl: SignedDuration,
    /// How often the sweeper expires abandoned reservations (real time, default 1 s).
    pub sweep_interval: std::time::Duration,
    /// Ledger page size when replaying at start (default 10,000).
    pub replay_page: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            writer: WriterConfig::default(),
            idempotency_window: SignedDuration::from_hours(24),
            backdate_window: SignedDuration::from_hours(48),
            future_skew: SignedDuration::from_mins(5),
            max_ingest: 100_000,
            reservation_ttl: SignedDuration::from_mins(5),
            sweep_interval: std::time::Duration::from_secs(1),
            replay_page: 10_000,
        }
    }
}

/// What happens next in a locked step.
pub(crate) enum Flow<R> {
    Done(R),
    /// Wait for this notification (a pending duplicate, a reload), then retry.
    Wait(Arc<Notify>),
}

pub(crate) type AckRx = oneshot::Receiver<Result<Vec<i64>, Arc<StoreError>>>;

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub config: EngineConfig,
    /// The served catalog, compiled (`crate::served`).
    pub served: arc_swap::ArcSwap<Served>,
    /// The catalog an apply is about to serve, while it restores the
    /// customers of features added back (`crate::served`): their restored
    /// reservations and idempotency keys name features the served catalog
    /// does not define yet ([`Inner::feature_key`]).
    pub incoming: arc_swap::ArcSwapOption<Served>,
    /// Serializes [`Engine::apply_catalog`].
    pub catalog_apply: tokio::sync::Mutex<()>,
    /// Boxed states keep the map's buckets small (cache-friendly probing).
    pub customers: DashMap<CustKey, Box<Mutex<CustomerState>>, FxBuild>,
    /// Open reservation id → customer.
    pub reservations: DashMap<String, Arc<str>>,
    /// Lease id → (customer, feature index).
    pub leases: DashMap<String, (Arc<str>, usize)>,
    pub tx: mpsc::UnboundedSender<Msg>,
    pub ids: IdGen,
    /// Request tokens for idempotency claims.
    pub next_owner: std::sync::atomic::AtomicU64,
    /// Serializes admin operations that rebuild a customer's counters.
    pub admin: tokio::sync::Mutex<()>,
    /// What the start read for features the served catalog does not define,
    /// until an apply adds them back (`crate::recover::Parked`).
    pub parked: Mutex<crate::recover::ParkedFeatures>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.store.backend())
            .field("customers", &self.customers.len())
            .field("features", &self.served().features.defs.len())
            .finish_non_exhaustive()
    }
}

/// The Tollgate engine. Cheap to clone (all clones share one engine).
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
    pub(crate) writer: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    pub(crate) writer_stats: Arc<crate::writer::WriterStats>,
}

impl Inner {
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The served catalog (one atomic load; a later apply does not change it).
    pub(crate) fn served(&self) -> arc_swap::Guard<Arc<Served>> {
        self.served.load()
    }

    /// The feature index and kind, checking the kind for an operation.
    pub(crate) fn feature(
        &self,
        key: &str,
        expected: Kind,
        operation: &'static str,
    ) -> Result<usize, EngineError> {
        let served = self.served();
        let idx = served
            .features
            .get(key)
            .ok_or_else(|| EngineError::UnknownFeature(key.to_string()))?;
        let kind = served.features.defs[idx].kind;
        if kind != expected {
            return Err(EngineError::WrongFeatureKind {
                feature: key.to_string(),
                kind: kind.as_str(),
                operation,
                expected: expected.as_str(),
            });
        }
        Ok(idx)
    }

    pub(crate) fn feature_key(&self, idx: usize) -> Arc<str> {
        if let Some(def) = self.served().features.defs.get(idx) {
            return def.key.clone();
        }
        // A feature an apply is adding back, named by a customer it already
        // restored (a reservation committed, a key reused) before the swap.
        match self.incoming.load().as_deref() {
            Some(next) => match next.features.defs.get(idx) {
                Some(def) => def.key.clone(),
                None => Arc::from(format!("#{idx}")),
            },
            None => Arc::from(format!("#{idx}")),
        }
    }

    /// The cheapest public plan above the customer's tier whose entitlement
    /// allows `needed` (a total quantity; flags: on; caps: the value).
    pub(crate) fn upgrade_to(
        &self,
        st: &CustomerState,
        feature: usize,
        needed: Decimal,
    ) -> Option<Arc<str>> {
        let served = self.served();
        let tier = st.sub.as_ref().map(|s| served.tier_of(&s.plan));
        let key = &*served.features.defs[feature].key;
        let plan = served
            .catalog
            .upgrade_plan(key, &|e: &Entitlement| e.allows(needed), tier)?;
        served.plan_keys.get(&plan.key).cloned()
    }

    /// Sends writes to the group-commit writer. Call it while holding the
    /// customer's lock so the channel order is the decision order.
    pub(crate) fn submit(&self, ops: Ops) -> Result<AckRx, EngineError> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Msg::Write { ops, ack })
            .map_err(|_| EngineError::ShutDown)?;
        Ok(rx)
    }

    /// Sends writes whose outcome nobody waits for (reservation expiry).
    pub(crate) fn submit_detached(&self, ops: Ops) {
        let (ack, _rx) = oneshot::channel();
        let _ = self.tx.send(Msg::Write { ops, ack });
    }

    pub(crate) async fn wait_ack(rx: AckRx) -> Result<Vec<i64>, EngineError> {
        match rx.await {
            Ok(Ok(seqs)) => Ok(seqs),
            Ok(Err(e)) => Err(EngineError::Store(e)),
            Err(_) => Err(EngineError::ShutDown),
        }
    }

    /// Waits until everything sent to the writer so far is committed.
    pub(crate) async fn flush(&self) -> Result<(), EngineError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Flush(tx))
            .map_err(|_| EngineError::ShutDown)?;
        rx.await.map_err(|_| EngineError::ShutDown)
    }

    /// Runs `f` on the customer's state under its lock, waiting (without the
    /// lock) whenever `f` or a counter rebuild asks to.
    pub(crate) async fn locked<R>(
        &self,
        customer: &str,
        mut f: impl FnMut(&mut CustomerState) -> Result<Flow<R>, EngineError>,
    ) -> Result<R, EngineError> {
        loop {
            let notify: Arc<Notify>;
            let notified;
            {
                let cell = self
                    .customers
                    .get(customer)
                    .ok_or_else(|| EngineError::UnknownCustomer(customer.to_string()))?;
                let mut st = cell.lock();
                if let Some(n) = &st.reloading {
                    notify = n.clone();
                } else {
                    match f(&mut st)? {
                        Flow::Done(r) => return Ok(r),
                        Flow::Wait(n) => notify = n,
                    }
                }
                // Created under the lock: a `notify_waiters` after the unlock
                // still wakes it.
                notified = notify.notified();
            }
            notified.await;
        }
    }

    /// Runs `f` under the customer's lock without waiting for anything.
    pub(crate) fn with_customer<R>(
        &self,
        customer: &str,
        f: impl FnOnce(&mut CustomerState) -> R,
    ) -> Result<R, EngineError> {
        let cell = self
            .customers
            .get(customer)
            .ok_or_else(|| EngineError::UnknownCustomer(customer.to_string()))?;
        let mut st = cell.lock();
        Ok(f(&mut st))
    }

    pub(crate) fn owner(&self) -> u64 {
        self.next_owner
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn plan(&self, key: &str, version: u32) -> Option<Arc<CompiledPlan>> {
        self.served()
            .plans
            .get(&(key.to_string(), version))
            .cloned()
    }

    pub(crate) fn sub_state(
        &self,
        record: SubscriptionRecord,
        tz: &TimeZone,
    ) -> Result<SubState, EngineError> {
        let plan = self
            .plan(&record.plan_key, record.plan_version)
            .ok_or_else(|| {
                EngineError::Corrupt(format!(
                    "subscription of {:?} pins plan {} v{}, which was never published",
                    record.customer_id, record.plan_key, record.plan_version
                ))
            })?;
        let cycle = cycle_for(Some(&plan), record.anchor, tz);
        Ok(SubState::new(record, plan, cycle))
    }

    pub(crate) fn compile_override(
        &self,
        feature: &str,
        entitlement: &serde_json::Value,
    ) -> Result<(usize, Ent), EngineError> {
        compile_override_in(&self.served(), feature, entitlement)
    }
}

/// Compiles a customer's override of `feature` against `served`.
pub(crate) fn compile_override_in(
    served: &Served,
    feature: &str,
    entitlement: &serde_json::Value,
) -> Result<(usize, Ent), EngineError> {
    let idx = served
        .features
        .get(feature)
        .ok_or_else(|| EngineError::UnknownFeature(feature.to_string()))?;
    let def = served
        .catalog
        .feature(feature)
        .ok_or_else(|| EngineError::UnknownFeature(feature.to_string()))?;
    let ent: Entitlement =
        serde_json::from_value(entitlement.clone()).map_err(|e| EngineError::InvalidInput {
            field: "entitlement",
            message: e.to_string(),
        })?;
    let compiled = compile::compile_ent(
        def,
        &ent,
        &tollgate_core::catalog::default_alert_thresholds(),
    )
    .ok_or_else(|| EngineError::InvalidInput {
        field: "entitlement",
        message: format!(
            "a {} entitlement does not fit the {} feature {feature:?}",
            ent.kind_name(),
            def.kind.name()
        ),
    })?;
    Ok((idx, compiled))
}

pub(crate) fn parse_tz(name: &str) -> Result<TimeZone, EngineError> {
    TimeZone::get(name).map_err(|e| EngineError::InvalidInput {
        field: "time_zone",
        message: format!("{name:?}: {e}"),
    })
}

fn validate_customer_id(id: &str) -> Result<(), EngineError> {
    if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
        return Err(EngineError::InvalidInput {
            field: "id",
            message: "a customer id is 1 to 255 bytes without control characters".into(),
        });
    }
    Ok(())
}

fn validate_currency(c: &str) -> Result<(), EngineError> {
    if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(EngineError::InvalidInput {
            field: "currency",
            message: format!("{c:?} is not an ISO-4217 code such as \"USD\""),
        });
    }
    Ok(())
}

/// How to subscribe a customer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubscribeOptions {
    /// Default: `trialing` when the plan has trial days (or `trial_ends_at` is
    /// given), else `active`.
    pub status: Option<SubscriptionStatus>,
    /// Period anchor; default: the current subscription's anchor on a plan
    /// change, now for a first subscription.
    pub anchor: Option<Timestamp>,
    /// Default: anchor + the plan's trial days, when trialing.
    pub trial_ends_at: Option<Timestamp>,
    /// Pin a given published version instead of the latest.
    pub version: Option<u32>,
}

impl Engine {
    pub(crate) fn weak(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// The clock the engine runs on.
    pub fn now(&self) -> Timestamp {
        self.inner.now()
    }

    /// The catalog being served (the one the engine was opened with, or the
    /// one applied last: [`Engine::apply_catalog`]).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.inner.served().catalog.clone()
    }

    /// Runs `f` on the catalog being served without taking a reference count
    /// (for request paths: [`Engine::catalog`] clones an `Arc` every request
    /// shares).
    pub fn with_catalog<R>(&self, f: impl FnOnce(&Catalog) -> R) -> R {
        f(&self.inner.served().catalog)
    }

    /// Published versions of a plan held in memory, ascending.
    pub fn plan_versions(&self, plan_key: &str) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .inner
            .served()
            .plans
            .keys()
            .filter(|(k, _)| k == plan_key)
            .map(|(_, v)| *v)
            .collect();
        v.sort_unstable();
        v
    }

    /// A published version's tier as served: the catalog's tier for the plan
    /// (a new tier applies to every version), else the tier the version was
    /// published with (a plan the catalog no longer offers).
    pub fn plan_tier(&self, plan_key: &str, version: u32) -> Option<u32> {
        let served = self.inner.served();
        let plan = served.plans.get(&(plan_key.to_string(), version))?;
        Some(served.tier_of(plan))
    }

    /// The latest published version of a plan.
    pub fn latest_version(&self, plan_key: &str) -> Option<u32> {
        self.inner.served().latest.get(plan_key).map(|p| p.version)
    }

    /// The group-commit writer's counters (batches, writes, commit time).
    pub fn writer_stats(&self) -> &crate::writer::WriterStats {
        &self.writer_stats
    }

    /// Returns once a group commit has written outbox events (alerts) since
    /// the last call returned (a commit before the first call counts too).
    pub async fn outbox_written(&self) {
        self.writer_stats.outbox_written.notified().await;
    }

    /// Waits until every write sent so far is committed.
    pub async fn flush(&self) -> Result<(), EngineError> {
        self.inner.flush().await
    }

    /// Commits pending writes and saves a counter snapshot now; returns the
    /// number of counters saved.
    pub async fn snapshot_now(&self) -> Result<usize, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Snapshot(tx))
            .map_err(|_| EngineError::ShutDown)?;
        Ok(rx.await.map_err(|_| EngineError::ShutDown)??)
    }

    /// Graceful shutdown: commits what is pending, saves a snapshot and stops
    /// the writer. Requests after this fail with `ShutDown`.
    pub async fn close(&self) -> Result<(), EngineError> {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Msg::Shutdown(tx)).is_err() {
            return Ok(());
        }
        let r = rx.await.map_err(|_| EngineError::ShutDown)?;
        let handle = self.writer.lock().take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        r.map(|_| ()).map_err(EngineError::Store)
    }

    // ---- customers ------------------------------------------------------------

    /// Creates a customer (written to the store, then to memory).
    pub async fn create_customer(&self, new: NewCustomer) -> Result<CustomerRecord, EngineError> {
        validate_customer_id(&new.id)?;
        let currency = new.currency.unwrap_or_else(|| "USD".to_string());
        validate_currency(&currency)?;
        let tz_name = new.time_zone.unwrap_or_else(|| "UTC".to_string());
        let tz = parse_tz(&tz_name)?;
        let now = self.inner.now();
        let record = CustomerRecord {
            id: new.id,
            name: new.name,
            email: new.email,
            currency,
            time_zone: tz_name,
            metadata: if new.metadata.is_null() {
                serde_json::json!({})
            } else {
                new.metadata
            },
            admin_bypass: false,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        match self.inner.store.insert_customer(&record).await {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => {
                return Err(EngineError::CustomerExists(record.id));
            }
            Err(e) => return Err(e.into()),
        }
        self.inner.customers.insert(
            CustKey::new(&record.id),
            Box::new(Mutex::new(CustomerState::new(record.clone(), tz))),
        );
        Ok(record)
    }

    /// The customer as the engine holds it (deleted ones included).
    pub fn customer(&self, id: &str) -> Option<CustomerRecord> {
        self.inner
            .customers
            .get(id)
            .map(|c| (*c.lock().record).clone())
    }

    /// Changes a customer's fields. A time-zone change moves the usage windows,
    /// so the customer's counters are rebuilt from the ledger.
    pub async fn update_customer(
        &self,
        id: &str,
        update: CustomerUpdate,
    ) -> Result<CustomerRecord, EngineError> {
        let _admin = self.inner.admin.lock().await;
        let mut record = self
            .customer(id)
            .ok_or_else(|| EngineError::UnknownCustomer(id.to_string()))?;
        if let Some(c) = &update.currency {
            validate_currency(c)?;
        }
        let tz = match &update.time_zone {
            Some(name) => Some(parse_tz(name)?),
            None => None,
        };
        let tz_changed = update
            .time_zone
            .as_ref()
            .is_some_and(|t| *t != record.time_zone);
        if let Some(v) = update.name {
            record.name = v;
        }
        if let Some(v) = update.email {
            record.email = v;
        }
        if let Some(v) = update.currency {
            record.currency = v;
        }
        if let Some(v) = update.time_zone {
            record.time_zone = v;
        }
        if let Some(v) = update.metadata {
            record.metadata = v;
        }
        if let Some(v) = update.admin_bypass {
            record.admin_bypass = v;
        }
        record.updated_at = self.inner.now();
        self.inner.store.update_customer(&record).await?;
        let r2 = record.clone();
        self.rebuild(id, tz_changed, move |st| {
            st.set_record(r2.clone());
            if let Some(tz) = &tz {
                st.tz = tz.clone();
                if let Some(sub) = &mut st.sub {
                    sub.cycle = cycle_for(Some(&sub.plan), sub.record.anchor, tz);
                }
            }
        })
        .await?;
        Ok(record)
    }

    /// Sets or clears the admin bypass (limits lifted, usage still recorded).
    pub async fn set_admin_bypass(
        &self,
        id: &str,
        on: bool,
    ) -> Result<CustomerRecord, EngineError> {
        self.update_customer(
            id,
            CustomerUpdate {
                admin_bypass: Some(on),
                ..CustomerUpdate::default()
            },
        )
        .await
    }

    /// Soft delete: the customer is refused from now on; its usage stays.
    pub async fn delete_customer(&self, id: &str) -> Result<CustomerRecord, EngineError> {
        let mut record = self
            .customer(id)
            .ok_or_else(|| EngineError::UnknownCustomer(id.to_string()))?;
        if record.deleted_at.is_some() {
            return Err(EngineError::CustomerDeleted(id.to_string()));
        }
        let now = self.inner.now();
        record.deleted_at = Some(now);
        record.updated_at = now;
        self.inner.store.update_customer(&record).await?;
        let r2 = record.clone();
        self.inner.with_customer(id, move |st| st.set_record(r2))?;
        Ok(record)
    }

    /// Undoes a soft delete.
    pub async fn restore_customer(&self, id: &str) -> Result<CustomerRecord, EngineError> {
        let mut record = self
            .customer(id)
            .ok_or_else(|| EngineError::UnknownCustomer(id.to_string()))?;
        if record.deleted_at.is_none() {
            return Err(EngineError::CustomerNotDeleted(id.to_string()));
        }
        record.deleted_at = None;
        record.updated_at = self.inner.now();
        self.inner.store.update_customer(&record).await?;
        let r2 = record.clone();
        self.inner.with_customer(id, move |st| st.set_record(r2))?;
        Ok(record)
    }

    // ---- subscriptions ----------------------------------------------------------

    /// Subscribes a customer to the latest version of a plan (or changes its
    /// plan). Counters are rebuilt from the ledger for the new windows.
    pub async fn subscribe(
        &self,
        customer: &str,
        plan_key: &str,
        opts: SubscribeOptions,
    ) -> Result<SubscriptionRecord, EngineError> {
        let _admin = self.inner.admin.lock().await;
        let record = self.planned_subscription(customer, plan_key, &opts)?;
        self.put_subscription(customer, record.clone()).await?;
        Ok(record)
    }

    /// The subscription [`Engine::subscribe`] would write now, without
    /// writing it (the defaults of `opts` resolved: anchor, trial end,
    /// status, version). Subscribing with every field of `opts` set from it
    /// writes this record: the billing service records a change before it
    /// makes it (its history entry is the intent, see
    /// `docs/plan-changes.md`, "Crashes between the writes").
    pub fn planned_subscription(
        &self,
        customer: &str,
        plan_key: &str,
        opts: &SubscribeOptions,
    ) -> Result<SubscriptionRecord, EngineError> {
        // One catalog for the version and its trial (an apply may swap it).
        let served = self.inner.served();
        let plan = match opts.version {
            Some(v) => served.plans.get(&(plan_key.to_string(), v)).cloned(),
            None => served.latest.get(plan_key).cloned(),
        }
        .ok_or_else(|| EngineError::UnknownPlan(plan_key.to_string()))?;
        let current = self.inner.with_customer(customer, |st| {
            (st.deleted, st.sub.as_ref().map(|s| (*s.record).clone()))
        })?;
        if current.0 {
            return Err(EngineError::CustomerDeleted(customer.to_string()));
        }
        let now = self.inner.now();
        // A plan change keeps the billing anchor (usage so far stays in the
        // same window); a first subscription is anchored now.
        let anchor = opts
            .anchor
            .or(current.1.as_ref().map(|s| s.anchor))
            .unwrap_or(now);
        let trial_days = served
            .catalog
            .plan(plan_key)
            .and_then(|p| p.trial_days)
            .filter(|d| *d > 0);
        let trial_ends_at = opts.trial_ends_at.or_else(|| {
            if matches!(opts.status, None | Some(SubscriptionStatus::Trialing)) {
                trial_days.and_then(|d| {
                    anchor
                        .checked_add(SignedDuration::from_hours(24 * i64::from(d)))
                        .ok()
                })
            } else {
                None
            }
        });
        let status = opts.status.unwrap_or(if trial_ends_at.is_some() {
            SubscriptionStatus::Trialing
        } else {
            SubscriptionStatus::Active
        });
        let record = SubscriptionRecord {
            customer_id: customer.to_string(),
            plan_key: plan.key.to_string(),
            plan_version: plan.version,
            status,
            anchor,
            trial_ends_at: if status == SubscriptionStatus::Trialing {
                trial_ends_at
            } else {
                None
            },
            canceled_at: if status == SubscriptionStatus::Canceled {
                Some(now)
            } else {
                None
            },
            created_at: current.1.as_ref().map_or(now, |s| s.created_at),
            updated_at: now,
        };
        Ok(record)
    }

    async fn put_subscription(
        &self,
        customer: &str,
        record: SubscriptionRecord,
    ) -> Result<(), EngineError> {
        let tz = self.inner.with_customer(customer, |st| st.tz.clone())?;
        let sub = self.inner.sub_state(record.clone(), &tz)?;
        self.inner.store.put_subscription(&record).await?;
        let mut sub = Some(sub);
        self.rebuild(customer, true, move |st| {
            if let Some(s) = sub.take() {
                st.sub = Some(s);
            }
        })
        .await
    }

    /// Changes the subscription's status (e.g. `past_due`, `active`).
    pub async fn set_subscription_status(
        &self,
        customer: &str,
        status: SubscriptionStatus,
    ) -> Result<SubscriptionRecord, EngineError> {
        let _admin = self.inner.admin.lock().await;
        let mut record = self
            .subscription(customer)?
            .ok_or_else(|| EngineError::NoSubscription(customer.to_string()))?;
        let now = self.inner.now();
        record.status = status;
        record.updated_at = now;
        if status == SubscriptionStatus::Canceled {
            record.canceled_at = Some(now);
        } else {
            record.canceled_at = None;
        }
        self.inner.store.put_subscription(&record).await?;
        let r2 = record.clone();
        self.inner.with_customer(customer, move |st| {
            if let Some(s) = &mut st.sub {
                s.set_record(r2);
            }
        })?;
        Ok(record)
    }

    /// Cancels the subscription now (requests are then denied with
    /// `subscription_inactive`; usage stays in the ledger).
    pub async fn cancel(&self, customer: &str) -> Result<SubscriptionRecord, EngineError> {
        self.set_subscription_status(customer, SubscriptionStatus::Canceled)
            .await
    }

    pub fn subscription(&self, customer: &str) -> Result<Option<SubscriptionRecord>, EngineError> {
        self.inner
            .with_customer(customer, |st| st.sub.as_ref().map(|s| (*s.record).clone()))
    }

    // ---- overrides ------------------------------------------------------------

    /// Overrides one feature's entitlement for one customer.
    pub async fn set_override(
        &self,
        customer: &str,
        feature: &str,
        entitlement: &Entitlement,
    ) -> Result<(), EngineError> {
        let _admin = self.inner.admin.lock().await;
        let json = serde_json::to_value(entitlement).map_err(|e| EngineError::InvalidInput {
            field: "entitlement",
            message: e.to_string(),
        })?;
        let (idx, ent) = self.inner.compile_override(feature, &json)?;
        self.inner.with_customer(customer, |_| ())?;
        let rec = OverrideRecord {
            customer_id: customer.to_string(),
            feature: feature.to_string(),
            entitlement: json.clone(),
            updated_at: self.inner.now(),
        };
        self.inner.store.put_override(&rec).await?;
        let mut ent = Some(ent);
        self.rebuild(customer, true, move |st| {
            st.overrides.retain(|(f, _, _)| *f != idx);
            if let Some(e) = ent.take() {
                st.overrides.push((idx, e, json.clone()));
            }
        })
        .await
    }

    /// Removes an override (the plan's entitlement applies again).
    pub async fn remove_override(
        &self,
        customer: &str,
        feature: &str,
    ) -> Result<bool, EngineError> {
        let _admin = self.inner.admin.lock().await;
        let idx = self
            .inner
            .served()
            .features
            .get(feature)
            .ok_or_else(|| EngineError::UnknownFeature(feature.to_string()))?;
        self.inner.with_customer(customer, |_| ())?;
        let existed = self.inner.store.delete_override(customer, feature).await?;
        self.rebuild(customer, true, move |st| {
            st.overrides.retain(|(f, _, _)| *f != idx);
        })
        .await?;
        Ok(existed)
    }

    // ---- grants ---------------------------------------------------------------

    /// Adds a grant (top-up, promotional credit, emergency pool).
    pub async fn add_grant(&self, new: NewGrant) -> Result<GrantRecord, EngineError> {
        let idx = self.inner.feature(&new.feature, Kind::Metered, "a grant")?;
        if new.quantity <= Decimal::ZERO {
            return Err(EngineError::InvalidQuantity {
                quantity: new.quantity,
                reason: "a grant's quantity must be positive",
            });
        }
        if !matches!(new.kind.as_str(), "top_up" | "promotional" | "emergency") {
            return Err(EngineError::InvalidInput {
                field: "kind",
                message: "a grant's kind is top_up, promotional or emergency".into(),
            });
        }
        let now = self.inner.now();
        let effective_at = new.effective_at.unwrap_or(now);
        if new.expires_at.is_some_and(|e| e <= effective_at) {
            return Err(EngineError::InvalidInput {
                field: "expires_at",
                message: "a grant must expire after it takes effect".into(),
            });
        }
        let deleted = self.inner.with_customer(&new.customer, |st| st.deleted)?;
        if deleted {
            return Err(EngineError::CustomerDeleted(new.customer));
        }
        let record = GrantRecord {
            id: self.inner.ids.mint("grt"),
            customer_id: new.customer,
            feature: new.feature,
            kind: new.kind,
            quantity: new.quantity,
            priority: new.priority,
            effective_at,
            expires_at: new.expires_at,
            voided_at: None,
            metadata: if new.metadata.is_null() {
                serde_json::json!({})
            } else {
                new.metadata
            },
            created_at: now,
        };
        self.inner.store.insert_grant(&record, &[]).await?;
        let g = GrantState {
            record: record.clone(),
            feature: idx,
            drawn: Decimal::ZERO,
        };
        self.inner.with_customer(&record.customer_id, move |st| {
            insert_sorted(&mut st.grants, g)
        })?;
        Ok(record)
    }

    /// Voids a grant now (what it already gave stays counted).
    pub async fn void_grant(&self, customer: &str, grant_id: &str) -> Result<(), EngineError> {
        let exists = self.inner.with_customer(customer, |st| {
            st.grants
                .iter()
                .any(|g| g.record.id == grant_id && g.record.voided_at.is_none())
        })?;
        if !exists {
            return Err(EngineError::GrantNotFound(grant_id.to_string()));
        }
        let now = self.inner.now();
        self.inner.store.void_grant(grant_id, now).await?;
        self.inner.with_customer(customer, |st| {
            if let Some(g) = st.grants.iter_mut().find(|g| g.record.id == grant_id) {
                g.record.voided_at = Some(now);
            }
        })?;
        Ok(())
    }

    /// The customer's grants with what each has left.
    pub fn grants(&self, customer: &str) -> Result<Vec<(GrantRecord, Decimal)>, EngineError> {
        self.inner.with_customer(customer, |st| {
            st.grants
                .iter()
                .map(|g| (g.record.clone(), g.remaining()))
                .collect()
        })
    }

    /// Draws the plan's emergency allowance for a metered feature: creates an
    /// `emergency` grant of that quantity expiring at the end of the current
    /// usage window. Once per window: a second draw is refused.
    pub async fn draw_emergency(
        &self,
        customer: &str,
        feature: &str,
    ) -> Result<GrantRecord, EngineError> {
        let idx = self
            .inner
            .feature(feature, Kind::Metered, "draw_emergency")?;
        let now = self.inner.now();
        let id = self.inner.ids.mint("grt");
        // Claim under the lock (the grant is in memory before the store write),
        // so two concurrent draws cannot both pass the once-per-window check.
        let record = self.inner.with_customer(customer, |st| {
            if st.deleted {
                return Err(EngineError::CustomerDeleted(customer.to_string()));
            }
            if let Err(reason) = st.gate(now) {
                return Err(match reason {
                    crate::types::DenyReason::NoSubscription => {
                        EngineError::NoSubscription(customer.to_string())
                    }
                    _ => EngineError::NoEmergencyAllowance {
                        feature: feature.to_string(),
                    },
                });
            }
            let (ent, _) = st.ent(idx);
            let Ent::Metered {
                emergency: Some(qty),
                reset,
                ..
            } = ent.clone()
            else {
                return Err(EngineError::NoEmergencyAllowance {
                    feature: feature.to_string(),
                });
            };
            let window =
                st.window_at(reset, now)
                    .ok_or_else(|| EngineError::NoEmergencyAllowance {
                        feature: feature.to_string(),
                    })?;
            let drawn = st.grants.iter().any(|g| {
                g.feature == idx
                    && g.record.kind == "emergency"
                    && g.record.voided_at.is_none()
                    && window.contains(g.record.effective_at)
            });
            if drawn {
                return Err(EngineError::EmergencyAlreadyDrawn {
                    feature: feature.to_string(),
                    resets_at: window.end,
                });
            }
            let record = GrantRecord {
                id: id.clone(),
                customer_id: customer.to_string(),
                feature: feature.to_string(),
                kind: "emergency".to_string(),
                quantity: qty,
                priority: 0,
                effective_at: now,
                expires_at: Some(window.end),
                voided_at: None,
                metadata: serde_json::json!({"window_start": window.start}),
                created_at: now,
            };
            insert_sorted(
                &mut st.grants,
                GrantState {
                    record: record.clone(),
                    feature: idx,
                    drawn: Decimal::ZERO,
                },
            );
            let window = (window.start, window.end);
            let event = crate::alerts::emergency_drawn(
                &self.inner,
                st,
                idx,
                window,
                &record.id,
                record.quantity,
                now,
            );
            Ok((record, event))
        })??;
        let (record, event) = record;
        // The grant and its `emergency.drawn` alert in one transaction.
        let events: Vec<_> = event.into_iter().collect();
        if let Err(e) = self.inner.store.insert_grant(&record, &events).await {
            self.inner.with_customer(customer, |st| {
                st.grants.retain(|g| g.record.id != record.id);
            })?;
            return Err(e.into());
        }
        Ok(record)
    }

    // ---- counter rebuild --------------------------------------------------------

    /// Applies `change` to a customer's state; when `recount`, rebuilds the
    /// metered counters of its current windows from the ledger (the change may
    /// have moved them) while requests for that customer wait.
    pub(crate) async fn rebuild(
        &self,
        customer: &str,
        recount: bool,
        mut change: impl FnMut(&mut CustomerState),
    ) -> Result<(), EngineError> {
        let notify = Arc::new(Notify::new());
        self.inner
            .locked(customer, |st| {
                change(st);
                // The limits may have changed: denials are announced afresh
                // (the store's dedup key, which names the limit, keeps one).
                st.announced = crate::alerts::Announced::default();
                if recount {
                    st.reloading = Some(notify.clone());
                }
                Ok(Flow::Done(()))
            })
            .await?;
        if !recount {
            return Ok(());
        }
        let result = self.recount(customer).await;
        // Whatever happened, let the waiters go.
        let _ = self.inner.with_customer(customer, |st| st.reloading = None);
        notify.notify_waiters();
        result
    }

    async fn recount(&self, customer: &str) -> Result<(), EngineError> {
        // Everything decided before the change is committed first, so the
        // ledger holds all of it.
        self.inner.flush().await?;
        let now = self.inner.now();
        let targets: Vec<(usize, tollgate_core::period::Period)> =
            self.inner.with_customer(customer, |st| {
                (0..self.inner.served().features.defs.len())
                    .filter_map(|f| match st.ent(f).0 {
                        Ent::Metered { reset, .. } => st.window_at(*reset, now).map(|w| (f, w)),
                        _ => None,
                    })
                    .collect()
            })?;
        let mut sums = Vec::with_capacity(targets.len());
        for (f, w) in &targets {
            let key = self.inner.feature_key(*f);
            let used = self
                .inner
                .store
                .sum_usage(customer, &key, w.start, w.end)
                .await?;
            sums.push((*f, *w, used));
        }
        let inner = &self.inner;
        inner.with_customer(customer, |st| {
            st.slots.retain(|s| !matches!(s, Slot::Meter(_)));
            for (f, w, used) in sums {
                let m: &mut Meter = st.meter(f, w);
                set_meter(m, &used);
                let reserved: Decimal = st
                    .resv
                    .iter()
                    .filter(|r| r.feature == f && w.contains(r.created_at))
                    .map(|r| r.quantity)
                    .sum();
                for r in st.resv.iter_mut().filter(|r| r.feature == f) {
                    r.window = if w.contains(r.created_at) {
                        (w.start, w.end)
                    } else {
                        (Timestamp::MIN, Timestamp::MIN)
                    };
                }
                st.meter(f, w).reserved = reserved;
                let _ = inner.tx.send(Msg::Seed {
                    customer: customer.to_string(),
                    feature: inner.feature_key(f).to_string(),
                    start: w.start,
                    end: w.end,
                    used,
                });
            }
        })?;
        Ok(())
    }
}

/// Sets a meter's buckets from ledger sums.
pub(crate) fn set_meter(m: &mut Meter, used: &BTreeMap<String, Decimal>) {
    m.plan = Decimal::ZERO;
    m.grants = Decimal::ZERO;
    m.overage = Decimal::ZERO;
    m.bypass = Decimal::ZERO;
    for (bucket, q) in used {
        match bucket.as_str() {
            "plan" => m.plan += *q,
            "overage" => m.overage += *q,
            "bypass" => m.bypass += *q,
            b if crate::ids::is_grant_id(b) => m.grants += *q,
            _ => m.overage += *q,
        }
    }
}
