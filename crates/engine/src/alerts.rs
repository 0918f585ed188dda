//! Alerts, detected in the decision that causes them.
//!
//! A consume (commit, ingested event, gauge change) that moves a counter from
//! below a threshold to at or above it adds an [`WriteOp::Outbox`] event to the
//! same group-commit batch as its ledger row: the event is stored if and only
//! if the usage is. Every event carries a dedup key (customer, feature, window
//! start, what fired and the limit in force), so the store keeps one per period
//! even when a gauge goes down and up, a failed batch is retried, or the engine
//! restarts; a plan change to another limit fires again against the new one.
//!
//! The common case costs one or two decimal comparisons and allocates nothing: the
//! thresholds of an entitlement are compiled once into quantities of its limit
//! with their lowest and highest bounds ([`Alerts`]), and a decision whose
//! counter stays below the lowest or started above the highest returns an
//! empty `Vec` (no allocation).
//!
//! Events: `usage.threshold_reached`, `usage.limit_exceeded` (the first usage
//! beyond the limit in a period), `usage.denied` (the first denial at a hard
//! limit in a period; remembered in memory so later denials write nothing),
//! `grant.exhausted` and `emergency.drawn`. Payloads: `docs/alerts.md`.

use std::sync::Arc;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tollgate_core::catalog::{Entitlement, Limit, Threshold};
use tollgate_core::period::ResetPeriod;
use tollgate_store::WriteOp;
use tollgate_store::notify::OutboxEvent;

use crate::engine::{Engine, Inner};
use crate::error::EngineError;
use crate::model::{Ent, Kind};
use crate::state::{Alloc, CustomerState, Slot};
use crate::types::{Decision, DenyReason};
use crate::writer::{Counted, Ops};

/// One entitlement's alert thresholds as usage quantities of its limit,
/// ascending, with the bounds that make the no-crossing check two comparisons.
#[derive(Debug, PartialEq)]
pub(crate) struct Alerts {
    lo: Decimal,
    hi: Decimal,
    levels: Box<[(Threshold, Decimal)]>,
}

impl Alerts {
    /// `None` when no threshold can fire (percentages of an unlimited limit).
    pub(crate) fn compile(thresholds: &[Threshold], limit: Limit) -> Option<Arc<Alerts>> {
        let mut levels: Vec<(Threshold, Decimal)> = thresholds
            .iter()
            .filter_map(|t| t.quantity_for(limit).map(|q| (*t, q)))
            .collect();
        levels.sort_by_key(|l| l.1);
        let lo = levels.first()?.1;
        let hi = levels.last()?.1;
        Some(Arc::new(Alerts {
            lo,
            hi,
            levels: levels.into_boxed_slice(),
        }))
    }

    /// The thresholds a counter moving from `before` to `after` reaches:
    /// `before < q <= after`. (Below the lowest threshold, not even `before`
    /// is computed.)
    fn crossed(&self, c: &Change) -> &[(Threshold, Decimal)] {
        let after = c.after;
        if after < self.lo {
            return &[];
        }
        let before = c.before();
        if before >= self.hi {
            return &[];
        }
        let first = self.levels.partition_point(|(_, q)| *q <= before);
        let end = self.levels.partition_point(|(_, q)| *q <= after);
        self.levels.get(first..end).unwrap_or(&[])
    }
}

/// Denials already announced, as (feature, window start): later denials in the
/// same window write nothing. Lost at a restart, when the store's dedup key
/// takes over (one more write, no second event).
#[derive(Debug, Default)]
pub(crate) struct Announced(Vec<(u32, Timestamp)>);

impl Announced {
    /// Whether the denial of `feature` in the window starting at `start` is new
    /// (and marks it announced).
    fn claim(&mut self, feature: usize, start: Timestamp) -> bool {
        let f = feature as u32;
        match self.0.iter_mut().find(|(g, _)| *g == f) {
            Some((_, s)) if *s == start => false,
            Some((_, s)) => {
                *s = start;
                true
            }
            None => {
                self.0.push((f, start));
                true
            }
        }
    }

    /// Forgets an announcement whose write failed, so the next denial retries.
    pub(crate) fn release(&mut self, feature: usize, start: Timestamp) {
        let f = feature as u32;
        self.0.retain(|(g, s)| !(*g == f && *s == start));
    }
}

