//! Invoices and credit notes with real numbers: the rules of the "Invoices" and
//! "Credit notes" sections of `docs/billing-semantics.md`.
#![allow(clippy::unwrap_used)]

mod billing_fixtures;

use billing_fixtures::{
    Spec, april, catalog, changed_at, input, march, period, plan, segment, ts, usage, whole,
};
use jiff::tz::TimeZone;
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_core::billing::compute::{
    BillingError, Discount, compute_invoice, earlier_parts_billed, first_period_base,
    project_upcoming, sum_amounts,
};
use tollgate_core::billing::credit::{CreditBasis, CreditNote, CreditRequest, credit_note};
use tollgate_core::billing::invoice::format_number;
use tollgate_core::billing::{
    Invoice, InvoiceLine, InvoiceLineKind, InvoiceStatus, TaxMode, TaxRule,
};
use tollgate_core::money::Currency;
use tollgate_core::period::{Anchoring, BillingCycle, Interval};

fn arrears() -> Spec<'static> {
    Spec {
        billing: "in_arrears",
        ..Spec::default()
    }
}

fn vat(rate: Decimal, mode: TaxMode) -> TaxRule {
    TaxRule {
        rate,
        mode,
        label: "VAT".to_string(),
    }
}

fn amounts(invoice: &Invoice) -> Vec<String> {
    invoice.lines.iter().map(|l| l.amount.to_string()).collect()
}

fn kinds(invoice: &Invoice) -> Vec<InvoiceLineKind> {
    invoice.lines.iter().map(|l| l.kind).collect()
}

/// Basic in arrears, April, 13,000 api calls (10,000 in the plan, 3,000
/// overage) and 150 emergency queries; VAT 20 % per line.
fn april_invoice() -> Invoice {
    let c = catalog(&arrears());
    let basic = plan(&c, "basic");
    let p = april();
    let mut i = whole(
        Currency::USD,
        p,
        basic,
        vec![
            usage(
                "api_calls",
                &[("plan", dec!(10000)), ("overage", dec!(3000))],
            ),
            usage("queries", &[("plan", dec!(2000)), ("emergency", dec!(150))]),
        ],
    );
    i.tax = vat(dec!(0.2), TaxMode::PerLine);
    compute_invoice(&i).unwrap()
}

#[test]
fn semantics_invoice_base_usage_emergency_and_tax() {
    let inv = april_invoice();
    assert_eq!(inv.status, InvoiceStatus::Draft);
    assert_eq!(inv.number, None);
    assert_eq!(
        kinds(&inv),
        [
            InvoiceLineKind::Base,
            InvoiceLineKind::Usage,
            InvoiceLineKind::Emergency
        ]
    );
    assert_eq!(amounts(&inv), ["10.00", "24.00", "7.50"]);
    assert_eq!(inv.lines[0].description, "Basic plan (monthly)");
    // 13,000 calls, 1,000 included, 12,000 × 0.002 = 24.00.
    let calls = &inv.lines[1];
    assert_eq!(calls.quantity, dec!(13000));
    assert_eq!(calls.included, dec!(1000));
    assert_eq!(calls.billable_quantity, dec!(12000));
    assert_eq!(calls.unit_amount, Some(dec!(0.002)));
    let source = calls.source.as_ref().unwrap();
    assert_eq!(source.buckets["plan"], dec!(10000));
    assert_eq!(source.buckets["overage"], dec!(3000));
    assert_eq!(source.records, 2);
    assert_eq!(
        calls.explain().unwrap(),
        "13000 api_calls from 2 ledger records, 2026-04-01 to 2026-05-01: overage 3000, plan 10000"
    );
    // 150 emergency queries × 0.05 = 7.50; the 2,000 plan queries have no charge.
    let emergency = &inv.lines[2];
    assert_eq!(emergency.quantity, dec!(150));
    assert_eq!(emergency.unit_amount, Some(dec!(0.05)));
    // VAT per line: 2.00 + 4.80 + 1.50.
    let tax: Vec<String> = inv.lines.iter().map(|l| l.tax_amount.to_string()).collect();
    assert_eq!(tax, ["2.00", "4.80", "1.50"]);
    assert_eq!(inv.totals.subtotal.to_string(), "41.50");
    assert_eq!(inv.totals.discount.to_string(), "0.00");
    assert_eq!(inv.totals.tax.to_string(), "8.30");
    assert_eq!(inv.totals.total.to_string(), "49.80");
    assert_eq!(inv.totals.amount_due.to_string(), "49.80");
}

#[test]
fn semantics_invoice_in_advance_collects_the_next_period_base() {
    let c = catalog(&Spec::default());
    let basic = plan(&c, "basic");
    let p = april();
    let may = period("2026-05-01T00:00:00Z", "2026-06-01T00:00:00Z");
    let mut i = whole(
        Currency::USD,
        p,
        basic,
        vec![usage("api_calls", &[("plan", dec!(3000))])],
    );
    i.advance = Some((basic, may));
    let inv = compute_invoice(&i).unwrap();
    // May's base (in advance), April's usage (in arrears): 2,000 × 0.002.
    assert_eq!(kinds(&inv), [InvoiceLineKind::Base, InvoiceLineKind::Usage]);
    assert_eq!(amounts(&inv), ["10.00", "4.00"]);
    assert_eq!(inv.lines[0].period_start, may.start);
    assert_eq!(inv.lines[0].period_end, may.end);
    assert_eq!(inv.lines[1].period_start, p.start);
    assert_eq!(inv.totals.total.to_string(), "14.00");
}

#[test]
fn semantics_invoice_first_period_base_is_billed_at_subscription_once() {
    // Pro $30/month in advance, calendar billing, subscribed on day 10 of
    // April (30 days): the first period [04-10, 05-01) owes 21 of 30 days.
    let c = catalog(&Spec::default());
    let pro = plan(&c, "pro");
    let start = ts("2026-04-10T00:00:00Z");
    let cycle = BillingCycle::new(Interval::Month, Anchoring::Calendar, start, TimeZone::UTC);
    let first = cycle.period_index(0).unwrap();
    let nominal = cycle.nominal_period(0).unwrap();
    assert_eq!(nominal, april());
    let line = first_period_base(pro, &nominal, start).unwrap().unwrap();
    assert_eq!(line.kind, InvoiceLineKind::Base);
    assert_eq!(line.amount.to_string(), "21.00");
    assert_eq!((line.period_start, line.period_end), (start, first.end));
    assert_eq!(
        line.description,
        "Pro plan (monthly), 2026-04-10 to 2026-05-01 (prorated)"
    );

    // The close of that first period collects May's base (30.00) and the
    // usage, never April's base again: April's base is billed once, 21.00.
    let may = period("2026-05-01T00:00:00Z", "2026-06-01T00:00:00Z");
    let mut close = whole(
        Currency::USD,
        first,
        pro,
        vec![usage("api_calls", &[("plan", dec!(7000))])],
    );
    close.nominal_period = Some(nominal);
    close.advance = Some((pro, may));
    let inv = compute_invoice(&close).unwrap();
    let bases: Vec<_> = inv
        .lines
        .iter()
        .filter(|l| l.kind == InvoiceLineKind::Base)
        .map(|l| (l.period_start, l.amount.to_string()))
        .collect();
    assert_eq!(bases, [(may.start, "30.00".to_string())]);
    // 7,000 calls, 5,000 included, 2,000 × 0.001 = 2.00.
    assert_eq!(inv.totals.total.to_string(), "32.00");

    // Anniversary billing: the first period starts at the subscription, the
    // full price. In arrears: nothing at the start (the close bills it).
    let anniversary = BillingCycle::new(
        Interval::Month,
        Anchoring::Anniversary,
        start,
        TimeZone::UTC,
    );
    let whole_first = anniversary.nominal_period(0).unwrap();
    let line = first_period_base(pro, &whole_first, start)
        .unwrap()
        .unwrap();
    assert_eq!(line.amount.to_string(), "30.00");
    assert_eq!(line.description, "Pro plan (monthly)");
    let c = catalog(&arrears());
    assert_eq!(
        first_period_base(plan(&c, "pro"), &nominal, start),
        Ok(None)
    );
    // Noon on March 10: 21.5 of 31 days, 30 × 21.5/31 = 20.806… → 20.81.
    let c = catalog(&Spec::default());
    let line = first_period_base(plan(&c, "pro"), &march(), ts("2026-03-10T12:00:00Z"))
        .unwrap()
        .unwrap();
    assert_eq!(line.amount.to_string(), "20.81");
    // A start outside the period is an error, never a panic.
    assert!(first_period_base(plan(&c, "pro"), &march(), start).is_err());
}

#[test]
fn semantics_invoice_upgrade_mid_period_shares_the_allowance() {
    // Basic → Pro at the start of April 10, both billed in arrears.
    let c = catalog(&arrears());
    let (basic, pro) = (plan(&c, "basic"), plan(&c, "pro"));
    let p = april();
    let at = ts("2026-04-10T00:00:00Z");
    let i = changed_at(Currency::USD, p, at, (basic, dec!(3000)), (pro, dec!(9000)));
    let inv = compute_invoice(&i).unwrap();
    assert_eq!(
        kinds(&inv),
        [
            InvoiceLineKind::Base,
            InvoiceLineKind::Base,
            InvoiceLineKind::Usage,
            InvoiceLineKind::Usage
        ]
    );
    // Bases: 10 × 9/30 = 3.00 and 30 × 21/30 = 21.00. Usage: Basic prices
    // 3,000 − 1,000 included = 2,000 × 0.002 = 4.00; Pro's 5,000 included count
    // the period's 3,000 earlier calls, so of its 9,000 only 2,000 are free:
    // 7,000 × 0.001 = 7.00 (priced alone, the 9,000 would have cost 4.00).
    assert_eq!(amounts(&inv), ["3.00", "21.00", "4.00", "7.00"]);
    assert_eq!(
        inv.lines[0].description,
        "Basic plan (monthly), 2026-04-01 to 2026-04-10 (prorated)"
    );
    let pro_line = &inv.lines[3];
    assert_eq!(pro_line.plan_key.as_deref(), Some("pro"));
    assert_eq!(pro_line.quantity, dec!(9000));
    assert_eq!(pro_line.included, dec!(2000));
    assert_eq!(pro_line.billable_quantity, dec!(7000));
    assert_eq!(pro_line.source.as_ref().unwrap().prior_quantity, dec!(3000));
    assert_eq!(pro_line.period_start, at);
    assert_eq!(inv.totals.total.to_string(), "35.00");
}

const GRADUATED_BASIC: &str = r#"price = { model = "graduated", tiers = [ { up_to = 1000, unit_price = "0" }, { up_to = 10000, unit_price = "0.002" }, { unit_price = "0.001" } ] }"#;
const GRADUATED_PRO: &str = r#"price = { model = "graduated", tiers = [ { up_to = 5000, unit_price = "0" }, { unit_price = "0.001" } ] }"#;
const VOLUME_BASIC: &str = r#"price = { model = "volume", tiers = [ { up_to = 1000, unit_price = "0.01" }, { up_to = 10000, unit_price = "0.005" }, { unit_price = "0.002" } ] }"#;
const VOLUME_PRO: &str = r#"price = { model = "volume", tiers = [ { up_to = 1000, unit_price = "0.008" }, { up_to = 10000, unit_price = "0.004" }, { unit_price = "0.001" } ] }"#;

