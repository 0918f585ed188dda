//! A crash between a subscription change's history entry and the engine's
//! change (subscribe, trial conversion, cancellation now, reactivation, a
//! scheduled cancellation), simulated with
//! `Billing::crash_after_next_history_entry`: the entry (the intent) is
//! written, the engine is not. The next tick completes the change and writes
//! the invoice the entry names, once. SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, ts};
use rust_decimal_macros::dec;
use tollgate_billing::BillingConfig;
use tollgate_billing::changes::{CancelRequest, TrialRequest};
use tollgate_core::billing::Invoice;
use tollgate_engine::{NewCustomer, SubscribeOptions};
use tollgate_store::SubscriptionStatus;
use tollgate_store::billing::InvoiceFilter;
use tollgate_store::changes::PlanChangeRecord;

async fn new_customer(env: &Env, id: &str) {
    env.engine
        .create_customer(NewCustomer::new(id))
        .await
        .unwrap();
}

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

async fn last_entry(env: &Env, id: &str) -> PlanChangeRecord {
    env.billing
        .plan_change_history(id)
        .await
        .unwrap()
        .pop()
        .unwrap()
}

fn status(env: &Env, id: &str) -> Option<SubscriptionStatus> {
    env.engine.subscription(id).unwrap().map(|s| s.status)
}

fn cancel_now() -> CancelRequest {
    CancelRequest {
        at_period_end: false,
        prorate: true,
        reason: None,
    }
}

