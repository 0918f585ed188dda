//! Per-customer in-memory state and the decisions made on it.
//!
//! Everything here is synchronous and runs under the customer's
//! `parking_lot::Mutex`: a decision and the update of the counters it implies
//! are one atomic step, so concurrent callers can never overshoot a limit.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rust_decimal::Decimal;
use tokio::sync::Notify;
use tollgate_core::period::{Anchoring, BillingCycle, Interval, Period, ResetPeriod, usage_window};
use tollgate_store::{CustomerRecord, SubscriptionRecord, SubscriptionStatus};

use crate::grants::GrantState;
use crate::lease::LeaseSet;
use crate::model::{CompiledPlan, Ent};
use crate::rate::RateLog;
use crate::types::{Decision, DenyReason};

/// A subscription in memory: what every decision reads first (copied out of
/// the record), the rest behind a pointer.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct SubState {
    pub plan: Arc<CompiledPlan>,
    pub status: SubscriptionStatus,
    pub anchor: Timestamp,
    pub trial_ends_at: Option<Timestamp>,
    pub record: Box<SubscriptionRecord>,
    pub cycle: BillingCycle,
}

impl SubState {
    pub(crate) fn new(
        record: SubscriptionRecord,
        plan: Arc<CompiledPlan>,
        cycle: BillingCycle,
    ) -> SubState {
        SubState {
            plan,
            status: record.status,
            anchor: record.anchor,
            trial_ends_at: record.trial_ends_at,
            record: Box::new(record),
            cycle,
        }
    }

    pub(crate) fn set_record(&mut self, record: SubscriptionRecord) {
        self.status = record.status;
        self.anchor = record.anchor;
        self.trial_ends_at = record.trial_ends_at;
        *self.record = record;
    }
}

/// A metered counter for the current usage window.
#[derive(Clone, Debug)]
pub(crate) struct Meter {
    pub start: Timestamp,
    pub end: Timestamp,
    /// Drawn from the plan's allowance.
    pub plan: Decimal,
    /// Drawn from grants (all grants together; per grant in `GrantState::drawn`).
    pub grants: Decimal,
    /// Beyond the allowance, allowed by a soft limit, `allow_overage` or an
    /// ingested event.
    pub overage: Decimal,
    /// Beyond the allowance, allowed by the admin bypass.
    pub bypass: Decimal,
    /// Held by open reservations created in this window.
    pub reserved: Decimal,
}

impl Meter {
    fn empty() -> Meter {
        Meter {
            start: Timestamp::MIN,
            end: Timestamp::MIN,
            plan: Decimal::ZERO,
            grants: Decimal::ZERO,
            overage: Decimal::ZERO,
            bypass: Decimal::ZERO,
            reserved: Decimal::ZERO,
        }
    }

    pub(crate) fn used(&self) -> Decimal {
        self.plan + self.grants + self.overage + self.bypass
    }

    pub(crate) fn window(&self) -> (Timestamp, Timestamp) {
        (self.start, self.end)
    }
}

/// Counters and logs of one customer, by feature index. The first two live
/// inline in the customer's state (no pointer to chase on the hot path).
#[derive(Debug, Default)]
pub(crate) struct Slots {
    a: Option<(u32, Slot)>,
    b: Option<(u32, Slot)>,
    rest: Vec<(u32, Slot)>,
}

impl Slots {
    pub(crate) fn get(&self, f: usize) -> Option<&Slot> {
        let f = f as u32;
        match (&self.a, &self.b) {
            (Some((k, s)), _) if *k == f => Some(s),
            (_, Some((k, s))) if *k == f => Some(s),
            _ => self.rest.iter().find(|(k, _)| *k == f).map(|(_, s)| s),
        }
    }

    pub(crate) fn get_mut(&mut self, f: usize) -> Option<&mut Slot> {
        let f = f as u32;
        if let Some((k, s)) = &mut self.a {
            if *k == f {
                return Some(s);
            }
        }
        if let Some((k, s)) = &mut self.b {
            if *k == f {
                return Some(s);
            }
        }
        self.rest.iter_mut().find(|(k, _)| *k == f).map(|(_, s)| s)
    }

