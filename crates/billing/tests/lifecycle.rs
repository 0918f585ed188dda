//! Invoices at a subscription's start and at an immediate cancellation, end
//! to end on a real SQLite store and engine, on a test clock: the first
//! period's in-advance base invoiced at subscription (and never again at the
//! close), trials, and the final invoice of a cancellation now with its
//! proration credit.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, env_at, ts};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_billing::BillingConfig;
use tollgate_billing::changes::{CancelRequest, SubscriptionOutcome, TrialRequest};
use tollgate_core::billing::{Invoice, InvoiceLineKind, InvoiceStatus};
use tollgate_engine::SubscribeOptions;
use tollgate_store::billing::{InvoiceFilter, InvoiceKind};

async fn invoices_of(env: &Env, id: &str) -> Vec<Invoice> {
    let mut all = env
        .billing
        .list_invoices(&InvoiceFilter {
            customer_id: Some(id.into()),
            ..InvoiceFilter::default()
        })
        .await
        .unwrap();
    all.sort_by_key(|i| (i.created_at, i.period_start));
    all
}

/// Every base line billed for the instant `at`, over all invoices.
fn base_billed_for(invoices: &[Invoice], at: &str) -> Vec<Decimal> {
    let at = ts(at);
    invoices
        .iter()
        .flat_map(|i| &i.lines)
        .filter(|l| l.kind == InvoiceLineKind::Base && l.period_start <= at && at < l.period_end)
        .map(|l| l.amount)
        .collect()
}

fn cancel_request(prorate: bool) -> CancelRequest {
    CancelRequest {
        at_period_end: false,
        prorate,
        reason: None,
    }
}

/// Cancels `id`'s subscription now, with or without proration.
async fn cancel_now(env: &Env, id: &str, prorate: bool) -> SubscriptionOutcome {
    env.billing
        .cancel_subscription(id, &cancel_request(prorate), "test")
        .await
        .unwrap()
}

#[tokio::test]
async fn subscribing_to_an_in_advance_plan_invoices_the_first_period_once() {
    // `adv`: $20/month in advance, calendar billing. Subscribed on day 10 of
    // November (30 days): 21 of 30 days, 20 × 21/30 = 14.00, issued now.
    let env = env_at("2026-11-10T00:00:00Z", BillingConfig::default()).await;
    env.subscribed("s", "adv").await;
    let first = invoices_of(&env, "s").await;
    assert_eq!(first.len(), 1, "{first:?}");
    let inv = &first[0];
    assert_eq!(inv.status, InvoiceStatus::Open);
    assert_eq!(inv.number.as_deref(), Some("INV-000001"));
    assert_eq!(inv.totals.total, dec!(14.00));
    assert_eq!(inv.period_start, ts("2026-11-10T00:00:00Z"));
    assert_eq!(inv.period_end, ts("2026-12-01T00:00:00Z"));
    assert_eq!(inv.issued_at, Some(ts("2026-11-10T00:00:00Z")));
    assert_eq!(
        inv.lines[0].description,
        "Advance plan (monthly), 2026-11-10 to 2026-12-01 (prorated)"
    );
    let stored = env.billing.invoice(&inv.id).await.unwrap();
    assert_eq!(stored.kind, InvoiceKind::OffCycle);
    // The history entry names it.
    let history = env.billing.plan_change_history("s").await.unwrap();
    assert_eq!(history[0].details["invoice_id"], inv.id.as_str());

    // 100 calls at 0.01; the close on December 1st collects December's base
    // and November's usage, never November's base again.
    env.consume("s", "calls", dec!(100)).await;
    env.engine.flush().await.unwrap();
    env.clock.set(ts("2026-12-01T00:00:00Z"));
    let r = env.billing.run_once().await.unwrap().invoices;
    assert_eq!((r.created, r.issued), (1, 1), "{r:?}");
    let all = invoices_of(&env, "s").await;
    assert_eq!(all.len(), 2);
    let close = &all[1];
    let lines: Vec<_> = close
        .lines
        .iter()
        .map(|l| (l.kind, l.period_start, l.amount))
        .collect();
    assert_eq!(
        lines,
        [
            (
                InvoiceLineKind::Base,
                ts("2026-12-01T00:00:00Z"),
                dec!(20.00)
            ),
            (
                InvoiceLineKind::Usage,
                ts("2026-11-10T00:00:00Z"),
                dec!(1.00)
            ),
        ]
    );
    assert_eq!(close.totals.total, dec!(21.00));
    // November's base: billed once, 14.00; December's once, 20.00.
    assert_eq!(base_billed_for(&all, "2026-11-20T00:00:00Z"), [dec!(14.00)]);
    assert_eq!(base_billed_for(&all, "2026-12-20T00:00:00Z"), [dec!(20.00)]);
    // A rerun changes nothing.
    let again = env.billing.run_once().await.unwrap().invoices;
    assert_eq!(again.created, 0);
    assert_eq!(invoices_of(&env, "s").await.len(), 2);

    // A plan billed in arrears owes nothing at the start (its close bills it).
    env.subscribed("arrears", "pro").await;
    assert!(invoices_of(&env, "arrears").await.is_empty());
}