/// What to do about a limit: the cheapest public plan above the customer's
/// with a higher limit, or drawing the plan's emergency pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RecommendedAction {
    /// Move to this plan (its limit for the feature).
    Upgrade {
        plan: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<Decimal>,
    },
    /// Draw the emergency pool (`POST /v1/customers/{id}/emergency-pool`):
    /// this many extra units until the window ends.
    DrawEmergencyPool { units: Decimal },
}

/// The entitlement facts every event of a feature carries.
struct Subject {
    feature: usize,
    kind: Kind,
    window: (Timestamp, Timestamp),
    limit: Option<Decimal>,
    hard: bool,
}

impl Subject {
    /// Feature `f` of `st` now: its entitlement's limit and enforcement and its
    /// alert window (metered: `window`, else the current usage window; gauges:
    /// the billing period). `None` for other kinds.
    fn of(
        st: &CustomerState,
        f: usize,
        window: Option<(Timestamp, Timestamp)>,
        now: Timestamp,
    ) -> Option<Subject> {
        let (kind, limit, hard, window) = match st.ent(f).0 {
            Ent::Metered {
                limit, hard, reset, ..
            } => {
                let w = match window {
                    Some(w) => w,
                    None => st.window_at(*reset, now).map(|p| (p.start, p.end))?,
                };
                (Kind::Metered, *limit, *hard, w)
            }
            Ent::Gauge { limit, hard, .. } => (Kind::Gauge, *limit, *hard, gauge_window(st, now)),
            _ => return None,
        };
        Some(Subject {
            feature: f,
            kind,
            window,
            limit,
            hard,
        })
    }
}

impl Subject {
    /// The feature's key (looked up only when an event or a recommendation is
    /// built, not on every consume).
    fn key(&self, inner: &Inner) -> Arc<str> {
        inner.feature_key(self.feature)
    }

    /// The usage now: the window's (metered) or the level (gauges).
    fn usage(&self, st: &CustomerState) -> Decimal {
        match st.slot(self.feature) {
            Some(Slot::Meter(m)) if (m.start, m.end) == self.window => m.used(),
            Some(Slot::Gauge(l)) if self.kind == Kind::Gauge => *l,
            _ => Decimal::ZERO,
        }
    }
}

fn dec(d: Decimal) -> Value {
    Value::String(d.normalize().to_string())
}

fn percent(used: Decimal, limit: Option<Decimal>) -> Value {
    limit
        .and_then(|l| tollgate_core::catalog::percent_of_limit(used, l))
        .map_or(Value::Null, dec)
}

fn threshold_json(t: Threshold) -> Value {
    match t {
        Threshold::Percent(p) => {
            json!({"type": "percent", "value": dec(p), "label": t.to_string()})
        }
        Threshold::Units(u) => json!({"type": "units", "value": dec(u), "label": t.to_string()}),
    }
}

fn end_json(end: Timestamp) -> Value {
    if end == crate::writer::LIFETIME_END {
        Value::Null
    } else {
        json!(end)
    }
}

/// Whether the emergency pool of a metered feature can be drawn in `window`.
fn emergency_available(
    st: &CustomerState,
    f: usize,
    window: (Timestamp, Timestamp),
) -> Option<Decimal> {
    let Ent::Metered {
        emergency: Some(units),
        ..
    } = st.ent(f).0
    else {
        return None;
    };
    let drawn = st.grants.iter().any(|g| {
        g.feature == f
            && g.record.kind == "emergency"
            && g.record.voided_at.is_none()
            && window.0 <= g.record.effective_at
            && g.record.effective_at < window.1
    });
    (!drawn).then_some(*units)
}