    pub(crate) fn entry(&mut self, f: usize, make: impl FnOnce() -> Slot) -> &mut Slot {
        if self.get(f).is_none() {
            let new = Some((f as u32, make()));
            if self.a.is_none() {
                self.a = new;
            } else if self.b.is_none() {
                self.b = new;
            } else if let Some(n) = new {
                self.rest.push(n);
            }
        }
        self.get_mut(f)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    pub(crate) fn retain(&mut self, keep: impl Fn(&Slot) -> bool) {
        if self.a.as_ref().is_some_and(|(_, s)| !keep(s)) {
            self.a = None;
        }
        if self.b.as_ref().is_some_and(|(_, s)| !keep(s)) {
            self.b = None;
        }
        self.rest.retain(|(_, s)| keep(s));
    }
}

#[derive(Debug)]
pub(crate) enum Slot {
    Meter(Meter),
    Gauge(Decimal),
    Rate(RateLog),
    Leases(LeaseSet),
}

#[derive(Clone, Debug)]
pub(crate) struct OpenResv {
    pub id: String,
    pub feature: usize,
    pub quantity: Decimal,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The window whose counter holds this reservation's quantity.
    pub window: (Timestamp, Timestamp),
    pub idempotency_key: Option<String>,
}

/// What an idempotency key maps to.
#[derive(Debug)]
pub(crate) enum Idem {
    /// Claimed by a request whose write is being committed; duplicates wait.
    Pending {
        feature: usize,
        notify: Arc<Notify>,
        /// The request that claimed it (an ingest batch recognises its own).
        owner: u64,
    },
    /// Committed: retries get this answer.
    Done {
        feature: usize,
        answer: Answer,
        at: Timestamp,
    },
}

/// Where a remembered answer is. Most answers are in the ledger row the
/// request wrote, so memory keeps only its sequence (replays are rare and read
/// it back); answers without a ledger row (reservations) are kept whole.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    Ledger(i64),
    Kept(Arc<Decision>),
}

/// How a quantity was drawn.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Alloc {
    pub plan: Decimal,
    pub grants: Vec<(String, Decimal)>,
    pub overage: Decimal,
    pub bypass: Decimal,
}

impl Alloc {
    pub(crate) fn to_map(&self) -> std::collections::BTreeMap<String, Decimal> {
        let mut m = std::collections::BTreeMap::new();
        if !self.plan.is_zero() {
            m.insert("plan".to_string(), self.plan);
        }
        for (id, q) in &self.grants {
            m.insert(id.clone(), *q);
        }
        if !self.overage.is_zero() {
            m.insert("overage".to_string(), self.overage);
        }
        if !self.bypass.is_zero() {
            m.insert("bypass".to_string(), self.bypass);
        }
        m
    }
}

/// One customer in memory. Laid out hot fields first (`repr(C)`): a decision
/// reads the flags, the subscription's gate fields and plan, the (usually
/// empty) override/grant/reservation lists and the first counter slots, which
/// sit in a few adjacent cache lines; the customer record is behind a pointer.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct CustomerState {
    /// Soft-deleted (copied from the record).
    pub deleted: bool,
    /// Admin bypass (copied from the record).
    pub bypass_flag: bool,
    pub sub: Option<SubState>,
    /// Per-customer overrides: (feature index, compiled, as stored).
    pub overrides: Vec<(usize, Ent, serde_json::Value)>,
    /// Grants in burn order.
    pub grants: Vec<GrantState>,
    pub resv: Vec<OpenResv>,
    /// Counters and logs, sparse by feature index.
    pub slots: Slots,
    /// Set while counters are rebuilt from the ledger (after a subscription or
    /// time-zone change); requests wait for it.
    pub reloading: Option<Arc<Notify>>,
    /// Reservations expired by a decision, whose state change the engine
    /// still has to write.
    pub expired: Vec<(String, usize)>,
    pub idem: HashMap<Box<str>, Idem>,
    /// Denials already announced by a `usage.denied` alert, per window.
    pub announced: crate::alerts::Announced,
    pub id: Arc<str>,
    pub tz: TimeZone,
    pub record: Box<CustomerRecord>,
}

/// The context of a metered decision: the entitlement and the window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MeterCtx {
    pub limit: Option<Decimal>,
    pub hard: bool,
    pub window: Period,
    /// The plan would refuse everything (not in plan, inactive) but the admin
    /// bypass lets it through: everything drawn goes to `bypass`.
    pub bypass_all: bool,
    pub bypass: bool,
}

/// The outcome of a metered decision before it is turned into an answer.
#[derive(Debug)]
pub(crate) struct Metered {
    pub decision: Decision,
    pub alloc: Alloc,
    pub window: (Timestamp, Timestamp),
}

pub(crate) fn cycle_for(
    plan: Option<&CompiledPlan>,
    anchor: Timestamp,
    tz: &TimeZone,
) -> BillingCycle {
    match plan {
        Some(p) => BillingCycle::new(p.interval, p.anchoring, anchor, tz.clone()),
        None => BillingCycle::new(Interval::Month, Anchoring::Calendar, anchor, tz.clone()),
    }
}

/// The meter of a feature in `slots`, rolled over to `window` if it is in
/// another one (a free function so callers can borrow other fields meanwhile).
pub(crate) fn meter_in(slots: &mut Slots, feature: usize, window: Period) -> &mut Meter {
    let slot = slots.entry(feature, || Slot::Meter(Meter::empty()));
    if !matches!(slot, Slot::Meter(_)) {
        *slot = Slot::Meter(Meter::empty());
    }
    let Slot::Meter(m) = slot else {
        unreachable!("just made a meter")
    };
    if m.start != window.start || m.end != window.end {
        // Rollover: the counter restarts at 0 for the new window. Holds of
        // reservations made in the old window do not carry over.
        *m = Meter::empty();
        m.start = window.start;
        m.end = window.end;
    }
    m
}

