//! The catalog's typed values: features, plans, entitlements, thresholds.
//!
//! These are built by [`super::load_catalog`], which validates everything; the
//! serde derives exist so the API and CLI can show catalogs and the store can
//! keep published plan versions (a value read back with serde is trusted to have
//! been validated when it was loaded).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::money::{Currency, Money};
use crate::period::{Anchoring, Interval, ResetPeriod};
use crate::pricing::{BaseFee, Charge, Quote, QuoteError, UsageQuantity, quote};

/// A product's features and plans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// The product's display name.
    pub name: String,
    pub description: Option<String>,
    /// The default currency of plans that do not name one.
    pub currency: Option<Currency>,
    /// Features by key.
    pub features: BTreeMap<String, Feature>,
    /// Plans, ordered by ascending tier (tiers are unique).
    pub plans: Vec<Plan>,
}

/// Something a plan can grant: a quota, a limit, a switch or a setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    pub key: String,
    /// Display name ("Participant minutes").
    pub name: String,
    /// The unit one quantity counts ("minute", "GB", "request").
    pub unit: Option<String>,
    pub description: Option<String>,
    pub kind: FeatureKind,
}

impl Feature {
    /// The unit, or `"unit"` when the catalog names none.
    pub fn unit_label(&self) -> &str {
        self.unit.as_deref().unwrap_or("unit")
    }
}

/// The seven kinds of features, and their kind-level settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureKind {
    /// A quantity consumed over a period, reset every `reset`.
    Metered { reset: ResetPeriod },
    /// A level that goes up and down (seats, locations, stored GB); no reset.
    Gauge,
    /// At most N events per sliding window of `window_secs` seconds.
    Rate { window_secs: u64 },
    /// At most N leases held at once; a lease not released expires after
    /// `lease_ttl_secs` seconds.
    Concurrency { lease_ttl_secs: u64 },
    /// A per-request maximum (file size, batch size).
    Cap,
    /// On or off.
    Flag,
    /// A setting whose value depends on the plan. `allowed` (string and
    /// string_set only) lists the values plans may use.
    Value {
        value_type: ValueType,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allowed: Option<BTreeSet<String>>,
    },
}

impl FeatureKind {
    /// `"metered"`, `"gauge"`, … as written in the catalog.
    pub fn name(&self) -> &'static str {
        match self {
            FeatureKind::Metered { .. } => "metered",
            FeatureKind::Gauge => "gauge",
            FeatureKind::Rate { .. } => "rate",
            FeatureKind::Concurrency { .. } => "concurrency",
            FeatureKind::Cap => "cap",
            FeatureKind::Flag => "flag",
            FeatureKind::Value { .. } => "value",
        }
    }
}

/// The type of a value feature's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    String,
    Integer,
    Decimal,
    Boolean,
    StringSet,
}

impl ValueType {
    pub fn name(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Integer => "integer",
            ValueType::Decimal => "decimal",
            ValueType::Boolean => "boolean",
            ValueType::StringSet => "string_set",
        }
    }
}

/// How a base price is timed within its billing period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseBilling {
    /// Invoiced at the start of the period it pays for.
    InAdvance,
    /// Invoiced at the end of the period, with the period's usage.
    InArrears,
}

/// A plan: a price, a billing interval and what it entitles to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub key: String,
    pub name: String,
    pub description: Option<String>,
    /// Order of capability: higher is more capable. "Pro and above" means
    /// `tier >= pro.tier`. Unique within a catalog.
    pub tier: u32,
    /// Version of the plan's commercial terms (see
    /// [`super::versioning::assign_versions`]).
    pub version: u32,
    pub currency: Currency,
    pub base_price: Money,
    pub interval: Interval,
    pub anchoring: Anchoring,
    pub billing: BaseBilling,
    pub trial_days: Option<u32>,
    /// Offered to new customers (pricing pages, self-service). A non-public
    /// plan is assigned by an operator.
    pub public: bool,
    /// By feature key. A feature that is absent is not in the plan.
    pub entitlements: BTreeMap<String, Entitlement>,
    pub charges: Vec<Charge>,
    /// When usage alerts fire for the plan's metered and gauge limits, unless
    /// an entitlement overrides them.
    pub alert_thresholds: Vec<Threshold>,
}

/// A usage limit: a non-negative quantity, or no limit.
///
/// Ordered with every finite limit below [`Limit::Unlimited`]. Serialized as a
/// decimal string (`"100000"`) or `"unlimited"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limit {
    Finite(Decimal),
    Unlimited,
}

impl Limit {
    pub fn is_unlimited(self) -> bool {
        matches!(self, Limit::Unlimited)
    }

    /// The finite quantity, if any.
    pub fn finite(self) -> Option<Decimal> {
        match self {
            Limit::Finite(n) => Some(n),
            Limit::Unlimited => None,
        }
    }

