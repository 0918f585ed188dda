//! A period billed in parts (a cancellation now writes a final invoice to the
//! cancellation, a reactivation leaves the rest to a later invoice), end to
//! end on SQLite and PostgreSQL: customer discounts come off once per period
//! in total, volume tiers reprice the earlier parts (a void or fully credited
//! part's units are neither repriced nor billed again; a partial credit note
//! changes nothing), minimums are corrected across parts (a true-up a
//! credit note handed back is not handed back again),
//! and the upcoming invoice projects only what the next invoice bills.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, ts};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_billing::BillingConfig;
use tollgate_billing::changes::CancelRequest;
use tollgate_billing::discounts::DiscountRequest;
use tollgate_core::billing::credit::CreditRequest;
use tollgate_core::billing::discount::{DiscountDuration, DiscountValue};
use tollgate_core::billing::{Invoice, InvoiceLineKind};
use tollgate_core::money::Currency;
use tollgate_store::SubscriptionStatus;
use tollgate_store::billing::InvoiceFilter;

async fn discount(env: &Env, id: &str, value: DiscountValue, duration: DiscountDuration) {
    env.billing
        .add_discount(
            id,
            DiscountRequest {
                value,
                duration,
                ends_at: None,
                description: None,
            },
        )
        .await
        .unwrap();
}

fn usd(amount: Decimal) -> DiscountValue {
    DiscountValue::Amount {
        amount,
        currency: Currency::USD,
    }
}

/// Cancels now with proration (a final invoice), returns its id.
async fn cancel_now(env: &Env, id: &str, at: &str) -> String {
    env.clock.set(ts(at));
    env.billing
        .cancel_subscription(
            id,
            &CancelRequest {
                at_period_end: false,
                prorate: true,
                reason: None,
            },
            "test",
        )
        .await
        .unwrap()
        .invoice_id
        .unwrap()
}

async fn reactivate(env: &Env, id: &str, at: &str) {
    env.clock.set(ts(at));
    env.billing
        .set_subscription_status(id, SubscriptionStatus::Active, "test")
        .await
        .unwrap();
}

async fn invoice(env: &Env, id: &str) -> Invoice {
    env.billing.invoice(id).await.unwrap().invoice
}

/// The customer's cycle invoice starting at `start`.
async fn cycle_from(env: &Env, customer: &str, start: &str) -> Invoice {
    let all = env
        .billing
        .list_invoices(&InvoiceFilter {
            customer_id: Some(customer.into()),
            kind: Some(tollgate_store::billing::InvoiceKind::Cycle),
            ..InvoiceFilter::default()
        })
        .await
        .unwrap();
    all.into_iter()
        .find(|i| i.period_start == ts(start))
        .unwrap_or_else(|| panic!("no cycle invoice of {customer} from {start}"))
}

fn discount_lines(inv: &Invoice) -> Vec<Decimal> {
    inv.lines
        .iter()
        .filter(|l| l.kind == InvoiceLineKind::Discount)
        .map(|l| l.amount)
        .collect()
}