impl CustomerState {
    pub(crate) fn new(record: CustomerRecord, tz: TimeZone) -> CustomerState {
        CustomerState {
            deleted: record.deleted_at.is_some(),
            bypass_flag: record.admin_bypass,
            sub: None,
            overrides: Vec::new(),
            grants: Vec::new(),
            resv: Vec::new(),
            slots: Slots::default(),
            reloading: None,
            expired: Vec::new(),
            idem: HashMap::new(),
            announced: crate::alerts::Announced::default(),
            id: Arc::from(record.id.as_str()),
            tz,
            record: Box::new(record),
        }
    }

    /// Replaces the record, keeping the hot copies in step.
    pub(crate) fn set_record(&mut self, record: CustomerRecord) {
        self.deleted = record.deleted_at.is_some();
        self.bypass_flag = record.admin_bypass;
        *self.record = record;
    }

    pub(crate) fn bypass(&self) -> bool {
        self.bypass_flag
    }

    /// Whether the subscription lets the customer use anything now.
    pub(crate) fn gate(&self, now: Timestamp) -> Result<&SubState, DenyReason> {
        let Some(sub) = &self.sub else {
            return Err(DenyReason::NoSubscription);
        };
        match sub.status {
            SubscriptionStatus::Canceled => Err(DenyReason::SubscriptionInactive),
            _ if now < sub.anchor => Err(DenyReason::SubscriptionInactive),
            SubscriptionStatus::Trialing if sub.trial_ends_at.is_some_and(|end| end <= now) => {
                Err(DenyReason::TrialExpired)
            }
            _ => Ok(sub),
        }
    }

    /// The entitlement in force for a feature: the override, else the plan's.
    pub(crate) fn ent(&self, feature: usize) -> (&Ent, bool) {
        if let Some((_, e, _)) = self.overrides.iter().find(|(f, _, _)| *f == feature) {
            return (e, true);
        }
        match &self.sub {
            Some(s) => (s.plan.ent(feature), false),
            None => (&Ent::Excluded, false),
        }
    }

    pub(crate) fn slot(&self, feature: usize) -> Option<&Slot> {
        self.slots.get(feature)
    }

    pub(crate) fn slot_mut(&mut self, feature: usize, make: impl FnOnce() -> Slot) -> &mut Slot {
        self.slots.entry(feature, make)
    }

    /// The window a metered feature counts in at `at`.
    pub(crate) fn window_at(&self, reset: ResetPeriod, at: Timestamp) -> Option<Period> {
        match &self.sub {
            Some(s) => usage_window(reset, &s.cycle, at).ok(),
            None => {
                let cycle = cycle_for(None, self.record.created_at, &self.tz);
                usage_window(reset, &cycle, at).ok()
            }
        }
    }

    /// Gate, entitlement and window of a metered feature at `now`.
    pub(crate) fn meter_ctx(&self, feature: usize, now: Timestamp) -> Result<MeterCtx, DenyReason> {
        let bypass = self.bypass();
        let gate = self.gate(now).map(|_| ());
        let (ent, _) = self.ent(feature);
        let (limit, hard, reset, excluded) = match ent {
            Ent::Metered {
                limit, hard, reset, ..
            } => (*limit, *hard, *reset, false),
            _ => (Some(Decimal::ZERO), true, ResetPeriod::BillingPeriod, true),
        };
        if let Err(reason) = gate {
            if !bypass {
                return Err(reason);
            }
        } else if excluded && !bypass {
            return Err(DenyReason::FeatureNotInPlan);
        }
        let bypass_all = gate.is_err() || excluded;
        // The hot path: the counter's window still contains `now`, so the
        // calendar arithmetic of `usage_window` is skipped.
        if let Some(Slot::Meter(m)) = self.slot(feature) {
            if m.start <= now && now < m.end {
                return Ok(MeterCtx {
                    limit,
                    hard,
                    window: Period {
                        start: m.start,
                        end: m.end,
                    },
                    bypass_all,
                    bypass,
                });
            }
        }
        let window = match self.window_at(reset, now) {
            Some(w) => w,
            None if bypass => Period {
                start: now,
                end: crate::writer::LIFETIME_END,
            },
            None => return Err(DenyReason::SubscriptionInactive),
        };
        Ok(MeterCtx {
            limit,
            hard,
            window,
            bypass_all,
            bypass,
        })
    }

    /// The meter of a feature, rolled over to `window` if it is in another one.
    pub(crate) fn meter(&mut self, feature: usize, window: Period) -> &mut Meter {
        meter_in(&mut self.slots, feature, window)
    }

