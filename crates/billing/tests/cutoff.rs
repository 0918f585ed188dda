//! A crash between a subscription change's history entry and the engine's
//! change (subscribe, trial conversion, cancellation now, reactivation, a
//! scheduled cancellation, a plan change now or at period end), simulated
//! with `Billing::crash_after_next_history_entry`: the entry (the intent) is
//! written, the engine is not. The next tick (or the customer's next change)
//! completes the change and writes the proration and the invoice the entry
//! names, once. SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, ts};
use rust_decimal_macros::dec;
use tollgate_billing::BillingConfig;
use tollgate_billing::changes::{CancelRequest, ChangeRequest, MigrationRequest, TrialRequest};
use tollgate_core::billing::change::{ChangeTiming, ProrationBehavior};
use tollgate_core::billing::{Invoice, InvoiceLine};
use tollgate_engine::SubscribeOptions;
use tollgate_store::SubscriptionStatus;
use tollgate_store::billing::InvoiceFilter;
use tollgate_store::changes::PlanChangeRecord;

/// A cancellation at the period's end, without proration.
fn at_period_end() -> CancelRequest {
    CancelRequest {
        at_period_end: true,
        prorate: false,
        reason: None,
    }
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
        env.new_customer("s").await;
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
        env.new_customer("t").await;
        let trial = TrialRequest {
            plan: "inc".into(),
            version: None,
            days: Some(5),
            reason: None,
        };
        env.billing.start_trial("t", &trial, "test").await.unwrap();
        env.subscribed("f", "inc").await;
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
        env.subscribed("g", "inc").await;
        let at_end = at_period_end();
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
        env.subscribed("h", "inc").await;
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

/// The customer's plan and version in the engine.
fn plan_of(env: &Env, id: &str) -> (String, u32) {
    let s = env.engine.subscription(id).unwrap().unwrap();
    (s.plan_key, s.plan_version)
}

/// The lines of the customer's pending items (not on an invoice yet), in
/// order, without the plan change they came from.
async fn pending_lines(env: &Env, id: &str) -> Vec<InvoiceLine> {
    env.store
        .changes()
        .pending_items(id)
        .await
        .unwrap()
        .into_iter()
        .map(|i| {
            let mut line = i.line;
            line.as_object_mut().unwrap().remove("plan_change_id");
            serde_json::from_value(line).unwrap()
        })
        .collect()
}

fn kinds(h: Vec<PlanChangeRecord>) -> Vec<String> {
    h.into_iter().map(|c| c.kind).collect()
}

/// What a user compares of two customers' invoices: period, lines, total.
type Billed = (
    jiff::Timestamp,
    jiff::Timestamp,
    Vec<InvoiceLine>,
    rust_decimal::Decimal,
);

async fn billed(env: &Env, id: &str) -> Vec<Billed> {
    invoices_of(env, id)
        .await
        .into_iter()
        .map(|i| (i.period_start, i.period_end, i.lines, i.totals.total))
        .collect()
}

fn now_to(plan: &str, proration: ProrationBehavior) -> ChangeRequest {
    ChangeRequest {
        timing: Some(ChangeTiming::Immediately),
        proration,
        ..ChangeRequest::to(plan)
    }
}

#[tokio::test]
async fn an_upgrade_now_cut_off_after_its_entry_is_prorated_once_by_the_next_tick() {
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // `adv` ($20/month in advance, calls at 0.01) from 11-01 for `a`
        // and its twin `a2`: 20.00 each at subscription, 100 calls each.
        for id in ["a", "a2"] {
            env.subscribed(id, "adv").await;
            env.consume(id, "calls", dec!(100)).await;
        }
        env.engine.flush().await.unwrap();

        // On 11-10 both upgrade to `inc` ($30 in advance) with the proration
        // invoiced now: 21 of 30 days unused on adv, −14.00; the rest of
        // November on inc, 21.00; an off-cycle invoice of 7.00. `a2` whole.
        env.clock.set(ts("2026-11-10T00:00:00Z"));
        let req = now_to("inc", ProrationBehavior::InvoiceNow);
        let twin = env.billing.change_plan("a2", &req, "test").await.unwrap();
        let twin_invoice = twin.invoice_id.clone().unwrap();
        let amounts: Vec<_> = twin.pending_items.iter().map(|i| i.amount).collect();
        assert_eq!(amounts, [dec!(-14.00), dec!(21.00)], "{backend}");

        // `a` cut off after its entry: still on adv, nothing prorated or
        // invoiced, the entry names the invoice.
        env.billing.crash_after_next_history_entry();
        assert!(env.billing.change_plan("a", &req, "test").await.is_err());
        assert_eq!(plan_of(&env, "a"), ("adv".to_string(), 1), "{backend}");
        let entry = last_entry(&env, "a").await;
        assert_eq!(entry.kind, "upgrade", "{backend}");
        let named = entry.details["invoice_id"].as_str().unwrap().to_string();
        assert!(pending_lines(&env, "a").await.is_empty(), "{backend}");
        assert_eq!(invoices_of(&env, "a").await.len(), 1, "{backend}");

        // The tick moves `a` to inc and writes the invoice under the named
        // id, with the same lines as the twin's: 7.00 over [11-10, 12-01),
        // its two items attached (nothing left pending).
        env.clock.set(ts("2026-11-10T00:01:00Z"));
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.settlements_recovered, 1, "{backend}: {tick:?}");
        assert_eq!(plan_of(&env, "a"), ("inc".to_string(), 1), "{backend}");
        let got = env.billing.invoice(&named).await.unwrap().invoice;
        let want = env.billing.invoice(&twin_invoice).await.unwrap().invoice;
        assert_eq!(got.totals.total, dec!(7.00), "{backend}");
        assert_eq!(
            (got.period_start, got.period_end),
            (ts("2026-11-10T00:00:00Z"), ts("2026-12-01T00:00:00Z"))
        );
        assert_eq!(got.lines, want.lines, "{backend}");
        assert_eq!(got.totals, want.totals, "{backend}");
        assert!(pending_lines(&env, "a").await.is_empty(), "{backend}");

        // Recovery again (a tick, then the customer's next change: a
        // preview does not count, a scheduled change does) bills nothing
        // more.
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.settlements_recovered, 0, "{backend}: {tick:?}");
        let at_end = at_period_end();
        for id in ["a", "a2"] {
            env.billing
                .cancel_subscription(id, &at_end, "test")
                .await
                .unwrap();
        }
        assert_eq!(billed(&env, "a").await, billed(&env, "a2").await);
        assert_eq!(invoices_of(&env, "a").await.len(), 2, "{backend}");
        assert_eq!(
            kinds(env.billing.plan_change_history("a").await.unwrap()),
            ["subscribe", "upgrade"]
        );

        // The close of November bills both the same, once: the 100 calls
        // on adv, 1.00 (canceled at its end: no December base).
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        env.billing.run_once().await.unwrap();
        let a = billed(&env, "a").await;
        let totals: Vec<_> = a.iter().map(|i| i.3).collect();
        assert_eq!(totals, [dec!(20.00), dec!(7.00), dec!(1.00)], "{backend}");
        assert_eq!(a, billed(&env, "a2").await, "{backend}");
        env.cleanup().await;
    }
}