    /// Whether a total of `quantity` stays within the limit.
    pub fn allows(self, quantity: Decimal) -> bool {
        match self {
            Limit::Finite(n) => quantity <= n,
            Limit::Unlimited => true,
        }
    }

    /// What is left after `used` (never below 0), `None` when unlimited.
    pub fn remaining(self, used: Decimal) -> Option<Decimal> {
        self.finite().map(|n| (n - used).max(Decimal::ZERO))
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Finite(n) => write!(f, "{}", n.normalize()),
            Limit::Unlimited => f.write_str("unlimited"),
        }
    }
}

impl Serialize for Limit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "unlimited" {
            return Ok(Limit::Unlimited);
        }
        match Decimal::from_str_exact(&s) {
            Ok(n) if n >= Decimal::ZERO => Ok(Limit::Finite(n)),
            _ => Err(serde::de::Error::custom(format!(
                "expected a non-negative decimal string or \"unlimited\", got {s:?}"
            ))),
        }
    }
}

/// Whether a limit denies usage beyond it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Usage that would go beyond the limit is denied.
    Hard,
    /// Usage beyond the limit is allowed; alerts fire and the excess is
    /// reported (and billed when the entitlement has `overage`).
    Soft,
}

/// When a usage alert fires: at a share of the limit, or at an absolute quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    /// Percent of the limit (80 = 80 %); in `(0, 1000]`. Ignored for unlimited limits.
    Percent(Decimal),
    /// An absolute quantity of usage (> 0).
    Units(Decimal),
}

impl Threshold {
    /// The usage quantity at which this threshold is reached for `limit`
    /// (`None` for a percentage of an unlimited limit).
    pub fn quantity_for(self, limit: Limit) -> Option<Decimal> {
        match (self, limit) {
            (Threshold::Units(n), _) => Some(n),
            (Threshold::Percent(p), Limit::Finite(n)) => n
                .checked_mul(p)
                .and_then(|x| x.checked_div(Decimal::ONE_HUNDRED)),
            (Threshold::Percent(_), Limit::Unlimited) => None,
        }
    }
}

/// How much of a limit is used: `used × 100 / limit`, rounded to two
/// decimals (the figure of the usage dashboard, the alert events and the
/// daily summary). `None` for a limit that is not positive, or when the
/// quantities are too large to divide.
pub fn percent_of_limit(used: Decimal, limit: Decimal) -> Option<Decimal> {
    if limit <= Decimal::ZERO {
        return None;
    }
    used.checked_mul(Decimal::ONE_HUNDRED)
        .and_then(|x| x.checked_div(limit))
        .map(|p| p.round_dp(2))
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Percent(p) => write!(f, "{}%", p.normalize()),
            Threshold::Units(n) => write!(f, "{} units", n.normalize()),
        }
    }
}

/// The default alert thresholds: 80 %, 95 % and 100 % of the limit.
pub fn default_alert_thresholds() -> Vec<Threshold> {
    vec![
        Threshold::Percent(Decimal::from(80)),
        Threshold::Percent(Decimal::from(95)),
        Threshold::Percent(Decimal::ONE_HUNDRED),
    ]
}

/// A metered feature's entitlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeteredEntitlement {
    pub limit: Limit,
    pub enforcement: Enforcement,
    /// Soft limits only: usage beyond the limit is billed by the plan's charge
    /// on this metric. Always false for hard limits.
    pub overage: bool,
    /// Overrides the feature's reset period for this plan.
    pub reset: Option<ResetPeriod>,
    /// Extra units the customer may draw, once per period, beyond a hard limit.
    pub emergency_allowance: Option<Decimal>,
    /// Price of one emergency unit (in the plan's currency); `None` = free.
    pub emergency_unit_price: Option<Decimal>,
    /// Overrides the plan's alert thresholds for this feature.
    pub alert_thresholds: Option<Vec<Threshold>>,
}

/// A gauge feature's entitlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaugeEntitlement {
    pub limit: Limit,
    pub enforcement: Enforcement,
    pub alert_thresholds: Option<Vec<Threshold>>,
}

/// A rate feature's entitlement: `limit` events per window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateEntitlement {
    pub limit: Limit,
    /// Overrides the feature's window for this plan.
    pub window_secs: Option<u64>,
}

/// What one plan grants for one feature. The variant always matches the
/// feature's kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entitlement {
    Metered(MeteredEntitlement),
    Gauge(GaugeEntitlement),
    Rate(RateEntitlement),
    Concurrency { limit: Limit },
    Cap { max: Limit },
    Flag { enabled: bool },
    Value { value: Value },
}

