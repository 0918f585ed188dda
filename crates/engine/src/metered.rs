//! Metered features: check, consume, reserve → commit / release; and the
//! generic "decide under the lock, write through the group commit, answer
//! after the commit" routine every recorded operation uses.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use rust_decimal::Decimal;
use tokio::sync::Notify;
use tollgate_store::{NewUsageRecord, ReservationRecord, ReservationState, UsageSource, WriteOp};

use crate::engine::{AckRx, Engine, Flow, Inner};
use crate::error::EngineError;
use crate::ids::validate_idempotency_key;
use crate::model::Kind;
use crate::recover::{commit_key, settle_expired};
use crate::state::{Alloc, Answer, CustomerState, Idem, OpenResv, Slot};
use crate::types::{CommitRequest, Decision, DenyReason, UsageRequest};
use crate::writer::{Counted, Ops};

/// What a decision leads to. (Variants stay inline: boxing would put an
/// allocation on every request.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outcome {
    /// Nothing to record (a denial, or a dry run).
    Answer(Decision),
    /// Record these writes; answer after they commit; undo if they fail.
    Write {
        decision: Decision,
        ops: Ops,
        undo: Undo,
    },
    /// A denial that announces itself (`usage.denied`): write the alert, then
    /// answer the denial whatever the commit did (undo forgets the
    /// announcement if it failed). Idempotency keys are not recorded: a
    /// denied request's retry is decided again.
    Announce {
        decision: Decision,
        op: WriteOp,
        undo: Undo,
    },
}

impl Outcome {
    /// A denial, announced when it is the window's first at a hard limit.
    pub(crate) fn denied(
        inner: &Inner,
        st: &mut CustomerState,
        f: usize,
        window: Option<(Timestamp, Timestamp)>,
        decision: Decision,
        now: Timestamp,
    ) -> Outcome {
        match crate::alerts::denial(inner, st, f, window, &decision, now) {
            None => Outcome::Answer(decision),
            Some((op, start)) => Outcome::Announce {
                decision,
                op,
                undo: Undo::Announced { feature: f, start },
            },
        }
    }
}

/// How to take back a decision whose commit failed.
pub(crate) enum Undo {
    Metered {
        feature: usize,
        window: (Timestamp, Timestamp),
        alloc: Alloc,
    },
    Gauge {
        feature: usize,
        delta: Decimal,
    },
    Rate {
        feature: usize,
        at: Timestamp,
        qty: Decimal,
    },
    Reserve {
        id: String,
    },
    Commit {
        resv: OpenResv,
        window: (Timestamp, Timestamp),
        alloc: Alloc,
    },
    Release {
        resv: OpenResv,
    },
    Announced {
        feature: usize,
        start: Timestamp,
    },
}

impl Undo {
    pub(crate) fn apply(self, inner: &Inner, st: &mut CustomerState) {
        match self {
            Undo::Metered {
                feature,
                window,
                alloc,
            } => st.unbook(feature, window, &alloc),
            Undo::Gauge { feature, delta } => {
                if let Some(Slot::Gauge(level)) = st.slots.get_mut(feature) {
                    *level = (*level - delta).max(Decimal::ZERO);
                }
            }
            Undo::Rate { feature, at, qty } => {
                if let Some(Slot::Rate(log)) = st.slots.get_mut(feature) {
                    log.undo(at, qty);
                }
            }
            Undo::Reserve { id } => {
                if let Some(pos) = st.resv.iter().position(|r| r.id == id) {
                    let r = st.resv.remove(pos);
                    st.unhold(&r);
                }
                inner.reservations.remove(&id);
            }
            Undo::Commit {
                resv,
                window,
                alloc,
            } => {
                st.unbook(resv.feature, window, &alloc);
                inner.reservations.insert(resv.id.clone(), st.id.clone());
                st.rehold(resv);
            }
            Undo::Release { resv } => {
                inner.reservations.insert(resv.id.clone(), st.id.clone());
                st.rehold(resv);
            }
            Undo::Announced { feature, start } => st.announced.release(feature, start),
        }
    }
}

#[allow(clippy::large_enum_variant)]
enum Step {
    Replay(Answer),
    Answer(Decision),
    Committing {
        rx: AckRx,
        decision: Decision,
        undo: Undo,
        pending: Option<Arc<Notify>>,
        at: Timestamp,
    },
    Announcing {
        rx: AckRx,
        decision: Decision,
        undo: Undo,
    },
}

