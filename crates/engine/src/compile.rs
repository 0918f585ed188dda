//! Turning the core catalog into the engine's compiled model.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::SignedDuration;
use rust_decimal::prelude::ToPrimitive;
use tollgate_core::catalog::{
    Catalog, Enforcement, Entitlement, Feature, FeatureKind, Plan, Threshold,
};

use crate::alerts::Alerts;

use crate::model::{CompiledPlan, Ent, FeatureDef, Features, Kind};

pub(crate) fn kind_of(kind: &FeatureKind) -> Kind {
    match kind {
        FeatureKind::Metered { .. } => Kind::Metered,
        FeatureKind::Gauge => Kind::Gauge,
        FeatureKind::Rate { .. } => Kind::Rate,
        FeatureKind::Concurrency { .. } => Kind::Concurrency,
        FeatureKind::Cap => Kind::Cap,
        FeatureKind::Flag => Kind::Flag,
        FeatureKind::Value { .. } => Kind::Value,
    }
}

/// Interns the catalog's features (in key order) to indices.
pub(crate) fn features(catalog: &Catalog) -> Features {
    let mut f = Features::default();
    for (key, feature) in &catalog.features {
        f.index.insert(key.clone(), f.defs.len());
        f.defs.push(FeatureDef {
            key: Arc::from(key.as_str()),
            kind: kind_of(&feature.kind),
        });
    }
    f
}

fn secs(s: u64) -> SignedDuration {
    SignedDuration::from_secs(i64::try_from(s).unwrap_or(i64::MAX))
}

/// Compiles one entitlement of a feature. `None` when the entitlement's kind
/// does not match the feature's. `thresholds` are the alert thresholds used
/// when the entitlement sets none of its own (the plan's).
pub(crate) fn compile_ent(
    feature: &Feature,
    ent: &Entitlement,
    thresholds: &[Threshold],
) -> Option<Ent> {
    Some(match (&feature.kind, ent) {
        (FeatureKind::Metered { reset }, Entitlement::Metered(m)) => Ent::Metered {
            limit: m.limit.finite(),
            hard: m.enforcement == Enforcement::Hard,
            reset: m.reset.unwrap_or(*reset),
            emergency: m.emergency_allowance,
            alerts: Alerts::compile(m.alert_thresholds.as_deref().unwrap_or(thresholds), m.limit),
        },
        (FeatureKind::Gauge, Entitlement::Gauge(g)) => Ent::Gauge {
            limit: g.limit.finite(),
            hard: g.enforcement == Enforcement::Hard,
            alerts: Alerts::compile(g.alert_thresholds.as_deref().unwrap_or(thresholds), g.limit),
        },
        (FeatureKind::Rate { window_secs }, Entitlement::Rate(r)) => Ent::Rate {
            limit: r.limit.finite(),
            window: secs(r.window_secs.unwrap_or(*window_secs)),
        },
        (FeatureKind::Concurrency { lease_ttl_secs }, Entitlement::Concurrency { limit }) => {
            Ent::Concurrency {
                limit: limit
                    .finite()
                    .map(|d| d.floor().to_u32().unwrap_or(u32::MAX)),
                ttl: secs(*lease_ttl_secs),
            }
        }
        (FeatureKind::Cap, Entitlement::Cap { max }) => Ent::Cap { max: max.finite() },
        (FeatureKind::Flag, Entitlement::Flag { enabled }) => Ent::Flag { enabled: *enabled },
        (FeatureKind::Value { .. }, Entitlement::Value { value }) => Ent::Value {
            value: value.clone(),
        },
        _ => return None,
    })
}

pub(crate) fn compile_plan(
    catalog_features: &Catalog,
    plan: &Plan,
    features: &Features,
) -> CompiledPlan {
    let mut ents = vec![Ent::Excluded; features.defs.len()];
    for (key, ent) in &plan.entitlements {
        let (Some(idx), Some(feature)) = (features.get(key), catalog_features.feature(key)) else {
            tracing::warn!(plan = %plan.key, version = plan.version, feature = %key,
                "a published plan version grants a feature the served catalog does not define: \
                 its subscribers are refused it until the feature is back in the catalog");
            continue;
        };
        if let Some(e) = compile_ent(feature, ent, &plan.alert_thresholds) {
            ents[idx] = e;
        }
    }
    CompiledPlan {
        key: Arc::from(plan.key.as_str()),
        version: plan.version,
        tier: plan.tier,
        interval: plan.interval,
        anchoring: plan.anchoring,
        ents,
    }
}

/// Plan keys interned once, so an `upgrade_to` answer is an `Arc` clone.
pub(crate) fn plan_keys(catalog: &Catalog) -> HashMap<String, Arc<str>> {
    catalog
        .plans
        .iter()
        .map(|p| (p.key.clone(), Arc::from(p.key.as_str())))
        .collect()
}