/// 4,000 calls on Basic until April 10, then 8,000 on Pro; plans in advance
/// (no base line on this invoice).
fn across_a_change(basic_charge: &str, pro_charge: &str, second: Decimal) -> Invoice {
    let c = catalog(&Spec {
        basic_charge,
        pro_charge,
        ..Spec::default()
    });
    let p = april();
    let at = ts("2026-04-10T00:00:00Z");
    let i = changed_at(
        Currency::USD,
        p,
        at,
        (plan(&c, "basic"), dec!(4000)),
        (plan(&c, "pro"), second),
    );
    compute_invoice(&i).unwrap()
}

#[test]
fn semantics_invoice_graduated_across_a_plan_change() {
    let inv = across_a_change(GRADUATED_BASIC, GRADUATED_PRO, dec!(8000));
    // Basic: price(4,000) − price(0) = 1,000 × 0 + 3,000 × 0.002 = 6.00.
    // Pro: units 4,001..12,000 of the period: price(12,000) − price(4,000)
    // = (5,000 × 0 + 7,000 × 0.001) − 0 = 7.00.
    assert_eq!(amounts(&inv), ["6.00", "7.00"]);
    let rows: Vec<(usize, Decimal, Decimal)> = inv.lines[1]
        .tiers
        .iter()
        .map(|t| (t.tier_index, t.units, t.amount))
        .collect();
    assert_eq!(
        rows,
        [(0, dec!(1000), dec!(0)), (1, dec!(7000), dec!(7.000))]
    );
    assert_eq!(inv.totals.total.to_string(), "13.00");
}

#[test]
fn semantics_invoice_volume_across_a_plan_change() {
    // The period's 12,000 calls reach the top tier of both tables: every unit
    // at its own plan's top-tier price. 4,000 × 0.002 + 8,000 × 0.001.
    let inv = across_a_change(VOLUME_BASIC, VOLUME_PRO, dec!(8000));
    assert_eq!(amounts(&inv), ["8.00", "8.00"]);
    assert_eq!(inv.lines[0].tiers[0].tier_index, 2);
    assert_eq!(inv.lines[0].tiers[0].units, dec!(4000));
    // No usage after the change: 4,000 is in Basic's tier 1, 4,000 × 0.005.
    let inv = across_a_change(VOLUME_BASIC, VOLUME_PRO, dec!(0));
    assert_eq!(amounts(&inv), ["20.00", "0.00"]);
    // One segment: plain volume pricing (12,000 × 0.002 = 24.00).
    let c = catalog(&Spec {
        basic_charge: VOLUME_BASIC,
        ..Spec::default()
    });
    let p = april();
    let single = whole(
        Currency::USD,
        p,
        plan(&c, "basic"),
        vec![usage("api_calls", &[("plan", dec!(12000))])],
    );
    let inv = compute_invoice(&single).unwrap();
    assert_eq!(amounts(&inv), ["24.00"]);
}

/// A period billed in two parts on Basic (in advance: usage lines only):
/// `first` calls billed by a final invoice over `[04-01, 04-10)`, then
/// `second` calls billed by the rest of April (`settled_until` 04-10, the
/// first part not void: its span in `earlier_parts`, its usage lines given
/// as `earlier_usage` unless `earlier` is false). Returns both invoices.
fn billed_in_parts(charge: &str, first: Decimal, second: Decimal) -> (Invoice, Invoice) {
    billed_in_parts_with(charge, first, second, true)
}

fn billed_in_parts_with(
    charge: &str,
    first: Decimal,
    second: Decimal,
    earlier: bool,
) -> (Invoice, Invoice) {
    let c = catalog(&Spec {
        basic_charge: charge,
        ..Spec::default()
    });
    let basic = plan(&c, "basic");
    let at = ts("2026-04-10T00:00:00Z");
    let p = april();
    let calls = |q: Decimal| vec![usage("api_calls", &[("plan", q)])];
    let part1 = compute_invoice(&input(
        Currency::USD,
        period("2026-04-01T00:00:00Z", "2026-04-10T00:00:00Z"),
        vec![segment(basic, p.start, at, calls(first))],
    ))
    .unwrap();
    let mut rest = input(
        Currency::USD,
        p,
        vec![
            segment(basic, p.start, at, calls(first)),
            segment(basic, at, p.end, calls(second)),
        ],
    );
    rest.settled_until = Some(at);
    rest.earlier_parts = vec![period("2026-04-01T00:00:00Z", "2026-04-10T00:00:00Z")];
    rest.earlier_usage = part1
        .lines
        .iter()
        .filter(|l| earlier && l.kind == InvoiceLineKind::Usage)
        .cloned()
        .collect();
    (part1, compute_invoice(&rest).unwrap())
}

#[test]
fn semantics_invoice_volume_tier_reached_in_a_later_part_reprices_the_earlier_units() {
    // Volume: to 1,000 at 0.01, to 10,000 at 0.005, then 0.002. 4,000 calls
    // on the final invoice of a cancellation on 04-10: tier 1, 4,000 × 0.005
    // = 20.00. Reactivated; 8,000 more: the period's 12,000 reach tier 2.
    // The rest of April bills the 8,000 at 0.002 = 16.00 and reprices the
    // 4,000 billed earlier at 0.002: 8.00 − 20.00 = −12.00. April in all:
    // 20.00 + 16.00 − 12.00 = 24.00 = 12,000 × 0.002, as one invoice over the
    // whole period bills it.
    let (part1, rest) = billed_in_parts(VOLUME_BASIC, dec!(4000), dec!(8000));
    assert_eq!(amounts(&part1), ["20.00"]);
    assert_eq!(amounts(&rest), ["16.00", "-12.00"]);
    let line = &rest.lines[1];
    assert_eq!(line.kind, InvoiceLineKind::Usage);
    assert_eq!(line.charge.as_deref(), Some("api_calls"));
    assert_eq!(line.billable_quantity, dec!(0));
    assert!(
        line.description
            .contains("4000 units billed earlier in the period for 20.00"),
        "{}",
        line.description
    );
    assert_eq!(part1.totals.total + rest.totals.total, dec!(24.00));
    // Without the earlier lines nothing is repriced (what they billed is
    // unknown): 16.00 only.
    let (_, blind) = billed_in_parts_with(VOLUME_BASIC, dec!(4000), dec!(8000), false);
    assert_eq!(amounts(&blind), ["16.00"]);
    // Staying in the same tier: nothing to reprice (4,000 + 2,000 in tier 1).
    let (_, same) = billed_in_parts(VOLUME_BASIC, dec!(4000), dec!(2000));
    assert_eq!(amounts(&same), ["10.00"]);
    // Graduated needs none: price(after) − price(before) is the same for the
    // first 4,000 whatever comes after (4.00 + 10.00 + 6.00… = one invoice).
    let graduated = r#"price = { model = "graduated", tiers = [ { up_to = 1000, unit_price = "0.01" }, { up_to = 10000, unit_price = "0.005" }, { unit_price = "0.002" } ] }"#;
    let (g1, g2) = billed_in_parts(graduated, dec!(4000), dec!(8000));
    // 1,000 × 0.01 + 3,000 × 0.005 = 25.00; then 6,000 × 0.005 + 2,000 ×
    // 0.002 = 34.00; 59.00 = price(12,000).
    assert_eq!(amounts(&g1), ["25.00"]);
    assert_eq!(amounts(&g2), ["34.00"]);
}

/// Volume (to 1,000 at 0.01, to 10,000 at 0.005, then 0.002) on Basic,
/// April billed in parts cut at 04-11 and 04-21, each part's calls in
/// `calls`; `billed[i]`: part `i` was not voided (its span is in
/// `earlier_parts`, its usage lines in `earlier_usage` of the parts after
/// it). Returns every part's invoice.
fn volume_in_parts(calls: &[Decimal], billed: &[bool]) -> Vec<Invoice> {
    volume_in_parts_priced(VOLUME_BASIC, calls, billed)
}

/// [`volume_in_parts`] with the charge's body `charge`.
fn volume_in_parts_priced(charge: &str, calls: &[Decimal], billed: &[bool]) -> Vec<Invoice> {
    let fates: Vec<Fate> = billed
        .iter()
        .map(|b| if *b { Fate::Billed } else { Fate::Void })
        .collect();
    volume_in_parts_after(charge, calls, &fates)
}

/// What became of a part's invoice before the parts after it were closed.
#[derive(Clone, Debug)]
enum Fate {
    /// Issued, as it is.
    Billed,
    /// Voided.
    Void,
    /// Issued, then credited by these notes, in order.
    Credited(Vec<CreditRequest>),
}

/// Issues `invoice` (its number and id: `n`) and applies `fate` to it.
/// Returns it and the credit notes issued against it.
fn settle(mut invoice: Invoice, n: u64, fate: &Fate) -> (Invoice, Vec<CreditNote>) {
    invoice.id = format!("inv_{n}");
    invoice.status = InvoiceStatus::Open;
    invoice.number = Some(format_number("INV", n));
    let mut notes = Vec::new();
    match fate {
        Fate::Billed => {}
        Fate::Void => invoice.status = InvoiceStatus::Void,
        Fate::Credited(requests) => {
            for request in requests {
                notes.push(credit_part(&mut invoice, request));
            }
        }
    }
    (invoice, notes)
}

/// Issues a credit note of `request` against `invoice` and records it.
fn credit_part(invoice: &mut Invoice, request: &CreditRequest) -> CreditNote {
    let cn = credit_note(
        invoice,
        invoice.totals.amount_credited,
        request,
        format!("cn_{}_{}", invoice.id, invoice.totals.amount_credited),
        "credited".into(),
        ts("2026-05-02T00:00:00Z"),
    )
    .unwrap();
    invoice.record_credit(cn.total);
    cn
}

/// [`volume_in_parts_priced`] with what became of each part's invoice
/// (`fates[i]`) before the parts after it were closed: the later parts
/// take `earlier_parts`, `earlier_usage` and `earlier_minimum_credited`
/// from the earlier invoices and their credit notes as they stand
/// ([`earlier_parts_billed`]).
fn volume_in_parts_after(charge: &str, calls: &[Decimal], fates: &[Fate]) -> Vec<Invoice> {
    parts_credited_later(charge, calls, fates, &[])
}

/// [`volume_in_parts_after`], and each `(part, before, request)` of
/// `later`: a credit note of `request` issued against part `part`'s
/// invoice after the parts before part `before` were closed.
fn parts_credited_later(
    charge: &str,
    calls: &[Decimal],
    fates: &[Fate],
    later: &[(usize, usize, CreditRequest)],
) -> Vec<Invoice> {
    let c = catalog(&Spec {
        basic_charge: charge,
        ..Spec::default()
    });
    let basic = plan(&c, "basic");
    let p = april();
    let cuts = [
        p.start,
        ts("2026-04-11T00:00:00Z"),
        ts("2026-04-21T00:00:00Z"),
        p.end,
    ];
    let n = calls.len();
    let bounds: Vec<_> = (0..=n)
        .map(|i| if i == n { p.end } else { cuts[i] })
        .collect();
    let segments: Vec<_> = (0..n)
        .map(|i| {
            segment(
                basic,
                bounds[i],
                bounds[i + 1],
                vec![usage("api_calls", &[("plan", calls[i])])],
            )
        })
        .collect();
    let mut parts: Vec<Invoice> = Vec::new();
    let mut notes: Vec<CreditNote> = Vec::new();
    for i in 0..n {
        for (part, _, request) in later.iter().filter(|(_, before, _)| *before == i) {
            notes.push(credit_part(&mut parts[*part], request));
        }
        let end = if i + 1 == n { p.end } else { bounds[i + 1] };
        let mut part = input(
            Currency::USD,
            tollgate_core::period::Period::new(p.start, end).unwrap(),
            segments[..=i].to_vec(),
        );
        part.nominal_period = Some(p);
        if i > 0 {
            part.settled_until = Some(bounds[i]);
            earlier_parts_billed(&parts, &notes)
                .unwrap()
                .apply_to(&mut part);
        }
        let invoice = compute_invoice(&part).unwrap();
        let (invoice, issued) = settle(invoice, i as u64 + 1, &fates[i]);
        parts.push(invoice);
        notes.extend(issued);
    }
    parts
}