impl Entitlement {
    /// The kind name, as in [`FeatureKind::name`].
    pub fn kind_name(&self) -> &'static str {
        match self {
            Entitlement::Metered(_) => "metered",
            Entitlement::Gauge(_) => "gauge",
            Entitlement::Rate(_) => "rate",
            Entitlement::Concurrency { .. } => "concurrency",
            Entitlement::Cap { .. } => "cap",
            Entitlement::Flag { .. } => "flag",
            Entitlement::Value { .. } => "value",
        }
    }

    /// The quantity limit (metered, gauge, rate, concurrency) or maximum (cap).
    pub fn limit(&self) -> Option<Limit> {
        match self {
            Entitlement::Metered(m) => Some(m.limit),
            Entitlement::Gauge(g) => Some(g.limit),
            Entitlement::Rate(r) => Some(r.limit),
            Entitlement::Concurrency { limit } => Some(*limit),
            Entitlement::Cap { max } => Some(*max),
            Entitlement::Flag { .. } | Entitlement::Value { .. } => None,
        }
    }

    /// Whether a flag is on (`false` for other kinds).
    pub fn is_enabled(&self) -> bool {
        matches!(self, Entitlement::Flag { enabled: true })
    }

    /// The value of a value feature.
    pub fn value(&self) -> Option<&Value> {
        match self {
            Entitlement::Value { value } => Some(value),
            _ => None,
        }
    }

    /// Whether a limit (or cap) allows a total of `quantity`; flags allow when
    /// on, values always. Use it in [`Catalog::cheapest_plan_allowing`]
    /// predicates: `&|e| e.allows(dec!(500))`.
    pub fn allows(&self, quantity: Decimal) -> bool {
        match self {
            Entitlement::Flag { enabled } => *enabled,
            Entitlement::Value { .. } => true,
            other => other.limit().is_some_and(|l| l.allows(quantity)),
        }
    }

    /// Whether the limit is hard (`true` for rate, concurrency and cap limits,
    /// which always deny beyond the limit).
    pub fn is_hard(&self) -> bool {
        match self {
            Entitlement::Metered(m) => m.enforcement == Enforcement::Hard,
            Entitlement::Gauge(g) => g.enforcement == Enforcement::Hard,
            _ => true,
        }
    }
}

/// A value feature's value.
///
/// Serialized as `{"type": "integer", "value": 30}`; decimals as strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Value {
    String(String),
    Integer(i64),
    Decimal(Decimal),
    Bool(bool),
    StringSet(BTreeSet<String>),
    /// No bound, for integer and decimal features (e.g. permanent retention:
    /// `retention_days = "unlimited"`).
    Unlimited,
}

impl Value {
    /// For integer and decimal values (and `Unlimited`): the value as a limit.
    pub fn as_limit(&self) -> Option<Limit> {
        match self {
            Value::Integer(n) if *n >= 0 => Some(Limit::Finite(Decimal::from(*n))),
            Value::Decimal(d) if *d >= Decimal::ZERO => Some(Limit::Finite(*d)),
            Value::Unlimited => Some(Limit::Unlimited),
            _ => None,
        }
    }

    /// Whether a string-set value contains `item` (or a string value equals it).
    pub fn contains(&self, item: &str) -> bool {
        match self {
            Value::StringSet(set) => set.contains(item),
            Value::String(s) => s == item,
            _ => false,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => write!(f, "{s:?}"),
            Value::Integer(n) => write!(f, "{n}"),
            Value::Decimal(d) => write!(f, "{}", d.normalize()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::StringSet(set) => {
                let items: Vec<String> = set.iter().map(|s| format!("{s:?}")).collect();
                write!(f, "[{}]", items.join(", "))
            }
            Value::Unlimited => f.write_str("unlimited"),
        }
    }
}

impl fmt::Display for Entitlement {
    /// A short human description: `10000 per period (hard)`, `on`, `["json", "txt"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entitlement::Metered(m) => {
                let mode = match (m.enforcement, m.overage) {
                    (Enforcement::Hard, _) => "hard",
                    (Enforcement::Soft, true) => "soft, overage billed",
                    (Enforcement::Soft, false) => "soft",
                };
                write!(f, "{} ({mode})", m.limit)
            }
            Entitlement::Gauge(g) => match g.enforcement {
                Enforcement::Hard => write!(f, "{}", g.limit),
                Enforcement::Soft => write!(f, "{} (soft)", g.limit),
            },
            Entitlement::Rate(r) => match r.window_secs {
                Some(w) => write!(f, "{} per {}", r.limit, format_duration(w)),
                None => write!(f, "{}", r.limit),
            },
            Entitlement::Concurrency { limit } => write!(f, "{limit} at once"),
            Entitlement::Cap { max } => write!(f, "max {max}"),
            Entitlement::Flag { enabled } => f.write_str(if *enabled { "on" } else { "off" }),
            Entitlement::Value { value } => write!(f, "{value}"),
        }
    }
}

/// Formats seconds the way the catalog writes durations: `90s`, `1m`, `1h30m`, `1d`.
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

