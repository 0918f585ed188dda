//! The entitlements summary and the consistency check.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use tollgate_store::{UsageQuery, UsageSource};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::ids::is_grant_id;
use crate::model::{Ent, Kind};
use crate::state::Slot;
use crate::types::{EntitlementsSummary, FeatureSummary, VerifyReport};

impl Engine {
    /// Every catalog feature, in key order, with what the customer may do now.
    pub fn entitlements(&self, customer: &str) -> Result<EntitlementsSummary, EngineError> {
        let inner = &*self.inner;
        let now = inner.now();
        inner.with_customer(customer, |st| {
            let gate = st.gate(now).err();
            let bypass = st.bypass();
            let period = st
                .sub
                .as_ref()
                .and_then(|s| s.cycle.period_containing(now).ok());
            let served = inner.served();
            let mut features = Vec::with_capacity(served.features.defs.len());
            for &f in &served.by_key {
                let def = &served.features.defs[f];
                let (ent, overridden) = st.ent(f);
                let ent = ent.clone();
                let access = bypass || (gate.is_none() && !ent.is_excluded());
                let mut s = FeatureSummary {
                    feature: def.key.to_string(),
                    kind: def.kind.as_str().to_string(),
                    access,
                    limit: None,
                    used: None,
                    remaining: None,
                    resets_at: None,
                    hard: None,
                    enabled: None,
                    value: None,
                    level: None,
                    active_leases: None,
                    grants_remaining: None,
                    reserved: None,
                    overridden,
                };
                match ent {
                    Ent::Metered {
                        limit, hard, reset, ..
                    } => {
                        let grants = st.grants_left(f, now);
                        s.limit = limit;
                        s.hard = Some(hard);
                        s.grants_remaining = Some(grants);
                        if let Some(w) = st.window_at(reset, now) {
                            let m = st.meter_snapshot(f, w);
                            let (used, plan, reserved) = m
                                .as_ref()
                                .map_or((Decimal::ZERO, Decimal::ZERO, Decimal::ZERO), |m| {
                                    (m.used(), m.plan, m.reserved)
                                });
                            s.used = Some(used);
                            s.reserved = Some(reserved);
                            s.remaining = limit.map(|l| {
                                ((l - plan).max(Decimal::ZERO) + grants - reserved)
                                    .max(Decimal::ZERO)
                            });
                            s.resets_at = Some(w.end);
                        }
                    }
                    Ent::Gauge { limit, hard, .. } => {
                        let level = match st.slot(f) {
                            Some(Slot::Gauge(l)) => *l,
                            _ => Decimal::ZERO,
                        };
                        s.limit = limit;
                        s.hard = Some(hard);
                        s.level = Some(level);
                        s.used = Some(level);
                        s.remaining = limit.map(|l| (l - level).max(Decimal::ZERO));
                    }
                    Ent::Rate { limit, window } => {
                        let (used, next) = match st.slots.get_mut(f) {
                            Some(Slot::Rate(log)) => {
                                (log.used(now, window), log.next_reset(window))
                            }
                            _ => (Decimal::ZERO, None),
                        };
                        s.limit = limit;
                        s.used = Some(used);
                        s.remaining = limit.map(|l| (l - used).max(Decimal::ZERO));
                        s.resets_at = next;
                    }
                    Ent::Concurrency { limit, .. } => {
                        let active = match st.slots.get_mut(f) {
                            Some(Slot::Leases(set)) => set.active(now),
                            _ => 0,
                        };
                        let active = u32::try_from(active).unwrap_or(u32::MAX);
                        s.limit = limit.map(Decimal::from);
                        s.active_leases = Some(active);
                        s.remaining = limit.map(|l| Decimal::from(l.saturating_sub(active)));
                    }
                    Ent::Cap { max } => s.limit = max,
                    Ent::Flag { enabled } => s.enabled = Some(enabled && gate.is_none() || bypass),
                    Ent::Value { value } => s.value = serde_json::to_value(&value).ok(),
                    Ent::Excluded => {
                        if def.kind == Kind::Flag {
                            s.enabled = Some(bypass);
                        }
                    }
                }
                features.push(s);
            }
            EntitlementsSummary {
                customer: st.record.id.clone(),
                plan_key: st.sub.as_ref().map(|s| s.record.plan_key.clone()),
                plan_version: st.sub.as_ref().map(|s| s.record.plan_version),
                status: st
                    .sub
                    .as_ref()
                    .map(|s| s.record.status.as_str().to_string()),
                period_start: period.map(|p| p.start),
                period_end: period.map(|p| p.end),
                admin_bypass: bypass,
                blocked: gate,
                features,
            }
        })
    }