pub(crate) fn check_quantity(q: Decimal) -> Result<(), EngineError> {
    if q <= Decimal::ZERO {
        return Err(EngineError::InvalidQuantity {
            quantity: q,
            reason: "must be positive",
        });
    }
    check_magnitude(q)
}

/// The largest quantity one request may carry: 10^15 units. Counters are exact
/// decimals (at most ~7.9 × 10^28): with this bound no sequence of requests a
/// deployment could make in its lifetime overflows a counter, so counter
/// arithmetic on the hot path can stay unchecked.
pub const MAX_QUANTITY: Decimal = Decimal::from_parts(0xA4C6_8000, 0x0003_8D7E, 0, false, 0);

/// Rejects quantities (of either sign) above [`MAX_QUANTITY`].
pub(crate) fn check_magnitude(q: Decimal) -> Result<(), EngineError> {
    if q.abs() > MAX_QUANTITY {
        return Err(EngineError::InvalidQuantity {
            quantity: q,
            reason: "is larger than 10^15, the most one request may carry",
        });
    }
    Ok(())
}

pub(crate) fn check_key(key: Option<&str>) -> Result<(), EngineError> {
    match key {
        Some(k) => validate_idempotency_key(k),
        None => Ok(()),
    }
}

/// Answer a gate denial with the cheapest plan that would allow the request.
pub(crate) fn gate_denial(
    inner: &Inner,
    st: &CustomerState,
    feature: usize,
    reason: DenyReason,
    qty: Decimal,
) -> Decision {
    let mut d = Decision::denied(reason, qty);
    if matches!(
        reason,
        DenyReason::FeatureNotInPlan | DenyReason::TrialExpired
    ) {
        d.upgrade_to = inner.upgrade_to(st, feature, qty);
    }
    d
}

pub(crate) struct Usage<'a> {
    pub customer: &'a str,
    pub feature: usize,
    pub key: Option<&'a str>,
}

impl Engine {
    /// The routine behind every recorded operation: under the customer's lock,
    /// answer a known idempotency key (or wait for its first request), decide,
    /// update memory and send the writes to the group commit; then wait for the
    /// commit outside the lock and answer — or undo the decision and fail.
    pub(crate) async fn decide_and_record(
        &self,
        u: Usage<'_>,
        mut decide: impl FnMut(&Inner, &mut CustomerState, Timestamp) -> Result<Outcome, EngineError>,
    ) -> Result<Decision, EngineError> {
        let inner = &*self.inner;
        let step = inner
            .locked(u.customer, |st| {
                if st.deleted {
                    return Err(EngineError::CustomerDeleted(u.customer.to_string()));
                }
                if let Some(k) = u.key {
                    match st.idem.get(k) {
                        Some(Idem::Done {
                            feature, answer, ..
                        }) => {
                            if *feature != u.feature {
                                return Err(EngineError::IdempotencyKeyReused {
                                    key: k.to_string(),
                                    first: format!("feature {}", inner.feature_key(*feature)),
                                });
                            }
                            return Ok(Flow::Done(Step::Replay(answer.clone())));
                        }
                        Some(Idem::Pending { notify, .. }) => {
                            return Ok(Flow::Wait(notify.clone()));
                        }
                        None => {}
                    }
                }
                let now = inner.now();
                let out = decide(inner, st, now);
                let expired = std::mem::take(&mut st.expired);
                settle_expired(inner, st, expired);
                match out? {
                    Outcome::Answer(d) => Ok(Flow::Done(Step::Answer(d))),
                    Outcome::Announce { decision, op, undo } => {
                        match inner.submit(Ops::One(op, Counted::Nothing)) {
                            Ok(rx) => Ok(Flow::Done(Step::Announcing { rx, decision, undo })),
                            Err(_) => {
                                undo.apply(inner, st);
                                Ok(Flow::Done(Step::Answer(decision)))
                            }
                        }
                    }
                    Outcome::Write {
                        decision,
                        ops,
                        undo,
                    } => {
                        let pending = u.key.map(|k| {
                            let n = Arc::new(Notify::new());
                            st.idem.insert(
                                k.into(),
                                Idem::Pending {
                                    feature: u.feature,
                                    notify: n.clone(),
                                    owner: 0,
                                },
                            );
                            n
                        });
                        match inner.submit(ops) {
                            Ok(rx) => Ok(Flow::Done(Step::Committing {
                                rx,
                                decision,
                                undo,
                                pending,
                                at: now,
                            })),
                            Err(e) => {
                                undo.apply(inner, st);
                                if let Some(k) = u.key {
                                    st.idem.remove(k);
                                }
                                if let Some(n) = pending {
                                    n.notify_waiters();
                                }
                                Err(e)
                            }
                        }
                    }
                }
            })
            .await?;
        match step {
            Step::Replay(a) => {
                let mut d = replay(inner, &a).await?;
                d.replayed = true;
                Ok(d)
            }
            Step::Answer(d) => Ok(d),
            Step::Announcing { rx, decision, undo } => {
                if Inner::wait_ack(rx).await.is_err() {
                    let _ = inner.with_customer(u.customer, move |st| undo.apply(inner, st));
                }
                Ok(decision)
            }
            Step::Committing {
                rx,
                decision,
                undo,
                pending,
                at,
            } => {
                let result = Inner::wait_ack(rx).await;
                let ok = result.is_ok();
                let stored = match &result {
                    Ok(seqs) if !seqs.is_empty() => Answer::Ledger(seqs[0]),
                    _ => Answer::Kept(Arc::new(decision.clone())),
                };
                // An unkeyed write that committed leaves nothing to settle:
                // no second trip through the customer's lock.
                let settle = !ok || u.key.is_some();
                let _ = settle.then(|| {
                    inner.with_customer(u.customer, move |st| {
                        if ok {
                            if let Some(k) = u.key {
                                st.idem.insert(
                                    k.into(),
                                    Idem::Done {
                                        feature: u.feature,
                                        answer: stored,
                                        at,
                                    },
                                );
                            }
                        } else {
                            undo.apply(inner, st);
                            if let Some(k) = u.key {
                                st.idem.remove(k);
                            }
                        }
                    })
                });
                if let Some(n) = pending {
                    n.notify_waiters();
                }
                result?;
                Ok(decision)
            }
        }
    }

