//! Plan changes: what moving a customer from one plan to another does, before
//! it is done. Pure: the billing service applies the result.
//!
//! CONTRACT (owned by the billing-core work):
//! - upgrade (target tier higher, or same tier and higher base price): takes
//!   effect at `at`; proration = credit for the unused part of the old base,
//!   charge for the rest of the period on the new base (`proration::prorate_change`);
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

use crate::catalog::{Limit, Plan};
use crate::period::Period;

use super::compute::BillingError;
use super::invoice::InvoiceLine;

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
    /// The current billing period.
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

/// Previews a plan change.
pub fn preview_change(input: &ChangeInput<'_>) -> Result<ChangePreview, BillingError> {
    let _ = input;
    Err(BillingError::Invalid(
        "preview_change is being written (billing-core)".to_string(),
    ))
}