#[tokio::test]
async fn without_auto_issue_the_first_period_invoice_waits_as_a_draft() {
    let config = BillingConfig {
        auto_issue: false,
        ..BillingConfig::default()
    };
    let env = env_at("2026-11-10T00:00:00Z", config).await;
    env.subscribed("s", "adv").await;
    let all = invoices_of(&env, "s").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, InvoiceStatus::Draft);
    assert_eq!(all[0].number, None);
    assert_eq!(all[0].totals.total, dec!(14.00));
}

#[tokio::test]
async fn a_trial_is_not_invoiced_and_its_conversion_invoices_the_first_paid_period() {
    let env = env_at("2026-11-01T00:00:00Z", BillingConfig::default()).await;
    env.new_customer("t").await;
    let trial = TrialRequest {
        plan: "adv".into(),
        version: None,
        days: Some(14),
        reason: None,
    };
    env.billing.start_trial("t", &trial, "test").await.unwrap();
    assert!(
        invoices_of(&env, "t").await.is_empty(),
        "no invoice while trialing"
    );

    // Converted on November 12: re-anchored there; the first paid period
    // [11-12, 12-01) owes 20 × 19/30 = 12.666… → 12.67.
    env.clock.set(ts("2026-11-12T00:00:00Z"));
    let out = env.billing.convert_trial("t", None, "test").await.unwrap();
    let all = invoices_of(&env, "t").await;
    assert_eq!(all.len(), 1);
    assert_eq!(out.invoice_id.as_deref(), Some(all[0].id.as_str()));
    assert_eq!(all[0].totals.total, dec!(12.67));
    assert_eq!(all[0].period_start, ts("2026-11-12T00:00:00Z"));

    // The close of that period collects December only.
    env.clock.set(ts("2026-12-01T00:00:00Z"));
    env.billing.run_once().await.unwrap();
    let all = invoices_of(&env, "t").await;
    assert_eq!(all.len(), 2);
    assert_eq!(base_billed_for(&all, "2026-11-20T00:00:00Z"), [dec!(12.67)]);
    assert_eq!(all[1].totals.total, dec!(20.00));
}