#[test]
fn semantics_invoice_a_void_part_is_neither_repriced_nor_billed_again() {
    // Three parts of 4,000, 4,000 and 8,000 calls; the first part's invoice
    // (4,000 in tier 1, 20.00) is void. The second bills its 4,000 in tier 1
    // (the period's 8,000 so far): 20.00. The third: the period's 16,000
    // reach tier 2, so its 8,000 bill 16.00 and the second part's 4,000 are
    // repriced at 0.002: 8.00 − 20.00 = −12.00. The void part's 4,000 still
    // count toward the tier (they were used) but are neither repriced nor
    // billed: the parts not void come to 20.00 + 4.00 = 24.00 = 12,000 ×
    // 0.002, what one invoice over April (16,000 × 0.002 = 32.00) bills for
    // their units; the void part's 8.00 at that tier is forgiven. (The old
    // code repriced the 8,000 settled units, void ones included, against the
    // second part's 20.00: −4.00, so it billed the void 4,000 at 0.002:
    // 32.00 in all.)
    let parts = volume_in_parts(&[dec!(4000), dec!(4000), dec!(8000)], &[false, true, true]);
    assert_eq!(amounts(&parts[0]), ["20.00"]);
    assert_eq!(amounts(&parts[1]), ["20.00"]);
    assert_eq!(amounts(&parts[2]), ["16.00", "-12.00"]);
    assert!(
        parts[2].lines[1]
            .description
            .contains("4000 units billed earlier in the period for 20.00"),
        "{}",
        parts[2].lines[1].description
    );
    assert_eq!(parts[1].totals.total + parts[2].totals.total, dec!(24.00));
    // None void: 20.00 + 20.00 + (16.00 + 16.00 − 40.00) = 32.00 = 16,000 ×
    // 0.002, one invoice over April.
    let all = volume_in_parts(&[dec!(4000), dec!(4000), dec!(8000)], &[true, true, true]);
    assert_eq!(amounts(&all[2]), ["16.00", "-24.00"]);
    // The second part void instead: the third reprices the first part's
    // 4,000 only, −12.00 again, 24.00 for the parts not void.
    let second_void = volume_in_parts(&[dec!(4000), dec!(4000), dec!(8000)], &[true, false, true]);
    assert_eq!(amounts(&second_void[2]), ["16.00", "-12.00"]);
    // Two parts, the first void: the rest bills its 8,000 at the tier of the
    // period's 12,000, 8,000 × 0.002 = 16.00, and reprices nothing (the old
    // code too): 24.00 over April less the void part's 8.00.
    let two = volume_in_parts(&[dec!(4000), dec!(8000)], &[false, true]);
    assert_eq!(amounts(&two[0]), ["20.00"]);
    assert_eq!(amounts(&two[1]), ["16.00"]);
    // With a 100.00 monthly minimum, the first part void: the second part
    // owes 100 × 10/30 = 33.33, a true-up of 13.33. The third: the parts
    // billed (04-11 to the end) owe 66.67; their usage, the repricing
    // counted, came to 20.00 − 12.00 + 16.00 = 24.00, short by 42.67, 13.33
    // of it billed: 29.34. The parts not void: 33.33 + 33.34 = 66.67, the
    // minimum over the days billed. (The old code's −4.00 started in the
    // void span and so counted toward no minimum: 17.34, 62.67 in all.)
    let minimum = format!("minimum = \"100.00\"\n{VOLUME_BASIC}");
    let parts = volume_in_parts_priced(
        &minimum,
        &[dec!(4000), dec!(4000), dec!(8000)],
        &[false, true, true],
    );
    assert_eq!(amounts(&parts[1]), ["20.00", "13.33"]);
    assert_eq!(amounts(&parts[2]), ["16.00", "29.34", "-12.00"]);
    assert_eq!(parts[1].totals.total + parts[2].totals.total, dec!(66.67));
}

#[test]
fn semantics_invoice_a_fully_credited_part_is_neither_repriced_nor_billed_again() {
    // The three volume parts of the void case above (4,000, 4,000 and 8,000
    // calls), the first part's invoice (20.00) credited in full instead of
    // voided: the customer got all of it back, so the later parts treat it
    // exactly as a void part. The second bills its 4,000 in tier 1, 20.00;
    // the third bills its 8,000 in tier 2, 16.00, and reprices the second
    // part's 4,000 only: −12.00. (The old code counted the credited part as
    // billed and repriced its 4,000 too, −24.00: the customer got 12.00 of
    // the 20.00 refunded by the credit note a second time.)
    let calls = [dec!(4000), dec!(4000), dec!(8000)];
    let full = Fate::Credited(vec![CreditRequest::Full]);
    let parts = volume_in_parts_after(VOLUME_BASIC, &calls, &[full, Fate::Billed, Fate::Billed]);
    assert!(parts[0].is_fully_credited());
    assert!(!parts[0].counts_as_billed());
    assert_eq!(parts[0].totals.amount_credited, dec!(20.00));
    assert_eq!(amounts(&parts[1]), ["20.00"]);
    assert_eq!(amounts(&parts[2]), ["16.00", "-12.00"]);
    assert!(
        parts[2].lines[1]
            .description
            .contains("4000 units billed earlier in the period for 20.00"),
        "{}",
        parts[2].lines[1].description
    );
    // The credited part's 4,000 still count toward the tier (16,000 in
    // April: tier 2), as a void part's do: the same invoices as with the
    // first part void.
    let void = volume_in_parts_after(
        VOLUME_BASIC,
        &calls,
        &[Fate::Void, Fate::Billed, Fate::Billed],
    );
    assert_eq!(amounts(&parts[2]), amounts(&void[2]));
    // Credited in full by two notes (5.00, then the 15.00 left): what
    // counts is that the notes add up to the invoice's total.
    let two_notes = Fate::Credited(vec![
        CreditRequest::Amount { amount: dec!(5) },
        CreditRequest::Full,
    ]);
    let parts = volume_in_parts_after(
        VOLUME_BASIC,
        &calls,
        &[two_notes, Fate::Billed, Fate::Billed],
    );
    assert!(parts[0].is_fully_credited());
    assert_eq!(amounts(&parts[2]), ["16.00", "-12.00"]);
    // Two parts, the first credited in full: the rest bills its 8,000 at
    // the tier of the period's 12,000, 16.00, and reprices nothing (the old
    // code: −12.00 more).
    let two = volume_in_parts_after(
        VOLUME_BASIC,
        &[dec!(4000), dec!(8000)],
        &[Fate::Credited(vec![CreditRequest::Full]), Fate::Billed],
    );
    assert_eq!(amounts(&two[1]), ["16.00"]);
    // With a 100.00 monthly minimum, the first part (20.00 + a true-up of
    // 13.33) credited in full: its days and usage count for no minimum, as
    // a void part's. The second part owes 100 × 10/30 = 33.33, a true-up of
    // 13.33; the third: the parts billed (04-11 to the end) owe 66.67, their
    // usage with the repricing came to 24.00: 29.34. 66.67 for the parts
    // billed, as with the first part void.
    let minimum = format!("minimum = \"100.00\"\n{VOLUME_BASIC}");
    let parts = volume_in_parts_after(
        &minimum,
        &calls,
        &[
            Fate::Credited(vec![CreditRequest::Full]),
            Fate::Billed,
            Fate::Billed,
        ],
    );
    assert_eq!(amounts(&parts[0]), ["20.00", "13.33"]);
    assert_eq!(parts[0].totals.amount_credited, dec!(33.33));
    assert_eq!(amounts(&parts[1]), ["20.00", "13.33"]);
    assert_eq!(amounts(&parts[2]), ["16.00", "29.34", "-12.00"]);
    assert_eq!(parts[1].totals.total + parts[2].totals.total, dec!(66.67));
    // Calls at 0.01 and the 100.00 minimum, 1,000 calls to 04-11 (10.00 and
    // a true-up of 23.33, all of it credited), then 9,000 (90.00): the rest
    // of April compares its own usage with its own share, 66.67, and owes
    // nothing more; it does not credit the first part's true-up (the old
    // code did, −23.33: the customer got it back twice).
    let (_, rest) = minimum_in_parts_after(
        PER_UNIT_MINIMUM,
        dec!(1000),
        "2026-04-11T00:00:00Z",
        dec!(9000),
        &Fate::Credited(vec![CreditRequest::Full]),
    );
    assert_eq!(amounts(&rest), ["90.00"]);
}

#[test]
fn semantics_invoice_a_partially_credited_part_is_billed_as_invoiced() {
    // The same three volume parts, 5.00 of goodwill credited on the first
    // part's 20.00: a partial credit note is an adjustment of its own. The
    // part counts as billed as it was invoiced: the third part reprices the
    // 8,000 units billed earlier for 40.00, −24.00, exactly as with no
    // credit note; the 5.00 is neither clawed back nor given again.
    let calls = [dec!(4000), dec!(4000), dec!(8000)];
    let none = volume_in_parts(&calls, &[true, true, true]);
    let goodwill = Fate::Credited(vec![CreditRequest::Amount { amount: dec!(5) }]);
    let parts = volume_in_parts_after(
        VOLUME_BASIC,
        &calls,
        &[goodwill, Fate::Billed, Fate::Billed],
    );
    assert_eq!(parts[0].totals.amount_credited, dec!(5.00));
    assert!(!parts[0].is_fully_credited());
    assert!(parts[0].counts_as_billed());
    assert_eq!(amounts(&parts[2]), ["16.00", "-24.00"]);
    assert!(
        parts[2].lines[1]
            .description
            .contains("8000 units billed earlier in the period for 40.00"),
        "{}",
        parts[2].lines[1].description
    );
    assert_eq!(amounts(&parts[2]), amounts(&none[2]));
    // A disputed line credited (4.00 of the first part's usage line): the
    // same.
    let disputed = Fate::Credited(vec![CreditRequest::Lines {
        lines: vec![(0, dec!(4))],
    }]);
    let parts = volume_in_parts_after(
        VOLUME_BASIC,
        &calls,
        &[disputed, Fate::Billed, Fate::Billed],
    );
    assert_eq!(amounts(&parts[2]), ["16.00", "-24.00"]);
    // The minimum: 1,000 calls to 04-11 (10.00 and a true-up of 23.33:
    // 33.33), 5.00 of it credited, then 9,000 (90.00): the rest credits the
    // first part's true-up, −23.33, as with no credit note.
    let goodwill = Fate::Credited(vec![CreditRequest::Amount { amount: dec!(5) }]);
    let (part1, rest) = minimum_in_parts_after(
        PER_UNIT_MINIMUM,
        dec!(1000),
        "2026-04-11T00:00:00Z",
        dec!(9000),
        &goodwill,
    );
    assert_eq!(part1.totals.amount_credited, dec!(5.00));
    assert_eq!(amounts(&rest), ["90.00", "-23.33"]);
}