    /// Expires open reservations whose time is up; returns their ids.
    pub(crate) fn expire_reservations(&mut self, now: Timestamp) -> Vec<(String, usize)> {
        if self.resv.iter().all(|r| r.expires_at > now) {
            return Vec::new();
        }
        let mut gone = Vec::new();
        let mut keep = Vec::with_capacity(self.resv.len());
        for r in std::mem::take(&mut self.resv) {
            if r.expires_at <= now {
                self.unhold(&r);
                gone.push((r.id, r.feature));
            } else {
                keep.push(r);
            }
        }
        self.resv = keep;
        gone
    }

    /// Releases a reservation's hold from its window's counter.
    pub(crate) fn unhold(&mut self, r: &OpenResv) {
        if let Some(Slot::Meter(m)) = self.slots.get_mut(r.feature) {
            if m.window() == r.window {
                m.reserved = (m.reserved - r.quantity).max(Decimal::ZERO);
            }
        }
    }

    /// Puts a reservation back (its commit was denied or failed) and its hold
    /// with it, if its window is still the counter's.
    pub(crate) fn rehold(&mut self, r: OpenResv) {
        if let Some(Slot::Meter(m)) = self.slots.get_mut(r.feature) {
            if m.window() == r.window {
                m.reserved += r.quantity;
            }
        }
        self.resv.push(r);
    }

    /// Remaining of active grants for a feature.
    pub(crate) fn grants_left(&self, feature: usize, now: Timestamp) -> Decimal {
        self.grants
            .iter()
            .filter(|g| g.feature == feature && g.is_active(now))
            .map(GrantState::remaining)
            .sum()
    }

    /// Draws `qty` from the plan's allowance (up to `plan_left`) then from
    /// grants in burn order; returns what could not be drawn.
    fn draw(
        &mut self,
        feature: usize,
        now: Timestamp,
        mut qty: Decimal,
        plan_left: Option<Decimal>,
        alloc: &mut Alloc,
    ) -> Decimal {
        let from_plan = match plan_left {
            None => qty,
            Some(left) => qty.min(left.max(Decimal::ZERO)),
        };
        alloc.plan += from_plan;
        qty -= from_plan;
        if qty.is_zero() {
            return qty;
        }
        for g in self.grants.iter_mut() {
            if qty.is_zero() {
                break;
            }
            if g.feature != feature || !g.is_active(now) {
                continue;
            }
            let take = qty.min(g.remaining());
            if take > Decimal::ZERO {
                g.drawn += take;
                qty -= take;
                alloc.grants.push((g.record.id.clone(), take));
            }
        }
        qty
    }

    /// Applies an allocation to the window's meter (the grants were already
    /// drawn by [`CustomerState::draw`]).
    fn book(&mut self, feature: usize, window: Period, alloc: &Alloc) {
        let granted: Decimal = alloc.grants.iter().map(|(_, q)| *q).sum();
        let m = self.meter(feature, window);
        m.plan += alloc.plan;
        m.grants += granted;
        m.overage += alloc.overage;
        m.bypass += alloc.bypass;
    }

    /// Undoes a booked allocation (a failed commit), if its window is still current.
    pub(crate) fn unbook(&mut self, feature: usize, window: (Timestamp, Timestamp), alloc: &Alloc) {
        for (id, q) in &alloc.grants {
            if let Some(g) = self.grants.iter_mut().find(|g| &g.record.id == id) {
                g.drawn = (g.drawn - *q).max(Decimal::ZERO);
            }
        }
        let granted: Decimal = alloc.grants.iter().map(|(_, q)| *q).sum();
        if let Some(Slot::Meter(m)) = self.slots.get_mut(feature) {
            if m.window() == window {
                m.plan -= alloc.plan;
                m.grants -= granted;
                m.overage -= alloc.overage;
                m.bypass -= alloc.bypass;
            }
        }
    }

    /// Adds ledger usage to the current counters (replay at start).
    pub(crate) fn replay_metered(
        &mut self,
        feature: usize,
        window: Period,
        allocation: &std::collections::BTreeMap<String, Decimal>,
        count_in_window: bool,
    ) {
        let mut granted = Decimal::ZERO;
        for (bucket, q) in allocation {
            if crate::ids::is_grant_id(bucket) {
                if let Some(g) = self.grants.iter_mut().find(|g| &g.record.id == bucket) {
                    g.drawn += *q;
                }
                granted += *q;
            }
        }
        if !count_in_window {
            return;
        }
        let m = self.meter(feature, window);
        for (bucket, q) in allocation {
            match bucket.as_str() {
                "plan" => m.plan += *q,
                "overage" => m.overage += *q,
                "bypass" => m.bypass += *q,
                _ => {}
            }
        }
        m.grants += granted;
    }

