//! An example invoice with every kind of line (shared by the render tests and
//! the image script).

#![allow(dead_code)]

use std::collections::BTreeMap;

use jiff::Timestamp;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_core::billing::credit::{CreditBasis, CreditNote, CreditNoteLine};
use tollgate_core::billing::{
    Invoice, InvoiceLine, InvoiceLineKind, InvoiceStatus, InvoiceTotals, LineSource, Party,
    TaxMode, TaxRule,
};
use tollgate_core::money::Currency;
use tollgate_core::pricing::TierBreakdown;

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn line(kind: InvoiceLineKind, description: &str, start: Timestamp, end: Timestamp) -> InvoiceLine {
    InvoiceLine {
        kind,
        description: description.to_string(),
        charge: None,
        feature: None,
        dimensions: BTreeMap::new(),
        plan_key: Some("pro".to_string()),
        plan_version: Some(1),
        period_start: start,
        period_end: end,
        quantity: Decimal::ONE,
        included: Decimal::ZERO,
        billable_quantity: Decimal::ONE,
        unit_amount: None,
        tiers: Vec::new(),
        unrounded: Decimal::ZERO,
        amount: Decimal::ZERO,
        tax_amount: Decimal::ZERO,
        source: None,
        discount_id: None,
    }
}

fn tier(
    i: usize,
    from: Decimal,
    to: Option<Decimal>,
    units: Decimal,
    price: Decimal,
) -> TierBreakdown {
    TierBreakdown {
        tier_index: i,
        from,
        to,
        units,
        unit_price: price,
        flat_fee: Decimal::ZERO,
        packages: None,
        amount: units * price,
    }
}

/// USD, 20 % VAT per line: base 499.00, tiered API calls 19.50, tokens
/// 493.83, proration 96.45, discount −17.31 → subtotal 1,108.78, tax 218.30,
/// total 1,309.77.
pub fn invoice() -> R<Invoice> {
    let start: Timestamp = "2026-11-01T00:00:00Z".parse()?;
    let end: Timestamp = "2026-12-01T00:00:00Z".parse()?;
    let upgrade: Timestamp = "2026-11-10T00:00:00Z".parse()?;

    let mut base = line(InvoiceLineKind::Base, "Pro plan (monthly)", start, end);
    base.unit_amount = Some(dec!(499));
    base.amount = dec!(499.00);
    base.tax_amount = dec!(99.80);

    let mut calls = line(InvoiceLineKind::Usage, "API calls", start, end);
    calls.charge = Some("api_calls".to_string());
    calls.feature = Some("api_calls".to_string());
    calls.quantity = dec!(12500);
    calls.included = dec!(1000);
    calls.billable_quantity = dec!(11500);
    calls.tiers = vec![
        tier(0, dec!(0), Some(dec!(1000)), dec!(1000), dec!(0)),
        tier(1, dec!(1000), Some(dec!(10000)), dec!(9000), dec!(0.002)),
        tier(2, dec!(10000), None, dec!(1500), dec!(0.001)),
    ];
    calls.amount = dec!(19.50);
    calls.tax_amount = dec!(3.90);
    calls.source = Some(LineSource {
        feature: "api_calls".to_string(),
        from: start,
        to: end,
        buckets: BTreeMap::from([("plan".to_string(), dec!(12500))]),
        prior_quantity: Decimal::ZERO,
        records: 12_500,
    });

    let mut tokens = line(InvoiceLineKind::Usage, "LLM tokens", start, end);
    tokens.dimensions = BTreeMap::from([("model".to_string(), "large-v2".to_string())]);
    tokens.quantity = dec!(1234567);
    tokens.billable_quantity = dec!(1234567);
    tokens.unit_amount = Some(dec!(0.0004));
    tokens.unrounded = dec!(493.8268);
    tokens.amount = dec!(493.83);
    tokens.tax_amount = dec!(98.77);

    let mut proration = line(
        InvoiceLineKind::Proration,
        "Remaining time on Pro after the upgrade from Starter on 10 Nov 2026 (21 of 30 days)",
        upgrade,
        end,
    );
    proration.amount = dec!(96.45);
    proration.tax_amount = dec!(19.29);

    let mut discount = line(InvoiceLineKind::Discount, "Launch discount", start, end);
    discount.amount = dec!(-17.31);
    discount.tax_amount = dec!(-3.46);

    Ok(Invoice {
        id: "inv_01JD7Q3".to_string(),
        number: Some("INV-000042".to_string()),
        customer_id: "acme".to_string(),
        currency: Currency::USD,
        status: InvoiceStatus::Open,
        period_start: start,
        period_end: end,
        lines: vec![base, calls, tokens, proration, discount],
        tax: TaxRule {
            rate: dec!(0.2),
            mode: TaxMode::PerLine,
            label: "VAT".to_string(),
        },
        totals: InvoiceTotals {
            subtotal: dec!(1108.78),
            discount: dec!(-17.31),
            tax: dec!(218.30),
            total: dec!(1309.77),
            amount_paid: Decimal::ZERO,
            amount_credited: Decimal::ZERO,
            amount_due: dec!(1309.77),
        },
        issuer: Party {
            name: "Voca Labs GmbH".to_string(),
            email: Some("billing@voca.test".to_string()),
            address: vec![
                "Torstraße 12".to_string(),
                "10119 Berlin, Germany".to_string(),
            ],
            tax_id: Some("DE123456789".to_string()),
        },
        bill_to: Party {
            name: "Smith & Sons <Ltd>".to_string(),
            email: Some("ap@smith.test".to_string()),
            address: vec![
                "1 Market Street".to_string(),
                "San Francisco, CA 94105".to_string(),
            ],
            tax_id: None,
        },
        memo: Some("Thank you for your business.".to_string()),
        created_at: end,
        issued_at: Some(end),
        due_at: Some("2026-12-31T00:00:00Z".parse()?),
        paid_at: None,
        voided_at: None,
    })
}

