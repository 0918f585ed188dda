//! The invoice document: what a customer receives, what the store persists, what
//! HTML/PDF render and what providers collect. Amounts are exact decimals in the
//! invoice's currency; every line amount is already rounded once
//! ([`crate::money::round_line`]) and totals are sums of rounded amounts.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{Currency, round_line};
use crate::pricing::TierBreakdown;

/// Lifecycle, as Stripe's: `draft` (editable) → `open` (issued: number
/// assigned, immutable) → `paid` | `void` | `uncollectible`. "Overdue" is not a
/// status: it is derived (`open` and past `due_at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Draft,
    Open,
    Paid,
    Void,
    Uncollectible,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Draft => "draft",
            InvoiceStatus::Open => "open",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Void => "void",
            InvoiceStatus::Uncollectible => "uncollectible",
        }
    }

    pub fn parse(s: &str) -> Option<InvoiceStatus> {
        Some(match s {
            "draft" => InvoiceStatus::Draft,
            "open" => InvoiceStatus::Open,
            "paid" => InvoiceStatus::Paid,
            "void" => InvoiceStatus::Void,
            "uncollectible" => InvoiceStatus::Uncollectible,
            _ => return None,
        })
    }
}

/// What an invoice line is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceLineKind {
    /// A plan's base price for a (possibly partial) period.
    Base,
    /// Usage priced by a charge (per charge, or per dimension group).
    Usage,
    /// Tops a charge up to its minimum.
    Minimum,
    /// Emergency-pool units at their price.
    Emergency,
    /// Credit or charge from a plan change (negative for a credit).
    Proration,
    /// A discount (negative).
    Discount,
    /// A manual line added to a draft by an operator.
    Adjustment,
}

/// How tax is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaxMode {
    /// Each line's tax is `round_line(line.amount × rate)`; the tax total is
    /// their sum.
    PerLine,
    /// One tax amount: `round_line(sum of line amounts × rate)`.
    OnTotal,
}

/// The tax rate applied to an invoice: the customer's own or the default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxRule {
    /// A fraction: 0.2 = 20 %.
    pub rate: Decimal,
    pub mode: TaxMode,
    /// Shown on the invoice ("VAT 20 %").
    pub label: String,
}

impl TaxRule {
    pub fn none() -> TaxRule {
        TaxRule {
            rate: Decimal::ZERO,
            mode: TaxMode::OnTotal,
            label: "Tax".to_string(),
        }
    }
}

/// Where a usage line's quantity came from: the ledger totals it was computed
/// from, so the line can be explained (and re-derived) from the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineSource {
    pub feature: String,
    /// Event-time window of the ledger records summed: `[from, to)`.
    pub from: Timestamp,
    pub to: Timestamp,
    /// Ledger quantity per allocation bucket (`plan`, `overage`, `emergency`,
    /// grant ids) over the window.
    pub buckets: BTreeMap<String, Decimal>,
    /// Usage of the period before `from` that already counted against the
    /// allowance (non-zero after a plan change).
    pub prior_quantity: Decimal,
    /// Number of ledger records summed (0 when unknown).
    pub records: u64,
}

/// One line of an invoice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub kind: InvoiceLineKind,
    pub description: String,
    /// The charge key (usage and minimum lines).
    pub charge: Option<String>,
    /// The metric / feature key (usage, emergency lines).
    pub feature: Option<String>,
    /// The dimension group of a dimensional charge's line.
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// The plan in force for this line.
    pub plan_key: Option<String>,
    pub plan_version: Option<u32>,
    /// The span of time this line pays for: `[period_start, period_end)`.
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    /// Quantity (1 for base, minimum, proration, discount and adjustment lines).
    pub quantity: Decimal,
    /// Free units applied.
    #[serde(default)]
    pub included: Decimal,
    /// What the price model priced.
    #[serde(default)]
    pub billable_quantity: Decimal,
    /// Price per unit when there is one (per-unit, emergency).
    pub unit_amount: Option<Decimal>,
    /// Tier breakdown for tiered prices.
    #[serde(default)]
    pub tiers: Vec<TierBreakdown>,
    /// Full-precision amount before the line's one rounding.
    pub unrounded: Decimal,
    /// The line's amount, rounded to the currency's minor unit.
    pub amount: Decimal,
    /// Tax on this line (per-line mode; 0 in on-total mode).
    #[serde(default)]
    pub tax_amount: Decimal,
    /// The ledger totals behind a usage line.
    pub source: Option<LineSource>,
    /// The customer discount a discount line applies
    /// (`CustomerDiscount::id`): what a fixed amount already took off in an
    /// earlier part of a period billed in parts is not taken again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_id: Option<String>,
}

