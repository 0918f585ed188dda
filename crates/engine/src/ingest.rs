//! Batch ingestion of usage that happened elsewhere.
//!
//! Ingested events are never denied (they already happened). Each is
//! validated on its own (`rejected` with a reason, the rest go on), checked
//! against the idempotency window (`duplicate`), counted against the current
//! window when its timestamp falls in it (possibly above a hard limit, which
//! the result says), and all accepted events go to the ledger through the
//! group commit as one batch. The call answers after that commit.
//!
//! Events of the batch are decided customer by customer but sent to the
//! writer together at the end; metered sums do not depend on order, and the
//! idempotency claims (Pending) keep concurrent duplicates out meanwhile.
//! An event whose key is claimed by another request still in flight waits
//! for that request (after this batch's own commit, so two batches never
//! wait for each other) and is then decided again.

use std::sync::Arc;

use rust_decimal::Decimal;
use tokio::sync::Notify;
use tollgate_store::{NewUsageRecord, UsageSource, WriteOp};

use crate::engine::{Engine, Inner};
use crate::error::EngineError;
use crate::ids::validate_idempotency_key;
use crate::metered::{Undo, answer_json};
use crate::model::Kind;
use crate::recover::settle_expired;
use crate::state::{Answer, Idem};
use crate::types::{Decision, IngestEvent, IngestResult};
use crate::writer::{Counted, Ops};

fn rejected(reason: &str) -> Option<IngestResult> {
    Some(IngestResult::Rejected {
        reason: reason.to_string(),
    })
}

