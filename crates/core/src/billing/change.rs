//! Plan changes: what moving a customer from one plan to another does, before
//! it is done. Pure: the billing service applies the result.
//!
//! The rules (`docs/billing-semantics.md`, "Plan changes"):
//! - upgrade (target tier higher, or same tier and higher base price): takes
//!   effect at `at`; proration = credit for the unused part of the old base,
//!   charge for the rest of the period on the new base (`proration::prorate_change`),
//!   each only for a plan billed in advance (an in-arrears base is prorated by
//!   segment at the period close);
//! - downgrade: at period end by default (no proration), or immediately on
//!   request (credit/charge as above);
//! - blockers: a gauge level above the target's limit (7 locations in use,
//!   target allows 1), usage of a hard-limited metered feature above the
//!   target's limit, each listed; `force` turns them into recorded excess;
//! - features gained and lost (with the date each is lost), limits before/after.

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::catalog::{BaseBilling, Entitlement, Limit, Plan};
use crate::period::Period;
use crate::proration::{fraction_remaining, prorate_change};

use super::compute::{BillingError, day};
use super::invoice::{InvoiceLine, InvoiceLineKind};

/// When a change takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeTiming {
    Immediately,
    PeriodEnd,
}

/// What happens to proration lines (Stripe's `proration_behavior`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProrationBehavior {
    /// Lines go on the next period's invoice (Stripe `create_prorations`).
    NextInvoice,
    /// An invoice with the lines is issued now (Stripe `always_invoice`).
    InvoiceNow,
    /// No proration lines.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeDirection {
    Upgrade,
    Downgrade,
    /// Same plan, another version (a migration).
    Lateral,
}