#[tokio::test]
async fn a_fixed_amount_discount_comes_off_once_per_period_billed_in_parts() {
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // Pro: $49/month in arrears (November: 49/30 a day). 20.00 off,
        // forever.
        env.subscribed("a", "pro").await;
        discount(&env, "a", usd(dec!(20)), DiscountDuration::Forever).await;

        // Canceled on the 10th: final invoice [11-01, 11-10), base 49 × 9/30
        // = 14.70, all of it off (the discount is capped at the subtotal).
        let fin1 = invoice(&env, &cancel_now(&env, "a", "2026-11-10T00:00:00Z").await).await;
        assert_eq!(fin1.totals.subtotal, dec!(14.70), "{backend}");
        assert_eq!(discount_lines(&fin1), [dec!(-14.70)], "{backend}");
        assert_eq!(fin1.totals.total, dec!(0.00), "{backend}");

        // Reactivated on the 16th, canceled again on the 22nd: the second
        // final invoice [11-10, 11-22) bills the six days served, 49 × 6/30
        // = 9.80, and gets only what is left of the 20.00: 5.30 (the old
        // code took 20.00 off again, capped at 9.80).
        reactivate(&env, "a", "2026-11-16T00:00:00Z").await;
        let fin2 = invoice(&env, &cancel_now(&env, "a", "2026-11-22T00:00:00Z").await).await;
        assert_eq!(fin2.totals.subtotal, dec!(9.80), "{backend}");
        assert_eq!(discount_lines(&fin2), [dec!(-5.30)], "{backend}");
        assert_eq!(fin2.totals.total, dec!(4.50), "{backend}");

        // Reactivated on the 25th: the close on December 1st bills the rest,
        // [11-22, 12-01), six days served, 9.80, with nothing left of the
        // discount: no discount line.
        reactivate(&env, "a", "2026-11-25T00:00:00Z").await;
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        let rest = cycle_from(&env, "a", "2026-11-22T00:00:00Z").await;
        assert_eq!(rest.period_end, ts("2026-12-01T00:00:00Z"), "{backend}");
        assert_eq!(rest.totals.subtotal, dec!(9.80), "{backend}");
        assert!(discount_lines(&rest).is_empty(), "{backend}: {rest:?}");
        // November in all: 34.30 billed, 20.00 off, once.
        let off: Decimal = [&fin1, &fin2, &rest]
            .iter()
            .flat_map(|i| discount_lines(i))
            .sum();
        assert_eq!(off, dec!(-20.00), "{backend}");

        // December is a new period: the 20.00 comes off its close again.
        env.clock.set(ts("2027-01-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        let dec = cycle_from(&env, "a", "2026-12-01T00:00:00Z").await;
        assert_eq!(discount_lines(&dec), [dec!(-20.00)], "{backend}");
        assert_eq!(dec.totals.total, dec!(29.00), "{backend}");
        env.cleanup().await;
    }
}

#[tokio::test]
async fn percent_and_repeating_discounts_count_a_period_billed_in_parts_as_one_period() {
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // 10 % for one period (November), on Pro ($49/month in arrears).
        env.subscribed("p", "pro").await;
        discount(
            &env,
            "p",
            DiscountValue::Percent { percent: dec!(10) },
            DiscountDuration::Repeating { periods: 1 },
        )
        .await;
        // Final invoice [11-01, 11-10): 14.70, 10 % off: −1.47.
        let fin = invoice(&env, &cancel_now(&env, "p", "2026-11-10T00:00:00Z").await).await;
        assert_eq!(discount_lines(&fin), [dec!(-1.47)], "{backend}");
        // Reactivated on the 16th; the rest of November [11-10, 12-01),
        // fifteen days served, 24.50, is still November: 10 % off, −2.45 (a
        // part does not use up a period of the discount).
        reactivate(&env, "p", "2026-11-16T00:00:00Z").await;
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        let rest = cycle_from(&env, "p", "2026-11-10T00:00:00Z").await;
        assert_eq!(rest.totals.subtotal, dec!(24.50), "{backend}");
        assert_eq!(discount_lines(&rest), [dec!(-2.45)], "{backend}");
        // 10 % of November's 39.20, in two parts: 3.92.
        assert_eq!(
            discount_lines(&fin)[0] + discount_lines(&rest)[0],
            dec!(-3.92)
        );
        // December is the discount's second period: none.
        env.clock.set(ts("2027-01-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        let dec = cycle_from(&env, "p", "2026-12-01T00:00:00Z").await;
        assert!(discount_lines(&dec).is_empty(), "{backend}: {dec:?}");
        assert_eq!(dec.totals.total, dec!(49.00), "{backend}");
        env.cleanup().await;
    }
}

#[tokio::test]
async fn the_upcoming_invoice_projects_only_what_the_earlier_parts_did_not_bill() {
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // Pro: $49/month in arrears, calls at 0.001. 1,000 calls on 11-05;
        // canceled now on 11-10: the final invoice bills [11-01, 11-10),
        // 49 × 9/30 = 14.70 and 1.00.
        env.subscribed("u", "pro").await;
        env.clock.set(ts("2026-11-05T00:00:00Z"));
        env.consume("u", "calls", dec!(1000)).await;
        env.engine.flush().await.unwrap();
        let fin = invoice(&env, &cancel_now(&env, "u", "2026-11-10T00:00:00Z").await).await;
        assert_eq!(fin.totals.total, dec!(15.70), "{backend}");
        // Canceled, on 11-12: nothing more to bill (no base while canceled,
        // no usage extrapolated), not the whole period again.
        env.clock.set(ts("2026-11-12T00:00:00Z"));
        let up = env.billing.upcoming_invoice("u").await.unwrap();
        assert_eq!(up.period_start, ts("2026-11-10T00:00:00Z"), "{backend}");
        assert_eq!(up.totals.total, dec!(0.00), "{backend}: {up:?}");
        // Reactivated on 11-16, 500 calls on 11-18.
        reactivate(&env, "u", "2026-11-16T00:00:00Z").await;
        env.clock.set(ts("2026-11-18T00:00:00Z"));
        env.consume("u", "calls", dec!(500)).await;
        env.engine.flush().await.unwrap();

        // On 11-21 (20 of 30 days): the next invoice covers [11-10, 12-01).
        // Base: the 15 days from the reactivation, 24.50 (none for the days
        // canceled); usage: the 1,500 calls so far at their pace give 750
        // more, on the current plan: 500 + 750 = 1,250 × 0.001 = 1.25. Total
        // 25.75 (the old projection billed the whole period again: 14.70 +
        // 24.50 + 2.25 = 41.45).
        env.clock.set(ts("2026-11-21T00:00:00Z"));
        let up = env.billing.upcoming_invoice("u").await.unwrap();
        assert_eq!(
            (up.period_start, up.period_end),
            (ts("2026-11-10T00:00:00Z"), ts("2026-12-01T00:00:00Z")),
            "{backend}"
        );
        assert!(
            up.lines
                .iter()
                .all(|l| l.period_start >= ts("2026-11-10T00:00:00Z")),
            "{backend}: {up:?}"
        );
        let base: Decimal = up
            .lines
            .iter()
            .filter(|l| l.kind == InvoiceLineKind::Base)
            .map(|l| l.amount)
            .sum();
        assert_eq!(base, dec!(24.50), "{backend}");
        assert_eq!(up.totals.total, dec!(25.75), "{backend}");

        // Usage keeps its pace (750 more calls): the close bills what was
        // projected.
        env.clock.set(ts("2026-11-25T00:00:00Z"));
        env.consume("u", "calls", dec!(750)).await;
        env.engine.flush().await.unwrap();
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        let rest = cycle_from(&env, "u", "2026-11-10T00:00:00Z").await;
        assert_eq!(rest.totals.total, dec!(25.75), "{backend}");
        env.cleanup().await;
    }
}

#[tokio::test]
async fn a_volume_tier_reached_after_a_final_invoice_reprices_its_units_on_the_rest_of_the_period()
{
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // `vol`: no base, calls by volume (to 1,000 at 0.01, to 10,000 at
        // 0.005, then 0.002). 4,000 calls, canceled now on 11-10: the final
        // invoice bills them in tier 1, 4,000 × 0.005 = 20.00.
        env.subscribed("v", "vol").await;
        env.clock.set(ts("2026-11-05T00:00:00Z"));
        env.consume("v", "calls", dec!(4000)).await;
        env.engine.flush().await.unwrap();
        let fin = invoice(&env, &cancel_now(&env, "v", "2026-11-10T00:00:00Z").await).await;
        assert_eq!(fin.totals.total, dec!(20.00), "{backend}");
        // Reactivated on 11-16, 8,000 more calls: November's 12,000 reach
        // tier 2. The close bills the 8,000 at 0.002, 16.00, and reprices
        // the 4,000 billed earlier at 0.002: 8.00 − 20.00 = −12.00. November
        // in all: 24.00 = 12,000 × 0.002, as without the cancellation.
        reactivate(&env, "v", "2026-11-16T00:00:00Z").await;
        env.clock.set(ts("2026-11-18T00:00:00Z"));
        env.consume("v", "calls", dec!(8000)).await;
        env.engine.flush().await.unwrap();

        // The upcoming invoice on 11-20 shows it already (the projection
        // stays in tier 2).
        env.clock.set(ts("2026-11-20T00:00:00Z"));
        let up = env.billing.upcoming_invoice("v").await.unwrap();
        assert!(
            up.lines.iter().any(|l| l.amount == dec!(-12.00)),
            "{backend}: {up:?}"
        );

        env.clock.set(ts("2026-12-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        let rest = cycle_from(&env, "v", "2026-11-10T00:00:00Z").await;
        // (The 0.00 base line of a plan without a base.)
        let lines: Vec<_> = rest
            .lines
            .iter()
            .filter(|l| l.kind != InvoiceLineKind::Base)
            .map(|l| (l.kind, l.amount))
            .collect();
        assert_eq!(
            lines,
            [
                (InvoiceLineKind::Usage, dec!(16.00)),
                (InvoiceLineKind::Usage, dec!(-12.00)),
            ],
            "{backend}"
        );
        assert_eq!(fin.totals.total + rest.totals.total, dec!(24.00));
        env.cleanup().await;
    }
}

#[tokio::test]
async fn a_void_final_invoice_is_neither_repriced_nor_billed_again_by_the_rest_of_the_period() {
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // `vol`: no base, calls by volume (to 1,000 at 0.01, to 10,000 at
        // 0.005, then 0.002). 4,000 calls, canceled now on 11-10: a final
        // invoice of 20.00 (tier 1), which the operator voids.
        env.subscribed("w", "vol").await;
        env.clock.set(ts("2026-11-05T00:00:00Z"));
        env.consume("w", "calls", dec!(4000)).await;
        env.engine.flush().await.unwrap();
        let fin1 = cancel_now(&env, "w", "2026-11-10T00:00:00Z").await;
        assert_eq!(invoice(&env, &fin1).await.totals.total, dec!(20.00));
        env.billing.void_invoice(&fin1).await.unwrap();
        // Reactivated on 11-12, 4,000 calls, canceled now on 11-16: the
        // second final invoice bills them at the tier of November's 8,000
        // so far: 4,000 × 0.005 = 20.00.
        reactivate(&env, "w", "2026-11-12T00:00:00Z").await;
        env.clock.set(ts("2026-11-14T00:00:00Z"));
        env.consume("w", "calls", dec!(4000)).await;
        env.engine.flush().await.unwrap();
        let fin2 = invoice(&env, &cancel_now(&env, "w", "2026-11-16T00:00:00Z").await).await;
        assert_eq!(fin2.totals.total, dec!(20.00), "{backend}");
        // Reactivated on 11-18, 8,000 calls: November's 16,000 reach tier
        // 2. The close bills the 8,000 at 0.002, 16.00, and reprices the
        // second part's 4,000 only: 8.00 − 20.00 = −12.00. The void part's
        // 4,000 are forgiven, not billed again (the old code repriced them
        // too, −4.00, billing them 8.00).
        reactivate(&env, "w", "2026-11-18T00:00:00Z").await;
        env.clock.set(ts("2026-11-20T00:00:00Z"));
        env.consume("w", "calls", dec!(8000)).await;
        env.engine.flush().await.unwrap();
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        let rest = cycle_from(&env, "w", "2026-11-16T00:00:00Z").await;
        assert_eq!(
            kind_lines(&rest, InvoiceLineKind::Usage),
            [dec!(16.00), dec!(-12.00)],
            "{backend}: {rest:?}"
        );
        assert_eq!(fin2.totals.total + rest.totals.total, dec!(24.00));
        env.cleanup().await;
    }
}

#[tokio::test]
async fn a_fully_credited_final_invoice_is_neither_repriced_nor_billed_again_by_the_rest_of_the_period()
 {
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // `vol`, as in the void case above: 4,000 calls each, canceled now
        // on 11-10: final invoices of 20.00 (tier 1). `c`'s is credited in
        // full (the customer gets the 20.00 back); `g`'s gets 5.00 of
        // goodwill (a partial credit note).
        for id in ["c", "g"] {
            env.subscribed(id, "vol").await;
        }
        env.clock.set(ts("2026-11-05T00:00:00Z"));
        for id in ["c", "g"] {
            env.consume(id, "calls", dec!(4000)).await;
        }
        env.engine.flush().await.unwrap();
        let full = cancel_now(&env, "c", "2026-11-10T00:00:00Z").await;
        let partial = cancel_now(&env, "g", "2026-11-10T00:00:00Z").await;
        let (_, full) = env
            .billing
            .credit_invoice(&full, &CreditRequest::Full, "refunded")
            .await
            .unwrap();
        assert_eq!(full.totals.amount_credited, dec!(20.00), "{backend}");
        assert!(full.is_fully_credited(), "{backend}");
        let (_, partial) = env
            .billing
            .credit_invoice(
                &partial,
                &CreditRequest::Amount { amount: dec!(5) },
                "goodwill",
            )
            .await
            .unwrap();
        assert_eq!(partial.totals.amount_credited, dec!(5.00), "{backend}");
        // Reactivated on 11-12, 4,000 calls, canceled now on 11-16: the
        // second final invoices bill them at the tier of November's 8,000
        // so far: 20.00.
        for id in ["c", "g"] {
            reactivate(&env, id, "2026-11-12T00:00:00Z").await;
        }
        env.clock.set(ts("2026-11-14T00:00:00Z"));
        for id in ["c", "g"] {
            env.consume(id, "calls", dec!(4000)).await;
        }
        env.engine.flush().await.unwrap();
        let mut second = Vec::new();
        for id in ["c", "g"] {
            let fin = invoice(&env, &cancel_now(&env, id, "2026-11-16T00:00:00Z").await).await;
            assert_eq!(fin.totals.total, dec!(20.00), "{backend}");
            second.push(fin);
        }
        // Reactivated on 11-18, 8,000 calls: November's 16,000 reach tier
        // 2, and the close bills the 8,000 at 0.002, 16.00.
        for id in ["c", "g"] {
            reactivate(&env, id, "2026-11-18T00:00:00Z").await;
        }
        env.clock.set(ts("2026-11-20T00:00:00Z"));
        for id in ["c", "g"] {
            env.consume(id, "calls", dec!(8000)).await;
        }
        env.engine.flush().await.unwrap();
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        // `c`: the credited part is treated as void, the second part's
        // 4,000 only are repriced: 8.00 − 20.00 = −12.00 (the old code
        // repriced the credited 4,000 too, −24.00, refunding 12.00 of the
        // 20.00 a second time).
        let rest = cycle_from(&env, "c", "2026-11-16T00:00:00Z").await;
        assert_eq!(
            kind_lines(&rest, InvoiceLineKind::Usage),
            [dec!(16.00), dec!(-12.00)],
            "{backend}: {rest:?}"
        );
        assert_eq!(second[0].totals.total + rest.totals.total, dec!(24.00));
        // `g`: the goodwill changes nothing: both earlier parts' 8,000
        // units billed for 40.00 are repriced, 16.00 − 40.00 = −24.00, as
        // without a credit note.
        let rest = cycle_from(&env, "g", "2026-11-16T00:00:00Z").await;
        assert_eq!(
            kind_lines(&rest, InvoiceLineKind::Usage),
            [dec!(16.00), dec!(-24.00)],
            "{backend}: {rest:?}"
        );
        env.cleanup().await;
    }
}