#[tokio::test]
async fn a_subscription_change_cut_off_before_the_engine_is_completed_by_the_next_tick() {
    for env in common::envs_at("2026-11-10T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // `inc`: $30/month in advance, calendar (November: $1 a day), calls
        // at 0.01 with 100 included.

        // Subscribe, cut off after the history entry: no subscription in
        // the engine, the entry names the first period's invoice, no invoice.
        new_customer(&env, "s").await;
        env.billing.crash_after_next_history_entry();
        let err = env
            .billing
            .subscribe("s", "inc", SubscribeOptions::default(), "test", None)
            .await;
        assert!(err.is_err(), "{backend}");
        assert_eq!(status(&env, "s"), None, "{backend}");
        let entry = last_entry(&env, "s").await;
        assert_eq!(entry.kind, "subscribe");
        let named = entry.details["invoice_id"].as_str().unwrap().to_string();
        assert!(invoices_of(&env, "s").await.is_empty());

        // A trial (`t`, 5 days) and a paid subscription (`f`), whole.
        new_customer(&env, "t").await;
        let trial = TrialRequest {
            plan: "inc".into(),
            version: None,
            days: Some(5),
            reason: None,
        };
        env.billing.start_trial("t", &trial, "test").await.unwrap();
        new_customer(&env, "f").await;
        env.billing
            .subscribe("f", "inc", SubscribeOptions::default(), "test", None)
            .await
            .unwrap();
        env.consume("f", "calls", dec!(150)).await;
        env.engine.flush().await.unwrap();

        // The tick subscribes `s` in the engine as recorded (anchored on the
        // 10th) and writes its invoice under the named id: 21 of 30 days,
        // 21.00.
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.settlements_recovered, 1, "{backend}: {tick:?}");
        let sub = env.engine.subscription("s").unwrap().unwrap();
        assert_eq!(
            (sub.plan_key.as_str(), sub.status, sub.anchor),
            (
                "inc",
                SubscriptionStatus::Active,
                ts("2026-11-10T00:00:00Z")
            )
        );
        let s = invoices_of(&env, "s").await;
        assert_eq!(s.len(), 1, "{backend}");
        assert_eq!(
            (s[0].id.as_str(), s[0].totals.total),
            (named.as_str(), dec!(21.00))
        );

        // The trial converted on the 12th, cut off: still trialing.
        env.clock.set(ts("2026-11-12T00:00:00Z"));
        env.billing.crash_after_next_history_entry();
        assert!(env.billing.convert_trial("t", None, "test").await.is_err());
        assert_eq!(status(&env, "t"), Some(SubscriptionStatus::Trialing));
        assert_eq!(last_entry(&env, "t").await.kind, "trial_convert");
        // The tick converts it, re-anchored at the 12th as recorded, and
        // bills [11-12, 12-01): 19.00. Its expiry (the 15th) is dropped.
        env.clock.set(ts("2026-11-13T00:00:00Z"));
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.settlements_recovered, 1, "{backend}: {tick:?}");
        let sub = env.engine.subscription("t").unwrap().unwrap();
        assert_eq!(
            (sub.status, sub.anchor),
            (SubscriptionStatus::Active, ts("2026-11-12T00:00:00Z"))
        );
        let t = invoices_of(&env, "t").await;
        assert_eq!(t.len(), 1, "{backend}");
        assert_eq!(t[0].totals.total, dec!(19.00), "{backend}");
        assert!(
            env.store
                .changes()
                .pending_scheduled_change("t")
                .await
                .unwrap()
                .is_none()
        );

        // `f` canceled now on the 20th, cut off: still active, the entry
        // names the final invoice and the credit, nothing else is written.
        env.clock.set(ts("2026-11-20T00:00:00Z"));
        env.billing.crash_after_next_history_entry();
        let err = env
            .billing
            .cancel_subscription("f", &cancel_now(), "test")
            .await;
        assert!(err.is_err(), "{backend}");
        assert_eq!(status(&env, "f"), Some(SubscriptionStatus::Active));
        let cancel = last_entry(&env, "f").await;
        assert_eq!(cancel.kind, "cancel");
        let final_id = cancel.details["invoice_id"].as_str().unwrap().to_string();
        assert!(
            env.store
                .changes()
                .pending_items("f")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(invoices_of(&env, "f").await.len(), 1);
        // The tick cancels it and writes the credit and the final invoice
        // [11-10, 11-20): 150 calls, 100 included, 0.50; 11 days unused,
        // −11.00.
        env.clock.set(ts("2026-11-20T00:01:00Z"));
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.settlements_recovered, 1, "{backend}: {tick:?}");
        assert_eq!(status(&env, "f"), Some(SubscriptionStatus::Canceled));
        let fin = env.billing.invoice(&final_id).await.unwrap().invoice;
        common::assert_final_invoice_of_the_20th(&env, "f", &fin).await;

        // Reactivated on the 25th, cut off: still canceled. The tick
        // reactivates it and bills the rest of November in advance, 6.00.
        env.clock.set(ts("2026-11-25T00:00:00Z"));
        env.billing.crash_after_next_history_entry();
        let err = env
            .billing
            .set_subscription_status("f", SubscriptionStatus::Active, "test")
            .await;
        assert!(err.is_err(), "{backend}");
        assert_eq!(status(&env, "f"), Some(SubscriptionStatus::Canceled));
        assert_eq!(last_entry(&env, "f").await.kind, "reactivate");
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.settlements_recovered, 1, "{backend}: {tick:?}");
        assert_eq!(status(&env, "f"), Some(SubscriptionStatus::Active));
        let f = invoices_of(&env, "f").await;
        assert_eq!(f.len(), 3, "{backend}");
        assert_eq!(f[2].totals.total, dec!(6.00), "{backend}");
        assert_eq!(
            (f[2].period_start, f[2].period_end),
            (ts("2026-11-25T00:00:00Z"), ts("2026-12-01T00:00:00Z"))
        );

        // Once: another tick completes and writes nothing, and each history
        // has one entry per change.
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.settlements_recovered, 0, "{backend}");
        let kinds = |h: Vec<PlanChangeRecord>| h.into_iter().map(|c| c.kind).collect::<Vec<_>>();
        assert_eq!(
            kinds(env.billing.plan_change_history("f").await.unwrap()),
            ["subscribe", "cancel", "reactivate"]
        );
        assert_eq!(
            kinds(env.billing.plan_change_history("t").await.unwrap()),
            ["trial_start", "trial_convert"]
        );
        // The close of November: `f` owes the rest of the period from its
        // final invoice (nothing used, canceled from the 20th to the 25th)
        // and December's 30.00; `s` December's 30.00; no first period again.
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        let f = invoices_of(&env, "f").await;
        assert_eq!(f.len(), 4, "{backend}");
        assert_eq!(f[3].totals.total, dec!(30.00), "{backend}");
        let s = invoices_of(&env, "s").await;
        assert_eq!(s.len(), 2, "{backend}");
        assert_eq!(s[1].totals.total, dec!(30.00), "{backend}");
        env.cleanup().await;
    }
}

