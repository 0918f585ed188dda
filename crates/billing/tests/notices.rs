//! The billing worker's time-driven alerts beyond overdue invoices and
//! trials: `invoice.upcoming_above` (the projected upcoming invoice above the
//! customer's amount) and `usage.daily_summary` (one per customer and UTC day,
//! only when someone receives it). Real consumes through the engine, real
//! stores (SQLite; PostgreSQL when `TOLLGATE_TEST_POSTGRES_URL` is set), the
//! tick on a test clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use jiff::Timestamp;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tollgate_billing::BillingConfig;
use tollgate_store::notify::{AlertSettingsRecord, EndpointRecord, OutboxEvent};

async fn events_of(env: &Env, customer: &str, event_type: &str) -> Vec<OutboxEvent> {
    let mut e: Vec<OutboxEvent> = env
        .store
        .notify()
        .customer_events(customer, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == event_type)
        .collect();
    e.sort_by_key(|e| e.seq);
    e
}

async fn set_threshold(env: &Env, customer: &str, amount: Decimal) {
    env.store
        .notify()
        .put_alert_settings(&AlertSettingsRecord {
            customer_id: customer.to_string(),
            upcoming_invoice_above: Some(amount),
            updated_at: env.engine.now(),
        })
        .await
        .unwrap();
}

/// The figure `GET /v1/customers/{id}/upcoming-invoice` answers as its total.
async fn upcoming_total(env: &Env, customer: &str) -> Decimal {
    env.billing
        .upcoming_invoice(customer)
        .await
        .unwrap()
        .totals
        .total
}

/// Consumes at the clock's time and waits for the ledger write.
async fn consume_at(env: &Env, at: &str, customer: &str, feature: &str, q: Decimal) {
    env.clock.set(ts(at));
    env.consume(customer, feature, q).await;
    env.engine.flush().await.unwrap();
}

/// pro: $49 a month plus $0.001 a call, calendar months; the upcoming
/// invoice projects the usage so far to the end of the period (×3 after 10
/// of November's 30 days).
#[tokio::test]
async fn upcoming_above_fires_once_per_period_and_amount() {
    for env in envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        env.customer("u", "pro", json!({})).await;
        env.customer("quiet", "pro", json!({})).await;
        set_threshold(&env, "u", dec!(60)).await;

        // 1,000 calls in 5 days → 6,000 projected → 49 + 6 = 55: below 60.
        consume_at(&env, "2026-11-05T12:00:00Z", "u", "calls", dec!(1000)).await;
        // A customer without a setting is never projected, whatever it uses.
        consume_at(&env, "2026-11-05T12:00:00Z", "quiet", "calls", dec!(100000)).await;
        env.clock.set(ts("2026-11-06T00:00:00Z"));
        assert_eq!(upcoming_total(&env, "u").await, dec!(55.00));
        assert_eq!(env.billing.run_once().await.unwrap().notices, 0);
        assert!(
            events_of(&env, "u", "invoice.upcoming_above")
                .await
                .is_empty()
        );

        // 3,000 more: 4,000 in 10 days → 12,000 → 49 + 12 = 61: above 60.
        consume_at(&env, "2026-11-08T00:00:00Z", "u", "calls", dec!(3000)).await;
        env.clock.set(ts("2026-11-11T00:00:00Z"));
        let total = upcoming_total(&env, "u").await;
        assert_eq!(total, dec!(61.00));
        assert_eq!(env.billing.run_once().await.unwrap().notices, 1);
        let fired = events_of(&env, "u", "invoice.upcoming_above").await;
        assert_eq!(fired.len(), 1);
        let e = &fired[0];
        assert_eq!(e.object_key, "customer:u");
        assert_eq!(
            e.dedup_key.as_deref(),
            Some("invoice.upcoming_above|u|2026-11-01T00:00:00Z|60")
        );
        assert_eq!(
            e.payload,
            json!({
                "customer": "u",
                "period": {"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"},
                "currency": "USD",
                "threshold": "60",
                "upcoming_total": total.normalize().to_string(),
            })
        );
        assert!(
            events_of(&env, "quiet", "invoice.upcoming_above")
                .await
                .is_empty()
        );

        // Ticking again (still above 60) writes nothing new.
        env.clock.set(ts("2026-11-11T00:01:00Z"));
        assert!(upcoming_total(&env, "u").await > dec!(60));
        assert_eq!(env.billing.run_once().await.unwrap().notices, 0);
        assert_eq!(env.billing.run_once().await.unwrap().notices, 0);
        assert_eq!(
            events_of(&env, "u", "invoice.upcoming_above").await.len(),
            1
        );

        // The amount raised above the projection: nothing new.
        set_threshold(&env, "u", dec!(100)).await;
        assert!(upcoming_total(&env, "u").await < dec!(100));
        assert_eq!(env.billing.run_once().await.unwrap().notices, 0);
        // The new amount is armed: crossing it fires again (its own key).
        consume_at(&env, "2026-11-11T00:01:00Z", "u", "calls", dec!(20000)).await;
        env.clock.set(ts("2026-11-12T00:00:00Z"));
        assert!(upcoming_total(&env, "u").await > dec!(100));
        assert_eq!(env.billing.run_once().await.unwrap().notices, 1);
        let fired = events_of(&env, "u", "invoice.upcoming_above").await;
        assert_eq!(fired.len(), 2);
        assert_eq!(fired[1].payload["threshold"], "100");

        // A new period: December starts at 49 (nothing used, nothing projected).
        env.clock.set(ts("2026-12-01T00:00:00Z"));
        env.billing.run_once().await.unwrap();
        assert_eq!(upcoming_total(&env, "u").await, dec!(49.00));
        assert_eq!(
            events_of(&env, "u", "invoice.upcoming_above").await.len(),
            2
        );
        // 20,000 calls in 10 of 31 days → 62,000 projected → 49 + 62 = 111.
        consume_at(&env, "2026-12-05T00:00:00Z", "u", "calls", dec!(20000)).await;
        env.clock.set(ts("2026-12-11T00:00:00Z"));
        assert_eq!(upcoming_total(&env, "u").await, dec!(111.00));
        assert_eq!(env.billing.run_once().await.unwrap().notices, 1);
        let fired = events_of(&env, "u", "invoice.upcoming_above").await;
        assert_eq!(fired.len(), 3);
        assert_eq!(
            fired[2].payload["period"],
            json!({"start": "2026-12-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"})
        );
        assert_eq!(fired[2].payload["upcoming_total"], "111");
        env.cleanup().await;
    }
}