#[tokio::test]
async fn a_downgrade_now_cut_off_after_its_entry_is_completed_by_the_next_change_of_the_customer() {
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // `inc` ($30 in advance) from 11-01 for `b` and its twin `b2`
        // (30.00 each), a cancellation at period end scheduled on 11-05.
        let at_end = at_period_end();
        for id in ["b", "b2"] {
            env.subscribed(id, "inc").await;
        }
        env.clock.set(ts("2026-11-05T00:00:00Z"));
        for id in ["b", "b2"] {
            env.billing
                .cancel_subscription(id, &at_end, "test")
                .await
                .unwrap();
        }

        // On 11-10 both downgrade to `adv` ($20 in advance) now, the
        // proration on the next invoice: −21.00 (21 days of inc unused) and
        // 14.00 (21 days of adv) pending; the scheduled cancellation is
        // replaced. `b2` whole.
        env.clock.set(ts("2026-11-10T00:00:00Z"));
        let req = now_to("adv", ProrationBehavior::NextInvoice);
        let twin = env.billing.change_plan("b2", &req, "test").await.unwrap();
        assert_eq!(twin.change.as_ref().unwrap().kind, "downgrade");
        assert!(twin.superseded.is_some(), "{backend}");
        let amounts: Vec<_> = pending_lines(&env, "b2")
            .await
            .iter()
            .map(|l| l.amount)
            .collect();
        assert_eq!(amounts, [dec!(-21.00), dec!(14.00)], "{backend}");

        // `b` cut off after its entry: still on inc, nothing pending, its
        // cancellation still scheduled.
        env.billing.crash_after_next_history_entry();
        assert!(env.billing.change_plan("b", &req, "test").await.is_err());
        assert_eq!(plan_of(&env, "b"), ("inc".to_string(), 1), "{backend}");
        assert_eq!(last_entry(&env, "b").await.kind, "downgrade");
        assert!(pending_lines(&env, "b").await.is_empty(), "{backend}");
        let pending = env.store.changes().pending_scheduled_change("b").await;
        assert_eq!(pending.unwrap().unwrap().action, "cancel", "{backend}");

        // Its next change on 11-15 (back to inc at period end) completes it
        // first: on adv, the same two lines pending as the twin's, the
        // cancellation replaced (else this change would be refused as a
        // second scheduled change). The twin does the same.
        env.clock.set(ts("2026-11-15T00:00:00Z"));
        let back = ChangeRequest {
            timing: Some(ChangeTiming::PeriodEnd),
            ..ChangeRequest::to("inc")
        };
        for id in ["b", "b2"] {
            let out = env.billing.change_plan(id, &back, "test").await.unwrap();
            assert!(out.scheduled.is_some(), "{backend}: {id}");
        }
        assert_eq!(plan_of(&env, "b"), ("adv".to_string(), 1), "{backend}");
        assert_eq!(
            pending_lines(&env, "b").await,
            pending_lines(&env, "b2").await,
            "{backend}"
        );
        assert_eq!(pending_lines(&env, "b").await.len(), 2, "{backend}");
        assert_eq!(
            kinds(env.billing.plan_change_history("b").await.unwrap()),
            ["subscribe", "downgrade"]
        );
        // A tick has nothing left to do.
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.settlements_recovered, 0, "{backend}: {tick:?}");
        assert_eq!(pending_lines(&env, "b").await.len(), 2, "{backend}");

        // On 12-01 both move back to inc (not canceled) and November closes
        // once: the two items (−7.00) and December's base on inc, 30.00:
        // 23.00, the same for both.
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.changes_applied, 2, "{backend}: {tick:?}");
        env.billing.run_once().await.unwrap();
        for id in ["b", "b2"] {
            assert_eq!(status(&env, id), Some(SubscriptionStatus::Active));
            assert_eq!(plan_of(&env, id), ("inc".to_string(), 1), "{backend}");
            assert!(pending_lines(&env, id).await.is_empty(), "{backend}");
        }
        let b = billed(&env, "b").await;
        let totals: Vec<_> = b.iter().map(|i| i.3).collect();
        assert_eq!(totals, [dec!(30.00), dec!(23.00)], "{backend}");
        assert_eq!(b, billed(&env, "b2").await, "{backend}");
        env.cleanup().await;
    }
}

