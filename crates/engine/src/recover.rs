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
    NewUsageRecord, PlanVersionRecord, ReservationState, Store, UsageSource, WriteOp,
};

use crate::clock::Clock;
use crate::compile;
use crate::engine::{Engine, EngineConfig, Inner, parse_tz, set_meter};
use crate::error::EngineError;
use crate::grants::{GrantState, insert_sorted};
use crate::ids::{IdGen, is_grant_id};
use crate::model::{Ent, Kind};
use crate::rate::RateLog;
use crate::served::{Served, publish};
use crate::state::{Answer, CustomerState, Idem, OpenResv, Slot};
use crate::types::Decision;
use crate::writer::{Aggregate, Counted, GAUGE_LEVEL, LIFETIME_END, LIFETIME_START, Ops, Writer};

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
        };

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
        for o in store.all_overrides().await? {
            let Some(st) = states.get_mut(&o.customer_id) else {
                continue;
            };
            match inner.compile_override(&o.feature, &o.entitlement) {
                Ok((idx, ent)) => st.overrides.push((idx, ent, o.entitlement)),
                Err(e) => tracing::warn!(customer = %o.customer_id, feature = %o.feature,
                    error = %e, "ignoring an override that no longer fits the catalog"),
            }
        }
        for g in store.all_grants().await? {
            let (Some(st), Some(idx)) = (
                states.get_mut(&g.customer_id),
                inner.served().features.get(&g.feature),
            ) else {
                continue;
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

        // ---- snapshot -------------------------------------------------------------
        let mut aggregate = Aggregate::default();
        let (snap_seq, rows) = store.load_snapshot().await?.unwrap_or((0, Vec::new()));
        stats.snapshot_seq = snap_seq;
        stats.snapshot_counters = rows.len();
        for row in rows {
            let lifetime = row.window_start == LIFETIME_START && row.window_end == LIFETIME_END;
            if let (Some(st), Some(idx)) = (
                states.get_mut(&row.customer_id),
                inner.served().features.get(&row.feature),
            ) {
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
                let counted = replay_one(&inner, &mut states, &rec.record, now);
                aggregate.apply_record(&rec.record, counted);
            }
            if n < config.replay_page as usize {
                break;
            }
        }
        let last_seq = after.max(store.max_seq().await?);

        // ---- open reservations ------------------------------------------------------
        for r in store.open_reservations().await? {
            let (Some(st), Some(idx)) = (
                states.get_mut(&r.customer_id),
                inner.served().features.get(&r.feature),
            ) else {
                continue;
            };
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
            stats.open_reservations += 1;
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
            let (Some(st), Some(idx)) = (
                states.get_mut(&r.customer_id),
                inner.served().features.get(&r.feature),
            ) else {
                continue;
            };
            if inner.served().features.defs[idx].kind == Kind::Rate {
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
            if r.source == UsageSource::Commit {
                // The reservation id is only in the answer.
                if let Some(res) = r.answer.get("reservation_id").and_then(|v| v.as_str()) {
                    st.idem.insert(
                        commit_key(res).into_boxed_str(),
                        Idem::Done {
                            feature: idx,
                            answer: Answer::Ledger(rec.seq),
                            at: r.recorded_at,
                        },
                    );
                }
            }
            let Some(key) = &r.idempotency_key else {
                continue;
            };
            stats.idempotency_keys += 1;
            st.idem.insert(
                key.as_str().into(),
                Idem::Done {
                    feature: idx,
                    answer: Answer::Ledger(rec.seq),
                    at: r.recorded_at,
                },
            );
        }
        // Reservations' own keys (their answers are not in the ledger).
        for st in states.values_mut() {
            let open: Vec<OpenResv> = st.resv.clone();
            for r in open {
                if let Some(k) = r.idempotency_key {
                    let mut d =
                        Decision::denied(crate::types::DenyReason::LimitReached, r.quantity);
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
        }

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
    inner: &Inner,
    states: &mut HashMap<String, CustomerState>,
    rec: &NewUsageRecord,
    now: Timestamp,
) -> Counted {
    let Some(idx) = inner.served().features.get(&rec.feature) else {
        return Counted::Nothing;
    };
    let Some(st) = states.get_mut(&rec.customer_id) else {
        return Counted::Nothing;
    };
    match inner.served().features.defs[idx].kind {
        Kind::Metered => {
            let reset = match st.ent(idx).0 {
                Ent::Metered { reset, .. } => *reset,
                _ => compile_reset(inner, idx),
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
fn compile_reset(inner: &Inner, idx: usize) -> tollgate_core::period::ResetPeriod {
    let served = inner.served();
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
