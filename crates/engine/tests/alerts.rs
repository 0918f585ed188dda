//! Alerts are detected in the decision that crosses a threshold and written to
//! the outbox in the same group commit: exactly one event per customer,
//! feature, period and threshold, none for a denied request, again in the next
//! period, never twice after a restart, and one even when 64 tasks cross at once.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use jiff::SignedDuration;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use tollgate_engine::{
    CommitRequest, DenyReason, Engine, IngestEvent, RecommendedAction, TestClock, UsageRequest,
};
use tollgate_store::Store;
use tollgate_store::notify::OutboxEvent;

fn req(c: &str, f: &str, q: Decimal) -> UsageRequest {
    UsageRequest::new(c, f, q)
}

/// An engine over `b` at `t0`, the store it writes, and customer `acme` on `plan`.
async fn start(b: &Backend, plan: &str) -> (TestClock, Engine, Arc<dyn Store>) {
    let clock = TestClock::new(t0());
    let engine = open(b, &clock).await;
    customer(&engine, "acme", plan).await;
    (clock, engine, b.store().await)
}

/// Consumes and says whether it was allowed.
async fn allowed(engine: &Engine, c: &str, f: &str, q: Decimal) -> bool {
    engine.consume(req(c, f, q)).await.unwrap().allowed
}

async fn events(store: &Arc<dyn Store>) -> Vec<OutboxEvent> {
    store.notify().events_after(0, 0).await.unwrap()
}