#[test]
fn semantics_invoice_a_credited_true_up_is_not_handed_back_again() {
    // 100.00 monthly minimum, calls at 0.01, April: 1,000 calls (10.00) to
    // 04-11 and a true-up of 23.33 (line 1 of the first part's invoice).
    let no_gap = "2026-04-11T00:00:00Z";
    let true_up = |amount: Decimal| {
        Fate::Credited(vec![CreditRequest::Lines {
            lines: vec![(1, amount)],
        }])
    };
    let april = |fate: &Fate, second: Decimal| {
        minimum_in_parts_after(PER_UNIT_MINIMUM, dec!(1000), no_gap, second, fate)
    };
    // What April costs the customer: both invoices less the credit notes.
    let net = |a: &Invoice, b: &Invoice| {
        a.totals.total + b.totals.total - a.totals.amount_credited - b.totals.amount_credited
    };

    // The operator credits the whole true-up line (23.33); 9,000 calls
    // (90.00) after: the usage reaches the minimum, the true-up was not
    // due, but the credit note already gave it back: the rest credits
    // nothing more. April: 33.33 + 90.00 − 23.33 = 100.00, the usage (the
    // old code credited −23.33 again: 76.67).
    let (part1, rest) = april(&true_up(dec!(23.33)), dec!(9000));
    assert_eq!(amounts(&part1), ["10.00", "23.33"]);
    assert_eq!(part1.lines[1].kind, InvoiceLineKind::Minimum);
    assert_eq!(part1.totals.amount_credited, dec!(23.33));
    assert!(part1.counts_as_billed());
    assert_eq!(amounts(&rest), ["90.00"]);
    assert_eq!(net(&part1, &rest), dec!(100.00));

    // 10.00 of the 23.33 credited: the rest hands back the 13.33 the note
    // did not: −13.33, 100.00 in all (the old code: −23.33, 90.00).
    let (part1, rest) = april(&true_up(dec!(10)), dec!(9000));
    assert_eq!(amounts(&rest), ["90.00", "-13.33"]);
    assert!(
        rest.lines[1]
            .description
            .contains("23.33 billed earlier in the period as minimum, 10.00 of it credited"),
        "{}",
        rest.lines[1].description
    );
    assert_eq!(net(&part1, &rest), dec!(100.00));

    // The rest does not reach the minimum: 2,000 calls (20.00), 70.00
    // short over April, 23.33 of it billed: 46.67, as with no note. The
    // operator's credit is a concession that stays given: April comes to
    // 100.00 − 23.33 = 76.67 (counting the credited true-up as not billed
    // would bill 70.00 and take the credit back: 100.00); 10.00 credited:
    // 90.00.
    let (part1, rest) = april(&true_up(dec!(23.33)), dec!(2000));
    assert_eq!(amounts(&rest), ["20.00", "46.67"]);
    assert_eq!(net(&part1, &rest), dec!(76.67));
    let (part1, rest) = april(&true_up(dec!(10)), dec!(2000));
    assert_eq!(amounts(&rest), ["20.00", "46.67"]);
    assert_eq!(net(&part1, &rest), dec!(90.00));

    // In between: 8,000 calls (80.00), April's 90.00 are 10.00 short. The
    // whole true-up credited covers those 10.00: nothing more either way,
    // April 90.00, the usage (the old code: −13.33, 76.67). 10.00 credited:
    // the 10.00 short are what the note gave back; the rest hands back the
    // other 13.33: April 90.00 again.
    let (part1, rest) = april(&true_up(dec!(23.33)), dec!(8000));
    assert_eq!(amounts(&rest), ["80.00"]);
    assert_eq!(net(&part1, &rest), dec!(90.00));
    let (part1, rest) = april(&true_up(dec!(10)), dec!(8000));
    assert_eq!(amounts(&rest), ["80.00", "-13.33"]);
    assert_eq!(net(&part1, &rest), dec!(90.00));

    // Two notes naming the line, 10.00 then 13.33: as one of 23.33.
    let twice = Fate::Credited(vec![
        CreditRequest::Lines {
            lines: vec![(1, dec!(10))],
        },
        CreditRequest::Lines {
            lines: vec![(1, dec!(13.33))],
        },
    ]);
    let (part1, rest) = april(&twice, dec!(9000));
    assert_eq!(amounts(&rest), ["90.00"]);
    assert_eq!(net(&part1, &rest), dec!(100.00));

    // The true-up credited, then the rest of the invoice (the 10.00 of
    // usage): credited in full, the part is void for the rest of April,
    // which compares its own usage with its own share (66.67): 90.00, or
    // 20.00 + 46.67.
    let then_all = Fate::Credited(vec![
        CreditRequest::Lines {
            lines: vec![(1, dec!(23.33))],
        },
        CreditRequest::Full,
    ]);
    let (part1, rest) = april(&then_all, dec!(9000));
    assert!(part1.is_fully_credited());
    assert_eq!(amounts(&rest), ["90.00"]);
    let (_, rest) = april(&then_all, dec!(2000));
    assert_eq!(amounts(&rest), ["20.00", "46.67"]);

    // Goodwill (5.00 spread over the invoice, 3.50 of it on the true-up
    // line) names no line: the rest credits −23.33, as with no note.
    let (part1, rest) = april(
        &Fate::Credited(vec![CreditRequest::Amount { amount: dec!(5) }]),
        dec!(9000),
    );
    assert_eq!(amounts(&rest), ["90.00", "-23.33"]);
    assert_eq!(net(&part1, &rest), dec!(95.00));

    // A note never makes a later part bill more. Three parts, 1,000 calls
    // to 04-11 (+23.33), 9,000 to 04-21 (the parts owe 66.67, their usage
    // came to 100.00: −23.33), 1,000 to the end; the operator credits the
    // first part's true-up after the second part handed it back: the third
    // part does not bill it back (+23.33), the note stays given.
    let parts = parts_credited_later(
        PER_UNIT_MINIMUM,
        &[dec!(1000), dec!(9000), dec!(1000)],
        &[Fate::Billed, Fate::Billed, Fate::Billed],
        &[(
            0,
            2,
            CreditRequest::Lines {
                lines: vec![(1, dec!(23.33))],
            },
        )],
    );
    assert_eq!(amounts(&parts[1]), ["90.00", "-23.33"]);
    assert_eq!(parts[0].totals.amount_credited, dec!(23.33));
    assert_eq!(amounts(&parts[2]), ["10.00"]);
}

/// Calls at 0.01 with a 100.00 monthly minimum (the charge of
/// [`minimum_in_parts`]).
const PER_UNIT_MINIMUM: &str = r#"minimum = "100.00"
price = { model = "per_unit", unit_price = "0.01" }"#;

/// Basic with a 100.00 monthly minimum and calls at 0.01, April (30 days)
/// billed in two parts: `first` calls on the final invoice of a
/// cancellation on 04-11 (10 days), then, reactivated at `back` (04-11: no
/// gap), `second` calls on the rest of April. `void`: the first part's
/// invoice was voided (it billed nothing). Returns both invoices.
fn minimum_in_parts(first: Decimal, back: &str, second: Decimal, void: bool) -> (Invoice, Invoice) {
    minimum_in_parts_priced(PER_UNIT_MINIMUM, first, back, second, void)
}

/// [`minimum_in_parts`] with the charge's body `charge`.
fn minimum_in_parts_priced(
    charge: &str,
    first: Decimal,
    back: &str,
    second: Decimal,
    void: bool,
) -> (Invoice, Invoice) {
    let fate = if void { Fate::Void } else { Fate::Billed };
    minimum_in_parts_after(charge, first, back, second, &fate)
}

/// [`minimum_in_parts_priced`] with what became of the first part's
/// invoice (`fate`) before the rest of April was closed.
fn minimum_in_parts_after(
    charge: &str,
    first: Decimal,
    back: &str,
    second: Decimal,
    fate: &Fate,
) -> (Invoice, Invoice) {
    let c = catalog(&Spec {
        basic_charge: charge,
        ..Spec::default()
    });
    let basic = plan(&c, "basic");
    let p = april();
    let cut = ts("2026-04-11T00:00:00Z");
    let back = ts(back);
    let calls = |q: Decimal| vec![usage("api_calls", &[("plan", q)])];
    let mut part1 = input(
        Currency::USD,
        period("2026-04-01T00:00:00Z", "2026-04-11T00:00:00Z"),
        vec![segment(basic, p.start, cut, calls(first))],
    );
    part1.nominal_period = Some(p);
    let (part1, notes) = settle(compute_invoice(&part1).unwrap(), 1, fate);
    let mut segments = vec![segment(basic, p.start, cut, calls(first))];
    if back > cut {
        let mut gap = segment(basic, cut, back, Vec::new());
        gap.canceled = true;
        segments.push(gap);
    }
    segments.push(segment(basic, back, p.end, calls(second)));
    let mut rest = input(Currency::USD, p, segments);
    rest.settled_until = Some(cut);
    earlier_parts_billed(std::slice::from_ref(&part1), &notes)
        .unwrap()
        .apply_to(&mut rest);
    (part1, compute_invoice(&rest).unwrap())
}

#[test]
fn semantics_invoice_minimum_over_the_parts_of_a_period() {
    let no_gap = "2026-04-11T00:00:00Z";
    // 1,000 calls (10.00) in the first 10 days: below the part's share of
    // the minimum, 100 × 10/30 = 33.33, so a true-up of 23.33. Then 9,000
    // calls (90.00): the parts billed so far (all April) owe 100.00 and
    // their usage came to 100.00, so no true-up is due and the rest of
    // April credits the first part's: −23.33. April in all: 33.33 + 66.67
    // = 100.00, as one invoice over April (10,000 calls, 100.00) bills it.
    let (part1, rest) = minimum_in_parts(dec!(1000), no_gap, dec!(9000), false);
    assert_eq!(amounts(&part1), ["10.00", "23.33"]);
    assert_eq!(amounts(&rest), ["90.00", "-23.33"]);
    let credit = &rest.lines[1];
    assert_eq!(credit.kind, InvoiceLineKind::Minimum);
    assert_eq!(credit.charge.as_deref(), Some("api_calls"));
    assert!(
        credit
            .description
            .contains("23.33 billed earlier in the period as minimum"),
        "{}",
        credit.description
    );
    assert_eq!(part1.totals.total + rest.totals.total, dec!(100.00));
    // Usage still short of the minimum after both parts: 10.00 + 20.00 =
    // 30.00; the period owes 70.00 of true-up, 23.33 of it billed: 46.67.
    let (part1, rest) = minimum_in_parts(dec!(1000), no_gap, dec!(2000), false);
    assert_eq!(amounts(&rest), ["20.00", "46.67"]);
    assert_eq!(part1.totals.total + rest.totals.total, dec!(100.00));
    // The first part above its share (50.00, no true-up), the rest short of
    // its own (10.00 < 66.67): the period's 60.00 owe 40.00, not 56.67.
    let (part1, rest) = minimum_in_parts(dec!(5000), no_gap, dec!(1000), false);
    assert_eq!(amounts(&part1), ["50.00"]);
    assert_eq!(amounts(&rest), ["10.00", "40.00"]);
    assert_eq!(part1.totals.total + rest.totals.total, dec!(100.00));
    // Canceled from 04-11 to 04-16 (5 days not billed): the gap owes no
    // share of the minimum, as it owes no base. The parts billed owe
    // 100 × 25/30 = 83.33: 9,000 more calls bring the usage to 100.00,
    // above it: −23.33 (100.00 in all, the usage); 2,000 more (30.00):
    // 83.333… − 30 − 23.33 = 30.00, 83.33 in all.
    let gap = "2026-04-16T00:00:00Z";
    let (part1, rest) = minimum_in_parts(dec!(1000), gap, dec!(9000), false);
    assert_eq!(amounts(&rest), ["90.00", "-23.33"]);
    assert_eq!(part1.totals.total + rest.totals.total, dec!(100.00));
    let (part1, rest) = minimum_in_parts(dec!(1000), gap, dec!(2000), false);
    assert_eq!(amounts(&rest), ["20.00", "30.00"]);
    assert_eq!(part1.totals.total + rest.totals.total, dec!(83.33));
    // The first part's invoice void: it billed nothing, neither usage nor
    // minimum; the rest of April compares its own usage with its own share
    // (90.00 ≥ 66.67: nothing; 20.00: 46.67).
    let (_, rest) = minimum_in_parts(dec!(1000), no_gap, dec!(9000), true);
    assert_eq!(amounts(&rest), ["90.00"]);
    let (_, rest) = minimum_in_parts(dec!(1000), no_gap, dec!(2000), true);
    assert_eq!(amounts(&rest), ["20.00", "46.67"]);
}