/// The recommended action for a feature whose usage is `used` of `limit`:
/// at or above a hard limit with the emergency pool available, draw it;
/// else upgrade when a public plan above allows more; else the pool if any.
fn recommend(
    inner: &Inner,
    st: &CustomerState,
    s: &Subject,
    used: Decimal,
) -> Option<RecommendedAction> {
    let pool = if s.kind == Kind::Metered {
        emergency_available(st, s.feature, s.window)
    } else {
        None
    };
    let at_limit = s.limit.is_some_and(|l| used >= l);
    if let (Some(units), true, true) = (pool, at_limit, s.hard) {
        return Some(RecommendedAction::DrawEmergencyPool { units });
    }
    let upgrade = s.limit.and_then(|current| {
        let served = inner.served();
        let key = s.key(inner);
        let tier = st.sub.as_ref().map(|sub| served.tier_of(&sub.plan));
        let more = |e: &Entitlement| e.limit().is_some_and(|l| l > Limit::Finite(current));
        let plan = served.catalog.upgrade_plan(&key, &more, tier)?;
        Some(RecommendedAction::Upgrade {
            plan: plan.key.clone(),
            limit: plan.entitlement(&key).and_then(|e| e.limit()?.finite()),
        })
    });
    upgrade.or(pool.map(|units| RecommendedAction::DrawEmergencyPool { units }))
}

/// Builds one outbox event about `s` for the customer `st`.
fn event(
    inner: &Inner,
    st: &CustomerState,
    s: &Subject,
    event_type: &str,
    what: &str,
    mut fields: Map<String, Value>,
    now: Timestamp,
) -> WriteOp {
    let customer = &*st.id;
    let key = s.key(inner);
    fields.insert("customer".into(), json!(customer));
    fields.insert("feature".into(), json!(&*key));
    fields.insert("feature_kind".into(), json!(s.kind.as_str()));
    fields.insert(
        "period".into(),
        json!({"start": s.window.0, "end": end_json(s.window.1)}),
    );
    fields.insert("limit".into(), s.limit.map_or(Value::Null, dec));
    fields.insert(
        "enforcement".into(),
        json!(if s.hard { "hard" } else { "soft" }),
    );
    WriteOp::Outbox(OutboxEvent {
        id: inner.ids.mint("evt"),
        event_type: event_type.to_string(),
        customer_id: Some(customer.to_string()),
        object_key: format!("customer:{customer}"),
        object_seq: 0,
        dedup_key: Some(format!(
            "{customer}|{}|{}|{what}|{}",
            key,
            s.window.0,
            s.limit
                .map_or_else(|| "unlimited".to_string(), |l| l.normalize().to_string())
        )),
        payload: Value::Object(fields),
        created_at: now,
        seq: 0,
    })
}

fn usage_fields(
    inner: &Inner,
    st: &CustomerState,
    s: &Subject,
    used: Decimal,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("used".into(), dec(used));
    m.insert("percent".into(), percent(used, s.limit));
    m.insert(
        "recommended_action".into(),
        recommend(inner, st, s, used).map_or(Value::Null, |a| json!(a)),
    );
    m
}

/// A counter's usage around one decision.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Change {
    /// How much it moved (negative: down).
    pub delta: Decimal,
    pub after: Decimal,
    pub now: Timestamp,
}

impl Change {
    /// Usage that moved by `delta` to `after`.
    pub(crate) fn up_by(delta: Decimal, after: Decimal, now: Timestamp) -> Change {
        Change { delta, after, now }
    }

    fn before(&self) -> Decimal {
        self.after - self.delta
    }
}

/// Threshold and limit events of a counter that moved from `before` to `after`.
fn crossings(
    inner: &Inner,
    st: &CustomerState,
    s: &Subject,
    alerts: Option<&Alerts>,
    c: Change,
    first_overage: bool,
    out: &mut Vec<WriteOp>,
) {
    let Change { after, now, .. } = c;
    if let Some(a) = alerts {
        for (t, q) in a.crossed(&c) {
            let mut f = usage_fields(inner, st, s, after);
            f.insert("threshold".into(), threshold_json(*t));
            f.insert("threshold_quantity".into(), dec(*q));
            let what = t.to_string();
            out.push(event(
                inner,
                st,
                s,
                "usage.threshold_reached",
                &what,
                f,
                now,
            ));
        }
    }
    if first_overage {
        let mut f = usage_fields(inner, st, s, after);
        f.insert(
            "overage".into(),
            dec(s
                .limit
                .map_or(Decimal::ZERO, |l| (after - l).max(Decimal::ZERO))),
        );
        out.push(event(
            inner,
            st,
            s,
            "usage.limit_exceeded",
            "limit_exceeded",
            f,
            now,
        ));
    }
}

