//! Gauges, rates, concurrency leases, caps, flags and values.

use jiff::{SignedDuration, Timestamp};
use rust_decimal::Decimal;
use tollgate_core::catalog::Value;
use tollgate_store::{NewUsageRecord, UsageSource, WriteOp};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::lease::{Lease, LeaseSet};
use crate::metered::{
    Outcome, Undo, Usage, answer_json, check_key, check_magnitude, check_quantity, gate_denial,
};
use crate::model::{Ent, Kind};
use crate::rate::RateLog;
use crate::state::Slot;
use crate::types::{CapDecision, Decision, DenyReason, LeaseDecision, UsageRequest};
use crate::writer::{Counted, Ops};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GaugeChange {
    Set,
    Add,
    Sub,
}

/// Lease time-to-live when the entitlement no longer says (the plan changed).
const FALLBACK_LEASE_TTL: SignedDuration = SignedDuration::from_secs(60);

impl Engine {
    /// Sets a gauge to an absolute level (`quantity`, ≥ 0). Going up is
    /// checked against the limit; going down is always allowed.
    pub async fn gauge_set(&self, req: UsageRequest) -> Result<Decision, EngineError> {
        if req.quantity < Decimal::ZERO {
            return Err(EngineError::InvalidQuantity {
                quantity: req.quantity,
                reason: "a gauge level cannot be negative",
            });
        }
        check_magnitude(req.quantity)?;
        self.gauge(req, GaugeChange::Set).await
    }

    /// Raises a gauge by `quantity` (> 0), checked against the limit.
    pub async fn gauge_increment(&self, req: UsageRequest) -> Result<Decision, EngineError> {
        check_quantity(req.quantity)?;
        self.gauge(req, GaugeChange::Add).await
    }

    /// Lowers a gauge by `quantity` (> 0); always allowed, never below 0.
    pub async fn gauge_decrement(&self, req: UsageRequest) -> Result<Decision, EngineError> {
        check_quantity(req.quantity)?;
        self.gauge(req, GaugeChange::Sub).await
    }

    async fn gauge(&self, req: UsageRequest, change: GaugeChange) -> Result<Decision, EngineError> {
        check_key(req.idempotency_key.as_deref())?;
        let f = self
            .inner
            .feature(&req.feature, Kind::Gauge, "a gauge change")?;
        let UsageRequest {
            customer,
            feature,
            quantity,
            idempotency_key,
            mut properties,
            billable,
        } = req;
        self.decide_and_record(
            Usage {
                customer: &customer,
                feature: f,
                key: idempotency_key.as_deref(),
            },
            |inner, st, now| {
                let level = match st.slot(f) {
                    Some(Slot::Gauge(l)) => *l,
                    _ => Decimal::ZERO,
                };
                let new = match change {
                    GaugeChange::Set => quantity,
                    GaugeChange::Add => level + quantity,
                    GaugeChange::Sub => (level - quantity).max(Decimal::ZERO),
                };
                let delta = new - level;
                let bypass = st.bypass();
                let (limit, hard, gate) = match (st.gate(now), st.ent(f).0) {
                    (Ok(_), Ent::Gauge { limit, hard, .. }) => (*limit, *hard, None),
                    (Ok(_), _) => (
                        Some(Decimal::ZERO),
                        true,
                        Some(DenyReason::FeatureNotInPlan),
                    ),
                    (Err(r), Ent::Gauge { limit, hard, .. }) => (*limit, *hard, Some(r)),
                    (Err(r), _) => (Some(Decimal::ZERO), true, Some(r)),
                };
                let mut d = Decision {
                    allowed: true,
                    quantity,
                    limit: if gate.is_some() { None } else { limit },
                    used: new,
                    remaining: limit.map(|l| (l - new).max(Decimal::ZERO)),
                    resets_at: None,
                    reason: None,
                    upgrade_to: None,
                    overage: Decimal::ZERO,
                    over_limit: false,
                    bypassed: false,
                    replayed: false,
                    reservation_id: None,
                    reservation_expires_at: None,
                };
                let going_up = delta > Decimal::ZERO;
                if going_up {
                    if let Some(reason) = gate {
                        if !bypass {
                            return Ok(Outcome::Answer(gate_denial(inner, st, f, reason, new)));
                        }
                        d.bypassed = true;
                    } else if limit.is_some_and(|l| new > l) {
                        d.over_limit = true;
                        if hard && !bypass {
                            d.allowed = false;
                            d.used = level;
                            d.remaining = limit.map(|l| (l - level).max(Decimal::ZERO));
                            d.reason = Some(DenyReason::LimitReached);
                            d.upgrade_to = inner.upgrade_to(st, f, new);
                            return Ok(Outcome::denied(inner, st, f, None, d, now));
                        }
                        d.bypassed = hard;
                        if !hard {
                            d.overage = limit.map_or(Decimal::ZERO, |l| new - l.max(level));
                        }
                    }
                } else if limit.is_some_and(|l| new > l) {
                    d.over_limit = true;
                }
                if delta.is_zero() && change != GaugeChange::Set {
                    return Ok(Outcome::Answer(d));
                }
                *st.slot_mut(f, || Slot::Gauge(Decimal::ZERO)) = Slot::Gauge(new);
                let mut allocation = std::collections::BTreeMap::new();
                if d.bypassed {
                    allocation.insert("bypass".to_string(), delta);
                }
                let (source, q) = match change {
                    GaugeChange::Set => (UsageSource::GaugeSet, new),
                    _ => (UsageSource::GaugeDelta, delta),
                };
                let record = NewUsageRecord {
                    customer_id: customer.clone(),
                    feature: feature.clone(),
                    quantity: q,
                    timestamp: now,
                    recorded_at: now,
                    source,
                    properties: std::mem::take(&mut properties),
                    billable,
                    idempotency_key: idempotency_key.clone(),
                    allocation,
                    answer: answer_json(&d),
                };
                let events = crate::alerts::gauge_change(
                    inner,
                    st,
                    f,
                    crate::alerts::Change::up_by(delta, new, now),
                );
                Ok(Outcome::Write {
                    decision: d,
                    ops: crate::alerts::with_events(
                        WriteOp::AppendUsage(record),
                        Counted::Gauge,
                        events,
                    ),
                    undo: Undo::Gauge { feature: f, delta },
                })
            },
        )
        .await
    }