#[tokio::test]
async fn a_scheduled_downgrade_cut_off_after_its_entry_is_applied_once() {
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // `inc` ($30 in advance) from 11-01 for `c1` and `c2` (30.00 each),
        // both downgraded to `adv` ($20) at period end on 11-10.
        let mut scheduled = Vec::new();
        for id in ["c1", "c2"] {
            env.subscribed(id, "inc").await;
        }
        env.clock.set(ts("2026-11-10T00:00:00Z"));
        for id in ["c1", "c2"] {
            let out = env
                .billing
                .change_plan(id, &ChangeRequest::to("adv"), "test")
                .await
                .unwrap();
            scheduled.push(out.scheduled.unwrap().id);
        }

        // On 12-01 the first change applied is cut off after its entry (the
        // other is the twin): still on inc, the scheduled change pending.
        let now = ts("2026-12-01T00:00:00Z");
        env.clock.set(now);
        env.billing.crash_after_next_history_entry();
        let due = env.billing.apply_due_changes(now).await.unwrap();
        assert_eq!(
            (due.applied.len(), due.failed.len()),
            (1, 1),
            "{backend}: {due:?}"
        );
        let (cut, twin) = if due.failed[0].0 == scheduled[0] {
            ("c1", "c2")
        } else {
            ("c2", "c1")
        };
        assert_eq!(plan_of(&env, cut), ("inc".to_string(), 1), "{backend}");
        let entry = last_entry(&env, cut).await;
        assert_eq!(entry.kind, "downgrade", "{backend}");
        let pending = env.store.changes().pending_scheduled_change(cut).await;
        let pending = pending.unwrap().unwrap();
        assert_eq!(entry.details["scheduled_change"], pending.id.as_str());

        // The tick completes it (on adv, the scheduled change applied, its
        // one entry reported) before the run, which closes November on both
        // the same way: December's base on adv, 20.00.
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.changes_applied, 1, "{backend}: {tick:?}");
        for id in [cut, twin] {
            assert_eq!(plan_of(&env, id), ("adv".to_string(), 1), "{backend}");
            assert!(
                env.store
                    .changes()
                    .pending_scheduled_change(id)
                    .await
                    .unwrap()
                    .is_none()
            );
            assert_eq!(
                kinds(env.billing.plan_change_history(id).await.unwrap()),
                ["subscribe", "downgrade"]
            );
        }
        let c = billed(&env, cut).await;
        let totals: Vec<_> = c.iter().map(|i| i.3).collect();
        assert_eq!(totals, [dec!(30.00), dec!(20.00)], "{backend}");
        assert_eq!(c, billed(&env, twin).await, "{backend}");

        // Never applied or billed twice.
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(
            (tick.changes_applied, tick.settlements_recovered),
            (0, 0),
            "{backend}: {tick:?}"
        );
        assert_eq!(billed(&env, cut).await.len(), 2, "{backend}");
        env.cleanup().await;
    }
}

