//! Plan-change previews with real numbers: the rules of the "Plan changes"
//! section of `docs/billing-semantics.md`.
#![allow(clippy::unwrap_used)]

mod billing_fixtures;

use std::collections::BTreeMap;

use billing_fixtures::{Spec, april, catalog, march, period, plan, ts};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_core::billing::change::{
    ChangeDirection, ChangeInput, ChangePreview, ChangeTiming, ProrationBehavior,
    cancellation_credit, preview_change,
};
use tollgate_core::billing::{Invoice, InvoiceLineKind, InvoiceStatus, TaxMode, TaxRule};
use tollgate_core::catalog::{Catalog, Limit};
use tollgate_core::money::Currency;
use tollgate_core::period::{Anchoring, BillingCycle, Interval, Period};

fn change<'c>(
    c: &'c Catalog,
    from: &str,
    to: &str,
    period: Period,
    at: Timestamp,
) -> ChangeInput<'c> {
    ChangeInput {
        from: plan(c, from),
        to: plan(c, to),
        period,
        at,
        timing: None,
        proration: ProrationBehavior::NextInvoice,
        usage: BTreeMap::new(),
        gauges: BTreeMap::new(),
    }
}

/// Basic → Pro at `at` in `period`, with the defaults (upgrade now, lines on
/// the next invoice).
fn upgrade(c: &Catalog, period: Period, at: &str) -> ChangePreview {
    preview_change(&change(c, "basic", "pro", period, ts(at))).unwrap()
}

fn lines(p: &ChangePreview) -> Vec<String> {
    p.proration_lines
        .iter()
        .map(|l| l.amount.to_string())
        .collect()
}

#[test]
fn semantics_change_upgrade_day10_of_a_30_day_month() {
    // Basic $10 → Pro $30 at the start of April 10: 21 of 30 days remain.
    let c = catalog(&Spec::default());
    let at = ts("2026-04-10T00:00:00Z");
    let p = preview_change(&change(&c, "basic", "pro", april(), at)).unwrap();
    assert_eq!(p.direction, ChangeDirection::Upgrade);
    assert_eq!(p.timing, ChangeTiming::Immediately);
    assert_eq!(p.effective_at, at);
    // Credit −10 × 21/30 = −7.00, charge 30 × 21/30 = 21.00.
    assert_eq!(lines(&p), ["-7.00", "21.00"]);
    assert_eq!(p.proration_total.to_string(), "14.00");
    let first = &p.proration_lines[0];
    assert_eq!(first.kind, InvoiceLineKind::Proration);
    assert_eq!(
        first.description,
        "Unused time on Basic plan from 2026-04-10 to 2026-05-01"
    );
    assert_eq!(first.plan_key.as_deref(), Some("basic"));
    assert_eq!(first.period_start, at);
    assert_eq!(first.period_end, april().end);
    assert_eq!(p.features_gained, ["sso"]);
    assert!(p.features_lost.is_empty());
    let limits: Vec<(String, Option<Limit>, Option<Limit>)> = p
        .limits
        .iter()
        .map(|l| (l.feature.clone(), l.before, l.after))
        .collect();
    let finite = |n: i64| Some(Limit::Finite(Decimal::from(n)));
    assert_eq!(
        limits,
        [
            ("api_calls".into(), finite(10000), finite(100000)),
            ("locations".into(), finite(1), finite(10)),
            ("queries".into(), finite(2000), finite(20000)),
        ]
    );
    assert!(p.blockers.is_empty());
}

#[test]
fn semantics_change_invoiced_now() {
    // `invoice_now`: the two lines on an off-cycle invoice of their own,
    // VAT 20 % per line: −7.00 − 1.40 + 21.00 + 4.20 = 16.80.
    let c = catalog(&Spec::default());
    let at = "2026-04-10T00:00:00Z";
    let p = upgrade(&c, april(), at);
    let invoice = Invoice::off_cycle(
        "inv_now".into(),
        "acme".into(),
        Currency::USD,
        Period::new(ts(at), april().end).unwrap(),
        p.proration_lines,
        TaxRule {
            rate: dec!(0.2),
            mode: TaxMode::PerLine,
            label: "VAT".into(),
        },
        ts(at),
    );
    assert_eq!(invoice.status, InvoiceStatus::Draft);
    assert_eq!(invoice.totals.subtotal.to_string(), "14.00");
    assert_eq!(invoice.totals.tax.to_string(), "2.80");
    assert_eq!(invoice.totals.total.to_string(), "16.80");
}

#[test]
fn semantics_change_upgrade_day10_of_a_31_day_month() {
    // March: 22 of 31 days remain. −10 × 22/31 = −7.0967… → −7.10;
    // 30 × 22/31 = 21.2903… → 21.29.
    let c = catalog(&Spec::default());
    let p = upgrade(&c, march(), "2026-03-10T00:00:00Z");
    assert_eq!(lines(&p), ["-7.10", "21.29"]);
    assert_eq!(p.proration_total.to_string(), "14.19");
}