#[tokio::test]
async fn canceling_now_credits_the_unused_base_and_bills_usage_on_a_final_invoice() {
    let env = env_at("2026-11-01T00:00:00Z", BillingConfig::default()).await;
    // `c`: $20 in advance from November 1st: 20.00 invoiced at subscription.
    env.subscribed("c", "adv").await;
    // `p`: Pro, $49 in arrears; `n`: `adv` canceled without proration.
    env.subscribed("p", "pro").await;
    env.subscribed("n", "adv").await;
    assert_eq!(invoices_of(&env, "c").await[0].totals.total, dec!(20.00));
    env.clock.set(ts("2026-11-05T00:00:00Z"));
    env.consume("c", "calls", dec!(300)).await;
    env.consume("p", "calls", dec!(100)).await;
    env.consume("n", "calls", dec!(200)).await;
    env.engine.flush().await.unwrap();

    // Canceled at the start of November 10: 21 of 30 days unused.
    env.clock.set(ts("2026-11-10T00:00:00Z"));
    let out = cancel_now(&env, "c", true).await;
    let final_id = out.invoice_id.clone().unwrap();
    let stored = env.billing.invoice(&final_id).await.unwrap();
    let fin = &stored.invoice;
    assert_eq!(stored.kind, InvoiceKind::Cycle);
    assert_eq!(fin.status, InvoiceStatus::Open);
    assert_eq!(fin.period_start, ts("2026-11-01T00:00:00Z"));
    assert_eq!(fin.period_end, ts("2026-11-10T00:00:00Z"));
    let lines: Vec<_> = fin.lines.iter().map(|l| (l.kind, l.amount)).collect();
    // 300 calls × 0.01 = 3.00; credit −20 × 21/30 = −14.00: total −11.00,
    // a credit to the customer (nothing due).
    assert_eq!(
        lines,
        [
            (InvoiceLineKind::Usage, dec!(3.00)),
            (InvoiceLineKind::Proration, dec!(-14.00)),
        ]
    );
    assert_eq!(
        fin.lines[1].description,
        "Unused time on Advance plan from 2026-11-10 to 2026-12-01 (canceled)"
    );
    assert_eq!(fin.totals.total, dec!(-11.00));
    assert_eq!(fin.totals.amount_due, dec!(0.00));
    let change = out.change.unwrap();
    assert_eq!(change.details["invoice_id"], final_id.as_str());
    assert_eq!(change.details["proration_lines"][0]["amount"], "-14.00");
    assert!(
        env.store
            .changes()
            .pending_items("c")
            .await
            .unwrap()
            .is_empty()
    );

    // In arrears: Pro's base to the cancellation, 49 × 9/30 = 14.70, and
    // 100 calls × 0.001 = 0.10; no credit (nothing was billed ahead).
    let out = cancel_now(&env, "p", true).await;
    let fin = env
        .billing
        .invoice(&out.invoice_id.unwrap())
        .await
        .unwrap()
        .invoice;
    assert_eq!(fin.lines[0].kind, InvoiceLineKind::Base);
    assert_eq!(fin.lines[0].amount, dec!(14.70));
    assert_eq!(fin.totals.total, dec!(14.80));
    assert!(
        fin.lines
            .iter()
            .all(|l| l.kind != InvoiceLineKind::Proration)
    );

    // `prorate: false`: no credit, no final invoice now.
    let out = cancel_now(&env, "n", false).await;
    assert_eq!(out.invoice_id, None);
    assert_eq!(invoices_of(&env, "n").await.len(), 1);

    // At the period's end the run finds c's and p's periods invoiced and
    // closes n's (its usage, no base ahead for a canceled subscription).
    env.clock.set(ts("2026-12-01T00:00:00Z"));
    let r = env.billing.run_once().await.unwrap().invoices;
    assert_eq!((r.created, r.already_invoiced), (1, 2), "{r:?}");
    assert_eq!(invoices_of(&env, "c").await.len(), 2);
    assert_eq!(invoices_of(&env, "p").await.len(), 1);
    let n = invoices_of(&env, "n").await;
    assert_eq!(n.len(), 2);
    assert_eq!(n[1].totals.total, dec!(2.00));
}