#[test]
fn semantics_invoice_minimum_over_parts_counts_the_volume_repricing() {
    // Volume (to 1,000 at 0.01, to 10,000 at 0.005, then 0.002) with a
    // 100.00 minimum. 4,000 calls to 04-11: 20.00, short of 33.33: 13.33.
    // 8,000 more: the period's 12,000 reach tier 2: 16.00, and the 4,000
    // repriced, −12.00: the usage of April came to 24.00, 76.00 short of
    // the minimum, 13.33 of it billed: 62.67. April in all 100.00 (the old
    // rule compared 16.00 with 66.67 and billed 50.67: 88.00 in all).
    let volume = r#"minimum = "100.00"
price = { model = "volume", tiers = [ { up_to = 1000, unit_price = "0.01" }, { up_to = 10000, unit_price = "0.005" }, { unit_price = "0.002" } ] }"#;
    let (part1, rest) = minimum_in_parts_priced(
        volume,
        dec!(4000),
        "2026-04-11T00:00:00Z",
        dec!(8000),
        false,
    );
    assert_eq!(amounts(&part1), ["20.00", "13.33"]);
    assert_eq!(amounts(&rest), ["16.00", "62.67", "-12.00"]);
    assert_eq!(rest.lines[1].kind, InvoiceLineKind::Minimum);
    assert_eq!(part1.totals.total + rest.totals.total, dec!(100.00));
}

#[test]
fn semantics_invoice_minimum_over_three_parts() {
    // 100.00 minimum, calls at 0.01, April. Part 1 to 04-11: 1,000 calls,
    // 10.00 + 23.33. Canceled to 04-16; part 2 from 04-16 to a second
    // cancellation on 04-21: 500 calls (5.00); the parts billed (15 days)
    // owe 50.00, their usage came to 15.00: 35.00 short, 23.33 billed:
    // 11.67 (50.00 in all). Canceled to 04-26; the rest of April, 9,000
    // calls (90.00): the parts billed (20 days) owe 66.67, their usage came
    // to 105.00: the 35.00 of true-up is credited, −35.00; April in all
    // 105.00, the usage. Part 2 void instead: part 1 and the rest owe
    // 33.33 + 16.67 = 50.00, their usage 100.00: −23.33.
    let c = catalog(&Spec {
        basic_charge: r#"minimum = "100.00"
price = { model = "per_unit", unit_price = "0.01" }"#,
        ..Spec::default()
    });
    let basic = plan(&c, "basic");
    let p = april();
    let t = |d: &str| ts(&format!("2026-04-{d}T00:00:00Z"));
    let calls = |q: Decimal| vec![usage("api_calls", &[("plan", q)])];
    let canceled = |from: &str, to: &str| {
        let mut s = segment(basic, t(from), t(to), Vec::new());
        s.canceled = true;
        s
    };
    let kept = |i: &Invoice| -> Vec<InvoiceLine> {
        i.lines
            .iter()
            .filter(|l| matches!(l.kind, InvoiceLineKind::Usage | InvoiceLineKind::Minimum))
            .cloned()
            .collect()
    };
    let mut first = input(
        Currency::USD,
        period("2026-04-01T00:00:00Z", "2026-04-11T00:00:00Z"),
        vec![segment(basic, p.start, t("11"), calls(dec!(1000)))],
    );
    first.nominal_period = Some(p);
    let part1 = compute_invoice(&first).unwrap();
    assert_eq!(amounts(&part1), ["10.00", "23.33"]);
    let mut second = input(
        Currency::USD,
        period("2026-04-01T00:00:00Z", "2026-04-21T00:00:00Z"),
        vec![
            segment(basic, p.start, t("11"), calls(dec!(1000))),
            canceled("11", "16"),
            segment(basic, t("16"), t("21"), calls(dec!(500))),
        ],
    );
    second.nominal_period = Some(p);
    second.settled_until = Some(t("11"));
    second.earlier_parts = vec![period("2026-04-01T00:00:00Z", "2026-04-11T00:00:00Z")];
    second.earlier_usage = kept(&part1);
    let part2 = compute_invoice(&second).unwrap();
    assert_eq!(amounts(&part2), ["5.00", "11.67"]);
    let rest_of = |parts: Vec<&Invoice>| {
        let mut rest = input(
            Currency::USD,
            p,
            vec![
                segment(basic, p.start, t("11"), calls(dec!(1000))),
                canceled("11", "16"),
                segment(basic, t("16"), t("21"), calls(dec!(500))),
                canceled("21", "26"),
                segment(basic, t("26"), p.end, calls(dec!(9000))),
            ],
        );
        rest.settled_until = Some(t("21"));
        rest.earlier_parts = parts
            .iter()
            .map(|i| tollgate_core::period::Period::new(i.period_start, i.period_end).unwrap())
            .collect();
        rest.earlier_usage = parts.iter().flat_map(|i| kept(i)).collect();
        compute_invoice(&rest).unwrap()
    };
    let rest = rest_of(vec![&part1, &part2]);
    assert_eq!(amounts(&rest), ["90.00", "-35.00"]);
    assert_eq!(
        part1.totals.total + part2.totals.total + rest.totals.total,
        dec!(105.00)
    );
    let rest = rest_of(vec![&part1]);
    assert_eq!(amounts(&rest), ["90.00", "-23.33"]);
}

proptest! {
    /// A period billed in two parts (cut at any second, any reactivation
    /// without a gap) bills the same minimum, and the same total, as one
    /// invoice over the period: to the minor unit.
    #[test]
    fn prop_minimum_over_parts_adds_up_to_one_invoice(
        cut in 1i64..(30 * 86_400),
        first in 0u32..15_000,
        second in 0u32..15_000,
    ) {
        let c = catalog(&Spec {
            basic_charge: r#"minimum = "100.00"
price = { model = "per_unit", unit_price = "0.013" }"#,
            ..Spec::default()
        });
        let basic = plan(&c, "basic");
        let p = april();
        let at = jiff::Timestamp::from_second(p.start.as_second() + cut).unwrap();
        let calls = |q: u32| vec![usage("api_calls", &[("plan", Decimal::from(q))])];
        let mut part1 = input(
            Currency::USD,
            tollgate_core::period::Period::new(p.start, at).unwrap(),
            vec![segment(basic, p.start, at, calls(first))],
        );
        part1.nominal_period = Some(p);
        let part1 = compute_invoice(&part1).unwrap();
        let mut rest = input(
            Currency::USD,
            p,
            vec![
                segment(basic, p.start, at, calls(first)),
                segment(basic, at, p.end, calls(second)),
            ],
        );
        rest.settled_until = Some(at);
        rest.earlier_parts = vec![tollgate_core::period::Period::new(p.start, at).unwrap()];
        rest.earlier_usage = part1.lines.clone();
        let rest = compute_invoice(&rest).unwrap();
        let minimum = |i: &Invoice| -> Decimal {
            i.lines
                .iter()
                .filter(|l| l.kind == InvoiceLineKind::Minimum)
                .map(|l| l.amount)
                .sum()
        };
        let usage_total: Decimal = [&part1, &rest]
            .iter()
            .flat_map(|i| &i.lines)
            .filter(|l| l.kind == InvoiceLineKind::Usage)
            .map(|l| l.amount)
            .sum();
        // One invoice over the period: the minimum tops the parts' usage up
        // to 100.00.
        let whole_minimum = (dec!(100.00) - usage_total).max(Decimal::ZERO);
        prop_assert_eq!(minimum(&part1) + minimum(&rest), whole_minimum);
        prop_assert_eq!(
            part1.totals.total + rest.totals.total,
            usage_total.max(dec!(100.00))
        );
        prop_assert!(rest.totals.total >= Decimal::ZERO);
    }
}

proptest! {
    /// A period billed in two parts (cut at any second), the first part's
    /// invoice credited before the rest is closed: a note naming its
    /// true-up line (any amount up to the line) is handed back once, so
    /// the period costs the customer `max(usage, 100.00 − credited)`,
    /// never less; goodwill spread over the invoice (any amount short of
    /// its total) changes nothing on the invoices: `max(usage, 100.00)`
    /// less the goodwill. To the minor unit.
    #[test]
    fn prop_a_credited_true_up_is_handed_back_once(
        cut in 1i64..(30 * 86_400),
        first in 1u32..15_000,
        second in 0u32..15_000,
        per_mille in 1u32..=1000,
        named in any::<bool>(),
    ) {
        let c = catalog(&Spec {
            basic_charge: r#"minimum = "100.00"
price = { model = "per_unit", unit_price = "0.013" }"#,
            ..Spec::default()
        });
        let basic = plan(&c, "basic");
        let p = april();
        let at = jiff::Timestamp::from_second(p.start.as_second() + cut).unwrap();
        let calls = |q: u32| vec![usage("api_calls", &[("plan", Decimal::from(q))])];
        let mut part1 = input(
            Currency::USD,
            tollgate_core::period::Period::new(p.start, at).unwrap(),
            vec![segment(basic, p.start, at, calls(first))],
        );
        part1.nominal_period = Some(p);
        let (mut part1, _) = settle(compute_invoice(&part1).unwrap(), 1, &Fate::Billed);
        let share = |of: Decimal| {
            (of * Decimal::from(per_mille) / dec!(1000))
                .round_dp(2)
                .max(dec!(0.01))
                .min(of)
        };
        let true_up = part1
            .lines
            .iter()
            .position(|l| l.kind == InvoiceLineKind::Minimum && l.amount > Decimal::ZERO);
        let request = match (named, true_up) {
            (true, Some(i)) => Some(CreditRequest::Lines {
                lines: vec![(i, share(part1.lines[i].amount))],
            }),
            (false, _) if part1.totals.total > dec!(0.01) => Some(CreditRequest::Amount {
                amount: share(part1.totals.total - dec!(0.01)),
            }),
            _ => None,
        };
        let notes: Vec<CreditNote> = request
            .iter()
            .map(|r| credit_part(&mut part1, r))
            .collect();
        prop_assert!(part1.counts_as_billed());
        let mut rest = input(
            Currency::USD,
            p,
            vec![
                segment(basic, p.start, at, calls(first)),
                segment(basic, at, p.end, calls(second)),
            ],
        );
        rest.settled_until = Some(at);
        earlier_parts_billed(std::slice::from_ref(&part1), &notes)
            .unwrap()
            .apply_to(&mut rest);
        let rest = compute_invoice(&rest).unwrap();
        let usage_total: Decimal = [&part1, &rest]
            .iter()
            .flat_map(|i| &i.lines)
            .filter(|l| l.kind == InvoiceLineKind::Usage)
            .map(|l| l.amount)
            .sum();
        let credited = part1.totals.amount_credited;
        let invoiced = part1.totals.total + rest.totals.total;
        if named && true_up.is_some() {
            prop_assert_eq!(
                invoiced - credited,
                usage_total.max(dec!(100.00) - credited)
            );
        } else {
            prop_assert_eq!(invoiced, usage_total.max(dec!(100.00)));
        }
    }
}