    /// Dry run: would consuming `quantity` be allowed now? Changes nothing.
    pub async fn check(&self, req: UsageRequest) -> Result<Decision, EngineError> {
        check_quantity(req.quantity)?;
        check_key(req.idempotency_key.as_deref())?;
        let f = self.inner.feature(&req.feature, Kind::Metered, "check")?;
        let inner = &*self.inner;
        inner
            .locked(&req.customer, |st| {
                if st.deleted {
                    return Err(EngineError::CustomerDeleted(req.customer.clone()));
                }
                let now = inner.now();
                let d = decide_metered(inner, st, f, req.quantity, now, false);
                Ok(Flow::Done(d))
            })
            .await
    }

    /// Atomic check-and-add on a metered feature: all-or-nothing; the answer
    /// comes after the usage record is durably committed.
    pub async fn consume(&self, req: UsageRequest) -> Result<Decision, EngineError> {
        check_quantity(req.quantity)?;
        check_key(req.idempotency_key.as_deref())?;
        let f = self.inner.feature(&req.feature, Kind::Metered, "consume")?;
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
                let m = match st.take_metered(f, quantity, now, true) {
                    Err((reason, _)) => {
                        return Ok(Outcome::Answer(gate_denial(inner, st, f, reason, quantity)));
                    }
                    Ok(m) => m,
                };
                if !m.decision.allowed {
                    let mut d = m.decision;
                    d.upgrade_to = inner.upgrade_to(st, f, d.used + quantity);
                    return Ok(Outcome::denied(inner, st, f, Some(m.window), d, now));
                }
                let used = m.decision.used;
                let events = crate::alerts::metered_usage(
                    inner,
                    st,
                    f,
                    m.window,
                    crate::alerts::Change::up_by(quantity, used, now),
                    &m.alloc,
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
                    allocation: m.alloc.to_map(),
                    // Only a keyed consume is ever replayed; an unkeyed one
                    // stores `null` (its answer was a quarter of the row).
                    answer: if idempotency_key.is_some() {
                        answer_json(&m.decision)
                    } else {
                        serde_json::Value::Null
                    },
                };
                Ok(Outcome::Write {
                    decision: m.decision,
                    ops: crate::alerts::with_events(
                        WriteOp::AppendUsage(record),
                        Counted::Window(m.window.0, m.window.1),
                        events,
                    ),
                    undo: Undo::Metered {
                        feature: f,
                        window: m.window,
                        alloc: m.alloc,
                    },
                })
            },
        )
        .await
    }

    /// The in-memory decision path alone: decides and counts like
    /// [`Engine::consume`] but writes nothing to the ledger. For benchmarks and
    /// simulations only: the counter then runs ahead of the ledger (a restart
    /// or `verify` will show it).
    pub fn consume_in_memory(
        &self,
        customer: &str,
        feature: &str,
        quantity: Decimal,
    ) -> Result<Decision, EngineError> {
        check_quantity(quantity)?;
        let f = self.inner.feature(feature, Kind::Metered, "consume")?;
        let inner = &*self.inner;
        inner.with_customer(customer, |st| {
            if st.deleted {
                return Err(EngineError::CustomerDeleted(customer.to_string()));
            }
            let now = inner.now();
            Ok(decide_metered(inner, st, f, quantity, now, true))
        })?
    }

    /// Holds `quantity` against the limit until committed, released or expired
    /// (after `ttl`, default from the config). The answer carries the
    /// reservation id.
    pub async fn reserve(
        &self,
        req: UsageRequest,
        ttl: Option<SignedDuration>,
    ) -> Result<Decision, EngineError> {
        check_quantity(req.quantity)?;
        check_key(req.idempotency_key.as_deref())?;
        let ttl = ttl.unwrap_or(self.inner.config.reservation_ttl);
        if ttl <= SignedDuration::ZERO {
            return Err(EngineError::InvalidInput {
                field: "ttl",
                message: "a reservation's time-to-live must be positive".into(),
            });
        }
        let f = self.inner.feature(&req.feature, Kind::Metered, "reserve")?;
        let UsageRequest {
            customer,
            feature,
            quantity,
            idempotency_key,
            mut properties,
            ..
        } = req;
        self.decide_and_record(
            Usage {
                customer: &customer,
                feature: f,
                key: idempotency_key.as_deref(),
            },
            |inner, st, now| {
                let m = match st.hold_metered(f, quantity, now) {
                    Err((reason, _)) => {
                        return Ok(Outcome::Answer(gate_denial(inner, st, f, reason, quantity)));
                    }
                    Ok(m) => m,
                };
                let mut d = m.decision;
                if !d.allowed {
                    d.upgrade_to = inner.upgrade_to(st, f, d.used + quantity);
                    return Ok(Outcome::denied(inner, st, f, Some(m.window), d, now));
                }
                let id = inner.ids.mint("res");
                let expires_at = now.checked_add(ttl).unwrap_or(Timestamp::MAX);
                d.reservation_id = Some(id.clone());
                d.reservation_expires_at = Some(expires_at);
                st.resv.push(OpenResv {
                    id: id.clone(),
                    feature: f,
                    quantity,
                    created_at: now,
                    expires_at,
                    window: m.window,
                    idempotency_key: idempotency_key.clone(),
                });
                inner.reservations.insert(id.clone(), st.id.clone());
                let record = ReservationRecord {
                    id: id.clone(),
                    customer_id: customer.clone(),
                    feature: feature.clone(),
                    quantity,
                    state: ReservationState::Open,
                    created_at: now,
                    expires_at,
                    idempotency_key: idempotency_key.clone(),
                    properties: std::mem::take(&mut properties),
                };
                Ok(Outcome::Write {
                    decision: d,
                    ops: Ops::One(WriteOp::PutReservation(record), Counted::Nothing),
                    undo: Undo::Reserve { id },
                })
            },
        )
        .await
    }

    /// Finds the customer of a reservation (open ones in memory; closed ones
    /// from the store, to say how they closed).
    async fn reservation_owner(&self, id: &str) -> Result<(Arc<str>, bool), EngineError> {
        if let Some(c) = self.inner.reservations.get(id).map(|c| c.clone()) {
            return Ok((c, true));
        }
        match self.inner.store.get_reservation(id).await? {
            Some(r) => Ok((
                Arc::from(r.customer_id.as_str()),
                r.state == ReservationState::Open,
            )),
            None => Err(EngineError::ReservationNotFound(id.to_string())),
        }
    }

    /// Commits a reservation with the actual quantity. Less than reserved: the
    /// rest is freed. More: the extra is checked like a consume; on a hard limit
    /// it is denied (the reservation stays open) unless `allow_overage`, which
    /// records it as overage. Committing again returns the first answer.
    pub async fn commit(&self, req: CommitRequest) -> Result<Decision, EngineError> {
        if req.quantity < Decimal::ZERO {
            return Err(EngineError::InvalidQuantity {
                quantity: req.quantity,
                reason: "must not be negative",
            });
        }
        check_magnitude(req.quantity)?;
        let (customer, _) = self.reservation_owner(&req.reservation_id).await?;
        let key = commit_key(&req.reservation_id);
        // The feature of the reservation, for the idempotency bookkeeping.
        let feature = self.inner.with_customer(&customer, |st| {
            st.resv
                .iter()
                .find(|r| r.id == req.reservation_id)
                .map(|r| r.feature)
                .or_else(|| match st.idem.get(key.as_str()) {
                    Some(Idem::Done { feature, .. } | Idem::Pending { feature, .. }) => {
                        Some(*feature)
                    }
                    None => None,
                })
        })?;
        let Some(f) = feature else {
            let state = match self
                .inner
                .store
                .get_reservation(&req.reservation_id)
                .await?
            {
                Some(r) => r.state,
                None => return Err(EngineError::ReservationNotFound(req.reservation_id)),
            };
            return Err(EngineError::ReservationClosed {
                id: req.reservation_id,
                state: closed_state(state),
            });
        };
        let CommitRequest {
            reservation_id,
            quantity,
            allow_overage,
            mut properties,
            billable,
        } = req;
        let feature_key = self.inner.feature_key(f).to_string();
        self.decide_and_record(
            Usage {
                customer: &customer,
                feature: f,
                key: Some(&key),
            },
            |inner, st, now| {
                let expired = st.expire_reservations(now);
                let was_expired = expired.iter().any(|(id, _)| *id == reservation_id);
                st.expired.extend(expired);
                if was_expired {
                    return Err(EngineError::ReservationClosed {
                        id: reservation_id.clone(),
                        state: "expired",
                    });
                }
                let Some(pos) = st.resv.iter().position(|r| r.id == reservation_id) else {
                    return Err(EngineError::ReservationClosed {
                        id: reservation_id.clone(),
                        state: "closed",
                    });
                };
                let resv = st.resv.remove(pos);
                st.unhold(&resv);
                let m = match st.commit_metered(f, quantity, resv.quantity, allow_overage, now) {
                    Err((reason, _)) => {
                        let d = gate_denial(inner, st, f, reason, quantity);
                        st.rehold(resv);
                        return Ok(Outcome::Answer(d));
                    }
                    Ok(m) => m,
                };
                let mut d = m.decision;
                d.reservation_id = Some(reservation_id.clone());
                if !d.allowed {
                    d.upgrade_to = inner.upgrade_to(st, f, d.used + quantity);
                    st.rehold(resv);
                    return Ok(Outcome::denied(inner, st, f, Some(m.window), d, now));
                }
                let events = crate::alerts::metered_usage(
                    inner,
                    st,
                    f,
                    m.window,
                    crate::alerts::Change::up_by(quantity, d.used, now),
                    &m.alloc,
                );
                inner.reservations.remove(&reservation_id);
                let mut ops = Vec::with_capacity(2);
                if quantity > Decimal::ZERO {
                    ops.push((
                        WriteOp::AppendUsage(NewUsageRecord {
                            customer_id: st.record.id.clone(),
                            feature: feature_key.clone(),
                            quantity,
                            timestamp: now,
                            recorded_at: now,
                            source: UsageSource::Commit,
                            properties: std::mem::take(&mut properties),
                            billable,
                            idempotency_key: None,
                            allocation: m.alloc.to_map(),
                            answer: answer_json(&d),
                        }),
                        Counted::Window(m.window.0, m.window.1),
                    ));
                }
                ops.push((
                    WriteOp::SetReservationState {
                        id: reservation_id.clone(),
                        state: ReservationState::Committed,
                    },
                    Counted::Nothing,
                ));
                Ok(Outcome::Write {
                    decision: d,
                    ops: crate::alerts::extend_ops(Ops::Many(ops), events),
                    undo: Undo::Commit {
                        resv,
                        window: m.window,
                        alloc: m.alloc,
                    },
                })
            },
        )
        .await
    }

    /// Releases a reservation: its hold is freed, nothing is recorded as usage.
    pub async fn release(&self, reservation_id: &str) -> Result<(), EngineError> {
        let (customer, open) = self.reservation_owner(reservation_id).await?;
        if !open {
            let state = self
                .inner
                .store
                .get_reservation(reservation_id)
                .await?
                .map_or("closed", |r| closed_state(r.state));
            return Err(EngineError::ReservationClosed {
                id: reservation_id.to_string(),
                state,
            });
        }
        let inner = &*self.inner;
        let rx = inner
            .locked(&customer, |st| {
                let now = inner.now();
                let expired = st.expire_reservations(now);
                let was_expired = expired.iter().any(|(id, _)| id == reservation_id);
                settle_expired(inner, st, expired);
                if was_expired {
                    return Err(EngineError::ReservationClosed {
                        id: reservation_id.to_string(),
                        state: "expired",
                    });
                }
                let Some(pos) = st.resv.iter().position(|r| r.id == reservation_id) else {
                    return Err(EngineError::ReservationClosed {
                        id: reservation_id.to_string(),
                        state: "closed",
                    });
                };
                let resv = st.resv.remove(pos);
                st.unhold(&resv);
                inner.reservations.remove(reservation_id);
                match inner.submit(Ops::One(
                    WriteOp::SetReservationState {
                        id: reservation_id.to_string(),
                        state: ReservationState::Released,
                    },
                    Counted::Nothing,
                )) {
                    Ok(rx) => Ok(Flow::Done((rx, resv))),
                    Err(e) => {
                        Undo::Release { resv }.apply(inner, st);
                        Err(e)
                    }
                }
            })
            .await?;
        let (rx, resv) = rx;
        if let Err(e) = Inner::wait_ack(rx).await {
            let _ = inner.with_customer(&customer, |st| Undo::Release { resv }.apply(inner, st));
            return Err(e);
        }
        Ok(())
    }

    /// Open reservations of a customer: (id, feature, quantity, expires_at).
    pub fn reservations(
        &self,
        customer: &str,
    ) -> Result<Vec<(String, String, Decimal, Timestamp)>, EngineError> {
        let inner = &*self.inner;
        inner.with_customer(customer, |st| {
            st.resv
                .iter()
                .map(|r| {
                    (
                        r.id.clone(),
                        inner.feature_key(r.feature).to_string(),
                        r.quantity,
                        r.expires_at,
                    )
                })
                .collect()
        })
    }
}