#[tokio::test]
async fn canceling_now_again_after_a_reactivation_settles_only_what_the_first_final_invoice_did_not()
 {
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // `inc`: $30/month in advance (November: $1 a day), calls at 0.01
        // with 100 included. 30.00 invoiced at subscription.
        env.subscribed("r", "inc").await;
        env.clock.set(ts("2026-11-05T00:00:00Z"));
        env.consume("r", "calls", dec!(150)).await;
        env.engine.flush().await.unwrap();

        // Canceled on the 10th: final invoice #1 over [11-01, 11-10): 150
        // calls, 100 included, 0.50; credit −21.00 (21 days unused).
        env.clock.set(ts("2026-11-10T00:00:00Z"));
        let first = cancel_now(&env, "r", true).await;
        let first_id = first.invoice_id.clone().unwrap();
        let fin1 = env.billing.invoice(&first_id).await.unwrap().invoice;
        assert_eq!(fin1.totals.total, dec!(-20.50), "{backend}");

        // Reactivated on the 16th: the rest of November is billed again, in
        // advance, as a restarted subscription: 30 × 15/30 = 15.00.
        env.clock.set(ts("2026-11-16T00:00:00Z"));
        env.billing
            .set_subscription_status("r", tollgate_store::SubscriptionStatus::Active, "test")
            .await
            .unwrap();
        let all = invoices_of(&env, "r").await;
        assert_eq!(all.len(), 3, "{backend}: {all:?}");
        let react = &all[2];
        assert_eq!(react.totals.total, dec!(15.00), "{backend}");
        assert_eq!(
            (react.period_start, react.period_end),
            (ts("2026-11-16T00:00:00Z"), ts("2026-12-01T00:00:00Z"))
        );
        let history = env.billing.plan_change_history("r").await.unwrap();
        assert_eq!(history[2].kind, "reactivate");
        assert_eq!(history[2].details["invoice_id"], react.id.as_str());

        env.clock.set(ts("2026-11-18T00:00:00Z"));
        env.consume("r", "calls", dec!(200)).await;
        env.engine.flush().await.unwrap();

        // Canceled again on the 22nd: a second final invoice over what the
        // first did not settle, [11-10, 11-22): the 200 calls, all billable
        // (the 100 included were used by the first 150), 2.00; the second
        // credit, 9 days unused, −9.00. Total −7.00.
        env.clock.set(ts("2026-11-22T00:00:00Z"));
        let second = cancel_now(&env, "r", true).await;
        let second_id = second.invoice_id.clone().unwrap();
        assert_ne!(second_id, first_id, "{backend}");
        let stored = env.billing.invoice(&second_id).await.unwrap();
        assert_eq!(stored.kind, InvoiceKind::Cycle);
        let fin2 = &stored.invoice;
        assert_eq!(
            (fin2.period_start, fin2.period_end),
            (ts("2026-11-10T00:00:00Z"), ts("2026-11-22T00:00:00Z"))
        );
        let lines: Vec<_> = fin2.lines.iter().map(|l| (l.kind, l.amount)).collect();
        assert_eq!(
            lines,
            [
                (InvoiceLineKind::Usage, dec!(2.00)),
                (InvoiceLineKind::Proration, dec!(-9.00)),
            ],
            "{backend}"
        );
        assert_eq!(fin2.lines[0].billable_quantity, dec!(200));
        assert_eq!(
            fin2.lines[1].description,
            "Unused time on Included plan from 2026-11-22 to 2026-12-01 (canceled)"
        );
        assert_eq!(fin2.totals.total, dec!(-7.00), "{backend}");
        assert_eq!(fin2.status, InvoiceStatus::Open);
        let change = second.change.unwrap();
        assert_eq!(change.details["invoice_id"], second_id.as_str());
        // Nothing is left pending.
        assert!(
            env.store
                .changes()
                .pending_items("r")
                .await
                .unwrap()
                .is_empty(),
            "{backend}"
        );

        // The close on December 1st finds November settled.
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        let all = invoices_of(&env, "r").await;
        assert_eq!(all.len(), 4, "{backend}: {all:?}");
        // November's base, net: 9 days to the 10th, nothing while canceled,
        // 6 days from the 16th to the 22nd, 15.00 in all (30 − 21 + 15 − 9);
        // 350 calls less 100 included: 2.50.
        let net_base: Decimal = all
            .iter()
            .flat_map(|i| &i.lines)
            .filter(|l| matches!(l.kind, InvoiceLineKind::Base | InvoiceLineKind::Proration))
            .map(|l| l.amount)
            .sum();
        assert_eq!(net_base, dec!(15.00), "{backend}");
        let usage: Decimal = all
            .iter()
            .flat_map(|i| &i.lines)
            .filter(|l| l.kind == InvoiceLineKind::Usage)
            .map(|l| l.amount)
            .sum();
        assert_eq!(usage, dec!(2.50), "{backend}");
        env.cleanup().await;
    }
}

