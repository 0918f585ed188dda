//! Plan versions and plan differences.
//!
//! A published plan version is immutable: publishing a catalog in which a
//! plan's terms changed creates a new version of that plan, and existing
//! subscribers stay on the version they have until they are migrated.
//!
//! The terms are everything in the plan (name and description included, since
//! customers see them on invoices) except three things that place the plan in
//! the catalog rather than define it: `version` itself, `tier` (renumbering
//! tiers to insert a plan does not change anyone's contract) and `public`
//! (withdrawing a plan from sale does not either). Those two apply to every
//! version of the plan and are updated in place. [`fingerprint`] compares
//! terms while ignoring how numbers are written (`"49"` and `"49.00"` are the
//! same price).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::model::{Catalog, Entitlement, Limit, Plan, Threshold, Value, format_duration};
use crate::pricing::{Charge, ChargePrice, PriceModel, Tier};

// ---------------------------------------------------------------------------
// Fingerprints
// ---------------------------------------------------------------------------

/// A stable fingerprint of a plan's terms (everything but `version`, `tier`
/// and `public`): 16 hex digits, the 64-bit FNV-1a of the plan's canonical
/// JSON with every decimal normalized. Equal fingerprints mean equal terms; it
/// is a change detector, not a security hash.
pub fn fingerprint(plan: &Plan) -> String {
    let canonical = normalized(plan);
    // Serializing plain data (strings, decimals, maps with string keys) cannot
    // fail; should it ever, the Debug rendering is still a deterministic input.
    let text = serde_json::to_string(&canonical).unwrap_or_else(|_| format!("{canonical:?}"));
    format!("{:016x}", fnv1a64(text.as_bytes()))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn n(d: Decimal) -> Decimal {
    d.normalize()
}

fn norm_limit(l: Limit) -> Limit {
    match l {
        Limit::Finite(d) => Limit::Finite(n(d)),
        Limit::Unlimited => Limit::Unlimited,
    }
}

fn norm_thresholds(ts: &[Threshold]) -> Vec<Threshold> {
    ts.iter()
        .map(|t| match t {
            Threshold::Percent(p) => Threshold::Percent(n(*p)),
            Threshold::Units(u) => Threshold::Units(n(*u)),
        })
        .collect()
}

fn norm_model(m: &PriceModel) -> PriceModel {
    let tiers = |ts: &[Tier]| {
        ts.iter()
            .map(|t| Tier {
                up_to: t.up_to.map(n),
                unit_price: n(t.unit_price),
                flat_fee: n(t.flat_fee),
            })
            .collect()
    };
    match m {
        PriceModel::PerUnit { unit_price } => PriceModel::PerUnit {
            unit_price: n(*unit_price),
        },
        PriceModel::Package {
            package_size,
            package_price,
        } => PriceModel::Package {
            package_size: n(*package_size),
            package_price: n(*package_price),
        },
        PriceModel::Graduated { tiers: ts } => PriceModel::Graduated { tiers: tiers(ts) },
        PriceModel::Volume { tiers: ts } => PriceModel::Volume { tiers: tiers(ts) },
    }
}

fn norm_entitlement(e: &Entitlement) -> Entitlement {
    let mut e = e.clone();
    match &mut e {
        Entitlement::Metered(m) => {
            m.limit = norm_limit(m.limit);
            m.emergency_allowance = m.emergency_allowance.map(n);
            m.emergency_unit_price = m.emergency_unit_price.map(n);
            m.alert_thresholds = m.alert_thresholds.as_deref().map(norm_thresholds);
        }
        Entitlement::Gauge(g) => {
            g.limit = norm_limit(g.limit);
            g.alert_thresholds = g.alert_thresholds.as_deref().map(norm_thresholds);
        }
        Entitlement::Rate(r) => r.limit = norm_limit(r.limit),
        Entitlement::Concurrency { limit } => *limit = norm_limit(*limit),
        Entitlement::Cap { max } => *max = norm_limit(*max),
        Entitlement::Flag { .. } => {}
        Entitlement::Value { value } => {
            if let Value::Decimal(d) = value {
                *d = n(*d);
            }
        }
    }
    e
}

fn norm_charge(c: &Charge) -> Charge {
    let mut c = c.clone();
    c.included = n(c.included);
    c.minimum = c.minimum.map(n);
    c.price = match &c.price {
        ChargePrice::Single(m) => ChargePrice::Single(norm_model(m)),
        ChargePrice::Dimensional(d) => {
            let mut d = d.clone();
            for p in &mut d.prices {
                p.model = norm_model(&p.model);
            }
            d.default = d.default.as_ref().map(norm_model);
            ChargePrice::Dimensional(d)
        }
    };
    c
}

/// The plan's terms: version, tier and public reset, every decimal normalized.
fn normalized(plan: &Plan) -> Plan {
    let mut p = plan.clone();
    p.version = 0;
    p.tier = 0;
    p.public = true;
    p.base_price.amount = n(p.base_price.amount);
    p.entitlements = p
        .entitlements
        .iter()
        .map(|(k, e)| (k.clone(), norm_entitlement(e)))
        .collect();
    p.charges = p.charges.iter().map(norm_charge).collect();
    p.alert_thresholds = norm_thresholds(&p.alert_thresholds);
    p
}

/// Whether two plans have the same terms (everything but version, tier and public).
pub fn same_content(a: &Plan, b: &Plan) -> bool {
    normalized(a) == normalized(b)
}

// ---------------------------------------------------------------------------
// Assigning versions
// ---------------------------------------------------------------------------

/// What publishing did to one plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionChangeKind {
    /// The plan was not published before: version 1.
    New,
    /// Its content changed: a new version, one above the latest published.
    Changed,
    /// Same content as the latest published version, which it keeps.
    Unchanged,
    /// Published before but absent from the new catalog. Its subscribers keep
    /// their version; it is no longer offered.
    Removed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionChange {
    /// The plan key.
    pub plan: String,
    /// The latest published version (`None` for a new plan).
    pub from: Option<u32>,
    /// The version the plan has after publishing (for `Removed`, the last one).
    pub to: u32,
    pub kind: VersionChangeKind,
}

impl fmt::Display for VersionChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, self.from) {
            (VersionChangeKind::New, _) | (_, None) => {
                write!(f, "{}: new, version {}", self.plan, self.to)
            }
            (VersionChangeKind::Changed, Some(from)) => {
                write!(f, "{}: changed, version {from} → {}", self.plan, self.to)
            }
            (VersionChangeKind::Unchanged, Some(_)) => {
                write!(f, "{}: unchanged, version {}", self.plan, self.to)
            }
            (VersionChangeKind::Removed, Some(from)) => write!(
                f,
                "{}: removed from the catalog (subscribers keep version {from})",
                self.plan
            ),
        }
    }
}