    /// The current level of a gauge.
    pub fn gauge_level(&self, customer: &str, feature: &str) -> Result<Decimal, EngineError> {
        let f = self.inner.feature(feature, Kind::Gauge, "gauge_level")?;
        self.inner.with_customer(customer, |st| match st.slot(f) {
            Some(Slot::Gauge(l)) => *l,
            _ => Decimal::ZERO,
        })
    }

    /// A hit on a rate feature (`quantity` hits, usually 1): allowed when the
    /// hits in `(now − window, now]` plus this one stay within the limit.
    /// Allowed hits are recorded in the ledger (so the window survives a restart).
    pub async fn hit(&self, req: UsageRequest) -> Result<Decision, EngineError> {
        check_quantity(req.quantity)?;
        check_key(req.idempotency_key.as_deref())?;
        let f = self.inner.feature(&req.feature, Kind::Rate, "a rate hit")?;
        let UsageRequest {
            customer,
            feature,
            quantity,
            idempotency_key,
            mut properties,
            billable,
        } = req;
        self.decide_and_record(
            Usage {
                customer: &customer,
                feature: f,
                key: idempotency_key.as_deref(),
            },
            |inner, st, now| {
                let bypass = st.bypass();
                let gate = st.gate(now).err();
                let (limit, window, excluded) = match st.ent(f).0 {
                    Ent::Rate { limit, window } => (*limit, *window, false),
                    _ => (Some(Decimal::ZERO), SignedDuration::from_secs(60), true),
                };
                if !bypass {
                    if let Some(reason) = gate {
                        return Ok(Outcome::Answer(gate_denial(inner, st, f, reason, quantity)));
                    }
                    if excluded {
                        return Ok(Outcome::Answer(gate_denial(
                            inner,
                            st,
                            f,
                            DenyReason::FeatureNotInPlan,
                            quantity,
                        )));
                    }
                }
                let slot = st.slot_mut(f, || Slot::Rate(RateLog::default()));
                if !matches!(slot, Slot::Rate(_)) {
                    *slot = Slot::Rate(RateLog::default());
                }
                let Slot::Rate(log) = slot else {
                    unreachable!("just made a rate log")
                };
                let effective_limit = if bypass { None } else { limit };
                let out = log.admit(now, window, effective_limit, quantity, true);
                let over = limit.is_some_and(|l| out.used + quantity > l);
                let next = log.next_reset(window);
                let mut d = Decision {
                    allowed: out.allowed,
                    quantity,
                    limit: if gate.is_some() || excluded {
                        None
                    } else {
                        limit
                    },
                    used: if out.allowed {
                        out.used + quantity
                    } else {
                        out.used
                    },
                    remaining: limit.map(|l| {
                        (l - out.used - if out.allowed { quantity } else { Decimal::ZERO })
                            .max(Decimal::ZERO)
                    }),
                    resets_at: if out.allowed { next } else { out.retry_at },
                    reason: None,
                    upgrade_to: None,
                    overage: Decimal::ZERO,
                    over_limit: over && out.allowed,
                    bypassed: bypass && (over || gate.is_some() || excluded),
                    replayed: false,
                    reservation_id: None,
                    reservation_expires_at: None,
                };
                if !out.allowed {
                    d.reason = Some(DenyReason::RateLimited);
                    d.upgrade_to = inner.upgrade_to(st, f, out.used + quantity);
                    return Ok(Outcome::Answer(d));
                }
                let mut allocation = std::collections::BTreeMap::new();
                allocation.insert(
                    if d.bypassed { "bypass" } else { "plan" }.to_string(),
                    quantity,
                );
                let record = NewUsageRecord {
                    customer_id: customer.clone(),
                    feature: feature.clone(),
                    quantity,
                    timestamp: now,
                    recorded_at: now,
                    source: UsageSource::Consume,
                    properties: std::mem::take(&mut properties),
                    billable,
                    idempotency_key: idempotency_key.clone(),
                    allocation,
                    answer: answer_json(&d),
                };
                Ok(Outcome::Write {
                    decision: d,
                    ops: Ops::One(WriteOp::AppendUsage(record), Counted::Nothing),
                    undo: Undo::Rate {
                        feature: f,
                        at: now,
                        qty: quantity,
                    },
                })
            },
        )
        .await
    }