#[tokio::test]
async fn a_reactivation_after_a_cancellation_without_proration_owes_nothing_more() {
    let env = env_at("2026-11-01T00:00:00Z", BillingConfig::default()).await;
    // 20.00 for November at subscription; canceled on the 10th without
    // proration (November stays paid), reactivated on the 16th: nothing to
    // bill now; the close on December 1st bills December's base as usual.
    env.subscribed("n", "adv").await;
    env.clock.set(ts("2026-11-10T00:00:00Z"));
    cancel_now(&env, "n", false).await;
    env.clock.set(ts("2026-11-16T00:00:00Z"));
    env.billing
        .set_subscription_status("n", tollgate_store::SubscriptionStatus::Active, "test")
        .await
        .unwrap();
    assert_eq!(invoices_of(&env, "n").await.len(), 1);
    let history = env.billing.plan_change_history("n").await.unwrap();
    assert_eq!(history[2].details["invoice_id"], serde_json::Value::Null);
    env.clock.set(ts("2026-12-01T00:00:00Z"));
    env.billing.run_once().await.unwrap();
    let all = invoices_of(&env, "n").await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].totals.total, dec!(20.00));
    assert_eq!(base_billed_for(&all, "2026-11-20T00:00:00Z"), [dec!(20.00)]);
}