#[tokio::test]
async fn a_scheduled_cancellation_cut_off_before_the_engine_is_applied_once() {
    for env in common::envs_at("2026-11-10T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        new_customer(&env, "g").await;
        env.billing
            .subscribe("g", "inc", SubscribeOptions::default(), "test", None)
            .await
            .unwrap();
        let at_end = CancelRequest {
            at_period_end: true,
            prorate: false,
            reason: None,
        };
        let scheduled = env
            .billing
            .cancel_subscription("g", &at_end, "test")
            .await
            .unwrap()
            .scheduled
            .unwrap();
        // The worker applies it on December 1st and is cut off after the
        // history entry: the change fails, and the same tick's recovery
        // cancels the subscription in the engine and marks the scheduled
        // change applied.
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        env.billing.crash_after_next_history_entry();
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.changes_failed, 1, "{backend}: {tick:?}");
        assert_eq!(status(&env, "g"), Some(SubscriptionStatus::Canceled));
        assert!(
            env.store
                .changes()
                .pending_scheduled_change("g")
                .await
                .unwrap()
                .is_none()
        );
        // Never a second cancellation.
        assert_eq!(env.billing.run_once().await.unwrap().changes_applied, 0);
        let history = env.billing.plan_change_history("g").await.unwrap();
        let kinds: Vec<_> = history.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(kinds, ["subscribe", "cancel"], "{backend}");
        assert_eq!(
            history[1].details["scheduled_change"],
            scheduled.id.as_str()
        );
        // November closed once (its base was billed at subscription: 21.00),
        // December not billed.
        let all = invoices_of(&env, "g").await;
        assert_eq!(all.len(), 2, "{backend}: {all:?}");
        assert_eq!(all[1].totals.total, dec!(0.00), "{backend}");
        env.cleanup().await;
    }
}

#[tokio::test]
async fn the_next_change_of_the_customer_completes_a_cut_off_one_first() {
    for env in common::envs_at("2026-11-10T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // `inc` from 11-10 (21.00), canceled now on 11-20 and cut off after
        // the history entry; reactivated on 11-25 before any tick.
        new_customer(&env, "h").await;
        env.billing
            .subscribe("h", "inc", SubscribeOptions::default(), "test", None)
            .await
            .unwrap();
        env.clock.set(ts("2026-11-20T00:00:00Z"));
        env.billing.crash_after_next_history_entry();
        assert!(
            env.billing
                .cancel_subscription("h", &cancel_now(), "test")
                .await
                .is_err()
        );
        assert_eq!(status(&env, "h"), Some(SubscriptionStatus::Active));
        env.clock.set(ts("2026-11-25T00:00:00Z"));
        // The reactivation first completes the cancellation (the engine
        // cancels, the final invoice is written: 11 days unused, −11.00),
        // then reactivates: the rest of November, 6.00.
        let after = env
            .billing
            .set_subscription_status("h", SubscriptionStatus::Active, "test")
            .await
            .unwrap();
        assert_eq!(after.status, SubscriptionStatus::Active, "{backend}");
        let kinds: Vec<_> = env
            .billing
            .plan_change_history("h")
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.kind)
            .collect();
        assert_eq!(kinds, ["subscribe", "cancel", "reactivate"], "{backend}");
        let all = invoices_of(&env, "h").await;
        let totals: Vec<_> = all.iter().map(|i| i.totals.total).collect();
        assert_eq!(totals, [dec!(21.00), dec!(-11.00), dec!(6.00)], "{backend}");
        // A tick has nothing left to do.
        assert_eq!(
            env.billing.run_once().await.unwrap().settlements_recovered,
            0
        );
        env.cleanup().await;
    }
}