    /// Acquires a concurrency lease (at most N at once per customer and
    /// feature). Leases live in memory only.
    pub fn acquire(&self, customer: &str, feature: &str) -> Result<LeaseDecision, EngineError> {
        let f = self.inner.feature(feature, Kind::Concurrency, "acquire")?;
        let inner = &*self.inner;
        inner.with_customer(customer, |st| {
            if st.deleted {
                return Err(EngineError::CustomerDeleted(customer.to_string()));
            }
            let now = inner.now();
            let bypass = st.bypass();
            let gate = st.gate(now).err();
            let (limit, ttl, excluded) = match st.ent(f).0 {
                Ent::Concurrency { limit, ttl } => (*limit, *ttl, false),
                _ => (Some(0), FALLBACK_LEASE_TTL, true),
            };
            let blocked = gate.or(if excluded {
                Some(DenyReason::FeatureNotInPlan)
            } else {
                None
            });
            let slot = st.slot_mut(f, || Slot::Leases(LeaseSet::default()));
            if !matches!(slot, Slot::Leases(_)) {
                *slot = Slot::Leases(LeaseSet::default());
            }
            let Slot::Leases(set) = slot else {
                unreachable!("just made a lease set")
            };
            for l in &set.leases {
                if l.expires_at <= now {
                    inner.leases.remove(&l.id);
                }
            }
            let active = u32::try_from(set.active(now)).unwrap_or(u32::MAX);
            let full = limit.is_some_and(|l| active >= l);
            if (blocked.is_some() || full) && !bypass {
                let retry_at = if blocked.is_none() {
                    set.next_expiry()
                } else {
                    None
                };
                let reason = blocked.unwrap_or(DenyReason::ConcurrencyLimitReached);
                let upgrade_to = inner.upgrade_to(st, f, Decimal::from(active) + Decimal::ONE);
                return Ok(LeaseDecision {
                    allowed: false,
                    lease_id: None,
                    expires_at: None,
                    limit: if blocked.is_some() { None } else { limit },
                    active,
                    reason: Some(reason),
                    upgrade_to,
                    bypassed: false,
                    retry_at,
                });
            }
            let id = inner.ids.mint("lse");
            let expires_at = now.checked_add(ttl).unwrap_or(Timestamp::MAX);
            set.leases.push(Lease {
                id: id.clone(),
                expires_at,
            });
            inner.leases.insert(id.clone(), (st.id.clone(), f));
            Ok(LeaseDecision {
                allowed: true,
                lease_id: Some(id),
                expires_at: Some(expires_at),
                limit,
                active: active + 1,
                reason: None,
                upgrade_to: None,
                bypassed: blocked.is_some() || full,
                retry_at: None,
            })
        })?
    }

    /// Extends a lease by the feature's TTL from now; returns the new expiry.
    /// An expired, released or unknown lease (e.g. after a restart) is
    /// `LeaseNotFound`: the holder re-acquires.
    pub fn heartbeat(&self, lease_id: &str) -> Result<Timestamp, EngineError> {
        let inner = &*self.inner;
        let (customer, f) = inner
            .leases
            .get(lease_id)
            .map(|e| e.value().clone())
            .ok_or_else(|| EngineError::LeaseNotFound(lease_id.to_string()))?;
        let r = inner.with_customer(&customer, |st| {
            let now = inner.now();
            let ttl = match st.ent(f).0 {
                Ent::Concurrency { ttl, .. } => *ttl,
                _ => FALLBACK_LEASE_TTL,
            };
            match st.slot_mut(f, || Slot::Leases(LeaseSet::default())) {
                Slot::Leases(set) => {
                    set.expire(now);
                    set.find_mut(lease_id).map(|l| {
                        l.expires_at = now.checked_add(ttl).unwrap_or(Timestamp::MAX);
                        l.expires_at
                    })
                }
                _ => None,
            }
        })?;
        match r {
            Some(t) => Ok(t),
            None => {
                inner.leases.remove(lease_id);
                Err(EngineError::LeaseNotFound(lease_id.to_string()))
            }
        }
    }

