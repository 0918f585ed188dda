//! The period close: an invoice from the plan segments of a billing period and
//! the ledger totals of each segment. A pure function: same inputs, same
//! invoice, to the minor unit.
//!
//! The rules (`docs/billing-semantics.md`, "Invoices"):
//! - usage in a segment is priced by the plan in force in that segment;
//! - the allowance (included units, tiers) is per *period* and shared across a
//!   change: a segment's usage is priced at its position in the period's
//!   cumulative count (`price(prior + q) − price(prior)`, included units taken
//!   off the cumulative count); volume: every billable unit of the segment at
//!   the unit price of the tier the period's total reaches (in the segment's
//!   plan's table), the tier's flat fee shared in proportion;
//! - units drawn from grants are not billed (listed for explanation), units
//!   drawn from the emergency pool are billed at the entitlement's
//!   `emergency_unit_price` on an [`InvoiceLineKind::Emergency`] line;
//! - base price: in arrears, each segment's plan base prorated by the
//!   segment's share of the (nominal) period; in advance, the base of
//!   `advance` (the next period) at full price;
//! - minimums: per period, each segment's minimum prorated by its share; in
//!   a period billed in parts, the later part brings the minimum lines of
//!   the parts billed so far to what one invoice over them would bill;
//! - `pending` lines (prorations deferred to the next invoice) are copied in;
//! - discounts, then tax per [`TaxRule`]; every line rounded once.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::catalog::{BaseBilling, Entitlement, Plan};
use crate::money::{Currency, round_line};
use crate::period::{Interval, Period};
use crate::pricing::{Charge, ChargePrice, PriceModel, PricingError, TierBreakdown};
use crate::proration::prorate;

use super::credit::{CreditBasis, CreditNote};
use super::invoice::{Invoice, InvoiceLine, InvoiceLineKind, LineSource, Party, TaxRule};

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
    /// The subscription was canceled (and settled by a final invoice)
    /// during this span, until a reactivation: no in-arrears base and no
    /// minimum are owed for it.
    pub canceled: bool,
}