impl Engine {
    /// Ingests up to `max_ingest` (default 100,000) events; one result per
    /// event, in order.
    pub async fn ingest(&self, events: Vec<IngestEvent>) -> Result<Vec<IngestResult>, EngineError> {
        let inner = &*self.inner;
        if events.len() > inner.config.max_ingest {
            return Err(EngineError::TooManyEvents {
                count: events.len(),
                max: inner.config.max_ingest,
            });
        }
        let owner = inner.owner();
        let mut results: Vec<Option<IngestResult>> = vec![None; events.len()];
        let mut events: Vec<Option<IngestEvent>> = events.into_iter().map(Some).collect();
        let mut todo: Vec<usize> = (0..events.len()).collect();
        loop {
            let now = inner.now();
            let oldest = now.checked_sub(inner.config.backdate_window).unwrap_or(now);
            let newest = now.checked_add(inner.config.future_skew).unwrap_or(now);
            let notify = Arc::new(Notify::new());
            let mut ops: Vec<(WriteOp, Counted)> = Vec::new();
            // Alert events go after every append, so `claimed` indexes stay
            // the appends' ledger seqs.
            let mut alerts: Vec<WriteOp> = Vec::new();
            let mut undos: Vec<(Arc<str>, Undo)> = Vec::new();
            // (customer, key, feature, index of its write in `ops`)
            let mut claimed: Vec<(Arc<str>, String, usize, usize)> = Vec::new();
            let mut deferred = Vec::new();
            for i in todo {
                let Some(ev) = events[i].as_mut() else {
                    continue;
                };
                if ev.quantity <= Decimal::ZERO || ev.quantity > crate::metered::MAX_QUANTITY {
                    results[i] = rejected("invalid_quantity");
                    continue;
                }
                if let Some(k) = &ev.idempotency_key {
                    if validate_idempotency_key(k).is_err() {
                        results[i] = rejected("invalid_idempotency_key");
                        continue;
                    }
                }
                let f = match inner.feature(&ev.feature, Kind::Metered, "ingest") {
                    Ok(f) => f,
                    Err(EngineError::WrongFeatureKind { .. }) => {
                        results[i] = rejected("wrong_feature_kind");
                        continue;
                    }
                    Err(_) => {
                        results[i] = rejected("unknown_feature");
                        continue;
                    }
                };
                if ev.timestamp < oldest {
                    results[i] = rejected("too_old");
                    continue;
                }
                if ev.timestamp > newest {
                    results[i] = rejected("in_the_future");
                    continue;
                }
                let Some(cell) = inner.customers.get(ev.customer.as_str()) else {
                    results[i] = rejected("unknown_customer");
                    continue;
                };
                let mut st = cell.lock();
                if st.deleted {
                    results[i] = rejected("customer_deleted");
                    continue;
                }
                if st.reloading.is_some() {
                    deferred.push(i);
                    continue;
                }
                if let Some(k) = &ev.idempotency_key {
                    match st.idem.get(k.as_str()) {
                        Some(Idem::Done { .. }) => {
                            results[i] = Some(IngestResult::Duplicate);
                            continue;
                        }
                        Some(Idem::Pending { owner: o, .. }) if *o == owner => {
                            results[i] = Some(IngestResult::Duplicate);
                            continue;
                        }
                        Some(Idem::Pending { .. }) => {
                            deferred.push(i);
                            continue;
                        }
                        None => {}
                    }
                }
                let (alloc, window, counted, over) =
                    st.ingest_metered(f, ev.quantity, ev.timestamp, now);
                let expired = std::mem::take(&mut st.expired);
                settle_expired(inner, &mut st, expired);
                let (used, limit) = match (window, st.ent(f).0) {
                    (Some(w), crate::model::Ent::Metered { limit, .. }) => (
                        st.meter_snapshot(f, w).map_or(Decimal::ZERO, |m| m.used()),
                        *limit,
                    ),
                    _ => (Decimal::ZERO, None),
                };
                let decision = Decision {
                    allowed: true,
                    quantity: ev.quantity,
                    limit,
                    used,
                    remaining: limit.map(|l| (l - used).max(Decimal::ZERO)),
                    resets_at: window.map(|w| w.end),
                    reason: None,
                    upgrade_to: None,
                    overage: alloc.overage,
                    over_limit: over,
                    bypassed: false,
                    replayed: false,
                    reservation_id: None,
                    reservation_expires_at: None,
                };
                if counted {
                    if let Some(w) = window {
                        alerts.extend(crate::alerts::metered_usage(
                            inner,
                            &st,
                            f,
                            (w.start, w.end),
                            crate::alerts::Change::up_by(ev.quantity, used, now),
                            &alloc,
                        ));
                    }
                }
                let answer = answer_json(&decision);
                if let Some(k) = &ev.idempotency_key {
                    st.idem.insert(
                        k.as_str().into(),
                        Idem::Pending {
                            feature: f,
                            notify: notify.clone(),
                            owner,
                        },
                    );
                    claimed.push((st.id.clone(), k.clone(), f, ops.len()));
                }
                let counted_as = match window {
                    Some(w) => Counted::Window(w.start, w.end),
                    None => Counted::Nothing,
                };
                if counted || !alloc.grants.is_empty() {
                    if let Some(w) = window {
                        undos.push((
                            st.id.clone(),
                            Undo::Metered {
                                feature: f,
                                window: (w.start, w.end),
                                alloc: alloc.clone(),
                            },
                        ));
                    }
                }
                ops.push((
                    WriteOp::AppendUsage(NewUsageRecord {
                        customer_id: st.record.id.clone(),
                        feature: inner.feature_key(f).to_string(),
                        quantity: ev.quantity,
                        timestamp: ev.timestamp,
                        recorded_at: now,
                        source: UsageSource::Event,
                        properties: std::mem::take(&mut ev.properties),
                        billable: ev.billable,
                        idempotency_key: ev.idempotency_key.clone(),
                        allocation: alloc.to_map(),
                        answer,
                    }),
                    counted_as,
                ));
                results[i] = Some(IngestResult::Accepted {
                    counted,
                    over_limit: over,
                });
                drop(st);
                events[i] = None;
            }
            if !ops.is_empty() {
                let ops = crate::alerts::extend_ops(Ops::Many(ops), alerts);
                let ack = match inner.submit(ops) {
                    Ok(rx) => Inner::wait_ack(rx).await,
                    Err(e) => Err(e),
                };
                let ok = ack.is_ok();
                let seqs: &[i64] = ack.as_deref().unwrap_or(&[]);
                for (customer, key, f, op) in claimed {
                    let _ = inner.with_customer(&customer, |st| match seqs.get(op) {
                        Some(seq) if ok => {
                            st.idem.insert(
                                key.into_boxed_str(),
                                Idem::Done {
                                    feature: f,
                                    answer: Answer::Ledger(*seq),
                                    at: now,
                                },
                            );
                        }
                        _ => {
                            st.idem.remove(key.as_str());
                        }
                    });
                }
                if !ok {
                    for (customer, undo) in undos {
                        let _ = inner.with_customer(&customer, |st| undo.apply(inner, st));
                    }
                }
                notify.notify_waiters();
                ack?;
            }
            if deferred.is_empty() {
                break;
            }
            todo = deferred;
            // The other requests holding these keys commit within a group
            // commit's time; poll rather than hold anything while waiting.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| IngestResult::Rejected {
                    reason: "not_processed".into(),
                })
            })
            .collect())
    }
}