#[tokio::test]
async fn a_migration_cut_off_after_an_entry_is_completed_and_can_be_run_again() {
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // `adv` v1 (calls at 0.01) from 11-01 for `m1` and `m2` (20.00 each
        // at subscription), 100 calls each; then v2 prices calls at 0.02.
        for id in ["m1", "m2"] {
            env.subscribed(id, "adv").await;
            env.consume(id, "calls", dec!(100)).await;
        }
        env.engine.flush().await.unwrap();
        let v2 = common::CATALOG.replace(
            "price = { model = \"per_unit\", unit_price = \"0.01\" }\n\n[plans.inc]",
            "price = { model = \"per_unit\", unit_price = \"0.02\" }\n\n[plans.inc]",
        );
        assert_ne!(v2, common::CATALOG);
        let env = env.reopen_with(&v2).await;
        assert_eq!(env.engine.plan_versions("adv"), [1, 2], "{backend}");

        // On 11-10 the migration to v2 is cut off after the first
        // customer's entry: nobody is on v2 yet.
        env.clock.set(ts("2026-11-10T00:00:00Z"));
        let req = MigrationRequest {
            from_version: None,
            to_version: None,
            force: false,
            reason: None,
        };
        env.billing.crash_after_next_history_entry();
        assert!(env.billing.migrate_plan("adv", &req, "test").await.is_err());
        let mut cut = None;
        for id in ["m1", "m2"] {
            assert_eq!(plan_of(&env, id), ("adv".to_string(), 1), "{backend}");
            if last_entry(&env, id).await.kind == "migrate" {
                cut = Some(id);
            }
        }
        let cut = cut.unwrap();
        let other = if cut == "m1" { "m2" } else { "m1" };

        // The tick moves the one cut off; running the migration again moves
        // the other, and only it.
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.settlements_recovered, 0, "{backend}: {tick:?}");
        assert_eq!(plan_of(&env, cut), ("adv".to_string(), 2), "{backend}");
        assert_eq!(plan_of(&env, other), ("adv".to_string(), 1), "{backend}");
        let out = env.billing.migrate_plan("adv", &req, "test").await.unwrap();
        let moved: Vec<_> = out
            .migrated
            .iter()
            .map(|c| c.customer_id.as_str())
            .collect();
        assert_eq!(moved, [other], "{backend}");
        for id in ["m1", "m2"] {
            assert_eq!(plan_of(&env, id), ("adv".to_string(), 2), "{backend}");
            assert_eq!(
                kinds(env.billing.plan_change_history(id).await.unwrap()),
                ["subscribe", "migrate"]
            );
            env.consume(id, "calls", dec!(100)).await;
        }
        env.engine.flush().await.unwrap();

        // November closes the same for both: 100 calls at 0.01 before the
        // migration, 100 at 0.02 after, and December's base, 20.00.
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        let m1 = billed(&env, "m1").await;
        let totals: Vec<_> = m1.iter().map(|i| i.3).collect();
        assert_eq!(totals, [dec!(20.00), dec!(23.00)], "{backend}");
        assert_eq!(m1, billed(&env, "m2").await, "{backend}");
        env.cleanup().await;
    }
}