/// The test catalog with `min`: no base, in arrears, calls at 0.01 with a
/// 30.00 monthly minimum.
fn with_minimum_plan() -> String {
    format!(
        r#"{}
[plans.min]
name = "Minimum"
tier = 4
base_price = "0.00"
anchoring = "calendar"
billing = "in_arrears"

[plans.min.entitlements]
calls = "unlimited"

[[plans.min.charges]]
metric = "calls"
name = "Calls"
minimum = "30.00"
price = {{ model = "per_unit", unit_price = "0.01" }}
"#,
        common::CATALOG
    )
}

fn kind_lines(inv: &Invoice, kind: InvoiceLineKind) -> Vec<Decimal> {
    inv.lines
        .iter()
        .filter(|l| l.kind == kind)
        .map(|l| l.amount)
        .collect()
}

#[tokio::test]
async fn a_minimum_trued_up_on_a_final_invoice_is_credited_when_the_rest_of_the_period_reaches_it()
{
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        let env = env.reopen_with(&with_minimum_plan()).await;
        // `min`: calls at 0.01, a 30.00 minimum a month (November: 1.00 a
        // day). 300 calls, canceled now on 11-10: the final invoice bills
        // [11-01, 11-10), 3.00 of usage topped up to the part's share of
        // the minimum, 30 × 9/30 = 9.00: a minimum line of 6.00.
        env.subscribed("m", "min").await;
        env.clock.set(ts("2026-11-05T00:00:00Z"));
        env.consume("m", "calls", dec!(300)).await;
        env.engine.flush().await.unwrap();
        let fin = invoice(&env, &cancel_now(&env, "m", "2026-11-10T00:00:00Z").await).await;
        assert_eq!(kind_lines(&fin, InvoiceLineKind::Usage), [dec!(3.00)]);
        assert_eq!(kind_lines(&fin, InvoiceLineKind::Minimum), [dec!(6.00)]);
        assert_eq!(fin.totals.total, dec!(9.00), "{backend}");

        // Reactivated on 11-16 (the 6 days canceled owe no share of the
        // minimum, as they owe no base), 3,000 calls on 11-18: 30.00. The
        // parts billed, 9 + 15 = 24 days, owe 30 × 24/30 = 24.00 and their
        // usage came to 33.00: no true-up is due, and the close credits the
        // final invoice's: −6.00. November in all: 9.00 + 24.00 = 33.00, the
        // usage (the old code left the 6.00 billed: 39.00).
        reactivate(&env, "m", "2026-11-16T00:00:00Z").await;
        env.clock.set(ts("2026-11-18T00:00:00Z"));
        env.consume("m", "calls", dec!(3000)).await;
        env.engine.flush().await.unwrap();
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        let rest = cycle_from(&env, "m", "2026-11-10T00:00:00Z").await;
        assert_eq!(kind_lines(&rest, InvoiceLineKind::Usage), [dec!(30.00)]);
        assert_eq!(
            kind_lines(&rest, InvoiceLineKind::Minimum),
            [dec!(-6.00)],
            "{backend}: {rest:?}"
        );
        assert_eq!(rest.totals.total, dec!(24.00), "{backend}");
        assert_eq!(fin.totals.total + rest.totals.total, dec!(33.00));

        // December, one invoice over the period: 500 calls, 5.00, topped up
        // to the whole 30.00.
        env.clock.set(ts("2026-12-10T00:00:00Z"));
        env.consume("m", "calls", dec!(500)).await;
        env.engine.flush().await.unwrap();
        env.clock.set(ts("2027-01-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        let dec = cycle_from(&env, "m", "2026-12-01T00:00:00Z").await;
        assert_eq!(kind_lines(&dec, InvoiceLineKind::Minimum), [dec!(25.00)]);
        assert_eq!(dec.totals.total, dec!(30.00), "{backend}");
        env.cleanup().await;
    }
}

/// The index of `inv`'s minimum line.
fn minimum_line(inv: &Invoice) -> usize {
    inv.lines
        .iter()
        .position(|l| l.kind == InvoiceLineKind::Minimum)
        .unwrap_or_else(|| panic!("no minimum line: {inv:?}"))
}

#[tokio::test]
async fn a_credited_true_up_is_not_handed_back_again_by_the_rest_of_the_period() {
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        let env = env.reopen_with(&with_minimum_plan()).await;
        // `min`: calls at 0.01, a 30.00 minimum a month (November: 1.00 a
        // day). Five customers, 300 calls each, canceled now on 11-10: final
        // invoices of 3.00 of usage and a 6.00 true-up (30 × 9/30 = 9.00).
        // The operator then credits: `t` the whole true-up line, `h` 2.00
        // of it, `s` the whole line (its rest will stay short of the
        // minimum), `f` the line and then the rest of the invoice (credited
        // in full), `g` 2.00 of goodwill (an amount, no line named).
        let ids = ["t", "h", "s", "f", "g"];
        for id in ids {
            env.subscribed(id, "min").await;
        }
        env.clock.set(ts("2026-11-05T00:00:00Z"));
        for id in ids {
            env.consume(id, "calls", dec!(300)).await;
        }
        env.engine.flush().await.unwrap();
        let mut finals = Vec::new();
        for id in ids {
            let fin = invoice(&env, &cancel_now(&env, id, "2026-11-10T00:00:00Z").await).await;
            assert_eq!(kind_lines(&fin, InvoiceLineKind::Minimum), [dec!(6.00)]);
            assert_eq!(fin.totals.total, dec!(9.00), "{backend}");
            finals.push(fin);
        }
        let line = |amount: Decimal, fin: &Invoice| CreditRequest::Lines {
            lines: vec![(minimum_line(fin), amount)],
        };
        let requests = [
            vec![line(dec!(6.00), &finals[0])],
            vec![line(dec!(2.00), &finals[1])],
            vec![line(dec!(6.00), &finals[2])],
            vec![line(dec!(6.00), &finals[3]), CreditRequest::Full],
            vec![CreditRequest::Amount { amount: dec!(2) }],
        ];
        let mut credited = Vec::new();
        for (fin, requests) in finals.iter().zip(&requests) {
            let mut after = None;
            for request in requests {
                let (_, inv) = env
                    .billing
                    .credit_invoice(&fin.id, request, "true-up waived")
                    .await
                    .unwrap();
                after = Some(inv);
            }
            credited.push(after.unwrap().totals.amount_credited);
        }
        assert_eq!(
            credited,
            [dec!(6.00), dec!(2.00), dec!(6.00), dec!(9.00), dec!(2.00)],
            "{backend}"
        );

        // Reactivated on 11-16; 3,000 calls (30.00) each, but `s` only 300
        // (3.00). The parts billed (24 days) owe 24.00.
        for id in ids {
            reactivate(&env, id, "2026-11-16T00:00:00Z").await;
        }
        env.clock.set(ts("2026-11-18T00:00:00Z"));
        for id in ids {
            let calls = if id == "s" { dec!(300) } else { dec!(3000) };
            env.consume(id, "calls", calls).await;
        }
        env.engine.flush().await.unwrap();
        // The upcoming invoice already hands back only what no note did.
        env.clock.set(ts("2026-11-20T00:00:00Z"));
        let up = env.billing.upcoming_invoice("t").await.unwrap();
        assert!(
            kind_lines(&up, InvoiceLineKind::Minimum).is_empty(),
            "{backend}: {up:?}"
        );
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        let mut rests = Vec::new();
        for id in ids {
            rests.push(cycle_from(&env, id, "2026-11-10T00:00:00Z").await);
        }
        let minimum = |i: usize| kind_lines(&rests[i], InvoiceLineKind::Minimum);
        // What November costs each customer: both invoices less the notes.
        let net = |i: usize| finals[i].totals.total + rests[i].totals.total - credited[i];
        // `t`: usage 33.00 above the 24.00 owed; the true-up was not due,
        // and the note already gave it back: no minimum line (the old code
        // credited −6.00 again). November: 9.00 + 30.00 − 6.00 = 33.00, the
        // usage.
        assert_eq!(minimum(0), [] as [Decimal; 0], "{backend}: {:?}", rests[0]);
        assert_eq!(rests[0].totals.total, dec!(30.00), "{backend}");
        assert_eq!(net(0), dec!(33.00), "{backend}");
        // `h`: 2.00 of the 6.00 credited: the close hands back the 4.00 no
        // note did: −4.00 (the old code: −6.00), 33.00 in all.
        assert_eq!(minimum(1), [dec!(-4.00)], "{backend}: {:?}", rests[1]);
        assert_eq!(net(1), dec!(33.00), "{backend}");
        // `s`: usage 6.00, 18.00 short of the 24.00 owed, 6.00 of it billed:
        // 12.00, as with no note; the credit stays given: November 24.00 −
        // 6.00 = 18.00.
        assert_eq!(minimum(2), [dec!(12.00)], "{backend}: {:?}", rests[2]);
        assert_eq!(net(2), dec!(18.00), "{backend}");
        // `f`: credited in full, the final invoice is void for the rest of
        // November, which compares its own 30.00 with its own 15 days'
        // 15.00: no minimum line; November costs 30.00.
        assert_eq!(minimum(3), [] as [Decimal; 0], "{backend}: {:?}", rests[3]);
        assert_eq!(net(3), dec!(30.00), "{backend}");
        // `g`: goodwill names no line: −6.00, as with no note; November
        // 33.00 less the 2.00 of goodwill.
        assert_eq!(minimum(4), [dec!(-6.00)], "{backend}: {:?}", rests[4]);
        assert_eq!(net(4), dec!(31.00), "{backend}");
        env.cleanup().await;
    }
}
