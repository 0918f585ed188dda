//! The period close: an invoice from the plan segments of a billing period and
//! the ledger totals of each segment. A pure function: same inputs, same
//! invoice, to the minor unit.
//!
//! CONTRACT (owned by the billing-core work; bodies to be written there):
//! - usage in a segment is priced by the plan in force in that segment;
//! - the allowance (included units, tiers) is per *period* and shared across a
//!   change: a segment's usage is priced at its position in the period's
//!   cumulative count (`price(prior + q) − price(prior)`; volume: see docs);
//! - units drawn from grants are not billed (listed for explanation), units
//!   drawn from the emergency pool are billed at the entitlement's
//!   `emergency_unit_price` on an [`InvoiceLineKind::Emergency`] line;
//! - base price: in arrears, each segment's plan base prorated by the
//!   segment's share of the period; in advance, the base of `advance` (the
//!   next period) at full price;
//! - `pending` lines (prorations deferred to the next invoice) are copied in;
//! - discounts, then tax per [`TaxRule`]; every line rounded once.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::catalog::Plan;
use crate::money::Currency;
use crate::period::Period;

use super::invoice::{Invoice, InvoiceLine, Party, TaxRule};

/// Ledger totals of one feature (and, for a dimensional charge, one dimension
/// group) over one segment. Only billable records are summed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotal {
    pub feature: String,
    /// The record properties named by the charge's `group_by` (empty for a
    /// single-model charge).
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// Quantity per allocation bucket: `plan`, `overage`, `emergency`, grant ids.
    pub buckets: BTreeMap<String, Decimal>,
    /// Number of ledger records summed.
    pub records: u64,
}

/// A span of the billing period with one plan in force: `[from, to)`.
#[derive(Clone, Debug)]
pub struct Segment<'a> {
    pub plan: &'a Plan,
    pub from: Timestamp,
    pub to: Timestamp,
    pub usage: Vec<UsageTotal>,
}

/// A discount applied to the invoice's subtotal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Discount {
    /// `percent` of the subtotal (10 = 10 %).
    Percent {
        percent: Decimal,
        description: String,
    },
    /// A fixed amount in the invoice currency (positive number), capped at the
    /// subtotal.
    Amount {
        amount: Decimal,
        description: String,
    },
}

/// Everything a period close needs.
#[derive(Clone, Debug)]
pub struct InvoiceInput<'a> {
    pub invoice_id: String,
    pub customer_id: String,
    pub currency: Currency,
    /// The billing period being closed.
    pub period: Period,
    /// The plans in force during the period, in order, tiling it (a single
    /// segment when the plan did not change).
    pub segments: Vec<Segment<'a>>,
    /// For plans billed in advance: the plan and period whose base price this
    /// invoice collects (the next period).
    pub advance: Option<(&'a Plan, Period)>,
    /// Lines carried over to this invoice (prorations "on the next invoice").
    pub pending: Vec<InvoiceLine>,
    pub discounts: Vec<Discount>,
    pub tax: TaxRule,
    pub issuer: Party,
    pub bill_to: Party,
    pub created_at: Timestamp,
}

/// Why an invoice could not be computed (a catalog or input inconsistency,
/// never a panic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingError {
    #[error("segments must tile the period: {0}")]
    Segments(String),
    #[error("currency mismatch: invoice in {expected}, {what} in {found}")]
    Currency {
        expected: String,
        what: String,
        found: String,
    },
    #[error("pricing failed for {charge}: {message}")]
    Pricing { charge: String, message: String },
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// Computes the draft invoice of a period. Status is `draft`, no number.
pub fn compute_invoice(input: &InvoiceInput<'_>) -> Result<Invoice, BillingError> {
    let _ = input;
    Err(BillingError::Invalid(
        "compute_invoice is being written (billing-core)".to_string(),
    ))
}

/// Sums already-rounded line amounts (helper shared by compute and credit).
pub fn sum_amounts<'l>(lines: impl IntoIterator<Item = &'l InvoiceLine>) -> Decimal {
    lines.into_iter().map(|l| l.amount).sum()
}
