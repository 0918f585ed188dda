//! Credit notes: the only way to correct an issued invoice.
//!
//! CONTRACT (owned by the billing-core work): a credit note references one
//! issued (open or paid) invoice; its lines credit whole lines, parts of lines
//! or an amount; the total credited across all notes never exceeds the
//! invoice's total; a full credit reverses every line and its tax exactly.

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::Currency;

use super::compute::BillingError;
use super::invoice::Invoice;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNoteLine {
    pub description: String,
    /// Index of the invoice line credited, if any.
    pub invoice_line: Option<usize>,
    /// Positive amount credited (before tax).
    pub amount: Decimal,
    pub tax_amount: Decimal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNote {
    /// `cn_…`
    pub id: String,
    /// Gapless per prefix, assigned when issued (`CN-000001`).
    pub number: Option<String>,
    pub invoice_id: String,
    pub customer_id: String,
    pub currency: Currency,
    pub reason: String,
    pub lines: Vec<CreditNoteLine>,
    /// Sum of line amounts and their tax.
    pub total: Decimal,
    pub created_at: Timestamp,
}

/// What to credit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CreditRequest {
    /// Everything not yet credited.
    Full,
    /// Given amounts of given lines (by index).
    Lines { lines: Vec<(usize, Decimal)> },
    /// An amount off the total (tax included), spread in proportion.
    Amount { amount: Decimal },
}

/// Builds a credit note against `invoice`, given what earlier notes already
/// credited (`already_credited`, tax included).
pub fn credit_note(
    invoice: &Invoice,
    already_credited: Decimal,
    request: &CreditRequest,
    id: String,
    reason: String,
    at: Timestamp,
) -> Result<CreditNote, BillingError> {
    let _ = (invoice, already_credited, request, id, reason, at);
    Err(BillingError::Invalid(
        "credit_note is being written (billing-core)".to_string(),
    ))
}