/// The events of metered usage just booked in `window` (a consume, commit or
/// counted ingested event): `c` is the window's usage around it. Empty (no
/// allocation) when nothing fired.
pub(crate) fn metered_usage(
    inner: &Inner,
    st: &CustomerState,
    f: usize,
    window: (Timestamp, Timestamp),
    c: Change,
    alloc: &Alloc,
) -> Vec<WriteOp> {
    let Ent::Metered { alerts, .. } = st.ent(f).0 else {
        return Vec::new();
    };
    let crossing = alerts.as_deref().is_some_and(|a| !a.crossed(&c).is_empty());
    // The first overage of the window: the meter holds only this one's.
    let first_overage = !alloc.overage.is_zero()
        && matches!(st.slot(f), Some(Slot::Meter(m)) if m.overage == alloc.overage);
    if !crossing && !first_overage && alloc.grants.is_empty() {
        return Vec::new();
    }
    let Change { after, now, .. } = c;
    let Some(s) = Subject::of(st, f, Some(window), now) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    crossings(inner, st, &s, alerts.as_deref(), c, first_overage, &mut out);
    for (id, _) in &alloc.grants {
        let Some(g) = st.grants.iter().find(|g| &g.record.id == id) else {
            continue;
        };
        if !g.remaining().is_zero() {
            continue;
        }
        let mut fields = Map::new();
        fields.insert("grant".into(), json!(id));
        fields.insert("grant_kind".into(), json!(g.record.kind));
        fields.insert("quantity".into(), dec(g.record.quantity));
        fields.insert("used".into(), dec(after));
        let mut e = event(inner, st, &s, "grant.exhausted", "", fields, now);
        if let WriteOp::Outbox(ev) = &mut e {
            ev.dedup_key = Some(format!("{}|{id}|grant.exhausted", st.id));
        }
        out.push(e);
    }
    out
}

/// The billing period containing `now`: the period of gauge alerts (a gauge has
/// no usage window).
fn gauge_window(st: &CustomerState, now: Timestamp) -> (Timestamp, Timestamp) {
    st.window_at(ResetPeriod::BillingPeriod, now)
        .map_or((now, crate::writer::LIFETIME_END), |p| (p.start, p.end))
}

/// The events of a gauge moved from `c.before` to `c.after` (allowed).
pub(crate) fn gauge_change(inner: &Inner, st: &CustomerState, f: usize, c: Change) -> Vec<WriteOp> {
    if c.delta <= Decimal::ZERO {
        return Vec::new();
    }
    let (before, after, now) = (c.before(), c.after, c.now);
    let Ent::Gauge {
        limit,
        hard,
        alerts,
    } = st.ent(f).0
    else {
        return Vec::new();
    };
    let crossing = alerts.as_deref().is_some_and(|a| !a.crossed(&c).is_empty());
    let beyond = !*hard && limit.is_some_and(|l| before <= l && l < after);
    if !crossing && !beyond {
        return Vec::new();
    }
    let Some(s) = Subject::of(st, f, None, now) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    crossings(inner, st, &s, alerts.as_deref(), c, beyond, &mut out);
    out
}

/// The first denial at a hard limit in a window: the event to write, and the
/// window start to forget if that write fails. `None` for other denials and
/// for denials already announced.
pub(crate) fn denial(
    inner: &Inner,
    st: &mut CustomerState,
    f: usize,
    window: Option<(Timestamp, Timestamp)>,
    d: &Decision,
    now: Timestamp,
) -> Option<(WriteOp, Timestamp)> {
    if d.allowed || d.reason != Some(DenyReason::LimitReached) {
        return None;
    }
    let s = Subject::of(st, f, window, now)?;
    if !st.announced.claim(f, s.window.0) {
        return None;
    }
    let mut fields = usage_fields(inner, st, &s, d.used);
    fields.insert("requested".into(), dec(d.quantity));
    fields.insert(
        "resets_at".into(),
        d.resets_at.map_or(Value::Null, |r| json!(r)),
    );
    Some((
        event(inner, st, &s, "usage.denied", "denied", fields, now),
        s.window.0,
    ))
}

/// `op` alone, or with the alert events that go in its batch.
pub(crate) fn with_events(op: WriteOp, counted: Counted, events: Vec<WriteOp>) -> Ops {
    if events.is_empty() {
        return Ops::One(op, counted);
    }
    let mut v = Vec::with_capacity(events.len() + 1);
    v.push((op, counted));
    v.extend(events.into_iter().map(|e| (e, Counted::Nothing)));
    Ops::Many(v)
}