/// A discount applied to the invoice's subtotal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Discount {
    /// `percent` of the subtotal (10 = 10 %).
    Percent {
        percent: Decimal,
        description: String,
        /// The customer discount it comes from, copied to the line
        /// (`InvoiceLine::discount_id`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// A fixed amount in the invoice currency (positive number), capped at the
    /// subtotal.
    Amount {
        amount: Decimal,
        description: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
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
    /// The whole nominal period the base price pays for, when `period` is a
    /// partial first calendar period (`BillingCycle::nominal_period`); `None`
    /// = `period` itself. In-arrears base lines and minimums are prorated
    /// against it (by second, like every proration).
    pub nominal_period: Option<Period>,
    /// The plans in force during the period, in order, tiling it (a single
    /// segment when the plan did not change).
    pub segments: Vec<Segment<'a>>,
    /// For plans billed in advance: the plan and period whose base price this
    /// invoice collects (the next period).
    pub advance: Option<(&'a Plan, Period)>,
    /// Lines carried over to this invoice (prorations "on the next invoice").
    pub pending: Vec<InvoiceLine>,
    pub discounts: Vec<Discount>,
    /// The period up to this instant was already billed on an earlier
    /// invoice (a cancellation's final invoice, the cancellation since
    /// undone): the segments ending at or before it count toward the
    /// period's cumulative usage (included units, tiers) but are not billed
    /// again; the invoice covers `[settled_until, period end)`. It must be a
    /// segment boundary inside the period. `None`: nothing was billed yet.
    pub settled_until: Option<Timestamp>,
    /// With `settled_until`: the usage lines of the invoices that billed
    /// `[period start, settled_until)` (the earlier parts neither void nor
    /// fully credited, [`earlier_parts_billed`]). The
    /// units a volume-priced charge billed there (in the spans of
    /// `earlier_parts`) are repriced at the tier the *period's* total
    /// reaches, and this invoice carries the difference with what those
    /// lines billed (one line per plan, charge and dimension group), so the
    /// parts of a period add up to pricing its usage once. Units with no
    /// earlier line to compare are left as billed; a void (or fully
    /// credited) part's units are neither repriced nor billed (they still
    /// count toward the tier).
    ///
    /// Their `minimum` lines too: a charge's minimum is compared with the
    /// usage of every part billed so far (`earlier_parts` and this one),
    /// and this invoice carries what brings the minimum lines of those
    /// parts to the shortfall over them (negative: a credit of an earlier
    /// part's true-up).
    pub earlier_usage: Vec<InvoiceLine>,
    /// With `settled_until`: the spans `[start, end)` the earlier parts
    /// (invoices neither void nor fully credited) billed. A settled segment owes its minimum share
    /// only where an earlier part billed it, only the earlier lines of
    /// these spans count toward the minimum (usage lines starting in one,
    /// minimum lines overlapping one), and only the volume units of settled
    /// segments starting in one are repriced: a void part billed nothing,
    /// and a fully credited one gave it all back. Empty: no earlier part
    /// billed anything (every one was void or fully credited).
    pub earlier_parts: Vec<Period>,
    /// With `settled_until`: per metric, what credit notes gave back of
    /// the earlier parts' `minimum` lines by naming them
    /// ([`CreditBasis::Line`], each line's credit at most its amount;
    /// [`earlier_parts_billed`]). A true-up a note handed back is not
    /// handed back again: this invoice's `minimum` line credits at most
    /// the earlier true-ups less this, and a note never makes it bill
    /// more than without it (`docs/billing-semantics.md`, "A credited
    /// part"). Empty: no such note.
    pub earlier_minimum_credited: BTreeMap<String, Decimal>,
    pub tax: TaxRule,
    pub issuer: Party,
    pub bill_to: Party,
    pub created_at: Timestamp,
}

/// What a later part of a period billed in parts takes from the earlier
/// parts ([`earlier_parts_billed`]): `InvoiceInput::earlier_parts`,
/// `InvoiceInput::earlier_usage` and
/// `InvoiceInput::earlier_minimum_credited`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EarlierParts {
    /// The spans of the parts counted as billed.
    pub parts: Vec<Period>,
    /// Their usage and minimum lines.
    pub usage: Vec<InvoiceLine>,
    /// Per metric, what credit notes naming their minimum lines gave back.
    pub minimum_credited: BTreeMap<String, Decimal>,
}

impl EarlierParts {
    /// Sets the earlier parts of `input` (its `settled_until` is the
    /// caller's).
    pub fn apply_to(self, input: &mut InvoiceInput<'_>) {
        input.earlier_parts = self.parts;
        input.earlier_usage = self.usage;
        input.earlier_minimum_credited = self.minimum_credited;
    }
}

/// What a later part takes from `earlier`, the invoices that billed the
/// period up to `settled_until`, and `notes`, the credit notes issued
/// against them (notes of other invoices are ignored): the spans of those
/// a later part counts as billed ([`Invoice::counts_as_billed`]: neither
/// void nor fully credited), their usage and minimum lines, and what the
/// notes credited of those minimum lines by naming them
/// ([`CreditBasis::Line`]; per line at most its amount). A void or fully
/// credited part is left out of all three: its units still count toward
/// the period's tiers (they are in the segments) but are neither repriced
/// nor counted as billed toward the minimum. A partially credited part
/// counts as invoiced: its credit notes are adjustments of their own,
/// neither undone nor applied again, except that a true-up a note handed
/// back is not handed back a second time (`InvoiceInput::earlier_minimum_credited`).
pub fn earlier_parts_billed(
    earlier: &[Invoice],
    notes: &[CreditNote],
) -> Result<EarlierParts, BillingError> {
    let mut out = EarlierParts::default();
    for invoice in earlier.iter().filter(|i| i.counts_as_billed()) {
        let span = Period::new(invoice.period_start, invoice.period_end)
            .map_err(|e| BillingError::Invalid(format!("invoice {}: {e}", invoice.id)))?;
        out.parts.push(span);
        out.usage.extend(
            invoice
                .lines
                .iter()
                .filter(|l| matches!(l.kind, InvoiceLineKind::Usage | InvoiceLineKind::Minimum))
                .cloned(),
        );
        let mut named: BTreeMap<usize, Decimal> = BTreeMap::new();
        for credit in notes
            .iter()
            .filter(|n| n.invoice_id == invoice.id)
            .flat_map(|n| &n.lines)
            .filter(|l| l.basis == CreditBasis::Line)
        {
            if let Some(index) = credit.invoice_line {
                *named.entry(index).or_insert(Decimal::ZERO) += credit.amount;
            }
        }
        for (index, credited) in named {
            let Some(line) = invoice.lines.get(index) else {
                return Err(BillingError::Invalid(format!(
                    "a credit note of invoice {} credits its line {index}, which it does not have",
                    invoice.id
                )));
            };
            if let (InvoiceLineKind::Minimum, Some(metric)) = (line.kind, &line.feature) {
                let credited = credited.min(line.amount).max(Decimal::ZERO);
                if credited > Decimal::ZERO {
                    *out.minimum_credited
                        .entry(metric.clone())
                        .or_insert(Decimal::ZERO) += credited;
                }
            }
        }
    }
    Ok(out)
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

/// The allocation bucket of units within the plan's limit (billed by the charge).
pub const BUCKET_PLAN: &str = "plan";
/// The allocation bucket of units beyond a soft limit (billed by the charge).
pub const BUCKET_OVERAGE: &str = "overage";
/// The allocation bucket of units drawn from the emergency pool (billed at the
/// entitlement's `emergency_unit_price`).
pub const BUCKET_EMERGENCY: &str = "emergency";

/// Whether a bucket holds units drawn from a grant (top-up, promotion): every
/// bucket but `plan`, `overage` and `emergency`. Grant units are never billed.
pub fn is_grant_bucket(bucket: &str) -> bool {
    !matches!(bucket, BUCKET_PLAN | BUCKET_OVERAGE | BUCKET_EMERGENCY)
}

impl UsageTotal {
    fn bucket(&self, name: &str) -> Decimal {
        self.buckets.get(name).copied().unwrap_or(Decimal::ZERO)
    }

    /// Units the metric's charge prices: `plan` + `overage`.
    pub fn billable(&self) -> Decimal {
        self.bucket(BUCKET_PLAN) + self.bucket(BUCKET_OVERAGE)
    }

    /// Units drawn from the emergency pool.
    pub fn emergency(&self) -> Decimal {
        self.bucket(BUCKET_EMERGENCY)
    }

    /// Units drawn from grants (not billed).
    pub fn granted(&self) -> Decimal {
        self.buckets
            .iter()
            .filter(|(k, _)| is_grant_bucket(k))
            .map(|(_, v)| *v)
            .sum()
    }
}

/// Whole seconds since the epoch, toward the past (as proration counts them).
fn whole_seconds(ts: Timestamp) -> i64 {
    let s = ts.as_second();
    if ts.subsec_nanosecond() < 0 { s - 1 } else { s }
}

/// `amount × seconds([from, to)) / seconds(period)` at full precision.
pub(crate) fn share_of(
    amount: Decimal,
    period: &Period,
    from: Timestamp,
    to: Timestamp,
) -> Result<Decimal, BillingError> {
    let len = whole_seconds(period.end) - whole_seconds(period.start);
    let secs = whole_seconds(to) - whole_seconds(from);
    if len <= 0 {
        return Err(BillingError::Invalid(format!(
            "period {} to {} is empty",
            period.start, period.end
        )));
    }
    amount
        .checked_mul(Decimal::from(secs))
        .and_then(|x| x.checked_div(Decimal::from(len)))
        .ok_or_else(|| BillingError::Invalid(format!("amount {amount} overflows")))
}

/// `YYYY-MM-DD` of an instant (UTC), for line descriptions.
pub(crate) fn day(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%d").to_string()
}

fn interval_name(interval: Interval) -> &'static str {
    match interval {
        Interval::Month => "monthly",
        Interval::Year => "yearly",
    }
}

fn check_input(input: &InvoiceInput<'_>) -> Result<(), BillingError> {
    let period = input.period;
    if period.start >= period.end {
        return Err(BillingError::Invalid(format!(
            "period {} to {} is empty",
            period.start, period.end
        )));
    }
    if let Some(nominal) = input.nominal_period
        && (nominal.start > period.start || nominal.end < period.end)
    {
        return Err(BillingError::Invalid(format!(
            "nominal_period {} to {} must contain the period {} to {}",
            nominal.start, nominal.end, period.start, period.end
        )));
    }
    let Some(first) = input.segments.first() else {
        return Err(BillingError::Segments(
            "at least one segment is needed".into(),
        ));
    };
    if first.from != period.start {
        return Err(BillingError::Segments(format!(
            "the first segment starts at {}, the period at {}",
            first.from, period.start
        )));
    }
    let mut cursor = period.start;
    for (i, seg) in input.segments.iter().enumerate() {
        if seg.from != cursor {
            return Err(BillingError::Segments(format!(
                "segments[{i}] starts at {} but the previous one ends at {cursor}",
                seg.from
            )));
        }
        if seg.to <= seg.from {
            return Err(BillingError::Segments(format!(
                "segments[{i}] ends at {} before it starts at {}",
                seg.to, seg.from
            )));
        }
        cursor = seg.to;
        check_currency(input.currency, seg.plan)?;
        for total in &seg.usage {
            if let Some((bucket, q)) = total.buckets.iter().find(|(_, q)| **q < Decimal::ZERO) {
                return Err(BillingError::Invalid(format!(
                    "segments[{i}]: usage of {} in bucket {bucket} is negative ({q})",
                    total.feature
                )));
            }
        }
    }
    if cursor != period.end {
        return Err(BillingError::Segments(format!(
            "the last segment ends at {cursor}, the period at {}",
            period.end
        )));
    }
    if let Some((plan, _)) = &input.advance {
        check_currency(input.currency, plan)?;
    }
    if let Some(settled) = input.settled_until
        && (settled >= period.end || !input.segments.iter().any(|s| s.to == settled))
    {
        return Err(BillingError::Segments(format!(
            "settled_until {settled} is not a segment boundary inside the period"
        )));
    }
    if input.tax.rate < Decimal::ZERO || input.tax.rate > Decimal::ONE {
        return Err(BillingError::Invalid(format!(
            "tax rate must be a fraction between 0 and 1 (0.2 = 20 %), got {}",
            input.tax.rate
        )));
    }
    Ok(())
}

fn check_currency(expected: Currency, plan: &Plan) -> Result<(), BillingError> {
    if plan.currency != expected || plan.base_price.currency != expected {
        return Err(BillingError::Currency {
            expected: expected.to_string(),
            what: format!("plan {} v{}", plan.key, plan.version),
            found: plan.currency.to_string(),
        });
    }
    Ok(())
}

/// A plan's base price for `[from, to)` of `period` (the whole period: the full
/// price; part of it: prorated by second).
fn base_line(
    plan: &Plan,
    period: &Period,
    from: Timestamp,
    to: Timestamp,
    currency: Currency,
) -> Result<InvoiceLine, BillingError> {
    let whole = from == period.start && to == period.end;
    let unrounded = share_of(plan.base_price.amount, period, from, to)?;
    let amount = prorate(plan.base_price, period, from, to)
        .map_err(|e| BillingError::Invalid(e.to_string()))?;
    let mut description = format!("{} plan ({})", plan.name, interval_name(plan.interval));
    if !whole {
        description.push_str(&format!(", {} to {} (prorated)", day(from), day(to)));
    }
    let mut line = InvoiceLine::fee(
        InvoiceLineKind::Base,
        description,
        from,
        to,
        unrounded,
        currency,
    );
    line.amount = amount.amount;
    line.plan_key = Some(plan.key.clone());
    line.plan_version = Some(plan.version);
    Ok(line)
}

/// The base fee a subscription owes when it starts, for a plan billed in
/// advance: the plan's base for `[start, nominal.end)`, prorated by second
/// against the whole `nominal` period (the first period's whole nominal
/// period: a partial first calendar period pays its share, an anniversary
/// period starting at `start` the full price). `None` for a plan billed in
/// arrears (its close bills it) or a base of zero.
///
/// Subscribed on 2026-04-10T00:00Z to $30/month in advance, calendar
/// billing: 21 of April's 30 days, **21.00**. Every later period's base is
/// collected by the close of the period before it (`InvoiceInput::advance`),
/// so each period's base is billed exactly once.
pub fn first_period_base(
    plan: &Plan,
    nominal: &Period,
    start: Timestamp,
) -> Result<Option<InvoiceLine>, BillingError> {
    check_currency(plan.currency, plan)?;
    if plan.billing != BaseBilling::InAdvance || plan.base_price.amount.is_zero() {
        return Ok(None);
    }
    if !nominal.contains(start) {
        return Err(BillingError::Invalid(format!(
            "the subscription start {start} is outside its first period {} to {}",
            nominal.start, nominal.end
        )));
    }
    base_line(plan, nominal, start, nominal.end, plan.currency).map(Some)
}

/// Computes the draft invoice of a period. Status is `draft`, no number.
///
/// Lines, in order: base lines (in-arrears segments, then the in-advance base of
/// the next period), usage and emergency lines segment by segment, minimum
/// lines, pending lines, discounts. Then tax and totals
/// ([`Invoice::recompute_totals`]). See `docs/billing-semantics.md`, "Invoices".
pub fn compute_invoice(input: &InvoiceInput<'_>) -> Result<Invoice, BillingError> {
    check_input(input)?;
    let currency = input.currency;
    let base_period = input.nominal_period.unwrap_or(input.period);
    let mut lines = Vec::new();
    for seg in &input.segments {
        if seg.plan.billing == BaseBilling::InArrears && !is_settled(input, seg) && !seg.canceled {
            lines.push(base_line(
                seg.plan,
                &base_period,
                seg.from,
                seg.to,
                currency,
            )?);
        }
    }
    if let Some((plan, next)) = &input.advance {
        lines.push(base_line(plan, next, next.start, next.end, currency)?);
    }
    let repricing = volume_repricing(input, &base_period)?;
    lines.extend(usage_lines(input, &base_period, &repricing)?);
    lines.extend(repricing);
    for pending in &input.pending {
        let mut line = pending.clone();
        line.amount = round_line(line.amount, currency);
        line.tax_amount = Decimal::ZERO;
        lines.push(line);
    }
    // What this invoice covers: the period, less what was already billed.
    let covered = match input.settled_until {
        Some(settled) => Period::new(settled, input.period.end)
            .map_err(|e| BillingError::Invalid(e.to_string()))?,
        None => input.period,
    };
    let discounts = discount_lines(&input.discounts, &lines, currency, &covered)?;
    lines.extend(discounts);
    let mut invoice = Invoice::off_cycle(
        input.invoice_id.clone(),
        input.customer_id.clone(),
        currency,
        covered,
        lines,
        input.tax.clone(),
        input.created_at,
    );
    invoice.issuer = input.issuer.clone();
    invoice.bill_to = input.bill_to.clone();
    Ok(invoice)
}

/// Where a segment's usage sits in the period's cumulative count.
#[derive(Clone, Copy, Debug)]
struct Position {
    /// Billable units of the period before this segment.
    prior: Decimal,
    /// Billable units in this segment.
    quantity: Decimal,
    /// Billable units of the whole period (volume pricing picks its tier by it).
    total: Decimal,
}

/// A segment's usage priced at its position in the period.
struct Priced {
    amount: Decimal,
    tiers: Vec<TierBreakdown>,
    /// Units priced after the included units were taken off.
    billable: Decimal,
}

/// Prices a segment's usage at its position in the period's cumulative count.
///
/// Included units come off the cumulative count: billable units before the
/// segment are `max(0, prior − included)`, after it `max(0, prior + q −
/// included)`. Per-unit, package and graduated: `price(after) − price(before)`.
/// Volume: every billable unit of the segment at the unit price of the tier the
/// period's total billable count reaches, plus that tier's flat fee shared in
/// proportion to billable units (one segment: exactly plain volume pricing).
fn price_position(
    model: &PriceModel,
    included: Decimal,
    pos: Position,
) -> Result<Priced, PricingError> {
    let zero = Decimal::ZERO;
    let before = (pos.prior - included).max(zero);
    let after = (pos.prior + pos.quantity - included).max(zero);
    let billable = after - before;
    if let PriceModel::Volume { .. } = model {
        let total = (pos.total - included).max(after);
        if billable.is_zero() {
            return Ok(Priced {
                amount: zero,
                tiers: Vec::new(),
                billable,
            });
        }
        let at_total = model.amount_for(total)?;
        let Some(row) = at_total.tiers.into_iter().next() else {
            return Err(PricingError::Overflow);
        };
        let flat_share = row
            .flat_fee
            .checked_mul(billable)
            .and_then(|x| x.checked_div(total))
            .ok_or(PricingError::Overflow)?;
        let amount = billable
            .checked_mul(row.unit_price)
            .and_then(|x| x.checked_add(flat_share))
            .ok_or(PricingError::Overflow)?;
        return Ok(Priced {
            amount,
            tiers: vec![TierBreakdown {
                units: billable,
                flat_fee: flat_share,
                amount,
                ..row
            }],
            billable,
        });
    }
    let priced_after = model.amount_for(after)?;
    let priced_before = model.amount_for(before)?;
    let mut tiers = Vec::new();
    for row in priced_after.tiers {
        let prev = priced_before
            .tiers
            .iter()
            .find(|b| b.tier_index == row.tier_index);
        let diff = match prev {
            None => row,
            Some(b) => TierBreakdown {
                units: row.units - b.units,
                flat_fee: zero,
                packages: match (row.packages, b.packages) {
                    (Some(a), Some(b)) => Some(a - b),
                    (a, _) => a,
                },
                amount: row.amount - b.amount,
                ..row
            },
        };
        if !diff.units.is_zero() || !diff.amount.is_zero() {
            tiers.push(diff);
        }
    }
    Ok(Priced {
        amount: priced_after.amount - priced_before.amount,
        tiers,
        billable,
    })
}

/// Keeps the properties named by `group_by`.
fn project(dims: &BTreeMap<String, String>, group_by: &[String]) -> BTreeMap<String, String> {
    dims.iter()
        .filter(|(k, _)| group_by.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The ledger totals behind a line.
fn line_source(
    feature: &str,
    seg: &Segment<'_>,
    totals: &[&UsageTotal],
    prior: Decimal,
) -> LineSource {
    let mut buckets: BTreeMap<String, Decimal> = BTreeMap::new();
    for t in totals {
        for (k, v) in &t.buckets {
            *buckets.entry(k.clone()).or_insert(Decimal::ZERO) += *v;
        }
    }
    LineSource {
        feature: feature.to_string(),
        from: seg.from,
        to: seg.to,
        buckets,
        prior_quantity: prior,
        records: totals.iter().map(|t| t.records).sum(),
    }
}

/// Per metric: the minimum owed over the segments whose charge has one.
#[derive(Default)]
struct MinimumAcc {
    /// The minimum prorated over the segments billed so far (this invoice's
    /// and, in a period billed in parts, the earlier parts').
    required: Decimal,
    /// What their usage lines billed (rounded amounts).
    charged: Decimal,
    /// What the earlier parts' minimum lines billed.
    earlier: Decimal,
    /// Whether an earlier part billed a minimum line for the metric.
    earlier_line: bool,
    /// What credit notes naming those earlier minimum lines gave back of
    /// them (`InvoiceInput::earlier_minimum_credited`).
    credited: Decimal,
    charge_key: String,
    display_name: String,
    plan_key: String,
    plan_version: u32,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
}

/// What one usage line is about.
struct UsageGroup<'t> {
    description: String,
    dimensions: BTreeMap<String, String>,
    totals: Vec<&'t UsageTotal>,
    model: Option<&'t PriceModel>,
    included: Decimal,
    pos: Position,
}

struct Ctx<'i, 'a> {
    input: &'i InvoiceInput<'a>,
    base_period: &'i Period,
}

impl Ctx<'_, '_> {
    /// Billable units of `feature` (in the dimension group `group`, projected
    /// on `group_by`) in the segments of `range`.
    fn billable_in(
        &self,
        range: std::ops::Range<usize>,
        feature: &str,
        group: Option<(&BTreeMap<String, String>, &[String])>,
    ) -> Decimal {
        self.input.segments[range]
            .iter()
            .flat_map(|s| &s.usage)
            .filter(|t| t.feature == feature)
            .filter(|t| group.is_none_or(|(g, by)| project(&t.dimensions, by) == *g))
            .map(UsageTotal::billable)
            .sum()
    }

    fn position(
        &self,
        i: usize,
        feature: &str,
        group: Option<(&BTreeMap<String, String>, &[String])>,
    ) -> Position {
        let n = self.input.segments.len();
        let prior = self.billable_in(0..i, feature, group);
        let quantity = self.billable_in(i..i + 1, feature, group);
        let after = self.billable_in(i + 1..n, feature, group);
        Position {
            prior,
            quantity,
            total: prior + quantity + after,
        }
    }

    fn segment_suffix(&self, seg: &Segment<'_>) -> String {
        if self.input.segments.len() > 1 {
            format!(
                " ({} plan, {} to {})",
                seg.plan.name,
                day(seg.from),
                day(seg.to)
            )
        } else {
            String::new()
        }
    }

    fn groups<'s>(
        &self,
        i: usize,
        seg: &'s Segment<'_>,
        charge: &'s Charge,
    ) -> Result<Vec<UsageGroup<'s>>, BillingError> {
        let here: Vec<&UsageTotal> = seg
            .usage
            .iter()
            .filter(|t| t.feature == charge.metric)
            .collect();
        let suffix = self.segment_suffix(seg);
        match &charge.price {
            ChargePrice::Single(model) => Ok(vec![UsageGroup {
                description: format!("{}{suffix}", charge.display_name),
                dimensions: BTreeMap::new(),
                totals: here,
                model: Some(model),
                included: charge.included,
                pos: self.position(i, &charge.metric, None),
            }]),
            ChargePrice::Dimensional(d) => {
                let mut by_group: BTreeMap<BTreeMap<String, String>, Vec<&UsageTotal>> =
                    BTreeMap::new();
                for t in here {
                    by_group
                        .entry(project(&t.dimensions, &d.group_by))
                        .or_default()
                        .push(t);
                }
                if by_group.is_empty() {
                    return Ok(vec![UsageGroup {
                        description: format!("{}{suffix}", charge.display_name),
                        dimensions: BTreeMap::new(),
                        totals: Vec::new(),
                        model: None,
                        included: Decimal::ZERO,
                        pos: Position {
                            prior: Decimal::ZERO,
                            quantity: Decimal::ZERO,
                            total: Decimal::ZERO,
                        },
                    }]);
                }
                let mut groups = Vec::with_capacity(by_group.len());
                for (dims, totals) in by_group {
                    let model = d
                        .prices
                        .iter()
                        .find(|p| p.when.iter().all(|(k, v)| dims.get(k) == Some(v)))
                        .map(|p| &p.model)
                        .or(d.default.as_ref())
                        .ok_or_else(|| BillingError::Pricing {
                            charge: charge.key.clone(),
                            message: format!(
                                "no price for dimension group {dims:?} and no default price"
                            ),
                        })?;
                    let shown: Vec<String> = d
                        .group_by
                        .iter()
                        .map(|k| {
                            format!(
                                "{k}={}",
                                dims.get(k).map(String::as_str).unwrap_or("(none)")
                            )
                        })
                        .collect();
                    let pos = self.position(i, &charge.metric, Some((&dims, &d.group_by)));
                    groups.push(UsageGroup {
                        description: format!(
                            "{} ({}){suffix}",
                            charge.display_name,
                            shown.join(", ")
                        ),
                        dimensions: dims,
                        totals,
                        model: Some(model),
                        included: Decimal::ZERO,
                        pos,
                    });
                }
                Ok(groups)
            }
        }
    }

    fn usage_line(
        &self,
        seg: &Segment<'_>,
        charge: &Charge,
        group: UsageGroup<'_>,
    ) -> Result<InvoiceLine, BillingError> {
        let currency = self.input.currency;
        let priced = match group.model {
            Some(model) => price_position(model, group.included, group.pos).map_err(|e| {
                BillingError::Pricing {
                    charge: charge.key.clone(),
                    message: e.to_string(),
                }
            })?,
            None => Priced {
                amount: Decimal::ZERO,
                tiers: Vec::new(),
                billable: Decimal::ZERO,
            },
        };
        let unit_amount = match group.model {
            Some(PriceModel::PerUnit { unit_price }) => Some(*unit_price),
            _ => None,
        };
        let mut line = InvoiceLine::fee(
            InvoiceLineKind::Usage,
            group.description,
            seg.from,
            seg.to,
            priced.amount,
            currency,
        );
        line.charge = Some(charge.key.clone());
        line.feature = Some(charge.metric.clone());
        line.dimensions = group.dimensions;
        line.plan_key = Some(seg.plan.key.clone());
        line.plan_version = Some(seg.plan.version);
        line.quantity = group.pos.quantity;
        line.included = group.pos.quantity - priced.billable;
        line.billable_quantity = priced.billable;
        line.unit_amount = unit_amount;
        line.tiers = priced.tiers;
        line.source = Some(line_source(
            &charge.metric,
            seg,
            &group.totals,
            group.pos.prior,
        ));
        Ok(line)
    }

    fn emergency_lines(&self, seg: &Segment<'_>) -> Vec<InvoiceLine> {
        let currency = self.input.currency;
        let mut by_feature: BTreeMap<&str, Vec<&UsageTotal>> = BTreeMap::new();
        for t in seg.usage.iter().filter(|t| t.emergency() > Decimal::ZERO) {
            by_feature.entry(&t.feature).or_default().push(t);
        }
        let mut lines = Vec::new();
        for (feature, totals) in by_feature {
            let units: Decimal = totals.iter().map(|t| t.emergency()).sum();
            let price = match seg.plan.entitlement(feature) {
                Some(Entitlement::Metered(m)) => m.emergency_unit_price,
                _ => None,
            }
            .unwrap_or(Decimal::ZERO);
            let description = format!(
                "{feature}: {} emergency units at {} {currency}{}",
                units.normalize(),
                price.normalize(),
                self.segment_suffix(seg)
            );
            let mut line = InvoiceLine::fee(
                InvoiceLineKind::Emergency,
                description,
                seg.from,
                seg.to,
                units * price,
                currency,
            );
            line.feature = Some(feature.to_string());
            line.plan_key = Some(seg.plan.key.clone());
            line.plan_version = Some(seg.plan.version);
            line.quantity = units;
            line.billable_quantity = units;
            line.unit_amount = Some(price);
            line.source = Some(line_source(feature, seg, &totals, Decimal::ZERO));
            lines.push(line);
        }
        lines
    }
}

