//! The invoice run end to end on a real SQLite store and engine, on a test
//! clock: what closes when, exact amounts, idempotency, resuming an
//! interrupted run, plan-change segments, pending items, payments, credit
//! notes and the upcoming invoice.

#![allow(clippy::unwrap_used)]

mod common;

use common::{env_at, ts};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;
use tollgate_billing::BillingConfig;
use tollgate_billing::run::{RunOptions, parse_month};
use tollgate_core::billing::credit::CreditRequest;
use tollgate_core::billing::{InvoiceLine, InvoiceLineKind, InvoiceStatus};
use tollgate_core::money::Currency;
use tollgate_store::billing::InvoiceFilter;
use tollgate_store::changes::{PendingItemRecord, PlanChangeRecord};

fn november() -> RunOptions {
    RunOptions {
        month: Some(parse_month("2026-11").unwrap()),
        ..RunOptions::default()
    }
}

/// a: the Pulse-like usage, VAT 20 % from its metadata; b: nothing used;
/// c: 2,500 calls.
async fn three_customers(env: &common::Env) {
    env.customer("a", "pro", json!({"tax_rate": "0.2"})).await;
    env.customer("b", "pro", json!({})).await;
    env.customer("c", "pro", json!({})).await;
    env.clock.set(ts("2026-11-10T12:00:00Z"));
    env.consume("a", "calls", dec!(1000)).await;
    env.consume("a", "minutes", dec!(50000)).await;
    env.consume("a", "storage_gb", dec!(50)).await;
    env.consume("a", "egress_gb", dec!(500)).await;
    env.consume_with("a", "tokens", dec!(100000), json!({"model": "big"}))
        .await;
    env.consume_with("a", "tokens", dec!(100000), json!({"model": "small"}))
        .await;
    env.consume("c", "calls", dec!(2500)).await;
    env.engine.flush().await.unwrap();
}