#[tokio::test]
async fn a_change_now_cut_off_is_completed_before_the_scheduled_change_it_replaced_falls_due() {
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // `inc` ($30 in advance) from 11-01 (30.00), a cancellation at
        // period end scheduled on 11-05, a downgrade to `adv` ($20) now on
        // 11-10 cut off after its entry, and no tick until 12-01.
        env.subscribed("d", "inc").await;
        env.clock.set(ts("2026-11-05T00:00:00Z"));
        let at_end = at_period_end();
        let scheduled = env.billing.cancel_subscription("d", &at_end, "test").await;
        assert!(scheduled.unwrap().scheduled.is_some(), "{backend}");
        env.clock.set(ts("2026-11-10T00:00:00Z"));
        env.billing.crash_after_next_history_entry();
        let req = now_to("adv", ProrationBehavior::NextInvoice);
        assert!(env.billing.change_plan("d", &req, "test").await.is_err());

        // On 12-01 the worker finds the cancellation due: the downgrade is
        // completed first and replaces it, so the customer stays, on adv.
        // November closes with the downgrade's −21.00 and 14.00 and
        // December's base on adv, 20.00: 13.00.
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.changes_applied, 0, "{backend}: {tick:?}");
        assert_eq!(status(&env, "d"), Some(SubscriptionStatus::Active));
        assert_eq!(plan_of(&env, "d"), ("adv".to_string(), 1), "{backend}");
        assert_eq!(
            kinds(env.billing.plan_change_history("d").await.unwrap()),
            ["subscribe", "downgrade"]
        );
        assert!(
            env.store
                .changes()
                .scheduled_changes_due(ts("2026-12-01T00:00:00Z"))
                .await
                .unwrap()
                .is_empty()
        );
        let totals: Vec<_> = billed(&env, "d").await.iter().map(|i| i.3).collect();
        assert_eq!(totals, [dec!(30.00), dec!(13.00)], "{backend}");
        let last = invoices_of(&env, "d").await.pop().unwrap();
        let prorations: Vec<_> = last
            .lines
            .iter()
            .filter(|l| l.kind == tollgate_core::billing::InvoiceLineKind::Proration)
            .map(|l| l.amount)
            .collect();
        assert_eq!(prorations, [dec!(-21.00), dec!(14.00)], "{backend}");
        env.billing.run_once().await.unwrap();
        assert_eq!(billed(&env, "d").await.len(), 2, "{backend}");
        env.cleanup().await;
    }
}