/// Whether a segment lies in the part of the period already billed.
fn is_settled(input: &InvoiceInput<'_>, seg: &Segment<'_>) -> bool {
    input.settled_until.is_some_and(|t| seg.to <= t)
}

/// Whether `at` lies in a span an earlier part billed (an invoice neither
/// void nor fully credited, `InvoiceInput::earlier_parts`): what a void
/// part covered was not billed, what a fully credited one covered was given
/// back.
fn billed_earlier(input: &InvoiceInput<'_>, at: Timestamp) -> bool {
    input
        .earlier_parts
        .iter()
        .any(|p| p.start <= at && at < p.end)
}

/// The settled segment, not canceled, in which `line` (an earlier part's
/// usage line, or a line repricing its units) starts, when it starts in a
/// span an earlier part billed and its plan's charge has a minimum: the
/// line counts toward that minimum.
fn minimum_segment<'i, 'a>(
    input: &'i InvoiceInput<'a>,
    line: &InvoiceLine,
) -> Option<(&'i Segment<'a>, &'i Charge)> {
    let seg = input.segments.iter().find(|s| {
        is_settled(input, s) && s.from <= line.period_start && line.period_start < s.to
    })?;
    if seg.canceled
        || !billed_earlier(input, line.period_start)
        || line.plan_key.as_deref() != Some(seg.plan.key.as_str())
        || line.plan_version != Some(seg.plan.version)
    {
        return None;
    }
    let charge = seg
        .plan
        .charges
        .iter()
        .find(|c| line.charge.as_deref() == Some(c.key.as_str()))
        .filter(|c| c.minimum.is_some())?;
    Some((seg, charge))
}