/// Totals, each a sum of rounded amounts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceTotals {
    /// Sum of every line but discounts.
    pub subtotal: Decimal,
    /// Sum of discount lines (≤ 0).
    pub discount: Decimal,
    pub tax: Decimal,
    /// subtotal + discount + tax.
    pub total: Decimal,
    /// Payments received.
    pub amount_paid: Decimal,
    /// Credit notes issued against it.
    pub amount_credited: Decimal,
    /// total − amount_paid − amount_credited, never below 0.
    pub amount_due: Decimal,
}

/// Issuer or customer as printed on the invoice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    pub name: String,
    pub email: Option<String>,
    /// Address lines, printed in order.
    #[serde(default)]
    pub address: Vec<String>,
    pub tax_id: Option<String>,
}

/// An invoice: one per customer and billing period (plus off-cycle invoices for
/// "invoice now" prorations).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// `inv_…`
    pub id: String,
    /// Assigned when issued: `PREFIX-000001`, gapless per prefix.
    pub number: Option<String>,
    pub customer_id: String,
    pub currency: Currency,
    pub status: InvoiceStatus,
    /// The billing period closed by this invoice.
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    pub lines: Vec<InvoiceLine>,
    pub tax: TaxRule,
    pub totals: InvoiceTotals,
    pub issuer: Party,
    pub bill_to: Party,
    pub memo: Option<String>,
    pub created_at: Timestamp,
    pub issued_at: Option<Timestamp>,
    pub due_at: Option<Timestamp>,
    pub paid_at: Option<Timestamp>,
    pub voided_at: Option<Timestamp>,
}

/// The printed number of an issued invoice or credit note: the prefix, a dash
/// and the sequence number on at least six digits (`INV-000042`).
pub fn format_number(prefix: &str, n: u64) -> String {
    format!("{prefix}-{n:06}")
}

/// Zero at the currency's scale ("0.00" USD, "0" JPY).
fn zero(currency: Currency) -> Decimal {
    Decimal::new(0, currency.minor_units())
}

impl InvoiceLine {
    /// A line of a fixed amount (base, minimum, proration, discount,
    /// adjustment): quantity 1, `amount = round_line(unrounded)`, nothing else
    /// set. Callers fill in the plan, charge and feature where they apply.
    pub fn fee(
        kind: InvoiceLineKind,
        description: impl Into<String>,
        period_start: Timestamp,
        period_end: Timestamp,
        unrounded: Decimal,
        currency: Currency,
    ) -> InvoiceLine {
        let mut amount = round_line(unrounded, currency);
        if amount.is_zero() {
            // No "-0.00" lines.
            amount.set_sign_positive(true);
        }
        InvoiceLine {
            kind,
            description: description.into(),
            charge: None,
            feature: None,
            dimensions: BTreeMap::new(),
            plan_key: None,
            plan_version: None,
            period_start,
            period_end,
            quantity: Decimal::ONE,
            included: Decimal::ZERO,
            billable_quantity: Decimal::ONE,
            unit_amount: None,
            tiers: Vec::new(),
            unrounded,
            amount,
            tax_amount: Decimal::ZERO,
            source: None,
            discount_id: None,
        }
    }

    /// An operator's manual line on a draft (positive: a charge, negative: a
    /// credit).
    pub fn adjustment(
        description: impl Into<String>,
        amount: Decimal,
        period_start: Timestamp,
        period_end: Timestamp,
        currency: Currency,
    ) -> InvoiceLine {
        InvoiceLine::fee(
            InvoiceLineKind::Adjustment,
            description,
            period_start,
            period_end,
            amount,
            currency,
        )
    }

    /// A sentence explaining where the line's quantity came from, from its
    /// [`LineSource`] (`None` for lines without one): "12500 queries from 340
    /// ledger records, 2026-04-01 to 2026-05-01: plan 10000, overage 2500;
    /// not billed: grant_1 500; 4000 counted earlier in the period".
    pub fn explain(&self) -> Option<String> {
        let source = self.source.as_ref()?;
        let billed: Vec<String> = source
            .buckets
            .iter()
            .filter(|(k, _)| !super::compute::is_grant_bucket(k))
            .map(|(k, v)| format!("{k} {}", v.normalize()))
            .collect();
        let granted: Vec<String> = source
            .buckets
            .iter()
            .filter(|(k, _)| super::compute::is_grant_bucket(k))
            .map(|(k, v)| format!("{k} {}", v.normalize()))
            .collect();
        let total: Decimal = source.buckets.values().copied().sum();
        let mut out = format!(
            "{} {} from {} ledger records, {} to {}",
            total.normalize(),
            source.feature,
            source.records,
            super::compute::day(source.from),
            super::compute::day(source.to),
        );
        if !billed.is_empty() {
            out.push_str(&format!(": {}", billed.join(", ")));
        }
        if !granted.is_empty() {
            out.push_str(&format!("; not billed (grants): {}", granted.join(", ")));
        }
        if !source.prior_quantity.is_zero() {
            out.push_str(&format!(
                "; {} counted earlier in the period",
                source.prior_quantity.normalize()
            ));
        }
        Some(out)
    }
}