#[tokio::test]
async fn a_change_cut_off_after_its_entry_answers_its_idempotency_key_once_completed() {
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // `adv` ($20/month in advance) from 11-01 for `a`, `b` and their
        // twin `a2`: 20.00 each at subscription, 100 calls each.
        for id in ["a", "b", "a2"] {
            env.subscribed(id, "adv").await;
            env.consume(id, "calls", dec!(100)).await;
        }
        env.engine.flush().await.unwrap();

        // On 11-10 each upgrades to `inc` ($30) now, invoiced now, with key
        // `chg-1`: −14.00 and 21.00, an off-cycle invoice of 7.00. `a2`
        // whole; `a` and `b` cut off after their entries.
        env.clock.set(ts("2026-11-10T00:00:00Z"));
        let req = now_to("inc", ProrationBehavior::InvoiceNow);
        let once = |id: &'static str| env.billing.change_plan_once(id, &req, "test", "chg-1");
        let (twin, replayed) = once("a2").await.unwrap();
        assert!(!replayed, "{backend}");
        let e = &env;
        let cut_off = |id: &'static str| async move {
            e.billing.crash_after_next_history_entry();
            assert!(once(id).await.is_err(), "{backend}");
            assert_eq!(plan_of(e, id), ("adv".to_string(), 1), "{backend}");
            last_entry(e, id).await
        };
        let entry_a = cut_off("a").await;

        // The tick completes `a` (on inc, its invoice written). The client
        // retries with the same key and request: the change's answer, as
        // replayed, with the entry's change id, the twin's lines and
        // amounts, and the invoice the entry named. `b`, cut off after the
        // tick, is retried before any other: its retry completes it, and
        // answers the same way.
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.settlements_recovered, 1, "{backend}: {tick:?}");
        let entry_b = cut_off("b").await;
        for (id, entry) in [("a", &entry_a), ("b", &entry_b)] {
            let (got, replayed) = once(id).await.unwrap();
            assert!(replayed, "{backend}: {id}");
            assert_eq!(got.change.as_ref().unwrap().id, entry.id, "{backend}: {id}");
            assert_eq!(got.state, twin.state, "{backend}: {id}");
            assert_eq!(got.view.preview, twin.view.preview, "{backend}: {id}");
            assert_eq!(got.view.period, twin.view.period, "{backend}: {id}");
            let amounts: Vec<_> = got.pending_items.iter().map(|i| i.amount).collect();
            assert_eq!(amounts, [dec!(-14.00), dec!(21.00)], "{backend}: {id}");
            let lines = |o: &tollgate_billing::changes::ChangeOutcome| -> Vec<InvoiceLine> {
                o.pending_items
                    .iter()
                    .map(|i| {
                        let mut line = i.line.clone();
                        line.as_object_mut().unwrap().remove("plan_change_id");
                        serde_json::from_value(line).unwrap()
                    })
                    .collect()
            };
            assert_eq!(lines(&got), lines(&twin), "{backend}: {id}");
            let named = entry.details["invoice_id"].as_str().unwrap();
            assert_eq!(got.invoice_id.as_deref(), Some(named), "{backend}: {id}");
            assert!(
                got.pending_items
                    .iter()
                    .all(|i| i.invoice_id.as_deref() == Some(named)),
                "{backend}: {id}"
            );
            assert_eq!(
                (
                    got.subscription.plan_key.as_str(),
                    got.subscription.plan_version
                ),
                ("inc", 1),
                "{backend}: {id}"
            );

            // Applied once: one upgrade, one off-cycle invoice like the
            // twin's, nothing pending; a second retry answers the same.
            assert_eq!(
                kinds(env.billing.plan_change_history(id).await.unwrap()),
                ["subscribe", "upgrade"],
                "{backend}: {id}"
            );
            assert_eq!(
                billed(&env, id).await,
                billed(&env, "a2").await,
                "{backend}"
            );
            assert!(pending_lines(&env, id).await.is_empty(), "{backend}: {id}");
            let (again, replayed) = once(id).await.unwrap();
            assert!(replayed, "{backend}: {id}");
            assert_eq!(again, got, "{backend}: {id}");

            // The key with another request is refused, naming the key.
            let other = now_to("inc", ProrationBehavior::NextInvoice);
            let err = env
                .billing
                .change_plan_once(id, &other, "test", "chg-1")
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    tollgate_billing::changes::ChangeError::Invalid {
                        field: "Idempotency-Key",
                        ..
                    }
                ),
                "{backend}: {err}"
            );
        }
        let tick = env.billing.run_once().await.unwrap();
        assert_eq!(tick.settlements_recovered, 0, "{backend}: {tick:?}");
        env.cleanup().await;
    }
}