impl MinimumAcc {
    /// Counts a segment whose charge has a minimum.
    fn segment(&mut self, seg: &Segment<'_>, charge: &Charge) {
        self.charge_key = charge.key.clone();
        self.display_name = charge.display_name.clone();
        self.plan_key = seg.plan.key.clone();
        self.plan_version = seg.plan.version;
        self.from = Some(self.from.map_or(seg.from, |f| f.min(seg.from)));
        self.to = Some(self.to.map_or(seg.to, |t| t.max(seg.to)));
    }
}

/// The minimum lines of a period billed in parts: each charge's minimum
/// owed over the parts billed so far, what the earlier parts' usage and
/// minimum lines billed for it, and the earlier units repriced by this
/// invoice (`repricing`), accumulated per metric into `minimums`.
fn earlier_minimums(
    ctx: &Ctx<'_, '_>,
    repricing: &[InvoiceLine],
    minimums: &mut BTreeMap<String, MinimumAcc>,
) -> Result<(), BillingError> {
    let input = ctx.input;
    if input.settled_until.is_none() {
        return Ok(());
    }
    for seg in input.segments.iter().filter(|s| is_settled(input, s)) {
        if seg.canceled {
            continue;
        }
        for charge in &seg.plan.charges {
            let Some(minimum) = charge.minimum else {
                continue;
            };
            for part in &input.earlier_parts {
                let (from, to) = (seg.from.max(part.start), seg.to.min(part.end));
                if from >= to {
                    continue;
                }
                let acc = minimums.entry(charge.metric.clone()).or_default();
                acc.required += share_of(minimum, ctx.base_period, from, to)?;
                acc.segment(seg, charge);
            }
        }
    }
    let usage = input
        .earlier_usage
        .iter()
        .filter(|l| l.kind == InvoiceLineKind::Usage)
        .chain(repricing);
    for line in usage {
        if let Some((seg, charge)) = minimum_segment(input, line) {
            let acc = minimums.entry(charge.metric.clone()).or_default();
            acc.charged += line.amount;
            acc.segment(seg, charge);
        }
    }
    // A later part's minimum line spans the parts before it too: it counts
    // whole when it overlaps a part billed (the earlier lines are those of
    // invoices neither void nor fully credited).
    for line in &input.earlier_usage {
        let billed = input
            .earlier_parts
            .iter()
            .any(|p| p.start < line.period_end && line.period_start < p.end);
        if let (InvoiceLineKind::Minimum, Some(metric), true) = (line.kind, &line.feature, billed) {
            let acc = minimums.entry(metric.clone()).or_default();
            acc.earlier += line.amount;
            acc.earlier_line = true;
            if acc.charge_key.is_empty() {
                // No segment has the minimum any more: the line credits it.
                acc.charge_key = line.charge.clone().unwrap_or_default();
                acc.display_name = acc.charge_key.clone();
                acc.plan_key = line.plan_key.clone().unwrap_or_default();
                acc.plan_version = line.plan_version.unwrap_or_default();
            }
        }
    }
    for (metric, credited) in &input.earlier_minimum_credited {
        if let Some(acc) = minimums.get_mut(metric).filter(|a| a.earlier_line) {
            acc.credited += *credited;
        }
    }
    Ok(())
}