    /// What is left now: plan remaining + active grants − reservations.
    fn available(
        &self,
        feature: usize,
        ctx: &MeterCtx,
        now: Timestamp,
        m: &Meter,
    ) -> Option<Decimal> {
        if ctx.bypass_all {
            return Some(Decimal::ZERO);
        }
        let plan_left = ctx.limit.map(|l| (l - m.plan).max(Decimal::ZERO))?;
        Some(plan_left + self.grants_left(feature, now) - m.reserved)
    }

    fn answer(&self, feature: usize, ctx: &MeterCtx, now: Timestamp, qty: Decimal) -> Decision {
        let m = self.current_meter(feature, ctx);
        let used = m.as_ref().map_or(Decimal::ZERO, Meter::used);
        let empty = Meter::empty();
        let remaining = self
            .available(feature, ctx, now, m.as_ref().unwrap_or(&empty))
            .map(|r| r.max(Decimal::ZERO));
        Decision {
            allowed: true,
            quantity: qty,
            limit: if ctx.bypass_all { None } else { ctx.limit },
            used,
            remaining,
            resets_at: Some(ctx.window.end).filter(|e| *e != crate::writer::LIFETIME_END),
            reason: None,
            upgrade_to: None,
            overage: Decimal::ZERO,
            over_limit: ctx.limit.is_some_and(|l| {
                !ctx.bypass_all && used > l + self.grants_total_for_window(feature, now, m.as_ref())
            }),
            bypassed: false,
            replayed: false,
            reservation_id: None,
            reservation_expires_at: None,
        }
    }

    /// Grants drawn in the window plus still available: the allowance beyond
    /// the plan's limit.
    fn grants_total_for_window(
        &self,
        feature: usize,
        now: Timestamp,
        m: Option<&Meter>,
    ) -> Decimal {
        m.map_or(Decimal::ZERO, |m| m.grants) + self.grants_left(feature, now)
    }

    fn current_meter(&self, feature: usize, ctx: &MeterCtx) -> Option<Meter> {
        match self.slot(feature) {
            Some(Slot::Meter(m)) if m.start == ctx.window.start && m.end == ctx.window.end => {
                Some(m.clone())
            }
            _ => None,
        }
    }

    /// Check (`apply == false`) or consume `qty` of a metered feature:
    /// all-or-nothing, plan first, then grants in burn order; a soft limit
    /// lets the rest through as overage, a hard limit denies, the admin bypass
    /// lets it through as `bypass`.
    pub(crate) fn take_metered(
        &mut self,
        feature: usize,
        qty: Decimal,
        now: Timestamp,
        apply: bool,
    ) -> Result<Metered, (DenyReason, Option<MeterCtx>)> {
        let ctx = self.meter_ctx(feature, now).map_err(|r| (r, None))?;
        let window = ctx.window;
        if self.grants.is_empty() && self.resv.is_empty() && !ctx.bypass_all {
            return Ok(Self::take_plain(&mut self.slots, feature, &ctx, qty, apply));
        }
        let gone = self.expire_reservations(now);
        self.expired.extend(gone);
        let (avail, plan_left) = {
            let m = self.meter(feature, window);
            let plan_left = ctx.limit.map(|l| l - m.plan);
            let m = m.clone();
            (self.available(feature, &ctx, now, &m), plan_left)
        };
        let short = avail.map_or(Decimal::ZERO, |a| {
            (qty - a.max(Decimal::ZERO)).max(Decimal::ZERO)
        });
        let mut alloc = Alloc::default();
        let mut decision;
        if short > Decimal::ZERO && ctx.hard && !ctx.bypass {
            let mut d = self.answer(feature, &ctx, now, qty);
            d.allowed = false;
            d.reason = Some(DenyReason::LimitReached);
            return Ok(Metered {
                decision: d,
                alloc,
                window: (window.start, window.end),
            });
        }
        if ctx.bypass_all {
            alloc.bypass = qty;
        } else if apply {
            let fit = qty - short;
            let left = self.draw(feature, now, fit, plan_left, &mut alloc);
            // `left` is zero unless grants changed under us; treat it as short.
            let rest = short + left;
            if ctx.hard {
                alloc.bypass = rest;
            } else {
                alloc.overage = rest;
            }
        } else if ctx.hard {
            alloc.bypass = short;
        } else {
            alloc.overage = short;
        }
        if apply {
            self.book(feature, window, &alloc);
        }
        decision = self.answer(feature, &ctx, now, qty);
        decision.overage = alloc.overage;
        decision.bypassed = !alloc.bypass.is_zero();
        if !apply {
            // A dry run reports the state as it is; `over_limit` says whether
            // this quantity would go beyond the allowance.
            decision.over_limit = !short.is_zero();
        } else {
            decision.over_limit |= !alloc.overage.is_zero() || !alloc.bypass.is_zero();
        }
        Ok(Metered {
            decision,
            alloc,
            window: (window.start, window.end),
        })
    }

