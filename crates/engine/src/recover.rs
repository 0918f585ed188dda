//! Opening the engine: publish plan versions, load customers, subscriptions,
//! overrides, grants and open reservations, then rebuild the counters from
//! the latest snapshot plus the ledger after it, and the idempotency window
//! and rate logs from the recent ledger.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use parking_lot::Mutex;
use rust_decimal::Decimal;
use tokio::sync::mpsc;
use tollgate_core::catalog::Catalog;
use tollgate_store::{
    CounterSnapshot, GrantRecord, NewUsageRecord, OverrideRecord, PlanVersionRecord,
    ReservationRecord, ReservationState, Store, UsageSource, WriteOp,
};

use crate::clock::Clock;
use crate::compile;
use crate::engine::{Engine, EngineConfig, Inner, compile_override_in, parse_tz, set_meter};
use crate::error::EngineError;
use crate::grants::{GrantState, insert_sorted};
use crate::ids::{IdGen, is_grant_id};
use crate::model::{Ent, Kind};
use crate::rate::RateLog;
use crate::served::{Served, publish};
use crate::state::{Answer, CustomerState, Idem, OpenResv, Slot};
use crate::types::Decision;
use crate::writer::{Aggregate, Counted, GAUGE_LEVEL, LIFETIME_END, LIFETIME_START, Ops, Writer};

/// What a start read for a feature the catalog it serves does not define (a
/// restart with a catalog file that removed it), kept aside so that an apply
/// adding the feature back restores its counters exactly as a start would
/// ([`restore`], called by `Engine::apply_catalog`). Nothing is kept for a
/// feature that was never used. The writer's aggregate holds the same
/// snapshot rows (it saves them in every snapshot), but not the ledger
/// records after the snapshot: those are handed to it when they are restored.
#[derive(Debug, Default)]
pub(crate) struct Parked {
    /// Snapshot rows: current windows, gauge levels, grant draws.
    rows: Vec<CounterSnapshot>,
    /// Ledger records after the snapshot, in ledger order.
    records: Vec<NewUsageRecord>,
    grants: Vec<GrantRecord>,
    overrides: Vec<OverrideRecord>,
    reservations: Vec<ReservationRecord>,
    /// Idempotency keys of the recent ledger: (key, feature, ledger sequence,
    /// recorded).
    keys: Vec<(Box<str>, String, i64, Timestamp)>,
}

impl Parked {
    fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.records.is_empty()
            && self.grants.is_empty()
            && self.overrides.is_empty()
            && self.reservations.is_empty()
            && self.keys.is_empty()
    }

    fn append(&mut self, mut other: Parked) {
        self.rows.append(&mut other.rows);
        self.records.append(&mut other.records);
        self.grants.append(&mut other.grants);
        self.overrides.append(&mut other.overrides);
        self.reservations.append(&mut other.reservations);
        self.keys.append(&mut other.keys);
    }
}

/// [`Parked`] by customer, then by feature key.
pub(crate) type ParkedFeatures = HashMap<String, HashMap<String, Parked>>;

fn park<'a>(parked: &'a mut ParkedFeatures, customer: &str, feature: &str) -> &'a mut Parked {
    parked
        .entry(customer.to_string())
        .or_default()
        .entry(feature.to_string())
        .or_default()
}

/// Figures about a start, for logs and the restart benchmark.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenStats {
    pub customers: usize,
    pub snapshot_counters: usize,
    pub snapshot_seq: i64,
    pub replayed_records: usize,
    pub idempotency_keys: usize,
    pub open_reservations: usize,
    pub published_versions: usize,
}