#[test]
fn semantics_change_downgrade_at_period_end() {
    let c = catalog(&Spec::default());
    let at = ts("2026-04-10T00:00:00Z");
    let mut input = change(&c, "pro", "basic", april(), at);
    input.gauges.insert("locations".into(), dec!(7));
    input.usage.insert("queries".into(), dec!(5000));
    let p = preview_change(&input).unwrap();
    assert_eq!(p.direction, ChangeDirection::Downgrade);
    assert_eq!(p.timing, ChangeTiming::PeriodEnd);
    assert_eq!(p.effective_at, ts("2026-05-01T00:00:00Z"));
    // No proration: Pro runs to the end of the period it was paid for.
    assert!(p.proration_lines.is_empty());
    assert_eq!(p.proration_total.to_string(), "0.00");
    assert!(p.features_gained.is_empty());
    assert_eq!(p.features_lost.len(), 1);
    assert_eq!(p.features_lost[0].feature, "sso");
    assert_eq!(p.features_lost[0].lost_at, ts("2026-05-01T00:00:00Z"));
    // Locations stay when the period turns; this period's queries reset.
    let messages: Vec<&str> = p.blockers.iter().map(|b| b.message.as_str()).collect();
    assert_eq!(messages, ["7 locations in use, plan basic allows 1"]);
    assert_eq!(p.blockers[0].in_use, dec!(7));
    assert_eq!(p.blockers[0].allowed, Limit::Finite(dec!(1)));
}

#[test]
fn semantics_change_immediate_downgrade() {
    // Pro $30 → Basic $10 now, at April 10: −21.00 + 7.00 = −14.00; this
    // period's 5,000 queries are over Basic's hard 2,000.
    let c = catalog(&Spec::default());
    let at = ts("2026-04-10T00:00:00Z");
    let mut input = change(&c, "pro", "basic", april(), at);
    input.timing = Some(ChangeTiming::Immediately);
    input.usage.insert("queries".into(), dec!(5000));
    input.usage.insert("api_calls".into(), dec!(50000)); // soft on Basic: no blocker
    let p = preview_change(&input).unwrap();
    assert_eq!(lines(&p), ["-21.00", "7.00"]);
    assert_eq!(p.proration_total.to_string(), "-14.00");
    assert_eq!(p.features_lost[0].lost_at, at);
    let messages: Vec<&str> = p.blockers.iter().map(|b| b.message.as_str()).collect();
    assert_eq!(
        messages,
        ["5000 queries used this period, plan basic allows 2000"]
    );
}

#[test]
fn semantics_change_without_proration_or_in_arrears() {
    let c = catalog(&Spec::default());
    let at = ts("2026-04-10T00:00:00Z");
    let mut input = change(&c, "basic", "pro", april(), at);
    input.proration = ProrationBehavior::None;
    let p = preview_change(&input).unwrap();
    assert!(p.proration_lines.is_empty());
    assert_eq!(p.effective_at, at);
    // Bases billed in arrears are prorated by segment at the period close, so
    // the change itself has no proration line.
    let arrears = catalog(&Spec {
        billing: "in_arrears",
        ..Spec::default()
    });
    let p = preview_change(&change(&arrears, "basic", "pro", april(), at)).unwrap();
    assert!(p.proration_lines.is_empty());
    assert_eq!(p.direction, ChangeDirection::Upgrade);
}

#[test]
fn semantics_change_yearly_plan_mid_year() {
    // $120/year → $240/year on 2026-07-02: 183 of 365 days remain.
    let c = catalog(&Spec {
        interval: "year",
        basic_price: "120.00",
        pro_price: "240.00",
        ..Spec::default()
    });
    let year = period("2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z");
    let p = upgrade(&c, year, "2026-07-02T00:00:00Z");
    // −120 × 183/365 = −60.1643… → −60.16; 240 × 183/365 = 120.3287… → 120.33.
    assert_eq!(lines(&p), ["-60.16", "120.33"]);
    assert_eq!(p.proration_total.to_string(), "60.17");
}

#[test]
fn semantics_change_in_jpy() {
    // ¥1,000 → ¥3,000 on March 10: −¥709.67 → −¥710, ¥2,129.03 → ¥2,129.
    let c = catalog(&Spec {
        currency: "JPY",
        basic_price: "1000",
        pro_price: "3000",
        ..Spec::default()
    });
    let p = upgrade(&c, march(), "2026-03-10T00:00:00Z");
    assert_eq!(lines(&p), ["-710", "2129"]);
    assert_eq!(p.proration_total.to_string(), "1419");
}

#[test]
fn semantics_change_in_the_short_february_period() {
    // Anniversary from Jan 31: the period [01-31, 02-28) has 28 days; an
    // upgrade on 02-14 leaves half: −5.00 and 15.00.
    let cycle = BillingCycle::new(
        Interval::Month,
        Anchoring::Anniversary,
        ts("2026-01-31T00:00:00Z"),
        TimeZone::UTC,
    );
    let at = ts("2026-02-14T00:00:00Z");
    let current = cycle.period_containing(at).unwrap();
    let c = catalog(&Spec::default());
    let p = preview_change(&change(&c, "basic", "pro", current, at)).unwrap();
    assert_eq!(lines(&p), ["-5.00", "15.00"]);
}