#[tokio::test]
async fn a_trial_set_over_a_scheduled_cancellation_replaces_it_only_once_its_entry_is_written() {
    for env in common::envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        let backend = env.backend();
        // `inc` from 11-01 for `c` and its twin `c2`, each with a
        // cancellation at period end scheduled on 11-05.
        let at_end = at_period_end();
        let mut cancels = Vec::new();
        for id in ["c", "c2"] {
            env.subscribed(id, "inc").await;
        }
        env.clock.set(ts("2026-11-05T00:00:00Z"));
        for id in ["c", "c2"] {
            let out = env.billing.cancel_subscription(id, &at_end, "test").await;
            cancels.push(out.unwrap().scheduled.unwrap());
        }

        // On 11-10 an operator sets each to a trial of `adv` ending 11-20
        // (a `trial_start` that replaces the cancellation and schedules the
        // trial's expiry). `c2` whole; `c` cut off after its entry: nothing
        // has changed yet: still active on inc, the cancellation still
        // scheduled, no expiry; the entry names both.
        env.clock.set(ts("2026-11-10T00:00:00Z"));
        let trial = || SubscribeOptions {
            status: Some(SubscriptionStatus::Trialing),
            trial_ends_at: Some(ts("2026-11-20T00:00:00Z")),
            ..SubscribeOptions::default()
        };
        env.billing
            .subscribe("c2", "adv", trial(), "test", None)
            .await
            .unwrap();
        env.billing.crash_after_next_history_entry();
        let cut = env.billing.subscribe("c", "adv", trial(), "test", None);
        assert!(cut.await.is_err(), "{backend}");
        assert_eq!(status(&env, "c"), Some(SubscriptionStatus::Active));
        assert_eq!(plan_of(&env, "c"), ("inc".to_string(), 1), "{backend}");
        let pending = env.billing.scheduled_change("c").await.unwrap().unwrap();
        assert_eq!(pending.id, cancels[0].id, "{backend}");
        let entry = last_entry(&env, "c").await;
        assert_eq!(entry.kind, "trial_start", "{backend}");
        assert_eq!(entry.details["supersedes"], cancels[0].id.as_str());

        // The tick completes it as the twin's: trialing on adv, the
        // cancellation canceled (superseded by the entry), the expiry
        // pending for 11-20.
        env.clock.set(ts("2026-11-10T00:01:00Z"));
        env.billing.run_once().await.unwrap();
        for (id, cancel) in [("c", &cancels[0]), ("c2", &cancels[1])] {
            assert_eq!(status(&env, id), Some(SubscriptionStatus::Trialing));
            assert_eq!(plan_of(&env, id), ("adv".to_string(), 1), "{backend}");
            let replaced = env.store.changes().scheduled_change(&cancel.id).await;
            assert_eq!(
                replaced.unwrap().unwrap().state,
                "canceled",
                "{backend}: {id}"
            );
            let expiry = env.billing.scheduled_change(id).await.unwrap().unwrap();
            assert_eq!(
                (expiry.action.as_str(), expiry.effective_at),
                ("trial_expire", ts("2026-11-20T00:00:00Z")),
                "{backend}: {id}"
            );
        }
        let superseded = env.store.changes().scheduled_change(&cancels[0].id).await;
        assert_eq!(
            superseded.unwrap().unwrap().reason,
            Some(format!("superseded by {}", entry.id))
        );

        // On 11-20 both trials expire, once.
        env.clock.set(ts("2026-11-20T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        env.billing.run_once().await.unwrap();
        for id in ["c", "c2"] {
            assert_eq!(status(&env, id), Some(SubscriptionStatus::Canceled));
            assert_eq!(
                kinds(env.billing.plan_change_history(id).await.unwrap()),
                ["subscribe", "trial_start", "trial_expire"],
                "{backend}: {id}"
            );
        }
        assert_eq!(billed(&env, "c").await, billed(&env, "c2").await);
        env.cleanup().await;
    }
}