    /// The hot path of [`CustomerState::take_metered`]: no grants, no
    /// reservations, no bypass of the whole feature. Same rules, no clones.
    fn take_plain(
        slots: &mut Slots,
        feature: usize,
        ctx: &MeterCtx,
        qty: Decimal,
        apply: bool,
    ) -> Metered {
        let window = ctx.window;
        let m = meter_in(slots, feature, window);
        let avail = ctx.limit.map(|l| (l - m.plan).max(Decimal::ZERO));
        let short = avail.map_or(Decimal::ZERO, |a| (qty - a).max(Decimal::ZERO));
        let deny = !short.is_zero() && ctx.hard && !ctx.bypass;
        let mut alloc = Alloc::default();
        if !deny {
            alloc.plan = qty - short;
            if ctx.hard {
                alloc.bypass = short;
            } else {
                alloc.overage = short;
            }
            if apply {
                m.plan += alloc.plan;
                m.overage += alloc.overage;
                m.bypass += alloc.bypass;
            }
        }
        let booked = apply && !deny;
        let used = m.used();
        let decision = Decision {
            allowed: !deny,
            quantity: qty,
            limit: ctx.limit,
            used,
            remaining: avail.map(|a| {
                if booked {
                    (a - alloc.plan).max(Decimal::ZERO)
                } else {
                    a
                }
            }),
            resets_at: Some(window.end).filter(|e| *e != crate::writer::LIFETIME_END),
            reason: if deny {
                Some(DenyReason::LimitReached)
            } else {
                None
            },
            upgrade_to: None,
            overage: alloc.overage,
            over_limit: if apply {
                ctx.limit.is_some_and(|l| used > l)
            } else {
                !short.is_zero()
            },
            bypassed: !alloc.bypass.is_zero(),
            replayed: false,
            reservation_id: None,
            reservation_expires_at: None,
        };
        Metered {
            decision,
            alloc,
            window: (window.start, window.end),
        }
    }

    /// Holds `qty` for a reservation (a hard limit denies when it does not fit).
    pub(crate) fn hold_metered(
        &mut self,
        feature: usize,
        qty: Decimal,
        now: Timestamp,
    ) -> Result<Metered, (DenyReason, Option<MeterCtx>)> {
        let ctx = self.meter_ctx(feature, now).map_err(|r| (r, None))?;
        let gone = self.expire_reservations(now);
        self.expired.extend(gone);
        let window = ctx.window;
        let m = self.meter(feature, window).clone();
        let avail = self.available(feature, &ctx, now, &m);
        let short = avail.map_or(Decimal::ZERO, |a| {
            (qty - a.max(Decimal::ZERO)).max(Decimal::ZERO)
        });
        if short > Decimal::ZERO && ctx.hard && !ctx.bypass {
            let mut d = self.answer(feature, &ctx, now, qty);
            d.allowed = false;
            d.reason = Some(DenyReason::LimitReached);
            return Ok(Metered {
                decision: d,
                alloc: Alloc::default(),
                window: (window.start, window.end),
            });
        }
        self.meter(feature, window).reserved += qty;
        let mut d = self.answer(feature, &ctx, now, qty);
        d.over_limit = !short.is_zero();
        d.bypassed = !short.is_zero() && ctx.hard;
        Ok(Metered {
            decision: d,
            alloc: Alloc::default(),
            window: (window.start, window.end),
        })
    }

    /// Commits `actual` against a reservation that held `held` (its hold was
    /// already released by the caller): `min(actual, held)` is guaranteed, the
    /// excess is checked like a consume; on a hard limit it is denied unless
    /// `allow_overage`, which records it as overage.
    pub(crate) fn commit_metered(
        &mut self,
        feature: usize,
        actual: Decimal,
        held: Decimal,
        allow_overage: bool,
        now: Timestamp,
    ) -> Result<Metered, (DenyReason, Option<MeterCtx>)> {
        let ctx = self.meter_ctx(feature, now).map_err(|r| (r, None))?;
        let window = ctx.window;
        let m = self.meter(feature, window).clone();
        let plan_left = ctx.limit.map(|l| l - m.plan);
        let avail = self.available(feature, &ctx, now, &m);
        let guaranteed = actual.min(held);
        let extra = actual - guaranteed;
        // Room for the extra once the guaranteed part is drawn.
        let room_after = avail.map(|a| (a - guaranteed).max(Decimal::ZERO));
        let short = room_after.map_or(Decimal::ZERO, |r| (extra - r).max(Decimal::ZERO));
        if short > Decimal::ZERO && ctx.hard && !ctx.bypass && !allow_overage {
            let mut d = self.answer(feature, &ctx, now, actual);
            d.allowed = false;
            d.reason = Some(DenyReason::LimitReached);
            return Ok(Metered {
                decision: d,
                alloc: Alloc::default(),
                window: (window.start, window.end),
            });
        }
        let mut alloc = Alloc::default();
        if ctx.bypass_all {
            alloc.bypass = actual;
        } else {
            let left = self.draw(feature, now, actual - short, plan_left, &mut alloc);
            // What the held part could not draw (a backing grant expired) and
            // the short part are overage, or bypass when the bypass let it through.
            let rest = short + left;
            if ctx.hard && ctx.bypass && !allow_overage && !short.is_zero() {
                alloc.bypass = rest;
            } else {
                alloc.overage = rest;
            }
        }
        self.book(feature, window, &alloc);
        let mut d = self.answer(feature, &ctx, now, actual);
        d.overage = alloc.overage;
        d.bypassed = !alloc.bypass.is_zero();
        d.over_limit |= !alloc.overage.is_zero() || !alloc.bypass.is_zero();
        Ok(Metered {
            decision: d,
            alloc,
            window: (window.start, window.end),
        })
    }

