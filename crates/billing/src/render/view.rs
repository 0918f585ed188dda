//! What an invoice document prints, decided once for both renderers.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rust_decimal::Decimal;
use tollgate_core::billing::credit::CreditNote;
use tollgate_core::billing::{Invoice, InvoiceLine, InvoiceStatus, Party, TaxMode};
use tollgate_core::money::Currency;
use tollgate_core::pricing::TierBreakdown;

use super::RenderOptions;

/// A document ready to draw: every value already formatted.
#[derive(Clone, Debug, PartialEq)]
pub struct DocView {
    /// "Invoice", "Credit note".
    pub title: String,
    /// The invoice number, "Draft" before issue.
    pub number: String,
    /// Printed across the page for drafts and settled/cancelled invoices.
    pub watermark: Option<String>,
    pub issuer: PartyView,
    pub bill_to: PartyView,
    /// Label / value pairs (number, dates, period, status).
    pub meta: Vec<(String, String)>,
    pub currency: String,
    /// Whether the table has a tax column (per-line tax).
    pub tax_column: bool,
    pub rows: Vec<RowView>,
    pub totals: Vec<TotalView>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PartyView {
    pub name: String,
    /// Address lines, e-mail and tax id, in print order.
    pub lines: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RowView {
    pub description: String,
    /// Smaller text under the description (period, included units, tiers).
    pub details: Vec<String>,
    pub quantity: String,
    pub unit_price: String,
    pub tax: String,
    pub amount: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TotalView {
    pub label: String,
    pub value: String,
    /// The line that matters (total, amount due): printed in bold.
    pub strong: bool,
}

impl DocView {
    pub fn invoice(invoice: &Invoice, options: &RenderOptions) -> DocView {
        let tz = &options.time_zone;
        let cur = invoice.currency;
        let number = invoice
            .number
            .clone()
            .unwrap_or_else(|| "Draft".to_string());
        let overdue = invoice.status == InvoiceStatus::Open
            && matches!((invoice.due_at, options.now), (Some(due), Some(now)) if now > due);
        let mut meta = vec![("Invoice number".to_string(), number.clone())];
        if let Some(at) = invoice.issued_at {
            meta.push(("Date of issue".to_string(), date(at, tz)));
        }
        if let Some(at) = invoice.due_at {
            meta.push(("Date due".to_string(), date(at, tz)));
        }
        meta.push((
            "Billing period".to_string(),
            period(invoice.period_start, invoice.period_end, tz),
        ));
        let status = if overdue {
            "Overdue".to_string()
        } else {
            capitalized(invoice.status.as_str())
        };
        meta.push(("Status".to_string(), status));
        if let Some(at) = invoice.paid_at {
            meta.push(("Paid on".to_string(), date(at, tz)));
        }
        if let Some(at) = invoice.voided_at {
            meta.push(("Voided on".to_string(), date(at, tz)));
        }
        meta.push(("Customer ID".to_string(), invoice.customer_id.clone()));

        let tax_column = invoice.tax.mode == TaxMode::PerLine
            && invoice.lines.iter().any(|l| !l.tax_amount.is_zero());
        let rows = invoice
            .lines
            .iter()
            .map(|line| row(line, invoice, tz))
            .collect();

        let t = &invoice.totals;
        let mut totals = vec![total("Subtotal", amount(t.subtotal, cur), false)];
        if !t.discount.is_zero() {
            totals.push(total("Discounts", amount(t.discount, cur), false));
        }
        if !invoice.tax.rate.is_zero() || !t.tax.is_zero() {
            totals.push(total(&tax_label(invoice), amount(t.tax, cur), false));
        }
        totals.push(total("Total", money(t.total, cur), true));
        if !t.amount_paid.is_zero() {
            totals.push(total("Amount paid", amount(-t.amount_paid, cur), false));
        }
        if !t.amount_credited.is_zero() {
            totals.push(total("Credited", amount(-t.amount_credited, cur), false));
        }
        totals.push(total("Amount due", money(t.amount_due, cur), true));

        let mut notes = Vec::new();
        if let Some(memo) = &invoice.memo {
            notes.push(memo.clone());
        }
        if invoice.status == InvoiceStatus::Open {
            if let Some(due) = invoice.due_at {
                notes.push(format!(
                    "Please pay {} by {}, quoting {}.",
                    money(t.amount_due, cur),
                    date(due, tz),
                    number
                ));
            }
        }

        DocView {
            title: "Invoice".to_string(),
            number,
            watermark: watermark(invoice.status),
            issuer: party(&invoice.issuer),
            bill_to: party(&invoice.bill_to),
            meta,
            currency: cur.code().to_string(),
            tax_column,
            rows,
            totals,
            notes,
        }
    }

    pub fn credit_note(note: &CreditNote, invoice: &Invoice, options: &RenderOptions) -> DocView {
        let tz = &options.time_zone;
        let cur = note.currency;
        let number = note.number.clone().unwrap_or_else(|| "Draft".to_string());
        let invoice_number = invoice.number.clone().unwrap_or_else(|| invoice.id.clone());
        let meta = vec![
            ("Credit note number".to_string(), number.clone()),
            ("Date of issue".to_string(), date(note.created_at, tz)),
            ("Credits invoice".to_string(), invoice_number),
            ("Reason".to_string(), note.reason.clone()),
            ("Customer ID".to_string(), note.customer_id.clone()),
        ];
        let rows: Vec<RowView> = note
            .lines
            .iter()
            .map(|l| RowView {
                description: l.description.clone(),
                details: Vec::new(),
                quantity: String::new(),
                unit_price: String::new(),
                tax: amount(l.tax_amount, cur),
                amount: amount(l.amount, cur),
            })
            .collect();
        let subtotal: Decimal = note.lines.iter().map(|l| l.amount).sum();
        let tax: Decimal = note.lines.iter().map(|l| l.tax_amount).sum();
        let totals = vec![
            total("Subtotal", amount(subtotal, cur), false),
            total(&tax_label(invoice), amount(tax, cur), false),
            total("Total credited", money(note.total, cur), true),
        ];
        DocView {
            title: "Credit note".to_string(),
            number,
            watermark: None,
            issuer: party(&invoice.issuer),
            bill_to: party(&invoice.bill_to),
            meta,
            currency: cur.code().to_string(),
            tax_column: true,
            rows,
            totals,
            notes: Vec::new(),
        }
    }
}

fn total(label: &str, value: String, strong: bool) -> TotalView {
    TotalView {
        label: label.to_string(),
        value,
        strong,
    }
}

fn watermark(status: InvoiceStatus) -> Option<String> {
    match status {
        InvoiceStatus::Open => None,
        InvoiceStatus::Draft => Some("DRAFT".to_string()),
        InvoiceStatus::Paid => Some("PAID".to_string()),
        InvoiceStatus::Void => Some("VOID".to_string()),
        InvoiceStatus::Uncollectible => Some("UNCOLLECTIBLE".to_string()),
    }
}

fn tax_label(invoice: &Invoice) -> String {
    if invoice.tax.rate.is_zero() {
        invoice.tax.label.clone()
    } else {
        let pct = (invoice.tax.rate * Decimal::ONE_HUNDRED).normalize();
        format!("{} ({pct} %)", invoice.tax.label)
    }
}

fn party(p: &Party) -> PartyView {
    let mut lines = p.address.clone();
    if let Some(email) = &p.email {
        lines.push(email.clone());
    }
    if let Some(tax_id) = &p.tax_id {
        lines.push(format!("Tax ID: {tax_id}"));
    }
    PartyView {
        name: p.name.clone(),
        lines,
    }
}

fn row(line: &InvoiceLine, invoice: &Invoice, tz: &TimeZone) -> RowView {
    let cur = invoice.currency;
    let mut details = Vec::new();
    if line.period_start != invoice.period_start || line.period_end != invoice.period_end {
        details.push(period(line.period_start, line.period_end, tz));
    }
    if !line.dimensions.is_empty() {
        let dims: Vec<String> = line
            .dimensions
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        details.push(dims.join(", "));
    }
    if !line.included.is_zero() {
        details.push(format!(
            "{} included, {} billable",
            quantity(line.included),
            quantity(line.billable_quantity)
        ));
    }
    let multi = line.tiers.len() > 1;
    for tier in &line.tiers {
        if multi || tier.packages.is_some() || !tier.flat_fee.is_zero() {
            details.push(tier_row(tier, cur));
        }
    }
    RowView {
        description: line.description.clone(),
        details,
        quantity: quantity(line.quantity),
        unit_price: line
            .unit_amount
            .map(|u| unit_price(u, cur))
            .unwrap_or_default(),
        tax: amount(line.tax_amount, cur),
        amount: amount(line.amount, cur),
    }
}

/// "Tier 2 (1,000 – 10,000): 4,500 × 0.002 = 9.00".
fn tier_row(t: &TierBreakdown, cur: Currency) -> String {
    let range = match (t.from.is_zero(), t.to) {
        (true, Some(to)) => format!("first {}", quantity(to)),
        (_, None) => format!("above {}", quantity(t.from)),
        (false, Some(to)) => format!("{} – {}", quantity(t.from), quantity(to)),
    };
    let mut priced = match t.packages {
        Some(p) => format!(
            "{} in {} package(s) × {}",
            quantity(t.units),
            quantity(p),
            unit_price(t.unit_price, cur)
        ),
        None => format!("{} × {}", quantity(t.units), unit_price(t.unit_price, cur)),
    };
    if !t.flat_fee.is_zero() {
        priced.push_str(&format!(" + {} flat", unit_price(t.flat_fee, cur)));
    }
    format!(
        "Tier {} ({range}): {priced} = {}",
        t.tier_index + 1,
        unit_price(t.amount, cur)
    )
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// "23 Nov 2026".
pub fn date(at: Timestamp, tz: &TimeZone) -> String {
    at.to_zoned(tz.clone()).strftime("%-d %b %Y").to_string()
}

/// A half-open period `[start, end)` as the inclusive days it covers:
/// "1 Nov 2026 – 30 Nov 2026".
pub fn period(start: Timestamp, end: Timestamp, tz: &TimeZone) -> String {
    let last = if end > start {
        end.checked_sub(jiff::SignedDuration::from_secs(1))
            .unwrap_or(end)
    } else {
        end
    };
    format!("{} – {}", date(start, tz), date(last, tz))
}

/// An amount in the currency's minor unit, grouped: "1,234.50", "-12.00",
/// "1,235" (JPY).
pub fn amount(value: Decimal, currency: Currency) -> String {
    let mut v = value;
    if v.scale() < currency.minor_units() {
        v.rescale(currency.minor_units());
    }
    group(&v.to_string())
}

/// An amount with its currency code: "USD 1,234.50".
pub fn money(value: Decimal, currency: Currency) -> String {
    format!("{} {}", currency.code(), amount(value, currency))
}

/// A unit price: at least the minor unit, more digits when it has them
/// ("0.0004").
pub fn unit_price(value: Decimal, currency: Currency) -> String {
    amount(value.normalize(), currency)
}

/// A quantity: grouped, without trailing zeros ("12,500", "0.25").
pub fn quantity(value: Decimal) -> String {
    group(&value.normalize().to_string())
}

/// Inserts thousands separators in a plain decimal string.
fn group(s: &str) -> String {
    let (sign, rest) = match s.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", s),
    };
    let (int, frac) = match rest.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (rest, None),
    };
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    out.push_str(sign);
    let digits = int.len();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (digits - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn amounts_follow_the_currency_minor_unit() {
        assert_eq!(amount(dec!(1234.5), Currency::USD), "1,234.50");
        assert_eq!(amount(dec!(-12), Currency::USD), "-12.00");
        assert_eq!(amount(dec!(1235), Currency::JPY), "1,235");
        assert_eq!(amount(dec!(1.25), Currency::KWD), "1.250");
        assert_eq!(amount(dec!(1234567.89), Currency::EUR), "1,234,567.89");
        assert_eq!(unit_price(dec!(0.00040), Currency::USD), "0.0004");
        assert_eq!(unit_price(dec!(2.5000), Currency::USD), "2.50");
        assert_eq!(quantity(dec!(12500.000)), "12,500");
        assert_eq!(quantity(dec!(999)), "999");
        assert_eq!(money(dec!(100), Currency::JPY), "JPY 100");
    }

    #[test]
    fn periods_print_their_last_day() -> Result<(), jiff::Error> {
        let start: Timestamp = "2026-11-01T00:00:00Z".parse()?;
        let end: Timestamp = "2026-12-01T00:00:00Z".parse()?;
        assert_eq!(
            period(start, end, &TimeZone::UTC),
            "1 Nov 2026 – 30 Nov 2026"
        );
        Ok(())
    }
}