impl Invoice {
    /// Recomputes tax and totals from the lines (after a draft edit: a line
    /// added, removed or adjusted). Per-line tax: each line's
    /// `round_line(amount × rate)`; on total: `round_line((subtotal + discount)
    /// × rate)`. Discount lines keep their amounts. Payments and credits
    /// recorded in the totals are kept; `amount_due` follows.
    pub fn recompute_totals(&mut self) {
        let currency = self.currency;
        let rate = self.tax.rate;
        let mut subtotal = zero(currency);
        let mut discount = zero(currency);
        let mut tax = zero(currency);
        for line in &mut self.lines {
            line.tax_amount = match self.tax.mode {
                TaxMode::PerLine => round_line(line.amount * rate, currency),
                TaxMode::OnTotal => zero(currency),
            };
            tax += line.tax_amount;
            match line.kind {
                InvoiceLineKind::Discount => discount += line.amount,
                _ => subtotal += line.amount,
            }
        }
        if self.tax.mode == TaxMode::OnTotal {
            tax = round_line((subtotal + discount) * rate, currency);
        }
        let totals = &mut self.totals;
        totals.subtotal = subtotal;
        totals.discount = discount;
        totals.tax = tax;
        totals.total = subtotal + discount + tax;
        totals.amount_paid = round_line(totals.amount_paid, currency);
        totals.amount_credited = round_line(totals.amount_credited, currency);
        totals.amount_due =
            (totals.total - totals.amount_paid - totals.amount_credited).max(zero(currency));
    }

    /// Adds a line to a draft and recomputes the totals.
    pub fn add_line(&mut self, line: InvoiceLine) {
        self.lines.push(line);
        self.recompute_totals();
    }

    /// Records a payment received and updates `amount_due`.
    pub fn record_payment(&mut self, amount: Decimal) {
        self.totals.amount_paid += amount;
        self.recompute_totals();
    }

    /// Records a credit note's total and updates `amount_due`.
    pub fn record_credit(&mut self, amount: Decimal) {
        self.totals.amount_credited += amount;
        self.recompute_totals();
    }

    /// Overdue is derived, not a status: `open` and `now` past `due_at`.
    pub fn is_overdue(&self, now: Timestamp) -> bool {
        self.status == InvoiceStatus::Open && self.due_at.is_some_and(|due| now > due)
    }

    /// Whether credit notes gave all of it back: what they credited
    /// (`amount_credited`, the sum of their totals) is the invoice's total,
    /// and that total is not zero.
    pub fn is_fully_credited(&self) -> bool {
        !self.totals.total.is_zero() && self.totals.amount_credited == self.totals.total
    }

    /// Whether a later part of a period billed in parts counts this
    /// earlier part as billed: neither void nor fully credited (a fully
    /// credited part is treated exactly as a void one: not repriced, not
    /// counted toward the minimum nor a fixed discount). A partial credit
    /// note is an adjustment of its own and changes nothing here.
    /// `docs/billing-semantics.md`, "Usage across a plan change: the
    /// cumulative rule" ("A credited part").
    pub fn counts_as_billed(&self) -> bool {
        self.status != InvoiceStatus::Void && !self.is_fully_credited()
    }

    /// What can still be credited: the total less earlier credit notes.
    pub fn creditable(&self, already_credited: Decimal) -> Decimal {
        (self.totals.total - already_credited).max(zero(self.currency))
    }
}

impl Invoice {
    /// An off-cycle draft holding only `lines` over `period`, e.g. the
    /// proration lines of a plan change invoiced now
    /// (`ProrationBehavior::InvoiceNow`); tax and totals computed. Issuer and
    /// customer are left empty for the caller to fill in.
    pub fn off_cycle(
        id: String,
        customer_id: String,
        currency: Currency,
        period: crate::period::Period,
        lines: Vec<InvoiceLine>,
        tax: TaxRule,
        created_at: Timestamp,
    ) -> Invoice {
        let mut invoice = Invoice {
            id,
            number: None,
            customer_id,
            currency,
            status: InvoiceStatus::Draft,
            period_start: period.start,
            period_end: period.end,
            lines,
            tax,
            totals: InvoiceTotals::default(),
            issuer: Party::default(),
            bill_to: Party::default(),
            memo: None,
            created_at,
            issued_at: None,
            due_at: None,
            paid_at: None,
            voided_at: None,
        };
        for line in &mut invoice.lines {
            line.amount = round_line(line.amount, currency);
        }
        invoice.recompute_totals();
        invoice
    }
}