impl Engine {
    /// Opens the engine on a store (migrated here), a catalog and a clock.
    pub async fn open(
        store: Arc<dyn Store>,
        catalog: Catalog,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Result<Engine, EngineError> {
        Ok(Engine::open_with_stats(store, catalog, clock, config)
            .await?
            .0)
    }

    /// [`Engine::open`], also returning what was loaded.
    pub async fn open_with_stats(
        store: Arc<dyn Store>,
        catalog: Catalog,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Result<(Engine, OpenStats), EngineError> {
        let mut stats = OpenStats::default();
        store.migrate().await?;
        let now = clock.now();

        // ---- plan versions ------------------------------------------------------
        let existing = store.plan_versions().await?;
        let (catalog, new_versions, _) = publish(catalog, &existing, now)?;
        for r in &new_versions {
            store.put_plan_version(r).await?;
        }
        stats.published_versions = new_versions.len();
        let features = compile::features(&catalog);
        let versions: Vec<PlanVersionRecord> = existing.into_iter().chain(new_versions).collect();
        let served = Served::build(catalog, features, HashMap::new(), &versions);

        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Inner {
            store: store.clone(),
            clock: clock.clone(),
            config: config.clone(),
            served: arc_swap::ArcSwap::from_pointee(served),
            catalog_apply: tokio::sync::Mutex::new(()),
            // Many shards: the two cores rarely touch the same shard lock.
            customers: DashMap::with_hasher_and_shard_amount(crate::hash::FxBuild::default(), 256),
            reservations: DashMap::new(),
            leases: DashMap::new(),
            tx,
            ids: IdGen::new(),
            next_owner: std::sync::atomic::AtomicU64::new(1),
            admin: tokio::sync::Mutex::new(()),
            parked: Mutex::new(HashMap::new()),
            incoming: arc_swap::ArcSwapOption::empty(),
        };
        let mut parked = ParkedFeatures::new();

        // ---- customers, subscriptions, overrides, grants ----------------------------
        let mut states: HashMap<String, CustomerState> = HashMap::new();
        for c in store.all_customers().await? {
            let tz = parse_tz(&c.time_zone).unwrap_or_else(|e| {
                tracing::warn!(customer = %c.id, error = %e, "unknown time zone, using UTC");
                TimeZone::UTC
            });
            states.insert(c.id.clone(), CustomerState::new(c, tz));
        }
        stats.customers = states.len();
        for s in store.all_subscriptions().await? {
            let Some(st) = states.get_mut(&s.customer_id) else {
                continue;
            };
            st.sub = Some(inner.sub_state(s, &st.tz)?);
        }
        let served = inner.served.load_full();
        for o in store.all_overrides().await? {
            let Some(st) = states.get_mut(&o.customer_id) else {
                continue;
            };
            if served.features.get(&o.feature).is_none() {
                park(&mut parked, &o.customer_id, &o.feature)
                    .overrides
                    .push(o);
                continue;
            }
            load_override(&served, st, o);
        }
        for g in store.all_grants().await? {
            let Some(st) = states.get_mut(&g.customer_id) else {
                continue;
            };
            if served.features.get(&g.feature).is_none() {
                park(&mut parked, &g.customer_id, &g.feature).grants.push(g);
                continue;
            }
            load_grant(&served, st, g);
        }

        // ---- snapshot -------------------------------------------------------------
        let mut aggregate = Aggregate::default();
        let (snap_seq, rows) = store.load_snapshot().await?.unwrap_or((0, Vec::new()));
        stats.snapshot_seq = snap_seq;
        stats.snapshot_counters = rows.len();
        for row in rows {
            if let Some(st) = states.get_mut(&row.customer_id) {
                if served.features.get(&row.feature).is_some() {
                    load_row(&served, st, &row, now);
                } else {
                    park(&mut parked, &row.customer_id, &row.feature)
                        .rows
                        .push(row.clone());
                }
            }
            aggregate.seed(
                &row.customer_id,
                &row.feature,
                row.window_start,
                row.window_end,
                row.used,
            );
        }

        // ---- ledger after the snapshot ----------------------------------------------
        let mut after = snap_seq;
        loop {
            let page = store.usage_after(after, config.replay_page).await?;
            let n = page.len();
            for rec in page {
                after = after.max(rec.seq);
                stats.replayed_records += 1;
                let r = rec.record;
                let counted = match states.get_mut(&r.customer_id) {
                    Some(st) if served.features.get(&r.feature).is_some() => {
                        replay_one(&served, st, &r, now)
                    }
                    Some(_) => {
                        park(&mut parked, &r.customer_id, &r.feature)
                            .records
                            .push(r.clone());
                        Counted::Nothing
                    }
                    None => Counted::Nothing,
                };
                aggregate.apply_record(&r, counted);
            }
            if n < config.replay_page as usize {
                break;
            }
        }
        let last_seq = after.max(store.max_seq().await?);

        // ---- open reservations ------------------------------------------------------
        for r in store.open_reservations().await? {
            let Some(st) = states.get_mut(&r.customer_id) else {
                continue;
            };
            let Some(idx) = served.features.get(&r.feature) else {
                park(&mut parked, &r.customer_id, &r.feature)
                    .reservations
                    .push(r);
                continue;
            };
            load_reservation(&inner, st, idx, r, now);
            stats.open_reservations += 1;
        }

        // ---- idempotency window and rate logs -------------------------------------------
        let max_rate = max_rate_window(&inner, &states);
        let idem_since = now
            .checked_sub(config.idempotency_window)
            .unwrap_or(Timestamp::MIN);
        let since = now
            .checked_sub(max_rate.max(config.idempotency_window))
            .unwrap_or(Timestamp::MIN);
        for rec in store.usage_recorded_since(since).await? {
            let r = &rec.record;
            let Some(st) = states.get_mut(&r.customer_id) else {
                continue;
            };
            let Some(idx) = served.features.get(&r.feature) else {
                if r.recorded_at >= idem_since {
                    for key in record_keys(r) {
                        park(&mut parked, &r.customer_id, &r.feature).keys.push((
                            key,
                            r.feature.clone(),
                            rec.seq,
                            r.recorded_at,
                        ));
                    }
                }
                continue;
            };
            if served.features.defs[idx].kind == Kind::Rate {
                if let Ent::Rate { window, .. } = st.ent(idx).0.clone() {
                    let edge = now.checked_sub(window).unwrap_or(Timestamp::MIN);
                    if r.timestamp > edge {
                        let slot = st.slot_mut(idx, || Slot::Rate(RateLog::default()));
                        if let Slot::Rate(log) = slot {
                            log.push(r.timestamp, r.quantity);
                        }
                    }
                }
            }
            if r.recorded_at < idem_since {
                continue;
            }
            stats.idempotency_keys += usize::from(r.idempotency_key.is_some());
            for key in record_keys(r) {
                st.idem.insert(
                    key,
                    Idem::Done {
                        feature: idx,
                        answer: Answer::Ledger(rec.seq),
                        at: r.recorded_at,
                    },
                );
            }
        }
        // Reservations' own keys (their answers are not in the ledger).
        for st in states.values_mut() {
            let open: Vec<OpenResv> = st.resv.clone();
            for r in open {
                reservation_key(st, r);
            }
        }
        if !parked.is_empty() {
            tracing::info!(
                customers = parked.len(),
                "usage of features the served catalog does not define is kept aside \
                 until a catalog adds them back"
            );
        }
        *inner.parked.lock() = parked;

        for (id, st) in states {
            inner
                .customers
                .insert(crate::hash::CustKey::new(&id), Box::new(Mutex::new(st)));
        }
        let inner = Arc::new(inner);
        let writer_stats = Arc::new(crate::writer::WriterStats::default());
        let writer = Writer {
            stats: writer_stats.clone(),
            store,
            clock,
            config: config.writer.clone(),
            aggregate,
            last_seq,
            rx,
        };
        let handle = tokio::spawn(writer.run());
        let engine = Engine {
            inner,
            writer: Arc::new(Mutex::new(Some(handle))),
            writer_stats,
        };
        crate::sweep::spawn(&engine);
        tracing::info!(
            customers = stats.customers,
            snapshot_seq = stats.snapshot_seq,
            replayed = stats.replayed_records,
            keys = stats.idempotency_keys,
            "engine opened"
        );
        Ok((engine, stats))
    }
}

/// The internal idempotency key under which a reservation's commit answer is
/// kept (control characters never appear in callers' keys).
pub(crate) fn commit_key(reservation_id: &str) -> String {
    format!("\u{1}commit:{reservation_id}")
}

fn max_rate_window(inner: &Inner, states: &HashMap<String, CustomerState>) -> SignedDuration {
    let mut max = SignedDuration::ZERO;
    for p in inner.served().plans.values() {
        for e in &p.ents {
            if let Ent::Rate { window, .. } = e {
                max = max.max(*window);
            }
        }
    }
    for st in states.values() {
        for (_, e, _) in &st.overrides {
            if let Ent::Rate { window, .. } = e {
                max = max.max(*window);
            }
        }
    }
    max
}

/// Applies one ledger record to memory; returns how the writer's aggregate
/// counts it.
fn replay_one(
    served: &Served,
    st: &mut CustomerState,
    rec: &NewUsageRecord,
    now: Timestamp,
) -> Counted {
    let Some(idx) = served.features.get(&rec.feature) else {
        return Counted::Nothing;
    };
    match served.features.defs[idx].kind {
        Kind::Metered => {
            let reset = match st.ent(idx).0 {
                Ent::Metered { reset, .. } => *reset,
                _ => compile_reset(served, idx),
            };
            let Some(w) = st.window_at(reset, rec.timestamp) else {
                st.replay_metered(
                    idx,
                    tollgate_core::period::Period {
                        start: now,
                        end: now,
                    },
                    &rec.allocation,
                    false,
                );
                return Counted::Nothing;
            };
            let current = st.window_at(reset, now) == Some(w);
            st.replay_metered(idx, w, &rec.allocation, current);
            Counted::Window(w.start, w.end)
        }
        Kind::Gauge => {
            let slot = st.slot_mut(idx, || Slot::Gauge(Decimal::ZERO));
            if let Slot::Gauge(level) = slot {
                if rec.source == UsageSource::GaugeSet {
                    *level = rec.quantity;
                } else {
                    *level = (*level + rec.quantity).max(Decimal::ZERO);
                }
            }
            Counted::Gauge
        }
        _ => Counted::Nothing,
    }
}

/// The feature's own reset period (for records of a feature the customer's
/// plan no longer includes).
fn compile_reset(served: &Served, idx: usize) -> tollgate_core::period::ResetPeriod {
    let key = &served.features.defs[idx].key;
    match served.catalog.feature(key).map(|f| &f.kind) {
        Some(tollgate_core::catalog::FeatureKind::Metered { reset }) => *reset,
        _ => tollgate_core::period::ResetPeriod::BillingPeriod,
    }
}

/// Writes the state change of reservations expired by a decision or the
/// sweeper, and forgets them in the index.
pub(crate) fn settle_expired(inner: &Inner, st: &mut CustomerState, expired: Vec<(String, usize)>) {
    if expired.is_empty() {
        return;
    }
    let ops: Vec<(WriteOp, Counted)> = expired
        .into_iter()
        .map(|(id, _)| {
            inner.reservations.remove(&id);
            (
                WriteOp::SetReservationState {
                    id,
                    state: ReservationState::Expired,
                },
                Counted::Nothing,
            )
        })
        .collect();
    let _ = st;
    inner.submit_detached(Ops::Many(ops));
}

/// A stored override into the customer's state (a start, or a feature added
/// back by an apply).
fn load_override(served: &Served, st: &mut CustomerState, o: OverrideRecord) {
    match compile_override_in(served, &o.feature, &o.entitlement) {
        Ok((idx, ent)) => st.overrides.push((idx, ent, o.entitlement)),
        Err(e) => tracing::warn!(customer = %o.customer_id, feature = %o.feature,
            error = %e, "ignoring an override that no longer fits the catalog"),
    }
}

/// A stored grant into the customer's state, nothing drawn yet (the draws
/// come from the snapshot and the ledger).
fn load_grant(served: &Served, st: &mut CustomerState, g: GrantRecord) {
    let Some(idx) = served.features.get(&g.feature) else {
        return;
    };
    insert_sorted(
        &mut st.grants,
        GrantState {
            record: g,
            feature: idx,
            drawn: Decimal::ZERO,
        },
    );
}

/// One snapshot row into the customer's state: a grant's draws or a gauge's
/// level (lifetime rows), or a metered counter when the row is its current
/// window.
fn load_row(served: &Served, st: &mut CustomerState, row: &CounterSnapshot, now: Timestamp) {
    let Some(idx) = served.features.get(&row.feature) else {
        return;
    };
    let lifetime = row.window_start == LIFETIME_START && row.window_end == LIFETIME_END;
    if lifetime {
        for (bucket, q) in &row.used {
            if is_grant_id(bucket) {
                if let Some(g) = st.grants.iter_mut().find(|g| &g.record.id == bucket) {
                    g.drawn += *q;
                }
            } else if bucket == GAUGE_LEVEL {
                *st.slot_mut(idx, || Slot::Gauge(Decimal::ZERO)) = Slot::Gauge(*q);
            }
        }
    } else if let Ent::Metered { reset, .. } = st.ent(idx).0.clone() {
        if let Some(w) = st.window_at(reset, now) {
            if w.start == row.window_start && w.end == row.window_end {
                set_meter(st.meter(idx, w), &row.used);
            }
        }
    }
}

/// An open reservation into the customer's state and the engine's index: its
/// hold counts in the current window when it was made in it.
fn load_reservation(
    inner: &Inner,
    st: &mut CustomerState,
    idx: usize,
    r: ReservationRecord,
    now: Timestamp,
) {
    let window = match st.ent(idx).0.clone() {
        Ent::Metered { reset, .. } => st
            .window_at(reset, r.created_at)
            .map_or((Timestamp::MIN, Timestamp::MIN), |w| (w.start, w.end)),
        _ => (Timestamp::MIN, Timestamp::MIN),
    };
    if let Ent::Metered { reset, .. } = st.ent(idx).0.clone() {
        if let Some(cur) = st.window_at(reset, now) {
            if (cur.start, cur.end) == window {
                st.meter(idx, cur).reserved += r.quantity;
            }
        }
    }
    inner.reservations.insert(r.id.clone(), st.id.clone());
    st.resv.push(OpenResv {
        id: r.id,
        feature: idx,
        quantity: r.quantity,
        created_at: r.created_at,
        expires_at: r.expires_at,
        window,
        idempotency_key: r.idempotency_key,
    });
}

/// The idempotency keys a ledger record answers: its own, and for a
/// reservation's commit the internal key of that commit (the reservation id
/// is only in the answer).
fn record_keys(r: &NewUsageRecord) -> impl Iterator<Item = Box<str>> + '_ {
    let commit = (r.source == UsageSource::Commit)
        .then(|| r.answer.get("reservation_id").and_then(|v| v.as_str()))
        .flatten()
        .map(|res| commit_key(res).into_boxed_str());
    commit
        .into_iter()
        .chain(r.idempotency_key.as_deref().map(Box::<str>::from))
}

/// A reservation's own idempotency key (its answer is not in the ledger).
fn reservation_key(st: &mut CustomerState, r: OpenResv) {
    if let Some(k) = r.idempotency_key {
        let mut d = Decision::denied(crate::types::DenyReason::LimitReached, r.quantity);
        d.allowed = true;
        d.reason = None;
        d.reservation_id = Some(r.id.clone());
        d.reservation_expires_at = Some(r.expires_at);
        st.idem.entry(k.into_boxed_str()).or_insert(Idem::Done {
            feature: r.feature,
            answer: Answer::Kept(Arc::new(d)),
            at: r.created_at,
        });
    }
}

/// Whether a start kept something aside for one of `features`.
pub(crate) fn has_parked(inner: &Inner, features: &[&str]) -> bool {
    let parked = inner.parked.lock();
    parked
        .values()
        .any(|per| features.iter().any(|f| per.contains_key(*f)))
}

/// Takes what a start kept aside for `features` (see [`Parked`]), by
/// customer. A feature that was never used has nothing kept: one map lookup
/// per customer that had something kept, no store query.
pub(crate) fn take_parked(inner: &Inner, features: &[&str]) -> HashMap<String, Parked> {
    let mut parked = inner.parked.lock();
    if parked.is_empty() || features.is_empty() {
        return HashMap::new();
    }
    let mut out: HashMap<String, Parked> = HashMap::new();
    for (customer, per) in parked.iter_mut() {
        for f in features {
            if let Some(p) = per.remove(*f) {
                out.entry(customer.clone()).or_default().append(p);
            }
        }
    }
    parked.retain(|_, per| !per.is_empty());
    out.retain(|_, p| !p.is_empty());
    out
}

/// Restores into one customer's state what a start kept aside for features
/// that `served` (the catalog about to be served) defines again, in the
/// start's order: overrides, grants, snapshot rows, the ledger after the
/// snapshot, open reservations. Returns the ledger records with how the
/// writer's aggregate counts them (it holds the snapshot rows already).
pub(crate) fn restore(
    inner: &Inner,
    served: &Served,
    st: &mut CustomerState,
    parked: Parked,
    now: Timestamp,
) -> Vec<(NewUsageRecord, Counted)> {
    for o in parked.overrides {
        load_override(served, st, o);
    }
    for g in parked.grants {
        load_grant(served, st, g);
    }
    for row in &parked.rows {
        load_row(served, st, row, now);
    }
    let mut counted = Vec::with_capacity(parked.records.len());
    for rec in parked.records {
        let c = replay_one(served, st, &rec, now);
        counted.push((rec, c));
    }
    for r in parked.reservations {
        let Some(idx) = served.features.get(&r.feature) else {
            continue;
        };
        load_reservation(inner, st, idx, r, now);
        if let Some(open) = st.resv.last().cloned() {
            reservation_key(st, open);
        }
    }
    // Keys of requests decided since the restart (for other features) win.
    for (key, feature, seq, at) in parked.keys {
        if let Some(feature) = served.features.get(&feature) {
            st.idem.entry(key).or_insert(Idem::Done {
                feature,
                answer: Answer::Ledger(seq),
                at,
            });
        }
    }
    counted
}