fn endpoint(id: &str, types: &[&str], at: Timestamp) -> EndpointRecord {
    EndpointRecord {
        id: id.to_string(),
        url: "https://hooks.example.com/tollgate".to_string(),
        event_types: types.iter().map(|t| t.to_string()).collect(),
        enabled: true,
        secrets: vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()],
        state: "healthy".to_string(),
        failing_since: None,
        description: None,
        created_at: at,
        updated_at: at,
    }
}

fn feature<'a>(summary: &'a OutboxEvent, key: &str) -> &'a Value {
    summary.payload["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == key)
        .unwrap_or_else(|| panic!("no {key} in {}", summary.payload))
}

#[tokio::test]
async fn daily_summaries_once_per_customer_and_day_for_subscribers_only() {
    for env in envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        for c in ["a", "b", "idle"] {
            env.customer(c, "pro", json!({})).await;
        }
        // a's calls are capped at 5,000 (b keeps the plan's unlimited).
        env.engine
            .set_override(
                "a",
                "calls",
                &serde_json::from_value(json!({
                    "kind": "metered", "limit": "5000", "enforcement": "hard", "overage": false,
                    "reset": null, "emergency_allowance": null, "emergency_unit_price": null,
                    "alert_thresholds": null
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        consume_at(&env, "2026-11-01T10:00:00Z", "a", "calls", dec!(1000)).await;
        consume_at(&env, "2026-11-01T10:00:00Z", "a", "calls", dec!(200)).await;
        consume_at(&env, "2026-11-01T23:59:59Z", "b", "minutes", dec!(30.5)).await;

        // Nobody receives summaries: none written, and the days ended so far
        // (Oct 31) are done.
        assert_eq!(env.billing.run_once().await.unwrap().notices, 0);
        let notify = env.store.notify();
        assert_eq!(
            notify.notice_mark("usage.daily_summary").await.unwrap(),
            Some("2026-10-31".to_string())
        );

        // An "all events" endpoint does not ask for them; one naming the type does.
        notify
            .put_endpoint(&endpoint("whe_all", &[], env.engine.now()))
            .await
            .unwrap();
        assert_eq!(env.billing.run_once().await.unwrap().notices, 0);
        notify
            .put_endpoint(&endpoint(
                "whe_daily",
                &["usage.daily_summary"],
                env.engine.now(),
            ))
            .await
            .unwrap();
        // Nov 1 ends. Usage of Nov 2 counts in the period, not in Nov 1's day.
        consume_at(&env, "2026-11-02T00:00:01Z", "a", "calls", dec!(100)).await;
        assert_eq!(env.billing.run_once().await.unwrap().notices, 2);
        assert_eq!(
            notify.notice_mark("usage.daily_summary").await.unwrap(),
            Some("2026-11-01".to_string())
        );
        let a = events_of(&env, "a", "usage.daily_summary").await;
        let b = events_of(&env, "b", "usage.daily_summary").await;
        assert_eq!((a.len(), b.len()), (1, 1));
        assert!(
            events_of(&env, "idle", "usage.daily_summary")
                .await
                .is_empty()
        );
        let a = &a[0];
        assert_eq!(
            a.dedup_key.as_deref(),
            Some("usage.daily_summary|a|2026-11-01")
        );
        assert_eq!(a.object_key, "customer:a");
        assert_eq!(a.payload["day"], "2026-11-01");
        assert_eq!(
            a.payload["period"],
            json!({"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"})
        );
        // The period's 1,300 of 5,000 (26 %); 1,200 on the day.
        let calls = feature(a, "calls");
        assert_eq!(calls["used"], "1300");
        assert_eq!(calls["limit"], "5000");
        assert_eq!(calls["percent"], "26");
        assert_eq!(calls["used_on_day"], "1200");
        assert_eq!(feature(a, "minutes")["used_on_day"], "0");
        let minutes = feature(&b[0], "minutes");
        assert_eq!(minutes["used"], "30.5");
        assert_eq!(minutes["limit"], Value::Null);
        assert_eq!(minutes["percent"], Value::Null);
        assert_eq!(minutes["used_on_day"], "30.5");

        // Ticking again the same day: nothing new (the day is marked done).
        env.clock.set(ts("2026-11-02T12:00:00Z"));
        assert_eq!(env.billing.run_once().await.unwrap().notices, 0);
        // A restart that lost the mark recomputes the day; the keys drop it all.
        notify
            .set_notice_mark("usage.daily_summary", "2026-10-31")
            .await
            .unwrap();
        assert_eq!(env.billing.run_once().await.unwrap().notices, 0);

        // Nov 2 ends: only a used something (100 calls).
        env.clock.set(ts("2026-11-03T00:00:01Z"));
        assert_eq!(env.billing.run_once().await.unwrap().notices, 1);
        let a = events_of(&env, "a", "usage.daily_summary").await;
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].payload["day"], "2026-11-02");
        assert_eq!(feature(&a[1], "calls")["used_on_day"], "100");
        assert_eq!(feature(&a[1], "calls")["used"], "1300");
        assert_eq!(events_of(&env, "b", "usage.daily_summary").await.len(), 1);
        env.cleanup().await;
    }
}

/// The `usage.daily_summary` events of a customer, as (day, calls used on the
/// day, backfilled) in the order written.
async fn summary_days(env: &Env, customer: &str) -> Vec<(String, String, bool)> {
    events_of(env, customer, "usage.daily_summary")
        .await
        .iter()
        .map(|e| {
            (
                e.payload["day"].as_str().unwrap().to_string(),
                feature(e, "calls")["used_on_day"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                e.payload["backfilled"] == true,
            )
        })
        .collect()
}

fn days(rows: &[(&str, &str, bool)]) -> Vec<(String, String, bool)> {
    rows.iter()
        .map(|(d, u, b)| (d.to_string(), u.to_string(), *b))
        .collect()
}

#[tokio::test]
async fn daily_summaries_backfill_missed_days_oldest_first_up_to_seven() {
    for env in envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        for c in ["a", "b"] {
            env.customer(c, "pro", json!({})).await;
        }
        env.store
            .notify()
            .put_endpoint(&endpoint(
                "whe_daily",
                &["usage.daily_summary"],
                env.engine.now(),
            ))
            .await
            .unwrap();
        // First start (no mark): only the latest ended day (Nov 2), not Nov 1.
        consume_at(&env, "2026-11-01T10:00:00Z", "a", "calls", dec!(1)).await;
        consume_at(&env, "2026-11-02T10:00:00Z", "a", "calls", dec!(2)).await;
        env.clock.set(ts("2026-11-03T00:00:01Z"));
        assert_eq!(env.billing.run_once().await.unwrap().notices, 1);
        assert_eq!(
            summary_days(&env, "a").await,
            days(&[("2026-11-02", "2", false)])
        );

        // Down over Nov 3, 4 and 5: each day's own usage.
        consume_at(&env, "2026-11-03T10:00:00Z", "a", "calls", dec!(100)).await;
        consume_at(&env, "2026-11-04T10:00:00Z", "a", "calls", dec!(200)).await;
        consume_at(&env, "2026-11-04T11:00:00Z", "b", "calls", dec!(7)).await;
        consume_at(&env, "2026-11-05T23:59:59Z", "a", "calls", dec!(300)).await;
        env.clock.set(ts("2026-11-06T08:00:00Z"));
        assert_eq!(env.billing.run_once().await.unwrap().notices, 4);
        assert_eq!(
            summary_days(&env, "a").await,
            days(&[
                ("2026-11-02", "2", false),
                ("2026-11-03", "100", true),
                ("2026-11-04", "200", true),
                ("2026-11-05", "300", false),
            ])
        );
        assert_eq!(
            summary_days(&env, "b").await,
            days(&[("2026-11-04", "7", true)])
        );
        // The window figures are the tick's, for every day written by it.
        let a = events_of(&env, "a", "usage.daily_summary").await;
        for e in &a[1..] {
            assert_eq!(e.payload["as_of"], "2026-11-06T08:00:00Z");
            assert_eq!(feature(e, "calls")["used"], "603");
        }
        let notify = env.store.notify();
        assert_eq!(
            notify.notice_mark("usage.daily_summary").await.unwrap(),
            Some("2026-11-05".to_string())
        );
        // A crash after Nov 3 was marked: the redo writes nothing twice.
        notify
            .set_notice_mark("usage.daily_summary", "2026-11-03")
            .await
            .unwrap();
        assert_eq!(env.billing.run_once().await.unwrap().notices, 0);
        assert_eq!(summary_days(&env, "a").await.len(), 4);

        // Down from Nov 6 to Nov 20: Nov 12 to 19 are written (7 days before
        // the latest ended day, Nov 19); Nov 7 is skipped.
        consume_at(&env, "2026-11-07T10:00:00Z", "a", "calls", dec!(1000)).await;
        consume_at(&env, "2026-11-12T00:00:00Z", "a", "calls", dec!(12)).await;
        consume_at(&env, "2026-11-19T10:00:00Z", "a", "calls", dec!(19)).await;
        env.clock.set(ts("2026-11-20T00:00:01Z"));
        assert_eq!(env.billing.run_once().await.unwrap().notices, 2);
        assert_eq!(
            summary_days(&env, "a").await[4..],
            days(&[("2026-11-12", "12", true), ("2026-11-19", "19", false)])
        );
        env.cleanup().await;
    }
}

#[tokio::test]
async fn daily_summaries_of_days_nobody_received_are_not_backfilled() {
    for env in envs_at("2026-11-01T00:00:00Z", BillingConfig::default()).await {
        env.customer("a", "pro", json!({})).await;
        let notify = env.store.notify();
        let daily = endpoint("whe_daily", &["usage.daily_summary"], env.engine.now());
        notify.put_endpoint(&daily).await.unwrap();
        consume_at(&env, "2026-11-01T10:00:00Z", "a", "calls", dec!(1)).await;
        env.clock.set(ts("2026-11-02T00:00:01Z"));
        assert_eq!(env.billing.run_once().await.unwrap().notices, 1);

        // The endpoint is switched off from Nov 2 to Nov 6: the days that end
        // meanwhile are not summarised, and not written later either.
        notify
            .put_endpoint(&EndpointRecord {
                enabled: false,
                ..daily.clone()
            })
            .await
            .unwrap();
        for (day, calls) in [("02", 2), ("03", 3), ("04", 4), ("05", 5)] {
            consume_at(
                &env,
                &format!("2026-11-{day}T10:00:00Z"),
                "a",
                "calls",
                Decimal::from(calls),
            )
            .await;
            env.clock.set(ts(&format!("2026-11-{day}T23:00:00Z")));
            env.billing.run_once().await.unwrap();
        }
        consume_at(&env, "2026-11-06T10:00:00Z", "a", "calls", dec!(6)).await;
        env.clock.set(ts("2026-11-06T12:00:00Z"));
        assert_eq!(env.billing.run_once().await.unwrap().notices, 0);
        notify.put_endpoint(&daily).await.unwrap();

        // Back on: Nov 6 ends, and only Nov 6 is written (Nov 2 to 5 ended
        // while nobody received summaries).
        env.clock.set(ts("2026-11-07T00:00:01Z"));
        assert_eq!(env.billing.run_once().await.unwrap().notices, 1);
        assert_eq!(
            summary_days(&env, "a").await,
            days(&[("2026-11-01", "1", false), ("2026-11-06", "6", false)])
        );

        // The worker down from Nov 7 to Nov 10, the endpoint on: the days
        // missed are written, as missed days (the tick cannot tell when nobody
        // was listening; only a tick that sees nobody moves the mark).
        consume_at(&env, "2026-11-08T10:00:00Z", "a", "calls", dec!(8)).await;
        consume_at(&env, "2026-11-09T10:00:00Z", "a", "calls", dec!(9)).await;
        env.clock.set(ts("2026-11-10T08:00:00Z"));
        assert_eq!(env.billing.run_once().await.unwrap().notices, 2);
        assert_eq!(
            summary_days(&env, "a").await[2..],
            days(&[("2026-11-08", "8", true), ("2026-11-09", "9", false)])
        );
        env.cleanup().await;
    }
}