/// `ops` with the alert events added at the end (ledger seqs of the appends
/// keep their positions).
pub(crate) fn extend_ops(ops: Ops, events: Vec<WriteOp>) -> Ops {
    if events.is_empty() {
        return ops;
    }
    let mut v = match ops {
        Ops::One(op, c) => vec![(op, c)],
        Ops::Many(v) => v,
    };
    v.extend(events.into_iter().map(|e| (e, Counted::Nothing)));
    Ops::Many(v)
}

/// The `emergency.drawn` event of a drawn emergency grant.
pub(crate) fn emergency_drawn(
    inner: &Inner,
    st: &CustomerState,
    f: usize,
    window: (Timestamp, Timestamp),
    grant_id: &str,
    units: Decimal,
    now: Timestamp,
) -> Option<OutboxEvent> {
    let s = Subject::of(st, f, Some(window), now)?;
    let used = s.usage(st);
    let mut fields = Map::new();
    fields.insert("grant".into(), json!(grant_id));
    fields.insert("units".into(), dec(units));
    fields.insert("used".into(), dec(used));
    fields.insert("expires_at".into(), end_json(window.1));
    match event(
        inner,
        st,
        &s,
        "emergency.drawn",
        "emergency.drawn",
        fields,
        now,
    ) {
        WriteOp::Outbox(e) => Some(e),
        _ => None,
    }
}

impl Engine {
    /// What the customer can do about a metered or gauge feature's limit now:
    /// upgrade (to the cheapest public plan above with a higher limit) or draw
    /// the emergency pool. `None` when neither applies (unlimited, top plan).
    pub fn recommended_action(
        &self,
        customer: &str,
        feature: &str,
    ) -> Result<Option<RecommendedAction>, EngineError> {
        let inner = &*self.inner;
        let f = inner
            .served()
            .features
            .get(feature)
            .ok_or_else(|| EngineError::UnknownFeature(feature.to_string()))?;
        let now = inner.now();
        inner.with_customer(customer, |st| {
            let s = Subject::of(st, f, None, now)?;
            recommend(inner, st, &s, s.usage(st))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn levels(a: &Alerts, before: Decimal, after: Decimal) -> Vec<String> {
        let c = Change::up_by(after - before, after, Timestamp::UNIX_EPOCH);
        a.crossed(&c).iter().map(|(t, _)| t.to_string()).collect()
    }

    #[test]
    fn crossing_is_from_below_to_at_or_above() {
        let a = Alerts::compile(
            &tollgate_core::catalog::default_alert_thresholds(),
            Limit::Finite(dec!(1000)),
        );
        let Some(a) = a else {
            panic!("finite limit compiles");
        };
        assert!(levels(&a, dec!(0), dec!(799.9)).is_empty());
        assert_eq!(levels(&a, dec!(799), dec!(800)), ["80%"]);
        assert!(levels(&a, dec!(800), dec!(949)).is_empty());
        assert_eq!(levels(&a, dec!(100), dec!(1200)), ["80%", "95%", "100%"]);
        assert_eq!(levels(&a, dec!(950), dec!(1000)), ["100%"]);
        assert!(levels(&a, dec!(1000), dec!(5000)).is_empty());
    }

    #[test]
    fn units_fire_on_unlimited_limits_and_percentages_never_do() {
        let t = [Threshold::Percent(dec!(80)), Threshold::Units(dec!(5000))];
        let Some(a) = Alerts::compile(&t, Limit::Unlimited) else {
            panic!("units compile");
        };
        assert_eq!(levels(&a, dec!(4999), dec!(5000)), ["5000 units"]);
        assert!(Alerts::compile(&t[..1], Limit::Unlimited).is_none());
    }

    #[test]
    fn a_denial_is_announced_once_per_window() {
        let mut n = Announced::default();
        let w1: Timestamp = "2025-01-01T00:00:00Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let w2: Timestamp = "2025-02-01T00:00:00Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH);
        assert!(n.claim(3, w1));
        assert!(!n.claim(3, w1));
        assert!(n.claim(4, w1));
        assert!(n.claim(3, w2));
        n.release(3, w2);
        assert!(n.claim(3, w2));
    }
}