/// Everything a preview needs.
#[derive(Clone, Debug)]
pub struct ChangeInput<'a> {
    pub from: &'a Plan,
    pub to: &'a Plan,
    /// The current billing period, whole: for a partial first calendar
    /// period pass its nominal period (`BillingCycle::nominal_period`), the
    /// denominator of proration.
    pub period: Period,
    /// When the change is requested.
    pub at: Timestamp,
    /// `None` = the default for the direction (upgrade now, downgrade at period end).
    pub timing: Option<ChangeTiming>,
    pub proration: ProrationBehavior,
    /// Current period usage of metered features, by feature.
    pub usage: BTreeMap<String, Decimal>,
    /// Current gauge levels (seats, locations), by feature.
    pub gauges: BTreeMap<String, Decimal>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostFeature {
    pub feature: String,
    /// When the customer loses it (the effective date of the change).
    pub lost_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitChange {
    pub feature: String,
    pub before: Option<Limit>,
    pub after: Option<Limit>,
}

/// Something the customer's current state cannot fit into the target plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocker {
    pub feature: String,
    pub in_use: Decimal,
    pub allowed: Limit,
    /// "7 locations in use, plan basic allows 1".
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePreview {
    pub direction: ChangeDirection,
    pub timing: ChangeTiming,
    pub effective_at: Timestamp,
    /// Credit (negative) and charge lines; empty with `ProrationBehavior::None`
    /// or a change at period end.
    pub proration_lines: Vec<InvoiceLine>,
    /// Sum of the proration lines.
    pub proration_total: Decimal,
    pub features_gained: Vec<String>,
    pub features_lost: Vec<LostFeature>,
    pub limits: Vec<LimitChange>,
    pub blockers: Vec<Blocker>,
}

impl ChangeDirection {
    /// Upgrade when the target's tier is higher, or the tier is the same and
    /// the base price higher; downgrade the other way round; lateral when both
    /// are equal (the same plan, another version).
    pub fn between(from: &Plan, to: &Plan) -> ChangeDirection {
        use std::cmp::Ordering::*;
        match (
            to.tier.cmp(&from.tier),
            to.base_price.amount.cmp(&from.base_price.amount),
        ) {
            (Greater, _) | (Equal, Greater) => ChangeDirection::Upgrade,
            (Less, _) | (Equal, Less) => ChangeDirection::Downgrade,
            (Equal, Equal) => ChangeDirection::Lateral,
        }
    }

    /// When a change takes effect unless the request says otherwise: an
    /// upgrade immediately, a downgrade or a lateral move at period end.
    pub fn default_timing(self) -> ChangeTiming {
        match self {
            ChangeDirection::Upgrade => ChangeTiming::Immediately,
            ChangeDirection::Downgrade | ChangeDirection::Lateral => ChangeTiming::PeriodEnd,
        }
    }
}

/// Whether a plan grants a feature: any entitlement, but a flag only when on.
fn grants(plan: &Plan, feature: &str) -> bool {
    match plan.entitlement(feature) {
        Some(Entitlement::Flag { enabled }) => *enabled,
        Some(_) => true,
        None => false,
    }
}

/// Previews a plan change. See `docs/billing-semantics.md`, "Plan changes".
///
/// - direction: [`ChangeDirection::between`]; timing: the request's, else
///   [`ChangeDirection::default_timing`]; `effective_at` is `at` (immediately)
///   or the period end;
/// - proration (immediately, unless [`ProrationBehavior::None`]): a credit for
///   the unused part of the old base when the old plan is billed in advance
///   (it was collected at the period start), a charge for the rest of the
///   period on the new base when the new plan is billed in advance. A base
///   billed in arrears needs no proration line: the period close prorates it
///   by segment;
/// - features gained / lost: granted by one plan and not the other (a flag
///   counts when on), lost at `effective_at`; limits: every feature whose
///   limit differs, sorted by key;
/// - blockers: a gauge level above the target's hard limit (or a gauge the
///   target does not have), and, for a change taking effect now, metered usage
///   of the period above the target's hard limit.
pub fn preview_change(input: &ChangeInput<'_>) -> Result<ChangePreview, BillingError> {
    let (from, to, period) = (input.from, input.to, input.period);
    if from.currency != to.currency {
        return Err(BillingError::Currency {
            expected: from.currency.to_string(),
            what: format!("target plan {} v{}", to.key, to.version),
            found: to.currency.to_string(),
        });
    }
    if period.start >= period.end {
        return Err(BillingError::Invalid(format!(
            "period {} to {} is empty",
            period.start, period.end
        )));
    }
    if input.at < period.start || input.at > period.end {
        return Err(BillingError::Invalid(format!(
            "at {} is outside the current period {} to {}",
            input.at, period.start, period.end
        )));
    }
    let direction = ChangeDirection::between(from, to);
    let timing = input.timing.unwrap_or(direction.default_timing());
    let effective_at = match timing {
        ChangeTiming::Immediately => input.at,
        ChangeTiming::PeriodEnd => period.end,
    };
    let proration_lines =
        if timing == ChangeTiming::Immediately && input.proration != ProrationBehavior::None {
            proration_lines(from, to, &period, input.at)?
        } else {
            Vec::new()
        };
    let proration_total = proration_lines
        .iter()
        .map(|l| l.amount)
        .fold(Decimal::new(0, from.currency.minor_units()), |a, b| a + b);

    let features_gained = to
        .entitlements
        .keys()
        .filter(|f| grants(to, f) && !grants(from, f))
        .cloned()
        .collect();
    let features_lost = from
        .entitlements
        .keys()
        .filter(|f| grants(from, f) && !grants(to, f))
        .map(|f| LostFeature {
            feature: f.clone(),
            lost_at: effective_at,
        })
        .collect();
    let mut keys: Vec<&String> = from
        .entitlements
        .keys()
        .chain(to.entitlements.keys())
        .collect();
    keys.sort();
    keys.dedup();
    let limits = keys
        .into_iter()
        .filter_map(|f| {
            let before = from.entitlement(f).and_then(Entitlement::limit);
            let after = to.entitlement(f).and_then(Entitlement::limit);
            (before != after && (before.is_some() || after.is_some())).then(|| LimitChange {
                feature: f.clone(),
                before,
                after,
            })
        })
        .collect();
    Ok(ChangePreview {
        direction,
        timing,
        effective_at,
        proration_lines,
        proration_total,
        features_gained,
        features_lost,
        limits,
        blockers: blockers(input, timing),
    })
}

fn proration_lines(
    from: &Plan,
    to: &Plan,
    period: &Period,
    at: jiff::Timestamp,
) -> Result<Vec<InvoiceLine>, BillingError> {
    let currency = from.currency;
    let p = prorate_change(from.base_price, to.base_price, period, at)
        .map_err(|e| BillingError::Invalid(e.to_string()))?;
    let fraction = fraction_remaining(period, at);
    let mut lines = Vec::new();
    let sides = [
        (
            from,
            p.credit.amount,
            -from.base_price.amount,
            "Unused time on",
        ),
        (
            to,
            p.charge.amount,
            to.base_price.amount,
            "Remaining time on",
        ),
    ];
    for (plan, amount, price, what) in sides {
        if plan.billing != BaseBilling::InAdvance || amount.is_zero() {
            continue;
        }
        let mut line = InvoiceLine::fee(
            InvoiceLineKind::Proration,
            format!(
                "{what} {} plan from {} to {}",
                plan.name,
                day(at),
                day(period.end)
            ),
            at,
            period.end,
            price * fraction,
            currency,
        );
        line.amount = amount;
        line.plan_key = Some(plan.key.clone());
        line.plan_version = Some(plan.version);
        lines.push(line);
    }
    Ok(lines)
}

/// The credit a subscription canceled now gets for the unused part of an
/// in-advance base it already paid: `−base × (period end − at) / period`,
/// by second against the whole (nominal) `period`, rounded once; a
/// `Proration` line over `[at, period end)`. `None` for a plan billed in
/// arrears (nothing was collected ahead) or nothing left to credit.
///
/// $10/month in advance canceled at 2026-04-10T00:00Z: 21 of 30 days
/// unused, **−7.00**.
pub fn cancellation_credit(
    plan: &Plan,
    period: &Period,
    at: Timestamp,
) -> Result<Option<InvoiceLine>, BillingError> {
    if plan.billing != BaseBilling::InAdvance {
        return Ok(None);
    }
    let unused = crate::proration::prorate(plan.base_price, period, at, period.end)
        .map_err(|e| BillingError::Invalid(e.to_string()))?;
    if unused.amount.is_zero() {
        return Ok(None);
    }
    let mut line = InvoiceLine::fee(
        InvoiceLineKind::Proration,
        format!(
            "Unused time on {} plan from {} to {} (canceled)",
            plan.name,
            day(at),
            day(period.end)
        ),
        at,
        period.end,
        -plan.base_price.amount * fraction_remaining(period, at),
        plan.currency,
    );
    line.amount = -unused.amount;
    line.plan_key = Some(plan.key.clone());
    line.plan_version = Some(plan.version);
    Ok(Some(line))
}

fn blockers(input: &ChangeInput<'_>, timing: ChangeTiming) -> Vec<Blocker> {
    let to = input.to;
    let mut out = Vec::new();
    for (feature, level) in &input.gauges {
        let allowed = match to.entitlement(feature) {
            Some(Entitlement::Gauge(g)) if g.enforcement == crate::catalog::Enforcement::Soft => {
                continue;
            }
            Some(e) => e.limit().unwrap_or(Limit::Finite(Decimal::ZERO)),
            None => Limit::Finite(Decimal::ZERO),
        };
        if !allowed.allows(*level) {
            out.push(Blocker {
                feature: feature.clone(),
                in_use: *level,
                allowed,
                message: format!(
                    "{} {feature} in use, plan {} allows {allowed}",
                    level.normalize(),
                    to.key
                ),
            });
        }
    }
    if timing == ChangeTiming::Immediately {
        for (feature, used) in &input.usage {
            let Some(Entitlement::Metered(m)) = to.entitlement(feature) else {
                continue;
            };
            if m.enforcement == crate::catalog::Enforcement::Hard && !m.limit.allows(*used) {
                out.push(Blocker {
                    feature: feature.clone(),
                    in_use: *used,
                    allowed: m.limit,
                    message: format!(
                        "{} {feature} used this period, plan {} allows {}",
                        used.normalize(),
                        to.key,
                        m.limit
                    ),
                });
            }
        }
    }
    out
}