/// JPY (no minor unit), 10 % tax on the total: 10,000 + 1,000 + 1,100 tax = 12,100.
pub fn jpy_invoice() -> R<Invoice> {
    let mut inv = invoice()?;
    inv.currency = Currency::JPY;
    inv.lines.truncate(2);
    inv.lines[0].unit_amount = Some(dec!(10000));
    inv.lines[0].amount = dec!(10000);
    inv.lines[0].tax_amount = Decimal::ZERO;
    inv.lines[1].tiers.clear();
    inv.lines[1].unit_amount = Some(dec!(0.087));
    inv.lines[1].amount = dec!(1000);
    inv.lines[1].tax_amount = Decimal::ZERO;
    inv.tax = TaxRule {
        rate: dec!(0.1),
        mode: TaxMode::OnTotal,
        label: "Consumption tax".to_string(),
    };
    inv.totals = InvoiceTotals {
        subtotal: dec!(11000),
        discount: Decimal::ZERO,
        tax: dec!(1100),
        total: dec!(12100),
        amount_paid: Decimal::ZERO,
        amount_credited: Decimal::ZERO,
        amount_due: dec!(12100),
    };
    Ok(inv)
}

/// 100.00 + 20.00 VAT off the base line.
pub fn credit_note(invoice: &Invoice) -> R<CreditNote> {
    Ok(CreditNote {
        id: "cn_01JD7Q9".to_string(),
        number: Some("CN-000007".to_string()),
        invoice_id: invoice.id.clone(),
        customer_id: invoice.customer_id.clone(),
        currency: invoice.currency,
        reason: "Service outage on 14 Nov 2026".to_string(),
        lines: vec![CreditNoteLine {
            description: "Pro plan (monthly): outage credit".to_string(),
            invoice_line: Some(0),
            amount: dec!(100.00),
            tax_amount: dec!(20.00),
            basis: CreditBasis::Line,
        }],
        total: dec!(120.00),
        created_at: "2026-12-03T00:00:00Z".parse()?,
    })
}