/// Makes the customer's invoices fail to compute (a tax rate that is not a
/// number), or fixes them again: the plan change itself still happens.
async fn set_tax_rate(env: &Env, id: &str, rate: &str) {
    env.engine
        .update_customer(
            id,
            tollgate_engine::CustomerUpdate {
                metadata: Some(serde_json::json!({ "tax_rate": rate })),
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn an_invoice_cut_off_from_its_plan_change_is_written_by_the_next_tick_once() {
    for env in common::envs_at("2026-11-10T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // A subscription whose first-period invoice fails after the engine
        // switched the customer and the history recorded it (as a crash
        // between the two would leave it).
        env.new_customer("s").await;
        set_tax_rate(&env, "s", "oops").await;
        let err = env
            .billing
            .subscribe("s", "inc", SubscribeOptions::default(), "test", None)
            .await;
        assert!(err.is_err(), "{backend}");
        assert!(env.engine.subscription("s").unwrap().is_some());
        let history = env.billing.plan_change_history("s").await.unwrap();
        let named = history[0].details["invoice_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(invoices_of(&env, "s").await.is_empty(), "{backend}");

        // `f`: subscribed on the 10th (30 × 21/30 = 21.00), 150 calls, then
        // canceled now on the 20th, its final invoice cut off the same way:
        // the engine canceled it, the credit is pending, no final invoice.
        env.subscribed("f", "inc").await;
        env.consume("f", "calls", dec!(150)).await;
        env.engine.flush().await.unwrap();
        env.clock.set(ts("2026-11-20T00:00:00Z"));
        set_tax_rate(&env, "f", "oops").await;
        let err = env
            .billing
            .cancel_subscription("f", &cancel_request(true), "test")
            .await;
        assert!(err.is_err(), "{backend}");
        assert_eq!(invoices_of(&env, "f").await.len(), 1, "{backend}");
        assert_eq!(
            env.store.changes().pending_items("f").await.unwrap().len(),
            1
        );

        // The next tick writes both, once, under the ids the history names.
        set_tax_rate(&env, "s", "0").await;
        set_tax_rate(&env, "f", "0").await;
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.settlements_recovered, 2, "{backend}: {tick:?}");
        let s = invoices_of(&env, "s").await;
        assert_eq!(s.len(), 1, "{backend}");
        assert_eq!(s[0].id, named);
        assert_eq!(s[0].totals.total, dec!(21.00));
        assert_eq!(
            (s[0].period_start, s[0].period_end),
            (ts("2026-11-10T00:00:00Z"), ts("2026-12-01T00:00:00Z"))
        );
        assert_eq!(s[0].status, InvoiceStatus::Open);
        let f = invoices_of(&env, "f").await;
        assert_eq!(f.len(), 2, "{backend}");
        let fin = &f[1];
        let cancel = env
            .billing
            .plan_change_history("f")
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(cancel.details["invoice_id"], fin.id.as_str());
        common::assert_final_invoice_of_the_20th(&env, "f", fin).await;

        // Again: nothing more.
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.settlements_recovered, 0, "{backend}");
        assert_eq!(invoices_of(&env, "s").await.len(), 1);
        assert_eq!(invoices_of(&env, "f").await.len(), 2);
        // And the close of November bills neither first period nor f's
        // period again: s gets December's base and no November base.
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        assert_eq!(invoices_of(&env, "f").await.len(), 2, "{backend}");
        let s = invoices_of(&env, "s").await;
        assert_eq!(s.len(), 2, "{backend}");
        assert_eq!(base_billed_for(&s, "2026-11-20T00:00:00Z"), [dec!(21.00)]);
        env.cleanup().await;
    }
}

#[tokio::test]
async fn after_a_reactivation_the_close_bills_the_rest_of_the_period_and_the_next_base() {
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // `inc` from November 1st (30.00), 150 calls, canceled now on the
        // 10th (final invoice [11-01, 11-10): 0.50 and −21.00), reactivated
        // on the 16th (15.00 for [11-16, 12-01)), then 200 calls.
        env.subscribed("r", "inc").await;
        env.clock.set(ts("2026-11-05T00:00:00Z"));
        env.consume("r", "calls", dec!(150)).await;
        env.engine.flush().await.unwrap();
        env.clock.set(ts("2026-11-10T00:00:00Z"));
        cancel_now(&env, "r", true).await;
        env.clock.set(ts("2026-11-16T00:00:00Z"));
        env.billing
            .set_subscription_status("r", tollgate_store::SubscriptionStatus::Active, "test")
            .await
            .unwrap();
        env.clock.set(ts("2026-11-18T00:00:00Z"));
        env.consume("r", "calls", dec!(200)).await;
        env.engine.flush().await.unwrap();
        assert_eq!(invoices_of(&env, "r").await.len(), 3, "{backend}");

        // The close on December 1st bills what the final invoice did not:
        // [11-10, 12-01), the 200 calls (all billable: the 100 included went
        // to the first 150), 2.00, and December's base, 30.00.
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        let r = env.billing.run_once().await.unwrap().invoices;
        assert_eq!(r.created, 1, "{backend}: {r:?}");
        let all = invoices_of(&env, "r").await;
        assert_eq!(all.len(), 4, "{backend}");
        let rest = &all[3];
        assert_eq!(
            (rest.period_start, rest.period_end),
            (ts("2026-11-10T00:00:00Z"), ts("2026-12-01T00:00:00Z"))
        );
        let lines: Vec<_> = rest.lines.iter().map(|l| (l.kind, l.amount)).collect();
        assert_eq!(
            lines,
            [
                (InvoiceLineKind::Base, dec!(30.00)),
                (InvoiceLineKind::Usage, dec!(2.00)),
            ],
            "{backend}"
        );
        assert_eq!(rest.lines[1].billable_quantity, dec!(200));
        assert_eq!(rest.lines[0].period_start, ts("2026-12-01T00:00:00Z"));
        assert_eq!(
            env.billing.invoice(&rest.id).await.unwrap().kind,
            InvoiceKind::Cycle
        );
        // Once: a rerun writes nothing.
        let again = env.billing.run_once().await.unwrap().invoices;
        assert_eq!(again.created, 0, "{backend}: {again:?}");
        assert_eq!(invoices_of(&env, "r").await.len(), 4);
        // Over November: base 30 − 21 + 15 = 24.00 (every day but the six
        // canceled ones), usage 350 − 100 included = 2.50; December's base
        // once.
        let nov_base: Decimal = all
            .iter()
            .flat_map(|i| &i.lines)
            .filter(|l| matches!(l.kind, InvoiceLineKind::Base | InvoiceLineKind::Proration))
            .filter(|l| l.period_start < ts("2026-12-01T00:00:00Z"))
            .map(|l| l.amount)
            .sum();
        assert_eq!(nov_base, dec!(24.00), "{backend}");
        assert_eq!(base_billed_for(&all, "2026-12-10T00:00:00Z"), [dec!(30.00)]);
        env.cleanup().await;
    }
}

#[tokio::test]
async fn in_arrears_no_base_is_owed_for_the_days_a_subscription_was_canceled() {
    let env = env_at("2026-11-01T00:00:00Z", BillingConfig::default()).await;
    // Pro, $49/month in arrears, from November 1st; canceled now on the
    // 10th: final invoice with the base to then, 49 × 9/30 = 14.70.
    env.subscribed("p", "pro").await;
    env.clock.set(ts("2026-11-10T00:00:00Z"));
    let first = cancel_now(&env, "p", true).await;
    let fin1 = env
        .billing
        .invoice(&first.invoice_id.unwrap())
        .await
        .unwrap()
        .invoice;
    assert_eq!(fin1.totals.total, dec!(14.70));
    // Reactivated on the 16th (in arrears: nothing owed now), 100 calls at
    // 0.001, canceled again on the 22nd: the second final invoice bills the
    // base of the six days served, 49 × 6/30 = 9.80, not of the six days
    // canceled, and 0.10 of usage.
    env.clock.set(ts("2026-11-16T00:00:00Z"));
    env.billing
        .set_subscription_status("p", tollgate_store::SubscriptionStatus::Active, "test")
        .await
        .unwrap();
    assert_eq!(invoices_of(&env, "p").await.len(), 1);
    env.consume("p", "calls", dec!(100)).await;
    env.engine.flush().await.unwrap();
    env.clock.set(ts("2026-11-22T00:00:00Z"));
    let second = cancel_now(&env, "p", true).await;
    let fin2 = env
        .billing
        .invoice(&second.invoice_id.unwrap())
        .await
        .unwrap()
        .invoice;
    assert_eq!(
        (fin2.period_start, fin2.period_end),
        (ts("2026-11-10T00:00:00Z"), ts("2026-11-22T00:00:00Z"))
    );
    // (Pro's other charges: 0.00 lines.)
    let lines: Vec<_> = fin2
        .lines
        .iter()
        .filter(|l| !l.amount.is_zero())
        .map(|l| (l.kind, l.period_start, l.amount))
        .collect();
    assert_eq!(
        lines,
        [
            (
                InvoiceLineKind::Base,
                ts("2026-11-16T00:00:00Z"),
                dec!(9.80)
            ),
            (
                InvoiceLineKind::Usage,
                ts("2026-11-16T00:00:00Z"),
                dec!(0.10)
            ),
        ]
    );
    assert_eq!(fin2.totals.total, dec!(9.90));
}

#[tokio::test]
async fn a_reactivation_in_a_later_period_does_not_reopen_the_canceled_one() {
    let env = env_at("2026-11-01T00:00:00Z", BillingConfig::default()).await;
    // `inc` from November 1st (30.00), canceled now on the 10th (final
    // invoice and −21.00), left canceled through the close of November.
    env.subscribed("q", "inc").await;
    env.clock.set(ts("2026-11-10T00:00:00Z"));
    cancel_now(&env, "q", true).await;
    env.clock.set(ts("2026-12-01T00:00:00Z"));
    let r = env.billing.run_once().await.unwrap().invoices;
    assert_eq!(r.created, 0, "{r:?}");
    // Reactivated on December 5th: the rest of December, 30 × 27/31 =
    // 26.129… → 26.13.
    env.clock.set(ts("2026-12-05T00:00:00Z"));
    env.billing
        .set_subscription_status("q", tollgate_store::SubscriptionStatus::Active, "test")
        .await
        .unwrap();
    let all = invoices_of(&env, "q").await;
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].totals.total, dec!(26.13));
    // The close on January 1st bills January's base once, and November
    // (closed by its final invoice, no reactivation in it) stays closed.
    env.clock.set(ts("2027-01-01T00:00:00Z"));
    let r = env.billing.run_once().await.unwrap().invoices;
    assert_eq!(r.created, 1, "{r:?}");
    let all = invoices_of(&env, "q").await;
    assert_eq!(all.len(), 4);
    assert_eq!(
        (all[3].period_start, all[3].period_end),
        (ts("2026-12-01T00:00:00Z"), ts("2027-01-01T00:00:00Z"))
    );
    assert_eq!(all[3].totals.total, dec!(30.00));
    assert_eq!(base_billed_for(&all, "2026-12-20T00:00:00Z"), [dec!(26.13)]);
    assert_eq!(base_billed_for(&all, "2027-01-20T00:00:00Z"), [dec!(30.00)]);
}