#[test]
fn semantics_invoice_grant_burn_is_not_billed() {
    // All 5,000 calls drawn from a welcome grant: nothing billed, the grant
    // shown in the line's source.
    let c = catalog(&Spec::default());
    let p = april();
    let i = whole(
        Currency::USD,
        p,
        plan(&c, "basic"),
        vec![usage("api_calls", &[("grant_welcome", dec!(5000))])],
    );
    let inv = compute_invoice(&i).unwrap();
    assert_eq!(amounts(&inv), ["0.00"]);
    let line = &inv.lines[0];
    assert_eq!(line.quantity, dec!(0));
    assert_eq!(
        line.source.as_ref().unwrap().buckets["grant_welcome"],
        dec!(5000)
    );
    let explained = line.explain().unwrap();
    assert!(
        explained.contains("not billed (grants): grant_welcome 5000"),
        "{explained}"
    );
    assert_eq!(inv.totals.total.to_string(), "0.00");
}

#[test]
fn semantics_invoice_anchor_on_the_31st_across_february() {
    // Anniversary billing from 2026-01-31: the periods are [01-31, 02-28),
    // 28 days, then [02-28, 03-31), 31 days.
    let cycle = BillingCycle::new(
        Interval::Month,
        Anchoring::Anniversary,
        ts("2026-01-31T00:00:00Z"),
        TimeZone::UTC,
    );
    let short = cycle.period_index(0).unwrap();
    let next = cycle.period_index(1).unwrap();
    assert_eq!(
        short,
        period("2026-01-31T00:00:00Z", "2026-02-28T00:00:00Z")
    );
    assert_eq!(next, period("2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z"));

    // In arrears: the short period is a whole period, its base is the full 10.00.
    let c = catalog(&arrears());
    let (basic, pro) = (plan(&c, "basic"), plan(&c, "pro"));
    let full = whole(Currency::USD, short, basic, vec![]);
    let inv = compute_invoice(&full).unwrap();
    assert_eq!(amounts(&inv), ["10.00", "0.00"]);
    assert_eq!(inv.lines[0].description, "Basic plan (monthly)");

    // An upgrade on 02-14, half of the 28 days: 10 × 14/28 + 30 × 14/28.
    let at = ts("2026-02-14T00:00:00Z");
    let changed = input(
        Currency::USD,
        short,
        vec![
            segment(basic, short.start, at, vec![]),
            segment(pro, at, short.end, vec![]),
        ],
    );
    let inv = compute_invoice(&changed).unwrap();
    assert_eq!(amounts(&inv), ["5.00", "15.00", "0.00", "0.00"]);
    assert_eq!(inv.totals.total.to_string(), "20.00");

    // In advance: closing the short period collects the next one, 31 days, in full.
    let c = catalog(&Spec::default());
    let basic = plan(&c, "basic");
    let mut advance = whole(Currency::USD, short, basic, vec![]);
    advance.advance = Some((basic, next));
    let inv = compute_invoice(&advance).unwrap();
    assert_eq!(amounts(&inv), ["10.00", "0.00"]);
    assert_eq!(inv.lines[0].period_end, ts("2026-03-31T00:00:00Z"));
}

#[test]
fn semantics_invoice_first_partial_calendar_period_in_arrears() {
    // Calendar billing from 2026-04-10: the first period [04-10, 05-01) is
    // prorated against the whole of April, 10 × 21/30 = 7.00.
    let cycle = BillingCycle::new(
        Interval::Month,
        Anchoring::Calendar,
        ts("2026-04-10T00:00:00Z"),
        TimeZone::UTC,
    );
    let first = cycle.period_index(0).unwrap();
    let c = catalog(&arrears());
    let mut i = whole(Currency::USD, first, plan(&c, "basic"), vec![]);
    i.nominal_period = Some(cycle.nominal_period(0).unwrap());
    let inv = compute_invoice(&i).unwrap();
    assert_eq!(amounts(&inv), ["7.00", "0.00"]);
    assert_eq!(
        inv.lines[0].description,
        "Basic plan (monthly), 2026-04-10 to 2026-05-01 (prorated)"
    );
    // Without the nominal period the short period would be billed in full.
    i.nominal_period = None;
    assert_eq!(amounts(&compute_invoice(&i).unwrap()), ["10.00", "0.00"]);
}

#[test]
fn semantics_invoice_yearly_plan_changed_mid_year() {
    // $120/year → $240/year on 2026-07-02, in arrears: 182 of 365 days on
    // Basic, 183 on Pro.
    let c = catalog(&Spec {
        billing: "in_arrears",
        interval: "year",
        basic_price: "120.00",
        pro_price: "240.00",
        ..Spec::default()
    });
    let year = period("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z");
    let at = ts("2026-07-02T00:00:00Z");
    let i = input(
        Currency::USD,
        year,
        vec![
            segment(plan(&c, "basic"), year.start, at, vec![]),
            segment(plan(&c, "pro"), at, year.end, vec![]),
        ],
    );
    let inv = compute_invoice(&i).unwrap();
    // 120 × 182/365 = 59.8356… → 59.84; 240 × 183/365 = 120.3287… → 120.33.
    assert_eq!(&amounts(&inv)[..2], ["59.84", "120.33"]);
    assert_eq!(
        inv.lines[0].description,
        "Basic plan (yearly), 2026-01-01 to 2026-07-02 (prorated)"
    );
    assert_eq!(inv.totals.total.to_string(), "180.17");
}

#[test]
fn semantics_invoice_in_jpy_is_whole_yen() {
    let c = catalog(&Spec {
        currency: "JPY",
        billing: "in_arrears",
        basic_price: "1000",
        pro_price: "3000",
        basic_charge: r#"price = { model = "per_unit", unit_price = "0.3" }"#,
        pro_charge: r#"price = { model = "per_unit", unit_price = "0.2" }"#,
        ..Spec::default()
    });
    let p = march();
    let at = ts("2026-03-10T00:00:00Z");
    let mut i = changed_at(
        Currency::JPY,
        p,
        at,
        (plan(&c, "basic"), dec!(400)),
        (plan(&c, "pro"), dec!(834)),
    );
    i.tax = vat(dec!(0.1), TaxMode::OnTotal);
    let inv = compute_invoice(&i).unwrap();
    // ¥1,000 × 9/31 = 290.32 → ¥290; ¥3,000 × 22/31 = 2,129.03 → ¥2,129;
    // 400 × 0.3 = ¥120; 834 × 0.2 = 166.8 → ¥167. Tax 10 % of ¥2,706 = 270.6 → ¥271.
    assert_eq!(amounts(&inv), ["290", "2129", "120", "167"]);
    assert_eq!(inv.totals.subtotal.to_string(), "2706");
    assert_eq!(inv.totals.tax.to_string(), "271");
    assert_eq!(inv.totals.total.to_string(), "2977");
    assert_eq!(inv.totals.amount_due.to_string(), "2977");
}

#[test]
fn semantics_invoice_minimum_over_split_segments() {
    // Basic with a 5.00 minimum, the period split on April 10 (a version
    // migration of the same terms): 700 then 500 calls, 1,000 included.
    let c = catalog(&Spec {
        basic_charge: r#"included = 1000
minimum = "5.00"
price = { model = "per_unit", unit_price = "0.002" }"#,
        ..Spec::default()
    });
    let basic = plan(&c, "basic");
    let p = april();
    let at = ts("2026-04-10T00:00:00Z");
    let i = changed_at(Currency::USD, p, at, (basic, dec!(700)), (basic, dec!(500)));
    let inv = compute_invoice(&i).unwrap();
    // 200 billable calls × 0.002 = 0.40; the minimum 5 × 9/30 + 5 × 21/30 = 5.00
    // adds 4.60.
    assert_eq!(amounts(&inv), ["0.00", "0.40", "4.60"]);
    assert_eq!(inv.lines[2].kind, InvoiceLineKind::Minimum);
    assert_eq!(inv.totals.total.to_string(), "5.00");
}

#[test]
fn semantics_invoice_dimensional_lines_per_group() {
    let c = catalog(&Spec {
        basic_charge: r#"price.group_by = ["region"]
price.prices = [ { when = { region = "eu" }, model = "per_unit", unit_price = "0.003" } ]
price.default = { model = "per_unit", unit_price = "0.002" }"#,
        ..Spec::default()
    });
    let p = april();
    let mut eu = usage("api_calls", &[("plan", dec!(1000))]);
    eu.dimensions.insert("region".into(), "eu".into());
    let mut us = usage("api_calls", &[("plan", dec!(500))]);
    us.dimensions.insert("region".into(), "us".into());
    let i = whole(Currency::USD, p, plan(&c, "basic"), vec![us, eu]);
    let inv = compute_invoice(&i).unwrap();
    assert_eq!(amounts(&inv), ["3.00", "1.00"]);
    assert!(inv.lines[0].description.ends_with("(region=eu)"));
    assert_eq!(inv.lines[1].dimensions["region"], "us");
}

/// Basic in arrears, 16,000 calls: base 10.00 + 15,000 × 0.002 = 30.00.
fn discounted(discounts: Vec<Discount>, tax: TaxRule) -> Invoice {
    let c = catalog(&arrears());
    let p = april();
    let mut i = whole(
        Currency::USD,
        p,
        plan(&c, "basic"),
        vec![usage(
            "api_calls",
            &[("plan", dec!(10000)), ("overage", dec!(6000))],
        )],
    );
    i.discounts = discounts;
    i.tax = tax;
    compute_invoice(&i).unwrap()
}

#[test]
fn semantics_invoice_discounts_and_tax() {
    let percent = Discount::Percent {
        percent: dec!(10),
        description: "Launch 10 %".into(),
        id: None,
    };
    let fifty = Discount::Amount {
        amount: dec!(50),
        description: "Goodwill".into(),
        id: None,
    };
    // 10 % of 40.00 = −4.00; then 50.00 capped at the 36.00 left.
    let inv = discounted(vec![percent, fifty], vat(dec!(0.2), TaxMode::PerLine));
    assert_eq!(amounts(&inv), ["10.00", "30.00", "-4.00", "-36.00"]);
    assert_eq!(inv.totals.subtotal.to_string(), "40.00");
    assert_eq!(inv.totals.discount.to_string(), "-40.00");
    assert_eq!(inv.totals.tax.to_string(), "0.00");
    assert_eq!(inv.totals.total.to_string(), "0.00");

    // 5.00 off, VAT 20 % on the total: (40 − 5) × 0.2 = 7.00.
    let five = Discount::Amount {
        amount: dec!(5),
        description: "Goodwill".into(),
        id: None,
    };
    let inv = discounted(vec![five], vat(dec!(0.2), TaxMode::OnTotal));
    assert_eq!(inv.totals.discount.to_string(), "-5.00");
    assert_eq!(inv.totals.tax.to_string(), "7.00");
    assert_eq!(inv.totals.total.to_string(), "42.00");
    assert!(inv.lines.iter().all(|l| l.tax_amount.is_zero()));
}

