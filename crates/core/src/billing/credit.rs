//! Credit notes: the only way to correct an issued invoice.
//!
//! The rules (`docs/billing-semantics.md`, "Credit notes"): a credit note references one
//! issued (open or paid) invoice; its lines credit whole lines, parts of lines
//! or an amount; the total credited across all notes never exceeds the
//! invoice's total; a full credit reverses every line and its tax exactly.

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{Currency, round_line};

use super::compute::BillingError;
use super::invoice::{Invoice, InvoiceStatus, TaxMode};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNoteLine {
    pub description: String,
    /// Index of the invoice line credited, if any.
    pub invoice_line: Option<usize>,
    /// Positive amount credited (before tax).
    pub amount: Decimal,
    pub tax_amount: Decimal,
    /// Whether the operator named this line ([`CreditBasis::Line`]) or it
    /// is the line's share of an amount spread over the invoice
    /// ([`CreditBasis::Share`]). A note stored before the field existed
    /// reads as a share.
    #[serde(default)]
    pub basis: CreditBasis,
}

/// How a credit note line came to credit its invoice line. It matters in a
/// period billed in parts: what a note credits of an earlier part's
/// `minimum` line *by naming it* is a true-up already handed back, which
/// the later parts do not hand back again; a share of an amount (goodwill)
/// is an adjustment of its own (`docs/billing-semantics.md`, "A credited
/// part").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditBasis {
    /// The operator named the invoice line and the amount
    /// ([`CreditRequest::Lines`]).
    Line,
    /// The line's share of an amount spread over the invoice in proportion
    /// ([`CreditRequest::Amount`], [`CreditRequest::Full`]).
    #[default]
    Share,
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
///
/// - [`CreditRequest::Full`]: everything not yet credited. On an invoice with
///   no earlier note, one credit line per non-zero invoice line with exactly
///   its amount and tax (plus one tax line in on-total mode): the note's total
///   is the invoice's total. After earlier notes: the remainder, spread as
///   with [`CreditRequest::Amount`].
/// - [`CreditRequest::Lines`]: the given pre-tax amounts of the given lines
///   (each at most the line's amount), plus tax at the invoice's rate.
/// - [`CreditRequest::Amount`]: an amount, tax included, spread over the
///   lines in proportion to their share of the total (each share rounded
///   once); the rounding remainder goes on the last line so the note adds up
///   to the amount exactly.
///
/// The note's total never exceeds what remains uncredited
/// (`invoice.totals.total − already_credited`). Only `open` and `paid`
/// invoices take credit notes.
pub fn credit_note(
    invoice: &Invoice,
    already_credited: Decimal,
    request: &CreditRequest,
    id: String,
    reason: String,
    at: Timestamp,
) -> Result<CreditNote, BillingError> {
    if !matches!(invoice.status, InvoiceStatus::Open | InvoiceStatus::Paid) {
        return Err(BillingError::Invalid(format!(
            "invoice {} is {}: only open or paid invoices take credit notes",
            invoice.id,
            invoice.status.as_str()
        )));
    }
    if already_credited < Decimal::ZERO {
        return Err(BillingError::Invalid(format!(
            "already_credited must not be negative (got {already_credited})"
        )));
    }
    let currency = invoice.currency;
    let remaining = invoice.totals.total - already_credited;
    if remaining <= Decimal::ZERO {
        return Err(BillingError::Invalid(format!(
            "invoice {} has nothing left to credit (total {}, already credited {})",
            invoice.id, invoice.totals.total, already_credited
        )));
    }
    let lines = match request {
        CreditRequest::Full => spread(invoice, remaining)?,
        CreditRequest::Amount { amount } => {
            let amount = round_line(*amount, currency);
            if amount <= Decimal::ZERO {
                return Err(BillingError::Invalid(format!(
                    "amount must be greater than 0 (got {amount})"
                )));
            }
            if amount > remaining {
                return Err(BillingError::Invalid(format!(
                    "amount {amount} is more than the {remaining} {currency} left to credit on invoice {}",
                    invoice.id
                )));
            }
            spread(invoice, amount)?
        }
        CreditRequest::Lines { lines } => line_credits(invoice, lines)?,
    };
    let total: Decimal = lines
        .iter()
        .map(|l| l.amount + l.tax_amount)
        .fold(Decimal::new(0, currency.minor_units()), |a, b| a + b);
    if total > remaining {
        return Err(BillingError::Invalid(format!(
            "the credit ({total} {currency} with tax) is more than the {remaining} {currency} left to credit on invoice {}",
            invoice.id
        )));
    }
    if total <= Decimal::ZERO {
        return Err(BillingError::Invalid(
            "a credit note must credit more than 0".to_string(),
        ));
    }
    Ok(CreditNote {
        id,
        number: None,
        invoice_id: invoice.id.clone(),
        customer_id: invoice.customer_id.clone(),
        currency,
        reason,
        lines,
        total,
        created_at: at,
    })
}