impl Plan {
    pub fn entitlement(&self, feature: &str) -> Option<&Entitlement> {
        self.entitlements.get(feature)
    }

    /// Whether a flag feature is on in this plan (absent = off).
    pub fn flag_enabled(&self, feature: &str) -> bool {
        self.entitlement(feature)
            .is_some_and(Entitlement::is_enabled)
    }

    /// The charge pricing `metric` (at most one per metric).
    pub fn charge_for(&self, metric: &str) -> Option<&Charge> {
        self.charges.iter().find(|c| c.metric == metric)
    }

    /// Alert thresholds for a feature: the entitlement's override, else the plan's.
    pub fn alert_thresholds_for(&self, feature: &str) -> &[Threshold] {
        let own = match self.entitlement(feature) {
            Some(Entitlement::Metered(m)) => m.alert_thresholds.as_deref(),
            Some(Entitlement::Gauge(g)) => g.alert_thresholds.as_deref(),
            _ => None,
        };
        own.unwrap_or(&self.alert_thresholds)
    }

    /// Prices `usage` for one full billing period of this plan: the base price
    /// as the first line, then one line per charge (see [`crate::pricing::quote`]).
    pub fn quote(&self, usage: &[UsageQuantity]) -> Result<Quote, QuoteError> {
        let interval = match self.interval {
            Interval::Month => "monthly",
            Interval::Year => "yearly",
        };
        let base = BaseFee {
            description: format!("{} plan ({interval})", self.name),
            amount: self.base_price,
        };
        quote(self.currency, Some(base), &self.charges, usage)
    }
}

impl Catalog {
    pub fn plan(&self, key: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.key == key)
    }

    pub fn feature(&self, key: &str) -> Option<&Feature> {
        self.features.get(key)
    }

    /// Plans in ascending tier order.
    pub fn plans_by_tier(&self) -> impl Iterator<Item = &Plan> {
        self.plans.iter()
    }

    /// Plans offered to new customers, in ascending tier order.
    pub fn public_plans(&self) -> impl Iterator<Item = &Plan> {
        self.plans.iter().filter(|p| p.public)
    }

    /// Plans in which the flag `feature` is on, in ascending tier order.
    pub fn plans_with_flag(&self, feature: &str) -> Vec<&Plan> {
        self.plans
            .iter()
            .filter(|p| p.flag_enabled(feature))
            .collect()
    }

    /// The "upgrade to" suggestion: the lowest-tier plan with a tier above
    /// `min_tier_above` whose entitlement for `feature` satisfies `needed`
    /// (plans without the feature never qualify). With `public_only`, plans
    /// not offered to new customers are skipped.
    pub fn cheapest_plan_allowing(
        &self,
        feature: &str,
        needed: &dyn Fn(&Entitlement) -> bool,
        min_tier_above: u32,
        public_only: bool,
    ) -> Option<&Plan> {
        self.plans.iter().find(|p| {
            p.tier > min_tier_above
                && (p.public || !public_only)
                && p.entitlement(feature).is_some_and(needed)
        })
    }

    /// The plan to recommend to a customer who needs more of `feature`: on a
    /// plan of tier `tier`, the cheapest public plan above it
    /// ([`Catalog::cheapest_plan_allowing`]); without a subscription (`None`),
    /// the first public plan, in tier order, whose entitlement satisfies
    /// `needed`.
    pub fn upgrade_plan(
        &self,
        feature: &str,
        needed: &dyn Fn(&Entitlement) -> bool,
        tier: Option<u32>,
    ) -> Option<&Plan> {
        match tier {
            Some(tier) => self.cheapest_plan_allowing(feature, needed, tier, true),
            None => self
                .public_plans()
                .find(|p| p.entitlement(feature).is_some_and(needed)),
        }
    }

    /// The reset period of a metered feature in a plan: the entitlement's
    /// override, else the feature's. `None` if the feature is not metered or
    /// not in the plan.
    pub fn reset_period(&self, plan: &Plan, feature: &str) -> Option<ResetPeriod> {
        let Some(Entitlement::Metered(m)) = plan.entitlement(feature) else {
            return None;
        };
        match self.feature(feature)?.kind {
            FeatureKind::Metered { reset } => Some(m.reset.unwrap_or(reset)),
            _ => None,
        }
    }

    /// The window of a rate feature in a plan, in seconds: the entitlement's
    /// override, else the feature's.
    pub fn rate_window_secs(&self, plan: &Plan, feature: &str) -> Option<u64> {
        let Some(Entitlement::Rate(r)) = plan.entitlement(feature) else {
            return None;
        };
        match self.feature(feature)?.kind {
            FeatureKind::Rate { window_secs } => Some(r.window_secs.unwrap_or(window_secs)),
            _ => None,
        }
    }
}