#[tokio::test]
async fn a_period_closes_at_its_end_once_with_exact_amounts_and_gapless_numbers() {
    let env = env_at("2026-11-01T00:00:00Z", BillingConfig::default()).await;
    three_customers(&env).await;

    // One second before the end of November nothing is due.
    env.clock.set(ts("2026-11-30T23:59:59Z"));
    let tick = env.billing.run_once().await.unwrap();
    assert_eq!(tick.invoices.periods, 0);
    assert!(
        env.billing
            .list_invoices(&InvoiceFilter::default())
            .await
            .unwrap()
            .is_empty()
    );

    // At the end, the worker's tick closes it.
    env.clock.set(ts("2026-12-01T00:00:00Z"));
    let tick = env.billing.run_once().await.unwrap();
    let r = &tick.invoices;
    assert_eq!((r.periods, r.created, r.issued), (3, 3, 3), "{r:?}");
    assert!(r.failed.is_empty(), "{:?}", r.failed);

    let all = env
        .billing
        .list_invoices(&InvoiceFilter::default())
        .await
        .unwrap();
    let by = |c: &str| all.iter().find(|i| i.customer_id == c).unwrap().clone();
    let (a, b, c) = (by("a"), by("b"), by("c"));
    // Numbers in customer order, gapless.
    assert_eq!(a.number.as_deref(), Some("INV-000001"));
    assert_eq!(b.number.as_deref(), Some("INV-000002"));
    assert_eq!(c.number.as_deref(), Some("INV-000003"));
    // a: 49 + 1.00 + 200.00 + 5.00 + 25.00 + tokens 2.00 + 1.00 = 283.00,
    // VAT 20 % per line 56.60, total 339.60.
    assert_eq!(a.status, InvoiceStatus::Open);
    assert_eq!(a.totals.subtotal, dec!(283.00));
    assert_eq!(a.totals.tax, dec!(56.60));
    assert_eq!(a.totals.total, dec!(339.60));
    assert_eq!(a.period_start, ts("2026-11-01T00:00:00Z"));
    assert_eq!(a.period_end, ts("2026-12-01T00:00:00Z"));
    assert_eq!(a.issued_at, Some(ts("2026-12-01T00:00:00Z")));
    assert_eq!(a.due_at, Some(ts("2026-12-31T00:00:00Z")));
    assert_eq!(a.bill_to.name, "Customer a");
    let tokens: Vec<_> = a
        .lines
        .iter()
        .filter(|l| l.feature.as_deref() == Some("tokens"))
        .map(|l| (l.dimensions.get("model").cloned(), l.amount))
        .collect();
    assert_eq!(
        tokens,
        vec![
            (Some("big".to_string()), dec!(2.00)),
            (Some("small".to_string()), dec!(1.00))
        ]
    );
    // b: the base only, no tax by default; c: 49 + 2.50.
    assert_eq!(b.totals.total, dec!(49.00));
    assert_eq!(c.totals.total, dec!(51.50));

    // Reruns (the worker again, a manual close of November) change nothing.
    let again = env.billing.run_once().await.unwrap().invoices;
    assert_eq!(
        (again.created, again.issued, again.already_invoiced),
        (0, 0, 3)
    );
    let manual = env
        .billing
        .run_invoices(&november(), &|_| {})
        .await
        .unwrap();
    assert_eq!((manual.created, manual.already_invoiced), (0, 3));
    assert_eq!(
        env.billing
            .list_invoices(&InvoiceFilter::default())
            .await
            .unwrap()
            .len(),
        3
    );

    // December closes on January 1st, numbered after November's.
    env.clock.set(ts("2027-01-01T00:00:00Z"));
    let jan = env.billing.run_once().await.unwrap().invoices;
    assert_eq!((jan.created, jan.issued), (3, 3));
    let dec_a = env
        .billing
        .list_invoices(&InvoiceFilter {
            customer_id: Some("a".into()),
            period_from: Some(ts("2026-12-01T00:00:00Z")),
            ..InvoiceFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(dec_a.len(), 1);
    assert_eq!(dec_a[0].number.as_deref(), Some("INV-000004"));
    // Nothing used in December: 49.00 + VAT 9.80.
    assert_eq!(dec_a[0].totals.total, dec!(58.80));
}

#[tokio::test]
async fn a_run_interrupted_after_its_drafts_is_finished_by_the_next_one() {
    // A first run that writes the drafts but does not issue them stands for a
    // run killed between the two transactions.
    let drafts_only = BillingConfig {
        auto_issue: false,
        ..BillingConfig::default()
    };
    let env = env_at("2026-11-01T00:00:00Z", drafts_only).await;
    three_customers(&env).await;
    env.clock.set(ts("2026-12-02T00:00:00Z"));
    let first = env
        .billing
        .run_invoices(&november(), &|_| {})
        .await
        .unwrap();
    assert_eq!((first.created, first.issued), (3, 0));
    let drafts = env
        .billing
        .list_invoices(&InvoiceFilter::default())
        .await
        .unwrap();
    assert!(drafts.iter().all(|i| i.status == InvoiceStatus::Draft));

    let issuing = tollgate_billing::Billing::new(
        env.engine.clone(),
        env.store.clone(),
        BillingConfig::default(),
    );
    let mut seen = Vec::new();
    let progress = std::sync::Mutex::new(&mut seen);
    let second = issuing
        .run_invoices(&november(), &|p| {
            if let Ok(mut s) = progress.lock() {
                s.push((p.done, p.total));
            }
        })
        .await
        .unwrap();
    assert_eq!((second.created, second.resumed, second.issued), (0, 3, 3));
    assert_eq!(seen.last(), Some(&(3, 3)));
    let after = issuing
        .list_invoices(&InvoiceFilter::default())
        .await
        .unwrap();
    // The same three invoices (same ids), now numbered 1, 2, 3.
    let mut ids: Vec<_> = drafts.iter().map(|i| i.id.clone()).collect();
    let mut ids_after: Vec<_> = after.iter().map(|i| i.id.clone()).collect();
    ids.sort();
    ids_after.sort();
    assert_eq!(ids, ids_after);
    let mut numbers: Vec<_> = after.iter().filter_map(|i| i.number.clone()).collect();
    numbers.sort();
    assert_eq!(numbers, ["INV-000001", "INV-000002", "INV-000003"]);
}

#[tokio::test]
async fn a_plan_change_splits_the_period_and_pending_items_are_attached() {
    let env = env_at("2026-11-01T00:00:00Z", BillingConfig::default()).await;
    env.customer("d", "pro", json!({})).await;
    // History: on `adv` from the start, upgraded to `pro` on Nov 16.
    env.store
        .changes()
        .insert_plan_change(&PlanChangeRecord {
            id: "pch_1".into(),
            customer_id: "d".into(),
            kind: "upgrade".into(),
            from_plan: Some("adv".into()),
            from_version: Some(1),
            to_plan: "pro".into(),
            to_version: 1,
            effective_at: ts("2026-11-16T00:00:00Z"),
            requested_at: ts("2026-11-16T00:00:00Z"),
            actor: "test".into(),
            reason: None,
            details: json!({}),
        })
        .await
        .unwrap();
    let usd = Currency::from_code("USD").unwrap();
    let line = InvoiceLine::fee(
        InvoiceLineKind::Proration,
        "Unused time on Advance",
        ts("2026-11-16T00:00:00Z"),
        ts("2026-12-01T00:00:00Z"),
        dec!(-10.00),
        usd,
    );
    env.store
        .changes()
        .insert_pending_item(&PendingItemRecord {
            id: "pii_1".into(),
            customer_id: "d".into(),
            line: serde_json::to_value(&line).unwrap(),
            amount: dec!(-10.00),
            currency: "USD".into(),
            created_at: ts("2026-11-16T00:00:00Z"),
            invoice_id: None,
        })
        .await
        .unwrap();
    env.clock.set(ts("2026-11-10T00:00:00Z"));
    env.consume("d", "calls", dec!(100)).await;
    env.clock.set(ts("2026-11-20T00:00:00Z"));
    env.consume("d", "calls", dec!(100)).await;
    env.engine.flush().await.unwrap();

    env.clock.set(ts("2026-12-01T00:00:00Z"));
    let r = env.billing.run_once().await.unwrap().invoices;
    assert_eq!((r.created, r.issued), (1, 1), "{r:?}");
    let inv = &env
        .billing
        .list_invoices(&InvoiceFilter::default())
        .await
        .unwrap()[0];
    let amounts: Vec<_> = inv
        .lines
        .iter()
        .map(|l| (l.kind, l.plan_key.clone(), l.amount))
        .collect();
    // Pro in arrears for 15 of 30 days: 24.50; calls: 100 on Advance at
    // 0.01 = 1.00, 100 on Pro at 0.001 = 0.10; the pending credit −10.00.
    assert!(
        amounts.contains(&(InvoiceLineKind::Base, Some("pro".into()), dec!(24.50))),
        "{amounts:?}"
    );
    let calls: Vec<_> = inv
        .lines
        .iter()
        .filter(|l| l.feature.as_deref() == Some("calls"))
        .map(|l| (l.plan_key.clone(), l.amount))
        .collect();
    assert_eq!(
        calls,
        vec![
            (Some("adv".into()), dec!(1.00)),
            (Some("pro".into()), dec!(0.10))
        ]
    );
    assert!(
        inv.lines
            .iter()
            .any(|l| l.kind == InvoiceLineKind::Proration && l.amount == dec!(-10.00))
    );
    assert!(
        env.store
            .changes()
            .pending_items("d")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn payments_credit_notes_and_status_changes_through_the_service() {
    let env = env_at("2026-11-01T00:00:00Z", BillingConfig::default()).await;
    three_customers(&env).await;
    env.clock.set(ts("2026-12-01T00:00:00Z"));
    env.billing.run_once().await.unwrap();
    let all = env
        .billing
        .list_invoices(&InvoiceFilter::default())
        .await
        .unwrap();
    let id = |c: &str| all.iter().find(|i| i.customer_id == c).unwrap().id.clone();

    // a owes 339.60: 100.00 by cheque, then the rest.
    let first = env
        .billing
        .record_payment(&id("a"), "manual", "chq-1", Some(dec!(100.00)), json!({}))
        .await
        .unwrap();
    assert_eq!(first.invoice.totals.amount_due, dec!(239.60));
    let again = env
        .billing
        .record_payment(&id("a"), "manual", "chq-1", Some(dec!(100.00)), json!({}))
        .await
        .unwrap();
    assert!(!again.created);
    let rest = env
        .billing
        .record_payment(&id("a"), "manual", "wire-2", None, json!({}))
        .await
        .unwrap();
    assert_eq!(rest.payment.amount, dec!(239.60));
    assert_eq!(rest.invoice.status, InvoiceStatus::Paid);
    assert!(
        env.billing
            .record_payment(&id("b"), "manual", "x", Some(dec!(1.001)), json!({}))
            .await
            .is_err()
    );

    // b is credited in full: CN-000001 of 49.00, nothing due.
    let (note, inv) = env
        .billing
        .credit_invoice(&id("b"), &CreditRequest::Full, "cancelled by agreement")
        .await
        .unwrap();
    assert_eq!(note.number.as_deref(), Some("CN-000001"));
    assert_eq!(note.total, dec!(49.00));
    assert_eq!(inv.totals.amount_due, Decimal::ZERO);

    // c: overdue after its due date, then void (its number stays taken).
    assert!(env.billing.overdue_invoices().await.unwrap().is_empty());
    env.clock.set(ts("2026-12-31T00:00:01Z"));
    let overdue = env.billing.overdue_invoices().await.unwrap();
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].customer_id, "c");
    let void = env.billing.void_invoice(&id("c")).await.unwrap();
    assert_eq!(void.status, InvoiceStatus::Void);
    assert_eq!(void.number.as_deref(), Some("INV-000003"));
}

#[tokio::test]
async fn a_draft_takes_lines_until_issued() {
    let env = env_at(
        "2026-11-01T00:00:00Z",
        BillingConfig {
            auto_issue: false,
            ..BillingConfig::default()
        },
    )
    .await;
    env.customer("b", "pro", json!({})).await;
    env.clock.set(ts("2026-12-01T00:00:00Z"));
    env.billing.run_once().await.unwrap();
    let id = env
        .billing
        .list_invoices(&InvoiceFilter::default())
        .await
        .unwrap()[0]
        .id
        .clone();
    let inv = env
        .billing
        .add_draft_line(&id, "Onboarding session", dec!(150.00))
        .await
        .unwrap();
    assert_eq!(inv.totals.total, dec!(199.00));
    let issued = env.billing.issue(&id).await.unwrap();
    assert_eq!(issued.totals.total, dec!(199.00));
    assert_eq!(issued.number.as_deref(), Some("INV-000001"));
    assert!(
        env.billing
            .add_draft_line(&id, "late", dec!(1))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_upcoming_invoice_projects_usage_at_its_present_pace() {
    let env = env_at("2026-11-01T00:00:00Z", BillingConfig::default()).await;
    env.customer("d", "pro", json!({})).await;
    env.clock.set(ts("2026-11-05T00:00:00Z"));
    env.consume("d", "calls", dec!(1000)).await;
    env.engine.flush().await.unwrap();
    // 10 of 30 days elapsed: 1,000 calls project to 3,000 = 3.00, plus 49.00.
    env.clock.set(ts("2026-11-11T00:00:00Z"));
    let up = env.billing.upcoming_invoice("d").await.unwrap();
    assert_eq!(up.status, InvoiceStatus::Draft);
    assert_eq!(up.totals.total, dec!(52.00));
    assert!(env.billing.upcoming_invoice("nobody").await.is_err());
}

/// The worker's tick writes `invoice.overdue` once an open invoice is past
/// its due date and `trial.ending` 3 days before a trial ends, each once.
#[tokio::test]
async fn the_tick_writes_overdue_and_trial_ending_once() {
    let env = env_at("2026-11-01T00:00:00Z", BillingConfig::default()).await;
    env.customer("b", "pro", json!({})).await;
    env.engine
        .create_customer(tollgate_engine::NewCustomer::new("t"))
        .await
        .unwrap();
    env.engine
        .subscribe(
            "t",
            "pro",
            tollgate_engine::SubscribeOptions {
                trial_ends_at: Some(ts("2026-12-20T00:00:00Z")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let types = |events: Vec<tollgate_store::notify::OutboxEvent>| -> Vec<String> {
        let mut e = events;
        e.sort_by_key(|e| e.seq);
        e.into_iter().map(|e| e.event_type).collect()
    };

    // Dec 1: b's November invoice is issued (due Dec 31); t's trial ends in
    // 19 days: nothing due yet.
    env.clock.set(ts("2026-12-01T00:00:00Z"));
    let tick = env.billing.run_once().await.unwrap();
    assert_eq!(tick.notices, 0);
    let notify = env.store.notify();
    assert_eq!(
        types(notify.customer_events("b", 100).await.unwrap()),
        ["invoice.issued"]
    );
    // 3 days before the trial ends (to the second): trial.ending, once.
    env.clock.set(ts("2026-12-16T23:59:59Z"));
    assert_eq!(env.billing.run_once().await.unwrap().notices, 0);
    env.clock.set(ts("2026-12-17T00:00:00Z"));
    assert_eq!(env.billing.run_once().await.unwrap().notices, 1);
    assert_eq!(env.billing.run_once().await.unwrap().notices, 0);
    let t = notify.customer_events("t", 100).await.unwrap();
    let ending: Vec<_> = t
        .iter()
        .filter(|e| e.event_type == "trial.ending")
        .collect();
    assert_eq!(ending.len(), 1);
    assert_eq!(
        ending[0].payload["trial_ends_at"],
        json!("2026-12-20T00:00:00Z")
    );
    // At the due date nothing is overdue; a second later it is, once.
    env.clock.set(ts("2026-12-31T00:00:00Z"));
    assert_eq!(env.billing.run_once().await.unwrap().notices, 0);
    env.clock.set(ts("2026-12-31T00:00:01Z"));
    let overdue = env.billing.run_once().await.unwrap().notices;
    assert_eq!(overdue, 1);
    let b = notify.customer_events("b", 100).await.unwrap();
    let o: Vec<_> = b
        .iter()
        .filter(|e| e.event_type == "invoice.overdue")
        .collect();
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].payload["amount_due"], json!("49"));
    assert_eq!(o[0].payload["number"], json!("INV-000001"));
}

#[tokio::test]
async fn the_run_applies_a_customer_discount_to_the_periods_it_covers() {
    use tollgate_billing::discounts::DiscountRequest;
    use tollgate_billing::run::InvoiceError;
    use tollgate_core::billing::discount::{DiscountDuration, DiscountValue};

    let env = env_at("2026-11-01T00:00:00Z", BillingConfig::default()).await;
    env.customer("b", "pro", json!({})).await;
    env.clock.set(ts("2026-11-05T00:00:00Z"));
    env.consume("b", "calls", dec!(1000)).await;
    env.engine.flush().await.unwrap();
    // 10 % for two periods (November, December), then 5.00 USD once.
    let ten = env
        .billing
        .add_discount(
            "b",
            DiscountRequest {
                value: DiscountValue::Percent { percent: dec!(10) },
                duration: DiscountDuration::Repeating { periods: 2 },
                ends_at: None,
                description: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(ten.description, "10 % off");
    env.billing
        .add_discount(
            "b",
            DiscountRequest {
                value: DiscountValue::Amount {
                    amount: dec!(5.00),
                    currency: Currency::USD,
                },
                duration: DiscountDuration::Once,
                ends_at: None,
                description: Some("Welcome".into()),
            },
        )
        .await
        .unwrap();
    // Another currency than the customer's names `currency`; nothing stored.
    let euros = env
        .billing
        .add_discount(
            "b",
            DiscountRequest {
                value: DiscountValue::Amount {
                    amount: dec!(5),
                    currency: Currency::EUR,
                },
                duration: DiscountDuration::Once,
                ends_at: None,
                description: None,
            },
        )
        .await;
    assert!(
        matches!(
            euros,
            Err(InvoiceError::Invalid {
                field: "currency",
                ..
            })
        ),
        "{euros:?}"
    );
    assert_eq!(env.billing.customer_discounts("b").await.unwrap().len(), 2);

    let total_of = |month: &'static str| {
        let env = &env;
        async move {
            let start = ts(month);
            env.billing
                .list_invoices(&InvoiceFilter {
                    customer_id: Some("b".into()),
                    period_from: Some(start),
                    ..InvoiceFilter::default()
                })
                .await
                .unwrap()
                .into_iter()
                .find(|i| i.period_start == start)
                .unwrap()
        }
    };
    // November: 49.00 + 1,000 calls × 0.001 = 50.00; 10 % = −5.00, then
    // "Welcome" −5.00: total 40.00.
    env.clock.set(ts("2026-12-01T00:00:00Z"));
    env.billing.run_once().await.unwrap();
    let nov = total_of("2026-11-01T00:00:00Z").await;
    let discounts: Vec<_> = nov
        .lines
        .iter()
        .filter(|l| l.kind == InvoiceLineKind::Discount)
        .map(|l| (l.description.clone(), l.amount))
        .collect();
    assert_eq!(
        discounts,
        [
            ("10 % off".to_string(), dec!(-5.00)),
            ("Welcome".to_string(), dec!(-5.00))
        ]
    );
    assert_eq!(nov.totals.subtotal, dec!(50.00));
    assert_eq!(nov.totals.discount, dec!(-10.00));
    assert_eq!(nov.totals.total, dec!(40.00));
    // December: 10 % of 49.00 = −4.90, total 44.10; January: no discount.
    env.clock.set(ts("2027-01-01T00:00:00Z"));
    env.billing.run_once().await.unwrap();
    assert_eq!(
        total_of("2026-12-01T00:00:00Z").await.totals.total,
        dec!(44.10)
    );
    env.clock.set(ts("2027-02-01T00:00:00Z"));
    env.billing.run_once().await.unwrap();
    assert_eq!(
        total_of("2027-01-01T00:00:00Z").await.totals.total,
        dec!(49.00)
    );
}