/// `amount` (tax included) spread over the invoice's lines in proportion:
/// each line's amount and tax times `amount / total`, rounded once; the
/// remainder on the last credit line. With `amount` = the total, every line
/// and its tax exactly.
fn spread(invoice: &Invoice, amount: Decimal) -> Result<Vec<CreditNoteLine>, BillingError> {
    let currency = invoice.currency;
    let total = invoice.totals.total;
    let ratio = amount
        .checked_div(total)
        .ok_or_else(|| BillingError::Invalid("invoice total is zero".to_string()))?;
    let scale = |x: Decimal| round_line(x * ratio, currency);
    let mut lines: Vec<CreditNoteLine> = invoice
        .lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.amount.is_zero() || !l.tax_amount.is_zero())
        .map(|(i, l)| CreditNoteLine {
            description: l.description.clone(),
            invoice_line: Some(i),
            amount: scale(l.amount),
            tax_amount: scale(l.tax_amount),
            basis: CreditBasis::Share,
        })
        .collect();
    if invoice.tax.mode == TaxMode::OnTotal && !invoice.totals.tax.is_zero() {
        lines.push(CreditNoteLine {
            description: invoice.tax.label.clone(),
            invoice_line: None,
            amount: Decimal::new(0, currency.minor_units()),
            tax_amount: scale(invoice.totals.tax),
            basis: CreditBasis::Share,
        });
    }
    let credited: Decimal = lines.iter().map(|l| l.amount + l.tax_amount).sum();
    let remainder = amount - credited;
    if !remainder.is_zero() {
        match lines.last_mut() {
            // On a tax-only line the remainder is tax; otherwise it is amount.
            Some(last) if last.invoice_line.is_none() => last.tax_amount += remainder,
            Some(last) => last.amount += remainder,
            None => {
                return Err(BillingError::Invalid(
                    "the invoice has no lines to credit".to_string(),
                ));
            }
        }
    }
    Ok(lines)
}

/// Given pre-tax amounts of given lines, with tax at the invoice's rate.
fn line_credits(
    invoice: &Invoice,
    requested: &[(usize, Decimal)],
) -> Result<Vec<CreditNoteLine>, BillingError> {
    let currency = invoice.currency;
    if requested.is_empty() {
        return Err(BillingError::Invalid(
            "lines must name at least one invoice line".to_string(),
        ));
    }
    let mut per_line: std::collections::BTreeMap<usize, Decimal> = Default::default();
    let mut out = Vec::with_capacity(requested.len());
    for (n, (index, amount)) in requested.iter().enumerate() {
        let Some(line) = invoice.lines.get(*index) else {
            return Err(BillingError::Invalid(format!(
                "lines[{n}]: invoice {} has no line {index} (it has {})",
                invoice.id,
                invoice.lines.len()
            )));
        };
        let amount = round_line(*amount, currency);
        if amount <= Decimal::ZERO {
            return Err(BillingError::Invalid(format!(
                "lines[{n}]: amount must be greater than 0 (got {amount})"
            )));
        }
        let sum = per_line.entry(*index).or_insert(Decimal::ZERO);
        *sum += amount;
        if *sum > line.amount {
            return Err(BillingError::Invalid(format!(
                "lines[{n}]: {sum} {currency} is more than line {index} ({}, {} {currency})",
                line.description, line.amount
            )));
        }
        out.push(CreditNoteLine {
            description: line.description.clone(),
            invoice_line: Some(*index),
            amount,
            tax_amount: round_line(amount * invoice.tax.rate, currency),
            basis: CreditBasis::Line,
        });
    }
    Ok(out)
}
