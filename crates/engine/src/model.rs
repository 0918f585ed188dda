//! The engine's compiled view of the catalog: features interned to indices and
//! every plan version's entitlements laid out by feature index, so the hot path
//! never hashes a feature key or walks a plan definition.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::SignedDuration;
use rust_decimal::Decimal;
use tollgate_core::period::{Anchoring, Interval, ResetPeriod};

use crate::alerts::Alerts;

/// A feature's kind (see the architecture's entitlement model).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Metered,
    Gauge,
    Rate,
    Concurrency,
    Cap,
    Flag,
    Value,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Metered => "metered",
            Kind::Gauge => "gauge",
            Kind::Rate => "rate",
            Kind::Concurrency => "concurrency",
            Kind::Cap => "cap",
            Kind::Flag => "flag",
            Kind::Value => "value",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct FeatureDef {
    pub key: Arc<str>,
    pub kind: Kind,
}

/// One feature's entitlement on a plan (or a customer's override), compiled.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Ent {
    /// The plan does not include the feature.
    Excluded,
    Metered {
        limit: Option<Decimal>,
        hard: bool,
        reset: ResetPeriod,
        /// Extra units that can be drawn once per usage window.
        emergency: Option<Decimal>,
        /// Alert thresholds as quantities of this limit (`None`: none can fire).
        alerts: Option<Arc<Alerts>>,
    },
    Gauge {
        limit: Option<Decimal>,
        hard: bool,
        alerts: Option<Arc<Alerts>>,
    },
    Rate {
        limit: Option<Decimal>,
        window: SignedDuration,
    },
    Concurrency {
        limit: Option<u32>,
        ttl: SignedDuration,
    },
    Cap {
        max: Option<Decimal>,
    },
    Flag {
        enabled: bool,
    },
    Value {
        value: tollgate_core::catalog::Value,
    },
}

impl Ent {
    pub(crate) fn is_excluded(&self) -> bool {
        match self {
            Ent::Excluded => true,
            Ent::Flag { enabled } => !enabled,
            _ => false,
        }
    }
}

/// A published plan version, compiled.
#[derive(Clone, Debug)]
pub(crate) struct CompiledPlan {
    pub key: Arc<str>,
    pub version: u32,
    pub tier: u32,
    pub interval: Interval,
    pub anchoring: Anchoring,
    /// By feature index.
    pub ents: Vec<Ent>,
}

impl CompiledPlan {
    pub(crate) fn ent(&self, feature: usize) -> &Ent {
        self.ents.get(feature).unwrap_or(&Ent::Excluded)
    }
}

/// The features of the catalog, interned.
#[derive(Clone, Debug, Default)]
pub(crate) struct Features {
    pub defs: Vec<FeatureDef>,
    pub index: HashMap<String, usize, crate::hash::FxBuild>,
}

impl Features {
    pub(crate) fn get(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }
}