/// Sets the version of every plan of `incoming` against the `published` plans
/// (the latest published version of each; if several versions of a key are
/// given, the highest counts): a new plan gets version 1, a plan whose content
/// changed gets the latest version + 1, an unchanged plan keeps its version.
/// Versions written in the incoming catalog are ignored. An unchanged plan may
/// still come with a new `tier` or `public`: those apply to all its versions.
///
/// Returns the catalog with versions set and one change per incoming plan (in
/// tier order), followed by one `Removed` per published plan absent from it
/// (in key order).
pub fn assign_versions(published: &[Plan], incoming: Catalog) -> (Catalog, Vec<VersionChange>) {
    let mut latest: BTreeMap<&str, &Plan> = BTreeMap::new();
    for p in published {
        match latest.get(p.key.as_str()) {
            Some(q) if q.version >= p.version => {}
            _ => {
                latest.insert(p.key.as_str(), p);
            }
        }
    }
    let mut catalog = incoming;
    let mut changes = Vec::new();
    for plan in &mut catalog.plans {
        let change = match latest.get(plan.key.as_str()) {
            None => {
                plan.version = 1;
                VersionChangeKind::New
            }
            Some(old) if same_content(old, plan) => {
                plan.version = old.version;
                VersionChangeKind::Unchanged
            }
            Some(old) => {
                plan.version = old.version.saturating_add(1);
                VersionChangeKind::Changed
            }
        };
        changes.push(VersionChange {
            plan: plan.key.clone(),
            from: latest.get(plan.key.as_str()).map(|p| p.version),
            to: plan.version,
            kind: change,
        });
    }
    let kept: BTreeSet<&str> = catalog.plans.iter().map(|p| p.key.as_str()).collect();
    for (key, old) in &latest {
        if !kept.contains(key) {
            changes.push(VersionChange {
                plan: (*key).to_string(),
                from: Some(old.version),
                to: old.version,
                kind: VersionChangeKind::Removed,
            });
        }
    }
    (catalog, changes)
}