    /// Counts an ingested event (never denied): against the current window if
    /// its timestamp falls in it. Returns the allocation, the window it counted
    /// in (if any) and whether usage is now above the limit.
    pub(crate) fn ingest_metered(
        &mut self,
        feature: usize,
        qty: Decimal,
        at: Timestamp,
        now: Timestamp,
    ) -> (Alloc, Option<Period>, bool, bool) {
        let (ent, _) = self.ent(feature);
        let (limit, reset) = match ent {
            Ent::Metered { limit, reset, .. } => (*limit, *reset),
            _ => (Some(Decimal::ZERO), ResetPeriod::BillingPeriod),
        };
        // Fast path: the counter's window holds both the event and now.
        let fast = match self.slot(feature) {
            Some(Slot::Meter(m))
                if m.start <= at && at < m.end && m.start <= now && now < m.end =>
            {
                Some(Period {
                    start: m.start,
                    end: m.end,
                })
            }
            _ => None,
        };
        if let Some(w) = fast {
            let m = self.meter(feature, w).clone();
            let plan_left = limit.map(|l| l - m.plan);
            let mut alloc = Alloc::default();
            let left = self.draw(feature, now, qty, plan_left, &mut alloc);
            alloc.overage = left;
            self.book(feature, w, &alloc);
            return (alloc, Some(w), true, !left.is_zero());
        }
        let Some(event_window) = self.window_at(reset, at) else {
            let alloc = Alloc {
                overage: qty,
                ..Alloc::default()
            };
            return (alloc, None, false, false);
        };
        let current = self.window_at(reset, now);
        if current != Some(event_window) {
            // Only in the ledger: it belongs to a window that is not current.
            let alloc = Alloc {
                plan: qty,
                ..Alloc::default()
            };
            return (alloc, Some(event_window), false, false);
        }
        let gone = self.expire_reservations(now);
        self.expired.extend(gone);
        let m = self.meter(feature, event_window).clone();
        let plan_left = limit.map(|l| l - m.plan);
        let mut alloc = Alloc::default();
        let left = self.draw(feature, now, qty, plan_left, &mut alloc);
        alloc.overage = left;
        self.book(feature, event_window, &alloc);
        let over = !left.is_zero();
        (alloc, Some(event_window), true, over)
    }