#[test]
fn semantics_invoice_tax_per_line_or_on_total() {
    // Two pending 0.05 proration lines at 10 %: per line 0.005 → 0.01 each,
    // on the total 0.10 × 0.1 = 0.01.
    let c = catalog(&Spec::default());
    let p = april();
    let pending = |d: &str| {
        InvoiceLine::fee(
            InvoiceLineKind::Proration,
            d,
            p.start,
            p.end,
            dec!(0.05),
            Currency::USD,
        )
    };
    let mut i = whole(Currency::USD, p, plan(&c, "basic"), vec![]);
    i.pending = vec![pending("a"), pending("b")];
    i.tax = vat(dec!(0.1), TaxMode::PerLine);
    let per_line = compute_invoice(&i).unwrap();
    assert_eq!(amounts(&per_line), ["0.00", "0.05", "0.05"]);
    assert_eq!(per_line.totals.tax.to_string(), "0.02");
    i.tax = vat(dec!(0.1), TaxMode::OnTotal);
    let on_total = compute_invoice(&i).unwrap();
    assert_eq!(on_total.totals.tax.to_string(), "0.01");
    assert_eq!(on_total.totals.total.to_string(), "0.11");
}

#[test]
fn semantics_invoice_numbers_and_overdue() {
    assert_eq!(format_number("INV", 42), "INV-000042");
    assert_eq!(format_number("CN", 1_234_567), "CN-1234567");
    let mut inv = april_invoice();
    inv.due_at = Some(ts("2026-05-15T00:00:00Z"));
    assert!(
        !inv.is_overdue(ts("2026-05-16T00:00:00Z")),
        "a draft is never overdue"
    );
    inv.status = InvoiceStatus::Open;
    assert!(!inv.is_overdue(ts("2026-05-15T00:00:00Z")));
    assert!(inv.is_overdue(ts("2026-05-15T00:00:01Z")));
    inv.status = InvoiceStatus::Paid;
    assert!(!inv.is_overdue(ts("2026-06-01T00:00:00Z")));
}

#[test]
fn semantics_invoice_draft_edit_recomputes_totals() {
    let mut inv = april_invoice(); // 41.50 + VAT 8.30 = 49.80
    let adjustment = InvoiceLine::adjustment(
        "Service credit",
        dec!(-1.50),
        inv.period_start,
        inv.period_end,
        Currency::USD,
    );
    inv.add_line(adjustment);
    // 40.00 + VAT 2.00 + 4.80 + 1.50 − 0.30 = 48.00.
    assert_eq!(inv.totals.subtotal.to_string(), "40.00");
    assert_eq!(inv.totals.tax.to_string(), "8.00");
    assert_eq!(inv.totals.total.to_string(), "48.00");
    inv.record_payment(dec!(20));
    assert_eq!(inv.totals.amount_due.to_string(), "28.00");
}

#[test]
fn semantics_invoice_projection_scales_usage_by_elapsed_time() {
    // 1,000 calls in the first 10 days of April project to 3,000: 2,000
    // billable × 0.002 = 4.00, plus the base.
    let c = catalog(&arrears());
    let p = april();
    let i = whole(
        Currency::USD,
        p,
        plan(&c, "basic"),
        vec![usage("api_calls", &[("plan", dec!(1000))])],
    );
    let projected = project_upcoming(&i, ts("2026-04-11T00:00:00Z")).unwrap();
    assert_eq!(amounts(&projected), ["10.00", "4.00"]);
    assert_eq!(projected.lines[1].quantity, dec!(3000));
    // At the period start nothing is extrapolated.
    let at_start = project_upcoming(&i, p.start).unwrap();
    assert_eq!(amounts(&at_start), ["10.00", "0.00"]);
}

#[test]
fn semantics_invoice_errors() {
    let c = catalog(&Spec::default());
    let basic = plan(&c, "basic");
    let p = april();
    let gap = input(
        Currency::USD,
        p,
        vec![
            segment(basic, p.start, ts("2026-04-10T00:00:00Z"), vec![]),
            segment(basic, ts("2026-04-11T00:00:00Z"), p.end, vec![]),
        ],
    );
    assert!(matches!(
        compute_invoice(&gap),
        Err(BillingError::Segments(_))
    ));
    let none = input(Currency::USD, p, vec![]);
    assert!(matches!(
        compute_invoice(&none),
        Err(BillingError::Segments(_))
    ));
    let jpy = whole(Currency::JPY, p, basic, vec![]);
    assert!(matches!(
        compute_invoice(&jpy),
        Err(BillingError::Currency { .. })
    ));
    let negative = whole(
        Currency::USD,
        p,
        basic,
        vec![usage("api_calls", &[("plan", dec!(-1))])],
    );
    assert!(matches!(
        compute_invoice(&negative),
        Err(BillingError::Invalid(_))
    ));
    let mut too_much = whole(Currency::USD, p, basic, vec![]);
    too_much.discounts = vec![Discount::Percent {
        percent: dec!(150),
        description: "?".into(),
        id: None,
    }];
    assert!(matches!(
        compute_invoice(&too_much),
        Err(BillingError::Invalid(_))
    ));
}

// ---------------------------------------------------------------------------
// Credit notes
// ---------------------------------------------------------------------------

fn issued(mut inv: Invoice) -> Invoice {
    inv.status = InvoiceStatus::Open;
    inv.number = Some(format_number("INV", 1));
    inv
}

fn credit(
    inv: &Invoice,
    already: Decimal,
    request: CreditRequest,
) -> Result<CreditNote, BillingError> {
    credit_note(
        inv,
        already,
        &request,
        "cn_1".into(),
        "test".into(),
        inv.period_end,
    )
}

fn note(inv: &Invoice, already: Decimal, request: CreditRequest) -> Result<Decimal, BillingError> {
    credit(inv, already, request).map(|n| n.total)
}

/// Each credit line's (amount, tax).
fn pairs(cn: &CreditNote) -> Vec<(String, String)> {
    cn.lines
        .iter()
        .map(|l| (l.amount.to_string(), l.tax_amount.to_string()))
        .collect()
}

#[test]
fn semantics_credit_note_fully_reverses_an_invoice() {
    let mut inv = issued(april_invoice()); // 41.50 + VAT 8.30 = 49.80
    let cn = credit_note(
        &inv,
        Decimal::ZERO,
        &CreditRequest::Full,
        "cn_1".into(),
        "duplicate charge".into(),
        ts("2026-05-02T00:00:00Z"),
    )
    .unwrap();
    let lines: Vec<(Option<usize>, String, String)> = cn
        .lines
        .iter()
        .map(|l| {
            (
                l.invoice_line,
                l.amount.to_string(),
                l.tax_amount.to_string(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            (Some(0), "10.00".into(), "2.00".into()),
            (Some(1), "24.00".into(), "4.80".into()),
            (Some(2), "7.50".into(), "1.50".into()),
        ]
    );
    assert_eq!(cn.total.to_string(), "49.80");
    inv.record_credit(cn.total);
    assert_eq!(inv.totals.amount_due.to_string(), "0.00");
    assert_eq!(inv.totals.total - inv.totals.amount_credited, Decimal::ZERO);
    // Nothing is left to credit.
    assert!(note(&inv, cn.total, CreditRequest::Full).is_err());

    // With a discount and the tax on the total: every line, the discount and
    // the tax come back exactly.
    let five = Discount::Amount {
        amount: dec!(5),
        description: "Goodwill".into(),
        id: None,
    };
    let inv = issued(discounted(vec![five], vat(dec!(0.2), TaxMode::OnTotal)));
    let cn = credit(&inv, Decimal::ZERO, CreditRequest::Full).unwrap();
    assert_eq!(
        pairs(&cn),
        [
            ("10.00".into(), "0.00".into()),
            ("30.00".into(), "0.00".into()),
            ("-5.00".into(), "0.00".into()),
            ("0.00".into(), "7.00".into()),
        ]
    );
    assert_eq!(cn.total, inv.totals.total);
    assert_eq!(cn.total.to_string(), "42.00");
}

#[test]
fn semantics_credit_note_amount_and_lines() {
    let inv = issued(april_invoice()); // 49.80
    // 10.00 spread in proportion: each line and its tax × 10/49.80.
    let cn = credit(
        &inv,
        Decimal::ZERO,
        CreditRequest::Amount { amount: dec!(10) },
    )
    .unwrap();
    assert_eq!(
        pairs(&cn),
        [
            ("2.01".into(), "0.40".into()),
            ("4.82".into(), "0.96".into()),
            ("1.51".into(), "0.30".into()),
        ]
    );
    assert_eq!(cn.total.to_string(), "10.00");
    // Shares of an amount name no line.
    assert!(cn.lines.iter().all(|l| l.basis == CreditBasis::Share));
    // The rest, then nothing more.
    assert_eq!(
        note(&inv, dec!(10), CreditRequest::Full)
            .unwrap()
            .to_string(),
        "39.80"
    );
    assert!(
        note(
            &inv,
            dec!(10),
            CreditRequest::Amount {
                amount: dec!(39.81)
            }
        )
        .is_err()
    );
    // 4.00 of the usage line, plus its VAT; the line is named.
    let lines = CreditRequest::Lines {
        lines: vec![(1, dec!(4))],
    };
    let cn = credit(&inv, Decimal::ZERO, lines).unwrap();
    assert_eq!(cn.total.to_string(), "4.80");
    assert_eq!(cn.lines[0].basis, CreditBasis::Line);
    // A note stored before `basis` existed reads as a share.
    let mut stored = serde_json::to_value(&cn).unwrap();
    stored["lines"][0].as_object_mut().unwrap().remove("basis");
    let read: CreditNote = serde_json::from_value(stored).unwrap();
    assert_eq!(read.lines[0].basis, CreditBasis::Share);
    // More than the line, a line that does not exist, a draft.
    let over = CreditRequest::Lines {
        lines: vec![(1, dec!(20)), (1, dec!(4.01))],
    };
    assert!(note(&inv, Decimal::ZERO, over).is_err());
    let missing = CreditRequest::Lines {
        lines: vec![(9, dec!(1))],
    };
    assert!(note(&inv, Decimal::ZERO, missing).is_err());
    assert!(note(&april_invoice(), Decimal::ZERO, CreditRequest::Full).is_err());
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

fn model_strategy() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        r#"included = 1000
price = { model = "per_unit", unit_price = "0.0037" }"#
            .to_string(),
        r#"included = 500
price = { model = "package", package_size = 1000, package_price = "0.50" }"#
            .to_string(),
        format!("included = 250\n{GRADUATED_BASIC}"),
        r#"price = { model = "volume", tiers = [ { up_to = 1000, unit_price = "0.01", flat_fee = "2" }, { up_to = 10000, unit_price = "0.005", flat_fee = "1" }, { unit_price = "0.002", flat_fee = "3" } ] }"#
            .to_string(),
    ])
}

fn usage_amount(inv: &Invoice) -> Decimal {
    inv.lines
        .iter()
        .filter(|l| l.kind == InvoiceLineKind::Usage)
        .map(|l| l.unrounded)
        .sum()
}