/// Usage, emergency and minimum lines of every segment. `repricing`: the
/// lines repricing the earlier parts' volume units (they count toward the
/// minimum as the usage they reprice).
fn usage_lines(
    input: &InvoiceInput<'_>,
    base_period: &Period,
    repricing: &[InvoiceLine],
) -> Result<Vec<InvoiceLine>, BillingError> {
    let ctx = Ctx { input, base_period };
    let currency = input.currency;
    let mut lines = Vec::new();
    let mut minimums: BTreeMap<String, MinimumAcc> = BTreeMap::new();
    earlier_minimums(&ctx, repricing, &mut minimums)?;
    for (i, seg) in input.segments.iter().enumerate() {
        // Billed on an earlier invoice: its usage only moves the positions of
        // the segments after it.
        if is_settled(input, seg) {
            continue;
        }
        // Canceled: nothing to bill unless usage was recorded anyway.
        if seg.canceled && seg.usage.is_empty() {
            continue;
        }
        for charge in &seg.plan.charges {
            if let Some((field, message)) = charge.validate().into_iter().next() {
                return Err(BillingError::Pricing {
                    charge: charge.key.clone(),
                    message: format!("{field}: {message}"),
                });
            }
            let mut charged = Decimal::ZERO;
            for group in ctx.groups(i, seg, charge)? {
                let line = ctx.usage_line(seg, charge, group)?;
                charged += line.amount;
                lines.push(line);
            }
            if let Some(minimum) = charge.minimum.filter(|_| !seg.canceled) {
                let acc = minimums.entry(charge.metric.clone()).or_default();
                acc.required += share_of(minimum, ctx.base_period, seg.from, seg.to)?;
                acc.charged += charged;
                acc.segment(seg, charge);
            }
        }
        lines.extend(ctx.emergency_lines(seg));
    }
    for (metric, acc) in minimums {
        // The shortfall over the parts billed so far, less what the earlier
        // parts' minimum lines already billed of it. Negative, it hands
        // earlier true-ups back: never what credit notes naming them
        // already handed back (at most `earlier − credited`), and a note
        // never makes the line bill more than without it
        // (docs/billing-semantics.md, "A credited part").
        let shortfall = (acc.required - acc.charged).max(Decimal::ZERO);
        let difference =
            (shortfall - acc.earlier).max((acc.credited - acc.earlier).min(Decimal::ZERO));
        if acc.earlier_line {
            if round_line(difference, currency).is_zero() {
                continue;
            }
        } else if difference <= Decimal::ZERO {
            continue;
        }
        let mut description = format!(
            "{}: minimum {} {currency} (usage came to {})",
            acc.display_name,
            round_line(acc.required, currency),
            acc.charged
        );
        if acc.earlier_line {
            description.push_str(&format!(
                ", {} billed earlier in the period as minimum",
                acc.earlier
            ));
        }
        if acc.credited > Decimal::ZERO {
            description.push_str(&format!(", {} of it credited", acc.credited));
        }
        let mut line = InvoiceLine::fee(
            InvoiceLineKind::Minimum,
            description,
            acc.from.unwrap_or(input.period.start),
            acc.to.unwrap_or(input.period.end),
            difference,
            currency,
        );
        line.charge = Some(acc.charge_key);
        line.feature = Some(metric);
        line.plan_key = Some(acc.plan_key);
        line.plan_version = Some(acc.plan_version);
        lines.push(line);
    }
    Ok(lines)
}