    /// The usage (all buckets) in the current window, for summaries.
    pub(crate) fn meter_snapshot(&self, feature: usize, window: Period) -> Option<Meter> {
        match self.slot(feature) {
            Some(Slot::Meter(m)) if m.start == window.start && m.end == window.end => {
                Some(m.clone())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod size_tests {
    /// The hot part of a customer's state stays small (see the layout note on
    /// `CustomerState`); a regression here costs cache misses per decision.
    #[test]
    fn customer_state_stays_compact() {
        assert!(std::mem::size_of::<super::CustomerState>() <= 640);
        assert!(std::mem::size_of::<super::SubState>() <= 128);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod props {
    use super::*;
    use crate::model::CompiledPlan;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;
    use tollgate_store::GrantRecord;

    fn state(limit: Decimal, hard: bool) -> CustomerState {
        let t0: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let record = CustomerRecord {
            id: "c".into(),
            name: None,
            email: None,
            currency: "USD".into(),
            time_zone: "UTC".into(),
            metadata: serde_json::json!({}),
            admin_bypass: false,
            created_at: t0,
            updated_at: t0,
            deleted_at: None,
        };
        let mut st = CustomerState::new(record, TimeZone::UTC);
        let plan = Arc::new(CompiledPlan {
            key: Arc::from("p"),
            version: 1,
            tier: 0,
            interval: Interval::Month,
            anchoring: Anchoring::Calendar,
            ents: vec![Ent::Metered {
                limit: Some(limit),
                hard,
                reset: ResetPeriod::BillingPeriod,
                emergency: None,
                alerts: None,
            }],
        });
        let sub = SubscriptionRecord {
            customer_id: "c".into(),
            plan_key: "p".into(),
            plan_version: 1,
            status: SubscriptionStatus::Active,
            anchor: t0,
            trial_ends_at: None,
            canceled_at: None,
            created_at: t0,
            updated_at: t0,
        };
        let cycle = cycle_for(Some(&plan), t0, &TimeZone::UTC);
        st.sub = Some(SubState::new(sub, plan, cycle));
        st
    }

    #[derive(Clone, Debug)]
    enum Op {
        Consume(u32),
        Reserve(u32),
        Commit(usize, u32, bool),
        Release(usize),
        Grant(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u32..40).prop_map(Op::Consume),
            (1u32..40).prop_map(Op::Reserve),
            (0usize..8, 0u32..60, any::<bool>()).prop_map(|(i, q, o)| Op::Commit(i, q, o)),
            (0usize..8).prop_map(Op::Release),
            (1u32..30).prop_map(Op::Grant),
        ]
    }

    proptest! {
        /// On a hard limit, whatever the sequence of consumes, reservations,
        /// commits (without allow_overage), releases and grants: the plan
        /// bucket never exceeds the limit, nothing is recorded as overage, the
        /// counter equals the sum of what was allowed, grants never give more
        /// than their quantity, and holds plus usage stay within the allowance.
        #[test]
        fn hard_limit_is_never_overshot(limit in 0u32..200, ops in proptest::collection::vec(op(), 1..60)) {
            let limit = Decimal::from(limit);
            let mut st = state(limit, true);
            let now: Timestamp = "2025-01-10T00:00:00Z".parse().unwrap();
            let mut allowed = Decimal::ZERO;
            let mut granted = Decimal::ZERO;
            let mut open: Vec<OpenResv> = Vec::new();
            let mut n = 0;
            for o in ops {
                match o {
                    Op::Consume(q) => {
                        let q = Decimal::from(q) / dec!(2);
                        let m = st.take_metered(0, q, now, true).unwrap();
                        if m.decision.allowed { allowed += q; }
                    }
                    Op::Reserve(q) => {
                        let q = Decimal::from(q);
                        let m = st.hold_metered(0, q, now).unwrap();
                        if m.decision.allowed {
                            n += 1;
                            let r = OpenResv { id: format!("r{n}"), feature: 0, quantity: q,
                                created_at: now, expires_at: Timestamp::MAX, window: m.window,
                                idempotency_key: None };
                            st.resv.push(r.clone());
                            open.push(r);
                        }
                    }
                    Op::Commit(i, q, overage) => {
                        if open.is_empty() { continue; }
                        let r = open.remove(i % open.len());
                        let pos = st.resv.iter().position(|x| x.id == r.id).unwrap();
                        let r = st.resv.remove(pos);
                        st.unhold(&r);
                        let q = Decimal::from(q);
                        let m = st.commit_metered(0, q, r.quantity, overage, now).unwrap();
                        if m.decision.allowed {
                            allowed += q;
                            if !overage { prop_assert!(m.alloc.overage.is_zero()); }
                        } else {
                            st.rehold(r.clone());
                            open.push(r);
                        }
                    }
                    Op::Release(i) => {
                        if open.is_empty() { continue; }
                        let r = open.remove(i % open.len());
                        let pos = st.resv.iter().position(|x| x.id == r.id).unwrap();
                        let r = st.resv.remove(pos);
                        st.unhold(&r);
                    }
                    Op::Grant(q) => {
                        n += 1;
                        let q = Decimal::from(q);
                        granted += q;
                        crate::grants::insert_sorted(&mut st.grants, crate::grants::GrantState {
                            record: GrantRecord { id: format!("grt_{n}"), customer_id: "c".into(),
                                feature: "f".into(), kind: "top_up".into(), quantity: q,
                                priority: n % 3, effective_at: now, expires_at: None,
                                voided_at: None, metadata: serde_json::json!({}), created_at: now },
                            feature: 0,
                            drawn: Decimal::ZERO,
                        });
                    }
                }
                let m = st.meter_snapshot(0, Period { start: st.sub.as_ref().unwrap().cycle.anchor,
                    end: "2025-02-01T00:00:00Z".parse().unwrap() }).unwrap_or_else(Meter::empty);
                prop_assert!(m.plan <= limit, "plan {} > limit {}", m.plan, limit);
                prop_assert!(m.bypass.is_zero());
                for g in &st.grants { prop_assert!(g.drawn <= g.record.quantity); }
                let drawn: Decimal = st.grants.iter().map(|g| g.drawn).sum();
                prop_assert_eq!(m.grants, drawn);
                let held: Decimal = open.iter().map(|r| r.quantity).sum();
                prop_assert_eq!(m.reserved, held);
                // Overage only comes from commits with allow_overage.
                prop_assert_eq!(m.used(), allowed);
                // Usage (overage aside) plus holds never exceed the allowance.
                prop_assert!(m.plan + m.grants + m.reserved <= limit + granted);
            }
        }
    }
}