proptest! {
    #[test]
    fn prop_same_plan_segments_price_like_one(
        charge in model_strategy(),
        quantities in prop::collection::vec(0u32..8000, 1..5),
        cents in 0u32..100,
    ) {
        let c = catalog(&Spec { basic_charge: &charge, ..Spec::default() });
        let basic = plan(&c, "basic");
        let p = april();
        let n = quantities.len() as i64;
        let bound = |k: i64| {
            if k == n { p.end } else { p.start + jiff::SignedDuration::from_hours(24 * 30 * k / n) }
        };
        let frac = Decimal::from(cents) / dec!(100);
        let q = |x: u32| Decimal::from(x) + frac;
        let split: Vec<_> = quantities
            .iter()
            .enumerate()
            .map(|(k, x)| {
                segment(basic, bound(k as i64), bound(k as i64 + 1), vec![usage("api_calls", &[("plan", q(*x))])])
            })
            .collect();
        let total: Decimal = quantities.iter().map(|x| q(*x)).sum();
        let whole = vec![segment(basic, p.start, p.end, vec![usage("api_calls", &[("plan", total)])])];
        let split = compute_invoice(&input(Currency::USD, p, split)).unwrap();
        let whole = compute_invoice(&input(Currency::USD, p, whole)).unwrap();
        let diff = (usage_amount(&split) - usage_amount(&whole)).abs();
        prop_assert!(diff < dec!(0.000000000001), "split {} whole {}", usage_amount(&split), usage_amount(&whole));
        // Each line rounds once: the rounded sums differ by at most half a cent per line.
        let rounded_diff = (split.totals.total - whole.totals.total).abs();
        prop_assert!(rounded_diff <= dec!(0.005) * Decimal::from(n + 1));
    }

    #[test]
    fn prop_invoice_total_is_the_sum_of_rounded_lines(
        charge in model_strategy(),
        first in 0u32..20000,
        second in 0u32..20000,
        change_hour in 1i64..719,
        rate in prop::sample::select(vec![dec!(0), dec!(0.07), dec!(0.2), dec!(0.19)]),
        on_total in any::<bool>(),
        jpy in any::<bool>(),
    ) {
        let (currency, code) = if jpy { (Currency::JPY, "JPY") } else { (Currency::USD, "USD") };
        let c = catalog(&Spec { currency: code, billing: "in_arrears", basic_charge: &charge, pro_charge: &charge, basic_price: "10", pro_price: "33", ..Spec::default() });
        let p = april();
        let at = p.start + jiff::SignedDuration::from_hours(change_hour);
        let mut i = changed_at(currency, p, at, (plan(&c, "basic"), Decimal::from(first)), (plan(&c, "pro"), Decimal::from(second)));
        i.tax = vat(rate, if on_total { TaxMode::OnTotal } else { TaxMode::PerLine });
        let inv = compute_invoice(&i).unwrap();
        let lines = sum_amounts(&inv.lines);
        let line_tax: Decimal = inv.lines.iter().map(|l| l.tax_amount).sum();
        prop_assert_eq!(inv.totals.subtotal + inv.totals.discount, lines);
        if !on_total { prop_assert_eq!(inv.totals.tax, line_tax); }
        prop_assert_eq!(inv.totals.total, lines + inv.totals.tax);
        for l in &inv.lines {
            prop_assert!(l.amount.scale() == currency.minor_units(), "{} not in minor units", l.amount);
            prop_assert!(l.amount >= Decimal::ZERO);
        }
    }

    #[test]
    fn prop_credit_notes_never_exceed_the_invoice(
        requests in prop::collection::vec(1u32..3000, 1..8),
        rate in prop::sample::select(vec![dec!(0), dec!(0.2), dec!(0.19)]),
        on_total in any::<bool>(),
    ) {
        let inv = issued(discounted(vec![], vat(rate, if on_total { TaxMode::OnTotal } else { TaxMode::PerLine })));
        let mut credited = Decimal::ZERO;
        for cents in requests {
            let amount = Decimal::from(cents) / dec!(100);
            match note(&inv, credited, CreditRequest::Amount { amount }) {
                Ok(total) => {
                    prop_assert_eq!(total, amount, "a note adds up to what was asked");
                    credited += total;
                }
                Err(_) => prop_assert!(credited + amount > inv.totals.total),
            }
            prop_assert!(credited <= inv.totals.total);
        }
        if credited < inv.totals.total {
            let rest = note(&inv, credited, CreditRequest::Full).unwrap();
            prop_assert_eq!(credited + rest, inv.totals.total);
        }
    }
}

#[test]
fn semantics_customer_discount_periods_and_validation() {
    use tollgate_core::billing::discount::{CustomerDiscount, DiscountDuration, DiscountValue};
    let cycle = BillingCycle::new(
        Interval::Month,
        Anchoring::Calendar,
        ts("2026-01-01T00:00:00Z"),
        TimeZone::UTC,
    );
    let discount = |value: DiscountValue, duration: DiscountDuration| CustomerDiscount {
        id: "dsc_1".into(),
        customer_id: "acme".into(),
        description: CustomerDiscount::default_description(&value),
        value,
        duration,
        ends_at: None,
        created_at: ts("2026-03-10T00:00:00Z"),
    };
    let ten = DiscountValue::Percent { percent: dec!(10) };
    // Attached on March 10 (period 2): the periods it applies to.
    let takes = |d: &CustomerDiscount| -> Vec<u32> {
        (0..8)
            .filter(|i| d.applies_to(&cycle, *i, &cycle.period_index(*i).unwrap()))
            .collect()
    };
    assert_eq!(takes(&discount(ten.clone(), DiscountDuration::Once)), [2]);
    assert_eq!(
        takes(&discount(
            ten.clone(),
            DiscountDuration::Repeating { periods: 3 }
        )),
        [2, 3, 4]
    );
    let mut until_july = discount(ten.clone(), DiscountDuration::Forever);
    until_july.ends_at = Some(ts("2026-07-01T00:00:00Z"));
    assert_eq!(takes(&until_july), [2, 3, 4, 5]);
    let mut early = discount(ten.clone(), DiscountDuration::Once);
    early.created_at = ts("2025-12-15T00:00:00Z");
    assert_eq!(takes(&early), [0], "attached before the anchor: period 0");

    // Applied by the close: Basic in arrears, 16,000 calls: 10.00 + 30.00 =
    // 40.00; 10 % = −4.00, total 36.00.
    let d = discount(ten.clone(), DiscountDuration::Forever);
    assert_eq!(d.description, "10 % off");
    let c = catalog(&arrears());
    let mut i = whole(
        Currency::USD,
        april(),
        plan(&c, "basic"),
        vec![usage("api_calls", &[("plan", dec!(16000))])],
    );
    i.discounts = vec![d.discount()];
    let inv = compute_invoice(&i).unwrap();
    assert_eq!(inv.totals.subtotal.to_string(), "40.00");
    assert_eq!(inv.totals.discount.to_string(), "-4.00");
    assert_eq!(inv.totals.total.to_string(), "36.00");
    assert_eq!(inv.lines.last().unwrap().description, "10 % off");

    // Validation names the field.
    let fields = |d: &CustomerDiscount| -> Vec<&str> {
        d.validate(Currency::USD)
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    };
    assert!(fields(&discount(ten.clone(), DiscountDuration::Once)).is_empty());
    let bad_percent = DiscountValue::Percent {
        percent: dec!(100.5),
    };
    assert_eq!(
        fields(&discount(bad_percent, DiscountDuration::Once)),
        ["percent"]
    );
    let negative = DiscountValue::Amount {
        amount: dec!(-5),
        currency: Currency::USD,
    };
    assert_eq!(
        fields(&discount(negative, DiscountDuration::Once)),
        ["amount"]
    );
    let too_fine = DiscountValue::Amount {
        amount: dec!(0.001),
        currency: Currency::USD,
    };
    assert_eq!(
        fields(&discount(too_fine, DiscountDuration::Once)),
        ["amount"]
    );
    let euros = DiscountValue::Amount {
        amount: dec!(5),
        currency: Currency::EUR,
    };
    assert_eq!(
        fields(&discount(euros, DiscountDuration::Once)),
        ["currency"]
    );
    let none = discount(ten.clone(), DiscountDuration::Repeating { periods: 0 });
    assert_eq!(fields(&none), ["periods"]);
    let mut past = discount(ten, DiscountDuration::Forever);
    past.ends_at = Some(ts("2026-03-01T00:00:00Z"));
    assert_eq!(fields(&past), ["ends_at"]);
}

#[test]
fn semantics_customer_discount_over_the_parts_of_a_period() {
    use tollgate_core::billing::discount::{CustomerDiscount, DiscountDuration, DiscountValue};
    let discount = |id: &str, value: DiscountValue| CustomerDiscount {
        id: id.into(),
        customer_id: "acme".into(),
        description: CustomerDiscount::default_description(&value),
        value,
        duration: DiscountDuration::Once,
        ends_at: None,
        created_at: ts("2026-04-01T00:00:00Z"),
    };
    let twenty = discount(
        "dsc_20",
        DiscountValue::Amount {
            amount: dec!(20),
            currency: Currency::USD,
        },
    );
    // Another discount with the same description: its lines are its own.
    let other = discount(
        "dsc_other",
        DiscountValue::Amount {
            amount: dec!(20),
            currency: Currency::USD,
        },
    );
    let ten = discount("dsc_10", DiscountValue::Percent { percent: dec!(10) });
    // An earlier part: 14.70 billed, 10 % (−1.47), then 13.23 of the 20.00.
    let c = catalog(&Spec::default());
    let mut part = whole(
        Currency::USD,
        period("2026-04-01T00:00:00Z", "2026-04-10T00:00:00Z"),
        plan(&c, "basic"),
        vec![usage("api_calls", &[("plan", dec!(8350))])],
    );
    part.discounts = vec![ten.discount(), twenty.discount()];
    let part = compute_invoice(&part).unwrap();
    assert_eq!(part.totals.subtotal, dec!(14.70));
    assert_eq!(part.totals.discount, dec!(-14.70));
    let left = |d: &CustomerDiscount, earlier: &[Invoice]| match d.discount_after(earlier) {
        Some(Discount::Amount { amount, .. }) => Some(amount),
        Some(Discount::Percent { percent, .. }) => Some(percent),
        None => None,
    };
    // What is left of the fixed amount: 20.00 − 13.23 = 6.77; the percent
    // as it is; the other discount untouched.
    assert_eq!(left(&twenty, std::slice::from_ref(&part)), Some(dec!(6.77)));
    assert_eq!(left(&ten, std::slice::from_ref(&part)), Some(dec!(10)));
    assert_eq!(left(&other, std::slice::from_ref(&part)), Some(dec!(20)));
    // Used up over two parts: nothing left, no discount.
    let mut second = part.clone();
    second.id = "inv_2".into();
    assert_eq!(left(&twenty, &[part.clone(), second.clone()]), None);
    // A void part gave nothing.
    second.status = InvoiceStatus::Void;
    assert_eq!(left(&twenty, &[part.clone(), second]), Some(dec!(6.77)));
    // A part credited in full gave nothing either (treated as void): 20,000
    // calls, 38.00, the whole 20.00 off, 18.00 due; the credit note gives
    // back the 18.00, so a later part takes the 20.00 again (the old code
    // took none). A partial credit note (goodwill) changes nothing: the
    // 20.00 was used. (`part` above, 0.00 after its discounts, cannot be
    // credited and counts as billed.)
    let mut credited = whole(
        Currency::USD,
        period("2026-04-01T00:00:00Z", "2026-04-10T00:00:00Z"),
        plan(&c, "basic"),
        vec![usage("api_calls", &[("plan", dec!(20000))])],
    );
    credited.discounts = vec![twenty.discount()];
    let mut credited = compute_invoice(&credited).unwrap();
    credited.status = InvoiceStatus::Open;
    assert_eq!(credited.totals.total, dec!(18.00));
    assert!(part.counts_as_billed() && !part.is_fully_credited());
    let mut goodwill = credited.clone();
    goodwill.record_credit(dec!(5.00));
    assert_eq!(left(&twenty, std::slice::from_ref(&goodwill)), None);
    credited.record_credit(dec!(18.00));
    assert!(credited.is_fully_credited());
    assert_eq!(
        left(&twenty, std::slice::from_ref(&credited)),
        Some(dec!(20))
    );
    assert_eq!(left(&twenty, &[part, credited]), Some(dec!(6.77)));
}