/// What one plan's volume charge (or one of its dimension groups) billed in
/// the earlier parts of the period, repriced.
struct Repriced {
    display_name: String,
    feature: String,
    units: Decimal,
    amount: Decimal,
    from: Timestamp,
    to: Timestamp,
}

/// The lines that reprice, at the tier the period's total reaches, the units
/// of volume-priced charges billed by the earlier parts of a period billed in
/// parts (`InvoiceInput::earlier_usage`): `Σ segment units at the period's
/// tier − Σ what the earlier usage lines of that plan, charge and group
/// billed`, one line each, when it is not zero once rounded. Only the
/// segments of parts neither void nor fully credited
/// (`InvoiceInput::earlier_parts`): such a part's units count toward the
/// tier but were forgiven (or given back), not billed. Per-unit,
/// package and graduated prices need none: a segment's price depends only on
/// the units before it, which later parts do not change.
fn volume_repricing(
    input: &InvoiceInput<'_>,
    base_period: &Period,
) -> Result<Vec<InvoiceLine>, BillingError> {
    if input.settled_until.is_none() || input.earlier_usage.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = Ctx { input, base_period };
    type Key = (String, u32, String, BTreeMap<String, String>);
    let mut repriced: BTreeMap<Key, Repriced> = BTreeMap::new();
    for (i, seg) in input.segments.iter().enumerate() {
        // Only the units a part billed: a void (or fully credited) part's
        // units still count toward the period's tier (in `ctx.groups`), but
        // they were forgiven, not billed, so there is nothing to reprice.
        if !is_settled(input, seg) || !billed_earlier(input, seg.from) {
            continue;
        }
        for charge in &seg.plan.charges {
            for group in ctx.groups(i, seg, charge)? {
                let Some(model @ PriceModel::Volume { .. }) = group.model else {
                    continue;
                };
                if group.pos.quantity.is_zero() {
                    continue;
                }
                let priced = price_position(model, group.included, group.pos).map_err(|e| {
                    BillingError::Pricing {
                        charge: charge.key.clone(),
                        message: e.to_string(),
                    }
                })?;
                let key = (
                    seg.plan.key.clone(),
                    seg.plan.version,
                    charge.key.clone(),
                    group.dimensions.clone(),
                );
                let acc = repriced.entry(key).or_insert_with(|| Repriced {
                    display_name: group.description.clone(),
                    feature: charge.metric.clone(),
                    units: Decimal::ZERO,
                    amount: Decimal::ZERO,
                    from: seg.from,
                    to: seg.to,
                });
                acc.units += priced.billable;
                acc.amount += priced.amount;
                acc.to = seg.to;
            }
        }
    }
    let currency = input.currency;
    let mut lines = Vec::new();
    for ((plan_key, plan_version, charge, dimensions), acc) in repriced {
        let mut earlier = input
            .earlier_usage
            .iter()
            .filter(|l| {
                l.kind == InvoiceLineKind::Usage
                    && l.plan_key.as_deref() == Some(plan_key.as_str())
                    && l.plan_version == Some(plan_version)
                    && l.charge.as_deref() == Some(charge.as_str())
                    && l.dimensions == dimensions
            })
            .peekable();
        if earlier.peek().is_none() {
            continue;
        }
        let billed: Decimal = earlier.map(|l| l.amount).sum();
        let difference = acc.amount - billed;
        if round_line(difference, currency).is_zero() {
            continue;
        }
        let mut line = InvoiceLine::fee(
            InvoiceLineKind::Usage,
            format!(
                "{}: {} units billed earlier in the period for {}, repriced at the period's volume tier",
                acc.display_name,
                acc.units.normalize(),
                billed
            ),
            acc.from,
            acc.to,
            difference,
            currency,
        );
        line.charge = Some(charge);
        line.feature = Some(acc.feature);
        line.dimensions = dimensions;
        line.plan_key = Some(plan_key);
        line.plan_version = Some(plan_version);
        line.quantity = Decimal::ZERO;
        line.billable_quantity = Decimal::ZERO;
        lines.push(line);
    }
    Ok(lines)
}