#[test]
fn semantics_change_direction_and_errors() {
    let c = catalog(&Spec::default());
    let basic = plan(&c, "basic");
    assert_eq!(
        ChangeDirection::between(basic, basic),
        ChangeDirection::Lateral
    );
    let mut cheaper = basic.clone();
    cheaper.base_price.amount = dec!(8);
    cheaper.version = 2;
    assert_eq!(
        ChangeDirection::between(basic, &cheaper),
        ChangeDirection::Downgrade
    );
    assert_eq!(
        ChangeDirection::between(&cheaper, basic),
        ChangeDirection::Upgrade
    );
    // A lateral move waits for the period end by default.
    let p = preview_change(&change(&c, "basic", "basic", april(), april().start)).unwrap();
    assert_eq!(p.timing, ChangeTiming::PeriodEnd);
    assert!(p.limits.is_empty());
    // `at` outside the period; plans in different currencies.
    assert!(
        preview_change(&change(
            &c,
            "basic",
            "pro",
            april(),
            ts("2026-05-02T00:00:00Z")
        ))
        .is_err()
    );
    let yen = catalog(&Spec {
        currency: "JPY",
        basic_price: "1000",
        pro_price: "3000",
        ..Spec::default()
    });
    let mixed = ChangeInput {
        to: plan(&yen, "pro"),
        ..change(&c, "basic", "pro", april(), april().start)
    };
    assert!(preview_change(&mixed).is_err());
}

proptest! {
    /// An upgrade's lines are the old base's unused part (credit) and the new
    /// base's remaining part (charge), each within half a cent of the exact
    /// share, and never more than the whole prices.
    #[test]
    fn prop_change_prorates_the_remaining_part(secs in 0i64..=2_592_000) {
        let c = catalog(&Spec::default());
        let at = april().start + jiff::SignedDuration::from_secs(secs);
        let p = preview_change(&change(&c, "basic", "pro", april(), at)).unwrap();
        // Multiply first, as proration does: exact shares such as 17.575.
        let share = |price: Decimal| price * Decimal::from(2_592_000 - secs) / Decimal::from(2_592_000);
        let amounts: Vec<Decimal> = p.proration_lines.iter().map(|l| l.amount).collect();
        let credit = amounts.iter().copied().find(|a| *a < Decimal::ZERO).unwrap_or_default();
        let charge = amounts.iter().copied().find(|a| *a > Decimal::ZERO).unwrap_or_default();
        prop_assert!((credit + share(dec!(10))).abs() <= dec!(0.005));
        prop_assert!((charge - share(dec!(30))).abs() <= dec!(0.005));
        prop_assert!(credit >= dec!(-10) && charge <= dec!(30));
        prop_assert_eq!(p.proration_total, credit + charge);
    }
}

#[test]
fn semantics_cancel_now_credits_the_unused_in_advance_base() {
    let c = catalog(&Spec::default());
    let basic = plan(&c, "basic");
    // $10/month in advance canceled at the start of April 10: 21 of 30 days
    // unused, −10 × 21/30 = −7.00.
    let at = ts("2026-04-10T00:00:00Z");
    let line = cancellation_credit(basic, &april(), at).unwrap().unwrap();
    assert_eq!(line.kind, InvoiceLineKind::Proration);
    assert_eq!(line.amount.to_string(), "-7.00");
    assert_eq!((line.period_start, line.period_end), (at, april().end));
    assert_eq!(
        line.description,
        "Unused time on Basic plan from 2026-04-10 to 2026-05-01 (canceled)"
    );
    assert_eq!(line.plan_key.as_deref(), Some("basic"));
    // March 10: 22 of 31 days, −7.0967… → −7.10; Pro at noon on April 10:
    // 20.5 of 30 days, −20.50.
    let line = cancellation_credit(basic, &march(), ts("2026-03-10T00:00:00Z"))
        .unwrap()
        .unwrap();
    assert_eq!(line.amount.to_string(), "-7.10");
    let line = cancellation_credit(plan(&c, "pro"), &april(), ts("2026-04-10T12:00:00Z"))
        .unwrap()
        .unwrap();
    assert_eq!(line.amount.to_string(), "-20.50");
    // At the period end nothing is unused; in arrears nothing was collected.
    assert_eq!(cancellation_credit(basic, &april(), april().end), Ok(None));
    let arrears = catalog(&Spec {
        billing: "in_arrears",
        ..Spec::default()
    });
    assert_eq!(
        cancellation_credit(plan(&arrears, "basic"), &april(), at),
        Ok(None)
    );
    // Outside the period: an error.
    assert!(cancellation_credit(basic, &april(), ts("2026-05-02T00:00:00Z")).is_err());
}