/// `(event type, threshold label or "")` of every event, in outbox order.
fn summary(events: &[OutboxEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            let label = e.payload["threshold"]["label"]
                .as_str()
                .unwrap_or("")
                .to_string();
            (e.event_type.clone(), label)
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_once_per_threshold_and_period() {
    for b in backends("alerts_thresholds") {
        let (clock, engine, store) = start(&b, "free").await; // api_calls: 100 per period, hard
        assert!(allowed(&engine, "acme", "api_calls", dec!(79)).await);
        assert!(
            events(&store).await.is_empty(),
            "{}: 79 % fires nothing",
            b.name
        );
        // 79 + 30 does not fit: denied, and a denial fires no threshold (only
        // the period's first denial at the hard limit is announced).
        let d = engine
            .consume(req("acme", "api_calls", dec!(30)))
            .await
            .unwrap();
        assert_eq!(d.reason, Some(DenyReason::LimitReached));
        assert_eq!(
            summary(&events(&store).await),
            pairs(&[("usage.denied", "")]),
            "{}",
            b.name
        );
        for q in [dec!(1), dec!(10), dec!(5), dec!(4), dec!(1)] {
            assert!(
                engine
                    .consume(req("acme", "api_calls", q))
                    .await
                    .unwrap()
                    .allowed
            );
        }
        // 80, 90, 95, 99, 100: one event at each threshold reached.
        let d = engine
            .consume(req("acme", "api_calls", dec!(1)))
            .await
            .unwrap();
        assert!(!d.allowed);
        let all = events(&store).await;
        assert_eq!(
            summary(&all),
            pairs(&[
                ("usage.denied", ""),
                ("usage.threshold_reached", "80%"),
                ("usage.threshold_reached", "95%"),
                ("usage.threshold_reached", "100%"),
            ]),
            "{}: the second denial of the period is not announced again",
            b.name
        );
        let p80 = &all[1];
        assert_eq!(p80.customer_id.as_deref(), Some("acme"));
        assert_eq!(
            p80.dedup_key.as_deref(),
            Some("acme|api_calls|2025-01-15T12:00:00Z|80%|100")
        );
        assert_eq!(p80.payload["used"], json!("80"));
        assert_eq!(p80.payload["limit"], json!("100"));
        assert_eq!(p80.payload["percent"], json!("80"));
        assert_eq!(p80.payload["enforcement"], json!("hard"));
        assert_eq!(
            p80.payload["period"],
            json!({"start": "2025-01-15T12:00:00Z", "end": "2025-02-15T12:00:00Z"})
        );
        assert_eq!(
            p80.payload["recommended_action"],
            json!({"type": "upgrade", "plan": "pro", "limit": "1000"})
        );
        let objs: Vec<i64> = all.iter().map(|e| e.object_seq).collect();
        assert_eq!(objs, [1, 2, 3, 4]);

        // The next period fires again, with its own window in the key.
        clock.set(ts("2025-02-15T12:00:00Z"));
        assert!(allowed(&engine, "acme", "api_calls", dec!(85)).await);
        let all = events(&store).await;
        assert_eq!(all.len(), 5);
        assert_eq!(
            all[4].dedup_key.as_deref(),
            Some("acme|api_calls|2025-02-15T12:00:00Z|80%|100")
        );
        assert_eq!(all[4].payload["used"], json!("85"));
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_alert_is_duplicated_after_a_restart() {
    for b in backends("alerts_restart") {
        let (clock, engine, store) = start(&b, "free").await;
        assert!(allowed(&engine, "acme", "api_calls", dec!(100)).await);
        assert!(!allowed(&engine, "acme", "api_calls", dec!(1)).await);
        // Seats (a gauge, 2 on free): up to the limit, down, up again.
        for level in [dec!(2), dec!(0), dec!(2)] {
            let d = engine.gauge_set(req("acme", "seats", level)).await.unwrap();
            assert!(d.allowed);
        }
        let before = summary(&events(&store).await);
        assert_eq!(
            before,
            pairs(&[
                ("usage.threshold_reached", "80%"),
                ("usage.threshold_reached", "95%"),
                ("usage.threshold_reached", "100%"),
                ("usage.denied", ""),
                ("usage.threshold_reached", "80%"),
                ("usage.threshold_reached", "95%"),
                ("usage.threshold_reached", "100%"),
            ]),
            "{}: a gauge going down and up fires once per period",
            b.name
        );
        // A crash (no close), then the same situations again.
        drop(engine);
        let engine = open(&b, &clock).await;
        clock.advance(SignedDuration::from_hours(1));
        assert!(!allowed(&engine, "acme", "api_calls", dec!(1)).await);
        engine
            .gauge_set(req("acme", "seats", dec!(0)))
            .await
            .unwrap();
        engine
            .gauge_set(req("acme", "seats", dec!(2)))
            .await
            .unwrap();
        assert_eq!(summary(&events(&store).await), before, "{}", b.name);
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_change_fires_again_against_the_new_limit() {
    for b in backends("alerts_plan_change") {
        let (clock, engine, store) = start(&b, "free").await;
        assert!(allowed(&engine, "acme", "api_calls", dec!(100)).await);
        assert!(!allowed(&engine, "acme", "api_calls", dec!(1)).await);
        assert_eq!(events(&store).await.len(), 4);
        // Upgraded mid-period: the window (and its 100 used) stays, the limit
        // is now 1000, so 80 % is reached again at 800.
        clock.advance(SignedDuration::from_hours(24));
        subscribe_to(&engine, "acme", "pro").await;
        assert!(allowed(&engine, "acme", "api_calls", dec!(699)).await);
        assert_eq!(events(&store).await.len(), 4, "{}: 799 of 1000", b.name);
        assert!(allowed(&engine, "acme", "api_calls", dec!(1)).await);
        let all = events(&store).await;
        assert_eq!(all.len(), 5, "{}", b.name);
        assert_eq!(all[4].payload["limit"], json!("1000"));
        assert_eq!(all[4].payload["used"], json!("800"));
        assert_eq!(
            all[4].dedup_key.as_deref(),
            Some("acme|api_calls|2025-01-15T12:00:00Z|80%|1000")
        );
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_crossing_at_once_fire_each_threshold_once() {
    for b in backends("alerts_concurrent") {
        let (_clock, engine, store) = start(&b, "free").await;
        let answers = race_64(&engine, "acme").await;
        assert_eq!(allowed_total(&answers), dec!(100));
        let mut got = summary(&events(&store).await);
        got.sort();
        assert_eq!(
            got,
            pairs(&[
                ("usage.denied", ""),
                ("usage.threshold_reached", "100%"),
                ("usage.threshold_reached", "80%"),
                ("usage.threshold_reached", "95%"),
            ]),
            "{}",
            b.name
        );
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_limits_report_the_first_overage_of_the_period() {
    for b in backends("alerts_soft") {
        let (clock, engine, store) = start(&b, "pro").await; // minutes: 100 per day, soft
        engine
            .consume(req("acme", "minutes", dec!(90)))
            .await
            .unwrap();
        let d = engine
            .consume(req("acme", "minutes", dec!(20.5)))
            .await
            .unwrap();
        assert_eq!(d.overage, dec!(10.5));
        engine
            .consume(req("acme", "minutes", dec!(5)))
            .await
            .unwrap();
        let all = events(&store).await;
        assert_eq!(
            summary(&all),
            pairs(&[
                ("usage.threshold_reached", "80%"),
                ("usage.threshold_reached", "95%"),
                ("usage.threshold_reached", "100%"),
                ("usage.limit_exceeded", ""),
            ]),
            "{}",
            b.name
        );
        let exceeded = &all[3];
        assert_eq!(exceeded.payload["used"], json!("110.5"));
        assert_eq!(exceeded.payload["overage"], json!("10.5"));
        assert_eq!(exceeded.payload["enforcement"], json!("soft"));
        assert_eq!(exceeded.payload["percent"], json!("110.5"));
        assert_eq!(
            exceeded.payload["period"]["start"],
            json!("2025-01-15T00:00:00Z")
        );
        // Ingested events cross thresholds too: the next day, 85 ingested.
        clock.set(ts("2025-01-16T08:00:00Z"));
        let r = engine
            .ingest(vec![IngestEvent {
                customer: "acme".into(),
                feature: "minutes".into(),
                quantity: dec!(85),
                timestamp: ts("2025-01-16T08:00:00Z"),
                idempotency_key: None,
                properties: Default::default(),
                billable: true,
            }])
            .await
            .unwrap();
        assert_eq!(r.len(), 1);
        let all = events(&store).await;
        assert_eq!(all.len(), 5);
        assert_eq!(all[4].payload["threshold"]["label"], json!("80%"));
        assert_eq!(
            all[4].payload["period"]["start"],
            json!("2025-01-16T00:00:00Z")
        );
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_pool_draw_and_grant_exhaustion_are_events() {
    for b in backends("alerts_emergency") {
        let (_clock, engine, store) = start(&b, "pro").await; // api_calls: 1000 hard, emergency 100
        // A reservation committed across all three thresholds at once.
        let r = engine
            .reserve(req("acme", "api_calls", dec!(1000)), None)
            .await
            .unwrap();
        let d = engine
            .commit(CommitRequest::new(
                r.reservation_id.clone().unwrap(),
                dec!(1000),
            ))
            .await
            .unwrap();
        assert!(d.allowed);
        let all = events(&store).await;
        assert_eq!(all.len(), 3, "{}", b.name);
        // At the hard limit with the pool available, the advice is to draw it.
        assert_eq!(
            all[2].payload["recommended_action"],
            json!({"type": "draw_emergency_pool", "units": "100"})
        );
        assert_eq!(
            engine.recommended_action("acme", "api_calls").unwrap(),
            Some(RecommendedAction::DrawEmergencyPool { units: dec!(100) })
        );
        let grant = engine.draw_emergency("acme", "api_calls").await.unwrap();
        // Drawn: the advice moves on to the next plan.
        assert_eq!(
            engine.recommended_action("acme", "api_calls").unwrap(),
            Some(RecommendedAction::Upgrade {
                plan: "business".into(),
                limit: Some(dec!(100000)),
            })
        );
        assert!(allowed(&engine, "acme", "api_calls", dec!(100)).await);
        assert!(!allowed(&engine, "acme", "api_calls", dec!(1)).await);
        let all = events(&store).await;
        let kinds: Vec<&str> = all.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(
            kinds[3..],
            ["emergency.drawn", "grant.exhausted", "usage.denied"],
            "{}",
            b.name
        );
        assert_eq!(all[3].payload["grant"], json!(grant.id));
        assert_eq!(all[3].payload["units"], json!("100"));
        assert_eq!(all[4].payload["grant"], json!(grant.id));
        assert_eq!(all[4].payload["grant_kind"], json!("emergency"));
        assert_eq!(all[5].payload["used"], json!("1100"));
        assert_eq!(all[5].payload["requested"], json!("1"));
        let ids: Vec<&Value> = all.iter().map(|e| &e.payload["customer"]).collect();
        assert!(ids.iter().all(|c| **c == json!("acme")));
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}