/// Discount lines, applied in order to what is left of the subtotal: a percent
/// of the subtotal, or a fixed amount; never below zero in total.
fn discount_lines(
    discounts: &[Discount],
    lines: &[InvoiceLine],
    currency: Currency,
    period: &Period,
) -> Result<Vec<InvoiceLine>, BillingError> {
    let subtotal = sum_amounts(lines);
    let mut left = subtotal;
    let mut out = Vec::new();
    for (i, discount) in discounts.iter().enumerate() {
        let (description, unrounded, id) = match discount {
            Discount::Percent {
                percent,
                description,
                id,
            } => {
                if *percent < Decimal::ZERO || *percent > Decimal::ONE_HUNDRED {
                    return Err(BillingError::Invalid(format!(
                        "discounts[{i}].percent must be between 0 and 100 (got {percent})"
                    )));
                }
                (
                    description,
                    -(subtotal * *percent / Decimal::ONE_HUNDRED),
                    id,
                )
            }
            Discount::Amount {
                amount,
                description,
                id,
            } => {
                if *amount < Decimal::ZERO {
                    return Err(BillingError::Invalid(format!(
                        "discounts[{i}].amount must not be negative (got {amount})"
                    )));
                }
                (description, -*amount, id)
            }
        };
        if left <= Decimal::ZERO {
            break;
        }
        let mut line = InvoiceLine::fee(
            InvoiceLineKind::Discount,
            description.clone(),
            period.start,
            period.end,
            unrounded,
            currency,
        );
        line.discount_id = id.clone();
        if -line.amount > left {
            line.amount = round_line(-left, currency);
            line.unrounded = line.amount;
        }
        left += line.amount;
        out.push(line);
    }
    Ok(out)
}