// ---------------------------------------------------------------------------
// Differences
// ---------------------------------------------------------------------------

/// What a difference means for a customer moving from the first plan to the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffEffect {
    /// More access or a lower price (a feature gained, a higher limit, a cheaper unit).
    Gain,
    /// Less access or a higher price (a feature lost, a lower limit).
    Loss,
    /// A change that is neither (a different setting, a different price shape).
    Change,
}

/// One difference between two plans (or two versions of one plan).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDiffEntry {
    /// Where it is, in catalog terms: `base_price`, `entitlements.queries.limit`,
    /// `charges.participant_minutes.price`.
    pub path: String,
    /// The first plan's value, as text (`None` when absent).
    pub before: Option<String>,
    /// The second plan's value, as text (`None` when absent).
    pub after: Option<String>,
    pub effect: DiffEffect,
    /// One readable line: `queries: limit 2000 → 10000`.
    pub summary: String,
}

impl fmt::Display for PlanDiffEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.effect {
            DiffEffect::Gain => '+',
            DiffEffect::Loss => '-',
            DiffEffect::Change => '~',
        };
        write!(f, "{sign} {}", self.summary)
    }
}

struct Differ {
    out: Vec<PlanDiffEntry>,
}

impl Differ {
    fn push(
        &mut self,
        path: String,
        before: Option<String>,
        after: Option<String>,
        effect: DiffEffect,
        summary: String,
    ) {
        self.out.push(PlanDiffEntry {
            path,
            before,
            after,
            effect,
            summary,
        });
    }

    /// A field present on both sides with a different value.
    fn field(
        &mut self,
        path: String,
        label: &str,
        before: String,
        after: String,
        effect: DiffEffect,
    ) {
        if before != after {
            let summary = format!("{label}: {before} → {after}");
            self.push(path, Some(before), Some(after), effect, summary);
        }
    }
}

fn by_order<T: PartialOrd>(before: T, after: T, higher_is: DiffEffect) -> DiffEffect {
    let opposite = match higher_is {
        DiffEffect::Gain => DiffEffect::Loss,
        DiffEffect::Loss => DiffEffect::Gain,
        DiffEffect::Change => DiffEffect::Change,
    };
    match after.partial_cmp(&before) {
        Some(std::cmp::Ordering::Greater) => higher_is,
        Some(std::cmp::Ordering::Less) => opposite,
        _ => DiffEffect::Change,
    }
}

fn opt<T: fmt::Display>(v: Option<T>, none: &str) -> String {
    v.map_or_else(|| none.to_string(), |v| v.to_string())
}