fn closed_state(s: ReservationState) -> &'static str {
    match s {
        ReservationState::Open => "open",
        ReservationState::Committed => "committed",
        ReservationState::Released => "released",
        ReservationState::Expired => "expired",
    }
}

/// The decision of a check (`apply == false`) or an in-memory consume.
pub(crate) fn decide_metered(
    inner: &Inner,
    st: &mut CustomerState,
    f: usize,
    qty: Decimal,
    now: Timestamp,
    apply: bool,
) -> Decision {
    let d = match st.take_metered(f, qty, now, apply) {
        Err((reason, _)) => gate_denial(inner, st, f, reason, qty),
        Ok(m) => {
            let mut d = m.decision;
            if !d.allowed {
                d.upgrade_to = inner.upgrade_to(st, f, d.used + qty);
            }
            d
        }
    };
    let expired = std::mem::take(&mut st.expired);
    settle_expired(inner, st, expired);
    d
}

/// The first answer of an idempotency key: kept in memory, or read back from
/// its ledger row.
pub(crate) async fn replay(inner: &Inner, a: &Answer) -> Result<Decision, EngineError> {
    match a {
        Answer::Kept(d) => Ok((**d).clone()),
        Answer::Ledger(seq) => {
            let rows = inner.store.usage_after(seq - 1, 1).await?;
            let row = rows
                .into_iter()
                .find(|r| r.seq == *seq)
                .ok_or_else(|| EngineError::Corrupt(format!("ledger row {seq} is missing")))?;
            serde_json::from_value(row.record.answer).map_err(|e| {
                EngineError::Corrupt(format!("ledger row {seq}: unreadable answer: {e}"))
            })
        }
    }
}

pub(crate) fn answer_json(d: &Decision) -> serde_json::Value {
    serde_json::to_value(d).unwrap_or(serde_json::Value::Null)
}