/// Sums already-rounded line amounts (helper shared by compute and credit).
pub fn sum_amounts<'l>(lines: impl IntoIterator<Item = &'l InvoiceLine>) -> Decimal {
    lines.into_iter().map(|l| l.amount).sum()
}

/// What the current period will cost if usage continues at its present pace:
/// an invoice-shaped preview (status `draft`, no number).
///
/// `input` is the period's close as if it ended now: segments tiling the whole
/// period (the plan in force at `now` running to the period end), each with
/// its usage so far. Usage so far is scaled to the whole period by time, by
/// second: every ledger quantity (each bucket, each dimension group) is
/// multiplied by `period seconds / elapsed seconds`, and the extra units are
/// put in the segment in force at `now` (the plan that will price them).
/// At the period start nothing has elapsed and nothing is extrapolated, nor
/// while the segment in force at `now` is canceled (nothing is served). Base
/// lines, minimums, pending lines, discounts and tax are as at the close.
///
/// 1,000 calls in the first 10 days of a 30-day period project to 3,000.
pub fn project_upcoming(input: &InvoiceInput<'_>, now: Timestamp) -> Result<Invoice, BillingError> {
    check_input(input)?;
    let period = input.period;
    let now = now.clamp(period.start, period.end);
    let elapsed = whole_seconds(now) - whole_seconds(period.start);
    let len = whole_seconds(period.end) - whole_seconds(period.start);
    if elapsed <= 0 || elapsed >= len {
        return compute_invoice(input);
    }
    // extra = observed × (len − elapsed) / elapsed, per feature, group, bucket.
    let mut extra: BTreeMap<(String, BTreeMap<String, String>), BTreeMap<String, Decimal>> =
        BTreeMap::new();
    for total in input.segments.iter().flat_map(|s| &s.usage) {
        let buckets = extra
            .entry((total.feature.clone(), total.dimensions.clone()))
            .or_default();
        for (bucket, q) in &total.buckets {
            let add = q
                .checked_mul(Decimal::from(len - elapsed))
                .and_then(|x| x.checked_div(Decimal::from(elapsed)))
                .ok_or_else(|| BillingError::Invalid(format!("usage {q} overflows")))?;
            *buckets.entry(bucket.clone()).or_insert(Decimal::ZERO) += add;
        }
    }
    let current = input
        .segments
        .iter()
        .position(|s| s.from <= now && now < s.to)
        .unwrap_or(input.segments.len() - 1);
    // Canceled now: nothing more is served, nothing is extrapolated.
    if input.segments[current].canceled {
        return compute_invoice(input);
    }
    let mut segments = input.segments.clone();
    let seg = &mut segments[current];
    for ((feature, dimensions), buckets) in extra {
        match seg
            .usage
            .iter_mut()
            .find(|t| t.feature == feature && t.dimensions == dimensions)
        {
            Some(total) => {
                for (bucket, q) in buckets {
                    *total.buckets.entry(bucket).or_insert(Decimal::ZERO) += q;
                }
            }
            None => seg.usage.push(UsageTotal {
                feature,
                dimensions,
                buckets,
                records: 0,
            }),
        }
    }
    let projected = InvoiceInput {
        segments,
        ..input.clone()
    };
    compute_invoice(&projected)
}