fn thresholds_text(ts: Option<&[Threshold]>) -> String {
    match ts {
        None => "plan default".into(),
        Some(ts) => {
            let items: Vec<String> = ts.iter().map(ToString::to_string).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

/// Renders a price model in one line: `0.004 per unit`, `1 per 1000 units`,
/// `graduated: up to 1000 at 0, then 0.01`.
pub fn describe_price_model(m: &PriceModel) -> String {
    let tiers = |ts: &[Tier]| {
        let parts: Vec<String> = ts
            .iter()
            .map(|t| {
                let fee = if t.flat_fee.is_zero() {
                    String::new()
                } else {
                    format!(" + {} flat", t.flat_fee.normalize())
                };
                match t.up_to {
                    Some(u) => format!(
                        "up to {} at {}{fee}",
                        u.normalize(),
                        t.unit_price.normalize()
                    ),
                    None => format!("above at {}{fee}", t.unit_price.normalize()),
                }
            })
            .collect();
        parts.join(", ")
    };
    match m {
        PriceModel::PerUnit { unit_price } => format!("{} per unit", unit_price.normalize()),
        PriceModel::Package {
            package_size,
            package_price,
        } => format!(
            "{} per {} units",
            package_price.normalize(),
            package_size.normalize()
        ),
        PriceModel::Graduated { tiers: ts } => format!("graduated: {}", tiers(ts)),
        PriceModel::Volume { tiers: ts } => format!("volume: {}", tiers(ts)),
    }
}

/// Renders a charge's price in one line.
pub fn describe_charge_price(p: &ChargePrice) -> String {
    match p {
        ChargePrice::Single(m) => describe_price_model(m),
        ChargePrice::Dimensional(d) => {
            let mut parts: Vec<String> = d
                .prices
                .iter()
                .map(|p| {
                    let when: Vec<String> =
                        p.when.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{}: {}", when.join(","), describe_price_model(&p.model))
                })
                .collect();
            if let Some(default) = &d.default {
                parts.push(format!("otherwise: {}", describe_price_model(default)));
            }
            format!("by {}: {}", d.group_by.join(", "), parts.join("; "))
        }
    }
}

fn per_unit_price(p: &ChargePrice) -> Option<Decimal> {
    match p {
        ChargePrice::Single(PriceModel::PerUnit { unit_price }) => Some(*unit_price),
        _ => None,
    }
}

/// Whether an entitlement grants nothing (a flag that is off): the same as absent.
fn grants_nothing(e: &Entitlement) -> bool {
    matches!(e, Entitlement::Flag { enabled: false })
}

/// The differences from plan `a` to plan `b`, in a fixed order: plan terms,
/// then entitlements by feature key, then charges by key, then alert
/// thresholds. Each entry says whether it is a gain or a loss for a customer
/// moving from `a` to `b`. Equal plans (up to number formatting) give no entries.
pub fn diff_plans(a: &Plan, b: &Plan) -> Vec<PlanDiffEntry> {
    let mut d = Differ { out: Vec::new() };
    use DiffEffect::{Change, Gain, Loss};

    d.field(
        "name".into(),
        "name",
        a.name.clone(),
        b.name.clone(),
        Change,
    );
    d.field(
        "description".into(),
        "description",
        opt(a.description.as_deref(), "none"),
        opt(b.description.as_deref(), "none"),
        Change,
    );
    d.field(
        "tier".into(),
        "tier",
        a.tier.to_string(),
        b.tier.to_string(),
        by_order(a.tier, b.tier, Gain),
    );
    if a.base_price.currency == b.base_price.currency {
        d.field(
            "base_price".into(),
            "base price",
            a.base_price.round_line().to_string(),
            b.base_price.round_line().to_string(),
            by_order(a.base_price.amount, b.base_price.amount, Loss),
        );
    } else {
        d.field(
            "base_price".into(),
            "base price",
            a.base_price.to_string(),
            b.base_price.to_string(),
            Change,
        );
    }
    d.field(
        "interval".into(),
        "billing interval",
        format!("{:?}", a.interval).to_lowercase(),
        format!("{:?}", b.interval).to_lowercase(),
        Change,
    );
    d.field(
        "anchoring".into(),
        "anchoring",
        format!("{:?}", a.anchoring).to_lowercase(),
        format!("{:?}", b.anchoring).to_lowercase(),
        Change,
    );
    d.field(
        "billing".into(),
        "base price billed",
        format!("{:?}", a.billing).to_lowercase(),
        format!("{:?}", b.billing).to_lowercase(),
        Change,
    );
    d.field(
        "trial_days".into(),
        "trial",
        opt(a.trial_days.map(|n| format!("{n} days")), "none"),
        opt(b.trial_days.map(|n| format!("{n} days")), "none"),
        by_order(a.trial_days.unwrap_or(0), b.trial_days.unwrap_or(0), Gain),
    );
    d.field(
        "public".into(),
        "public",
        a.public.to_string(),
        b.public.to_string(),
        Change,
    );

    let keys: BTreeSet<&String> = a.entitlements.keys().chain(b.entitlements.keys()).collect();
    for key in keys {
        let path = format!("entitlements.{key}");
        match (a.entitlements.get(key), b.entitlements.get(key)) {
            (Some(x), None) if !grants_nothing(x) => {
                let summary = format!("{key}: removed (was {x})");
                d.push(path, Some(x.to_string()), None, Loss, summary);
            }
            (None, Some(y)) if !grants_nothing(y) => {
                let summary = format!("{key}: added ({y})");
                d.push(path, None, Some(y.to_string()), Gain, summary);
            }
            (Some(x), Some(y)) => diff_entitlement(&mut d, key, &path, x, y),
            _ => {}
        }
    }

    let charge_keys: BTreeSet<&String> =
        a.charges.iter().chain(&b.charges).map(|c| &c.key).collect();
    for key in charge_keys {
        let path = format!("charges.{key}");
        let x = a.charges.iter().find(|c| &c.key == key);
        let y = b.charges.iter().find(|c| &c.key == key);
        match (x, y) {
            (Some(x), None) => {
                let text = describe_charge_price(&x.price);
                d.push(
                    path,
                    Some(text.clone()),
                    None,
                    Change,
                    format!("charge {key}: removed (was {text})"),
                );
            }
            (None, Some(y)) => {
                let text = describe_charge_price(&y.price);
                d.push(
                    path,
                    None,
                    Some(text.clone()),
                    Change,
                    format!("charge {key}: added ({text})"),
                );
            }
            (Some(x), Some(y)) => {
                d.field(
                    format!("{path}.metric"),
                    &format!("charge {key} metric"),
                    x.metric.clone(),
                    y.metric.clone(),
                    Change,
                );
                d.field(
                    format!("{path}.name"),
                    &format!("charge {key} name"),
                    x.display_name.clone(),
                    y.display_name.clone(),
                    Change,
                );
                d.field(
                    format!("{path}.included"),
                    &format!("charge {key} included units"),
                    x.included.normalize().to_string(),
                    y.included.normalize().to_string(),
                    by_order(x.included, y.included, Gain),
                );
                d.field(
                    format!("{path}.minimum"),
                    &format!("charge {key} minimum"),
                    opt(x.minimum.map(n), "none"),
                    opt(y.minimum.map(n), "none"),
                    by_order(
                        x.minimum.unwrap_or_default(),
                        y.minimum.unwrap_or_default(),
                        Loss,
                    ),
                );
                let effect = match (per_unit_price(&x.price), per_unit_price(&y.price)) {
                    (Some(p), Some(q)) => by_order(p, q, Loss),
                    _ => Change,
                };
                d.field(
                    format!("{path}.price"),
                    &format!("charge {key} price"),
                    describe_charge_price(&x.price),
                    describe_charge_price(&y.price),
                    effect,
                );
            }
            (None, None) => {}
        }
    }

    d.field(
        "alert_thresholds".into(),
        "alert thresholds",
        thresholds_text(Some(&a.alert_thresholds)),
        thresholds_text(Some(&b.alert_thresholds)),
        Change,
    );
    d.out
}

fn limit_effect(a: Limit, b: Limit) -> DiffEffect {
    by_order(a, b, DiffEffect::Gain)
}

fn diff_entitlement(d: &mut Differ, key: &str, path: &str, x: &Entitlement, y: &Entitlement) {
    use DiffEffect::{Change, Gain, Loss};
    let limit_field = |d: &mut Differ, name: &str, a: Limit, b: Limit| {
        d.field(
            format!("{path}.{name}"),
            &format!("{key} {name}"),
            a.to_string(),
            b.to_string(),
            limit_effect(a, b),
        );
    };
    let enforcement_field = |d: &mut Differ, a, b| {
        let effect = if a == b {
            Change
        } else if b == super::model::Enforcement::Soft {
            Gain
        } else {
            Loss
        };
        d.field(
            format!("{path}.enforcement"),
            &format!("{key} enforcement"),
            format!("{a:?}").to_lowercase(),
            format!("{b:?}").to_lowercase(),
            effect,
        );
    };
    match (x, y) {
        (Entitlement::Metered(a), Entitlement::Metered(b)) => {
            limit_field(d, "limit", a.limit, b.limit);
            enforcement_field(d, a.enforcement, b.enforcement);
            d.field(
                format!("{path}.overage"),
                &format!("{key} overage billed"),
                a.overage.to_string(),
                b.overage.to_string(),
                Change,
            );
            d.field(
                format!("{path}.reset"),
                &format!("{key} reset"),
                opt(a.reset.map(|r| format!("{r:?}")), "feature default"),
                opt(b.reset.map(|r| format!("{r:?}")), "feature default"),
                Change,
            );
            d.field(
                format!("{path}.emergency_allowance"),
                &format!("{key} emergency allowance"),
                opt(a.emergency_allowance.map(n), "none"),
                opt(b.emergency_allowance.map(n), "none"),
                by_order(
                    a.emergency_allowance.unwrap_or_default(),
                    b.emergency_allowance.unwrap_or_default(),
                    Gain,
                ),
            );
            d.field(
                format!("{path}.emergency_unit_price"),
                &format!("{key} emergency unit price"),
                opt(a.emergency_unit_price.map(n), "free"),
                opt(b.emergency_unit_price.map(n), "free"),
                by_order(
                    a.emergency_unit_price.unwrap_or_default(),
                    b.emergency_unit_price.unwrap_or_default(),
                    Loss,
                ),
            );
            d.field(
                format!("{path}.alert_thresholds"),
                &format!("{key} alert thresholds"),
                thresholds_text(a.alert_thresholds.as_deref()),
                thresholds_text(b.alert_thresholds.as_deref()),
                Change,
            );
        }
        (Entitlement::Gauge(a), Entitlement::Gauge(b)) => {
            limit_field(d, "limit", a.limit, b.limit);
            enforcement_field(d, a.enforcement, b.enforcement);
            d.field(
                format!("{path}.alert_thresholds"),
                &format!("{key} alert thresholds"),
                thresholds_text(a.alert_thresholds.as_deref()),
                thresholds_text(b.alert_thresholds.as_deref()),
                Change,
            );
        }
        (Entitlement::Rate(a), Entitlement::Rate(b)) => {
            limit_field(d, "limit", a.limit, b.limit);
            d.field(
                format!("{path}.window"),
                &format!("{key} window"),
                opt(a.window_secs.map(format_duration), "feature default"),
                opt(b.window_secs.map(format_duration), "feature default"),
                Change,
            );
        }
        (Entitlement::Concurrency { limit: a }, Entitlement::Concurrency { limit: b }) => {
            limit_field(d, "limit", *a, *b);
        }
        (Entitlement::Cap { max: a }, Entitlement::Cap { max: b }) => limit_field(d, "max", *a, *b),
        (Entitlement::Flag { enabled: a }, Entitlement::Flag { enabled: b }) => {
            let effect = if *b { Gain } else { Loss };
            d.field(
                format!("{path}.enabled"),
                key,
                on_off(*a),
                on_off(*b),
                effect,
            );
        }
        (Entitlement::Value { value: a }, Entitlement::Value { value: b }) => {
            d.field(
                format!("{path}.value"),
                key,
                a.to_string(),
                b.to_string(),
                value_effect(a, b),
            );
        }
        _ => d.field(path.to_string(), key, x.to_string(), y.to_string(), Change),
    }
}

fn on_off(b: bool) -> String {
    if b { "on".into() } else { "off".into() }
}

fn value_effect(a: &Value, b: &Value) -> DiffEffect {
    use DiffEffect::{Change, Gain, Loss};
    match (a, b) {
        (Value::StringSet(x), Value::StringSet(y)) => {
            if x.is_subset(y) && x != y {
                Gain
            } else if y.is_subset(x) && x != y {
                Loss
            } else {
                Change
            }
        }
        (Value::Bool(_), Value::Bool(y)) => {
            if *y {
                Gain
            } else {
                Loss
            }
        }
        _ => match (a.as_limit(), b.as_limit()) {
            (Some(x), Some(y)) => limit_effect(x, y),
            _ => Change,
        },
    }
}