    /// Releases a lease.
    pub fn release_lease(&self, lease_id: &str) -> Result<(), EngineError> {
        let inner = &*self.inner;
        let (customer, f) = inner
            .leases
            .remove(lease_id)
            .map(|(_, v)| v)
            .ok_or_else(|| EngineError::LeaseNotFound(lease_id.to_string()))?;
        let found = inner.with_customer(&customer, |st| {
            let now = inner.now();
            match st.slot_mut(f, || Slot::Leases(LeaseSet::default())) {
                Slot::Leases(set) => {
                    set.expire(now);
                    set.remove(lease_id).is_some()
                }
                _ => false,
            }
        })?;
        if found {
            Ok(())
        } else {
            Err(EngineError::LeaseNotFound(lease_id.to_string()))
        }
    }

    /// Leases held now for a customer and feature.
    pub fn active_leases(&self, customer: &str, feature: &str) -> Result<u32, EngineError> {
        let f = self
            .inner
            .feature(feature, Kind::Concurrency, "active_leases")?;
        let now = self.inner.now();
        self.inner.with_customer(customer, |st| {
            match st.slot_mut(f, || Slot::Leases(LeaseSet::default())) {
                Slot::Leases(set) => u32::try_from(set.active(now)).unwrap_or(u32::MAX),
                _ => 0,
            }
        })
    }

    /// Whether a per-request value is within the plan's cap, with the maximum.
    pub fn cap_check(
        &self,
        customer: &str,
        feature: &str,
        value: Decimal,
    ) -> Result<CapDecision, EngineError> {
        let f = self.inner.feature(feature, Kind::Cap, "cap_check")?;
        if value < Decimal::ZERO {
            return Err(EngineError::InvalidQuantity {
                quantity: value,
                reason: "must not be negative",
            });
        }
        let inner = &*self.inner;
        inner.with_customer(customer, |st| {
            if st.deleted {
                return Err(EngineError::CustomerDeleted(customer.to_string()));
            }
            let now = inner.now();
            let bypass = st.bypass();
            let gate = st.gate(now).err();
            let (max, blocked) = match (gate, st.ent(f).0) {
                (None, Ent::Cap { max }) => (*max, None),
                (None, _) => (None, Some(DenyReason::FeatureNotInPlan)),
                (Some(r), _) => (None, Some(r)),
            };
            let over = max.is_some_and(|m| value > m);
            let allowed = bypass || (blocked.is_none() && !over);
            let reason = if allowed {
                None
            } else {
                Some(blocked.unwrap_or(DenyReason::AboveCap))
            };
            Ok(CapDecision {
                allowed,
                max,
                reason,
                upgrade_to: if allowed {
                    None
                } else {
                    inner.upgrade_to(st, f, value)
                },
                bypassed: bypass && (over || blocked.is_some()),
            })
        })?
    }

    /// Whether a flag is on for the customer now (plan or override; the admin
    /// bypass turns every flag on; an inactive subscription turns them off).
    pub fn flag(&self, customer: &str, feature: &str) -> Result<bool, EngineError> {
        let f = self.inner.feature(feature, Kind::Flag, "flag")?;
        let now = self.inner.now();
        self.inner.with_customer(customer, |st| {
            if st.deleted {
                return Err(EngineError::CustomerDeleted(customer.to_string()));
            }
            if st.bypass() {
                return Ok(true);
            }
            Ok(st.gate(now).is_ok() && matches!(st.ent(f).0, Ent::Flag { enabled: true }))
        })?
    }

    /// The value of a value feature for the customer now (`None` when the plan
    /// does not set it or the subscription is not in force).
    pub fn value(&self, customer: &str, feature: &str) -> Result<Option<Value>, EngineError> {
        let f = self.inner.feature(feature, Kind::Value, "value")?;
        let now = self.inner.now();
        self.inner.with_customer(customer, |st| {
            if st.deleted {
                return Err(EngineError::CustomerDeleted(customer.to_string()));
            }
            if st.gate(now).is_err() {
                return Ok(None);
            }
            Ok(match st.ent(f).0 {
                Ent::Value { value } => Some(value.clone()),
                _ => None,
            })
        })?
    }

    /// Whether a value set contains `item` (e.g. export format `srt`).
    pub fn value_contains(
        &self,
        customer: &str,
        feature: &str,
        item: &str,
    ) -> Result<bool, EngineError> {
        Ok(self
            .value(customer, feature)?
            .is_some_and(|v| v.contains(item)))
    }
}