    /// Recomputes a counter from the ledger and compares it with memory, after
    /// committing everything pending. Metered features compare the current
    /// window's buckets (`plan`, `overage`, `bypass`, `grants`); gauges the level.
    /// Run it when the customer is quiet: requests racing it may show as a
    /// difference.
    pub async fn verify(&self, customer: &str, feature: &str) -> Result<VerifyReport, EngineError> {
        let inner = &*self.inner;
        let f = inner
            .served()
            .features
            .get(feature)
            .ok_or_else(|| EngineError::UnknownFeature(feature.to_string()))?;
        inner.flush().await?;
        let now = inner.now();
        let kind = inner.served().features.defs[f].kind;
        match kind {
            Kind::Metered => {
                let (window, memory) = inner.with_customer(customer, |st| {
                    let reset = match st.ent(f).0 {
                        Ent::Metered { reset, .. } => Some(*reset),
                        _ => None,
                    };
                    let w = reset.and_then(|r| st.window_at(r, now));
                    let mut mem = BTreeMap::new();
                    if let Some(m) = w.and_then(|w| st.meter_snapshot(f, w)) {
                        mem.insert("plan".to_string(), m.plan);
                        mem.insert("grants".to_string(), m.grants);
                        mem.insert("overage".to_string(), m.overage);
                        mem.insert("bypass".to_string(), m.bypass);
                    }
                    (w, mem)
                })?;
                let mut ledger = BTreeMap::new();
                if let Some(w) = window {
                    let sums = inner
                        .store
                        .sum_usage(customer, feature, w.start, w.end)
                        .await?;
                    for (bucket, q) in sums {
                        let b = if is_grant_id(&bucket) {
                            "grants".to_string()
                        } else {
                            bucket
                        };
                        *ledger.entry(b).or_insert(Decimal::ZERO) += q;
                    }
                }
                let consistent = same(&memory, &ledger);
                Ok(VerifyReport {
                    customer: customer.to_string(),
                    feature: feature.to_string(),
                    window_start: window.map(|w| w.start),
                    window_end: window.map(|w| w.end),
                    memory,
                    ledger,
                    consistent,
                })
            }
            Kind::Gauge => {
                let level = inner.with_customer(customer, |st| match st.slot(f) {
                    Some(Slot::Gauge(l)) => *l,
                    _ => Decimal::ZERO,
                })?;
                let mut from_ledger = Decimal::ZERO;
                let mut after = None;
                loop {
                    let page = inner
                        .store
                        .usage(&UsageQuery {
                            customer_id: Some(customer.to_string()),
                            feature: Some(feature.to_string()),
                            after_seq: after,
                            limit: 10_000,
                            ..UsageQuery::default()
                        })
                        .await?;
                    let n = page.len();
                    for r in page {
                        after = Some(r.seq);
                        if r.record.source == UsageSource::GaugeSet {
                            from_ledger = r.record.quantity;
                        } else {
                            from_ledger = (from_ledger + r.record.quantity).max(Decimal::ZERO);
                        }
                    }
                    if n < 10_000 {
                        break;
                    }
                }
                let memory = BTreeMap::from([("level".to_string(), level)]);
                let ledger = BTreeMap::from([("level".to_string(), from_ledger)]);
                Ok(VerifyReport {
                    customer: customer.to_string(),
                    feature: feature.to_string(),
                    window_start: None,
                    window_end: None,
                    consistent: same(&memory, &ledger),
                    memory,
                    ledger,
                })
            }
            other => Err(EngineError::WrongFeatureKind {
                feature: feature.to_string(),
                kind: other.as_str(),
                operation: "verify",
                expected: "metered or gauge",
            }),
        }
    }

    /// [`Engine::verify`] for every customer's metered and gauge features in
    /// force (or with a level). Returns every report; check `consistent`.
    pub async fn verify_all(&self) -> Result<Vec<VerifyReport>, EngineError> {
        let inner = &*self.inner;
        let ids: Vec<String> = inner
            .customers
            .iter()
            .map(|e| e.key().as_str().to_string())
            .collect();
        let mut out = Vec::new();
        for id in ids {
            let features: Vec<String> = inner.with_customer(&id, |st| {
                inner
                    .served()
                    .features
                    .defs
                    .iter()
                    .enumerate()
                    .filter(|(f, def)| match def.kind {
                        Kind::Metered => matches!(st.ent(*f).0, Ent::Metered { .. }),
                        Kind::Gauge => {
                            matches!(st.ent(*f).0, Ent::Gauge { .. }) || st.slot(*f).is_some()
                        }
                        _ => false,
                    })
                    .map(|(_, def)| def.key.to_string())
                    .collect()
            })?;
            for feature in features {
                out.push(self.verify(&id, &feature).await?);
            }
        }
        Ok(out)
    }
}

fn same(a: &BTreeMap<String, Decimal>, b: &BTreeMap<String, Decimal>) -> bool {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().all(|k| {
        a.get(k).copied().unwrap_or(Decimal::ZERO) == b.get(k).copied().unwrap_or(Decimal::ZERO)
    })
}
