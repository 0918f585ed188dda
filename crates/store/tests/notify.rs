//! The outbox and the delivery log, on every backend: events commit with the
//! ledger batch that caused them (or not at all), a dedup key fires once, `seq`
//! and per-object `object_seq` order events, and the fan-out cursor persists.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::json;
use tollgate_store::notify::{
    AlertSettingsRecord, AttemptRecord, DeliveryRecord, EndpointRecord, OutboxEvent,
};
use tollgate_store::{
    GrantRecord, NewUsageRecord, ReservationState, Store, StoreError, UsageQuery, UsageSource,
    WriteOp,
};

on_every_backend!(
    outbox_events_commit_with_their_batch,
    failed_batch_writes_neither_usage_nor_events,
    a_grant_and_its_events_are_written_together,
    dedup_key_fires_once_and_never_fails_a_batch,
    seq_and_object_seq_order_events,
    concurrent_writers_number_objects_without_gaps,
    fanout_cursor_persists,
    endpoints_deliveries_and_attempts_round_trip,
    alert_settings_and_notice_marks_round_trip,
);

fn t(us: i64) -> Timestamp {
    Timestamp::from_microsecond(1_735_689_600_000_000 + us).unwrap()
}

fn usage(customer: &str, qty: Decimal, at: Timestamp) -> NewUsageRecord {
    NewUsageRecord {
        customer_id: customer.to_string(),
        feature: "api_calls".to_string(),
        quantity: qty,
        timestamp: at,
        recorded_at: at,
        source: UsageSource::Consume,
        properties: BTreeMap::new(),
        billable: true,
        idempotency_key: None,
        allocation: BTreeMap::from([("plan".to_string(), qty)]),
        answer: json!({"allowed": true}),
    }
}

fn event(id: &str, customer: &str, dedup: Option<&str>, at: Timestamp) -> OutboxEvent {
    OutboxEvent {
        id: id.to_string(),
        event_type: "usage.threshold_reached".to_string(),
        customer_id: Some(customer.to_string()),
        object_key: format!("customer:{customer}"),
        object_seq: 0,
        dedup_key: dedup.map(str::to_string),
        payload: json!({"customer": customer, "feature": "api_calls", "threshold": "80%",
            "used": "80", "limit": "100"}),
        created_at: at,
        seq: 0,
    }
}

async fn all_usage(store: &Arc<dyn Store>) -> Vec<Decimal> {
    store
        .usage(&UsageQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record.quantity)
        .collect()
}

async fn outbox_events_commit_with_their_batch(store: Arc<dyn Store>) {
    let e = event("evt_1", "acme", Some("acme|api_calls|0|80%"), t(5));
    let seqs = store
        .append_batch(&[
            WriteOp::AppendUsage(usage("acme", dec!(80), t(5))),
            WriteOp::Outbox(e.clone()),
        ])
        .await
        .unwrap();
    assert_eq!(
        seqs.len(),
        1,
        "one ledger seq per usage row, none for events"
    );
    let events = store.notify().events_after(0, 0).await.unwrap();
    assert_eq!(events.len(), 1);
    let stored = &events[0];
    assert!(stored.seq > 0);
    assert_eq!(stored.object_seq, 1);
    assert_eq!(
        OutboxEvent {
            seq: stored.seq,
            object_seq: 1,
            ..e.clone()
        },
        *stored
    );
    assert_eq!(
        store.notify().get_event("evt_1").await.unwrap().as_ref(),
        Some(stored)
    );
    assert_eq!(
        store.notify().customer_events("acme", 10).await.unwrap(),
        events
    );
    assert!(
        store
            .notify()
            .customer_events("other", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(all_usage(&store).await, vec![dec!(80)]);
}

async fn failed_batch_writes_neither_usage_nor_events(store: Arc<dyn Store>) {
    let bad = store
        .append_batch(&[
            WriteOp::AppendUsage(usage("acme", dec!(95), t(1))),
            WriteOp::Outbox(event("evt_a", "acme", Some("k95"), t(1))),
            WriteOp::SetReservationState {
                id: "res_missing".to_string(),
                state: ReservationState::Committed,
            },
        ])
        .await;
    assert!(matches!(bad, Err(StoreError::NotFound { .. })), "{bad:?}");
    assert!(all_usage(&store).await.is_empty());
    assert!(store.notify().events_after(0, 0).await.unwrap().is_empty());
    assert_eq!(store.notify().get_event("evt_a").await.unwrap(), None);
    // The same event in a batch that commits is stored: the failed one left
    // neither its id nor its dedup key behind.
    store
        .append_batch(&[
            WriteOp::AppendUsage(usage("acme", dec!(95), t(2))),
            WriteOp::Outbox(event("evt_a", "acme", Some("k95"), t(2))),
        ])
        .await
        .unwrap();
    let events = store.notify().events_after(0, 0).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].object_seq, 1);
}

/// A grant and the events announcing it (an emergency draw's
/// `emergency.drawn`) are one transaction: a refused grant leaves no event,
/// and its event's dedup key stays free for the grant that is written.
async fn a_grant_and_its_events_are_written_together(store: Arc<dyn Store>) {
    common::insert_customer(&store, "acme", "EUR", t(0)).await;
    let grant = |id: &str, customer: &str| GrantRecord {
        id: id.to_string(),
        customer_id: customer.to_string(),
        feature: "api_calls".to_string(),
        kind: "emergency".to_string(),
        quantity: dec!(50),
        priority: 0,
        effective_at: t(1),
        expires_at: Some(t(1_000)),
        voided_at: None,
        metadata: json!({}),
        created_at: t(1),
    };
    let key = Some("acme|api_calls|window|emergency.drawn|100");
    // The customer does not exist: neither the grant nor its event.
    let refused = store
        .insert_grant(
            &grant("grt_1", "ghost"),
            &[event("evt_1", "ghost", key, t(1))],
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::NotFound { .. })),
        "{refused:?}"
    );
    assert_eq!(store.notify().get_event("evt_1").await.unwrap(), None);
    assert!(store.all_grants().await.unwrap().is_empty());
    // Written: both, the dedup key still free.
    store
        .insert_grant(
            &grant("grt_2", "acme"),
            &[event("evt_2", "acme", key, t(2))],
        )
        .await
        .unwrap();
    let events = store.notify().events_after(0, 0).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        vec!["evt_2"]
    );
    assert_eq!(store.all_grants().await.unwrap().len(), 1);
    // The same id again: refused, no second event.
    let again = store
        .insert_grant(
            &grant("grt_2", "acme"),
            &[event("evt_3", "acme", None, t(3))],
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );
    assert_eq!(store.notify().get_event("evt_3").await.unwrap(), None);
}

async fn dedup_key_fires_once_and_never_fails_a_batch(store: Arc<dyn Store>) {
    let key = "acme|api_calls|2025-01-01T00:00:00Z|80%";
    store
        .append_batch(&[
            WriteOp::AppendUsage(usage("acme", dec!(80), t(1))),
            WriteOp::Outbox(event("evt_1", "acme", Some(key), t(1))),
            // The same key twice in one batch: the second is dropped.
            WriteOp::Outbox(event("evt_2", "acme", Some(key), t(1))),
        ])
        .await
        .unwrap();
    // A later batch (e.g. after a restart) with the same key: its usage is
    // written, its event dropped, no error.
    store
        .append_batch(&[
            WriteOp::AppendUsage(usage("acme", dec!(5), t(2))),
            WriteOp::Outbox(event("evt_3", "acme", Some(key), t(2))),
        ])
        .await
        .unwrap();
    assert_eq!(all_usage(&store).await, vec![dec!(80), dec!(5)]);
    let events = store.notify().events_after(0, 0).await.unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["evt_1"]);
    // insert_events reports only what it inserted.
    let inserted = store
        .notify()
        .insert_events(&[
            event("evt_4", "acme", Some(key), t(3)),
            event("evt_5", "acme", None, t(3)),
            event("evt_6", "acme", None, t(3)),
            // A repeated id is dropped too.
            event("evt_5", "acme", None, t(3)),
        ])
        .await
        .unwrap();
    let ids: Vec<&str> = inserted.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["evt_5", "evt_6"]);
    assert_eq!(
        inserted.iter().map(|e| e.object_seq).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(store.notify().events_after(0, 0).await.unwrap().len(), 3);
}

async fn seq_and_object_seq_order_events(store: Arc<dyn Store>) {
    let mut batch = Vec::new();
    for i in 0..5 {
        let c = if i % 2 == 0 { "acme" } else { "globex" };
        batch.push(WriteOp::Outbox(event(&format!("evt_{i}"), c, None, t(i))));
    }
    store.append_batch(&batch).await.unwrap();
    store
        .notify()
        .insert_events(&[event("evt_5", "acme", None, t(10))])
        .await
        .unwrap();
    let events = store.notify().events_after(0, 0).await.unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["evt_0", "evt_1", "evt_2", "evt_3", "evt_4", "evt_5"]);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    let per_object: Vec<(&str, i64)> = events
        .iter()
        .map(|e| (e.object_key.as_str(), e.object_seq))
        .collect();
    assert_eq!(
        per_object,
        [
            ("customer:acme", 1),
            ("customer:globex", 1),
            ("customer:acme", 2),
            ("customer:globex", 2),
            ("customer:acme", 3),
            ("customer:acme", 4),
        ]
    );
    // Paging by seq, newest first per customer, and by creation time.
    let page = store.notify().events_after(events[1].seq, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["evt_2", "evt_3"]
    );
    let acme = store.notify().customer_events("acme", 2).await.unwrap();
    assert_eq!(
        acme.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["evt_5", "evt_4"]
    );
    let between = store.notify().events_between(t(1), t(4)).await.unwrap();
    assert_eq!(
        between.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["evt_1", "evt_2", "evt_3"]
    );
}

async fn concurrent_writers_number_objects_without_gaps(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let e = event(&format!("evt_{w}_{i}"), "acme", None, t(i));
                if (w + i) % 2 == 0 {
                    store.append_batch(&[WriteOp::Outbox(e)]).await.unwrap();
                } else {
                    store.notify().insert_events(&[e]).await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events = store.notify().events_after(0, 0).await.unwrap();
    assert_eq!(events.len(), 80);
    // Commit order is seq order, and the one object counts 1..=80 along it.
    let object_seqs: Vec<i64> = events.iter().map(|e| e.object_seq).collect();
    assert_eq!(object_seqs, (1..=80).collect::<Vec<i64>>());
}

async fn fanout_cursor_persists(store: Arc<dyn Store>) {
    assert_eq!(store.notify().fanout_cursor().await.unwrap(), 0);
    store.notify().set_fanout_cursor(17).await.unwrap();
    assert_eq!(store.notify().fanout_cursor().await.unwrap(), 17);
    store.notify().set_fanout_cursor(42).await.unwrap();
    assert_eq!(store.notify().fanout_cursor().await.unwrap(), 42);
}

fn endpoint(id: &str) -> EndpointRecord {
    EndpointRecord {
        id: id.to_string(),
        url: "https://hooks.example.com/tollgate".to_string(),
        event_types: vec!["usage.threshold_reached".to_string()],
        enabled: true,
        secrets: vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()],
        state: "healthy".to_string(),
        failing_since: None,
        description: Some("ops".to_string()),
        created_at: t(1),
        updated_at: t(1),
    }
}

fn delivery(id: &str, event_id: &str, target: &str, next: i64) -> DeliveryRecord {
    DeliveryRecord {
        id: id.to_string(),
        event_id: event_id.to_string(),
        target: target.to_string(),
        state: "pending".to_string(),
        attempts: 0,
        next_attempt_at: Some(t(next)),
        last_status: None,
        last_error: None,
        last_duration_ms: None,
        created_at: t(next),
        updated_at: t(next),
    }
}

async fn endpoints_deliveries_and_attempts_round_trip(store: Arc<dyn Store>) {
    let n = store.notify();
    let mut ep = endpoint("whe_1");
    n.put_endpoint(&ep).await.unwrap();
    n.put_endpoint(&endpoint("whe_0")).await.unwrap();
    assert_eq!(n.get_endpoint("whe_1").await.unwrap(), Some(ep.clone()));
    ep.state = "failing".to_string();
    ep.failing_since = Some(t(9));
    ep.secrets.push("whsec_second".to_string());
    ep.event_types.clear();
    n.put_endpoint(&ep).await.unwrap();
    let all = n.endpoints().await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["whe_0", "whe_1"]
    );
    assert_eq!(all[1], ep);
    assert!(n.delete_endpoint("whe_0").await.unwrap());
    assert!(!n.delete_endpoint("whe_0").await.unwrap());

    let target = "webhook:whe_1";
    n.insert_deliveries(&[
        delivery("dlv_1", "evt_1", target, 10),
        delivery("dlv_2", "evt_2", target, 20),
        delivery("dlv_3", "evt_1", "email:ops@example.com", 30),
    ])
    .await
    .unwrap();
    // One per (event, target): a second one for the same pair is ignored.
    n.insert_deliveries(&[delivery("dlv_9", "evt_1", target, 5)])
        .await
        .unwrap();
    assert_eq!(n.get_delivery("dlv_9").await.unwrap(), None);
    let due: Vec<String> = n
        .due_deliveries(t(20), 0)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(due, ["dlv_1", "dlv_2"]);

    let mut d = n.get_delivery("dlv_1").await.unwrap().unwrap();
    d.attempts = 1;
    d.last_status = Some(503);
    d.last_error = Some("503 Service Unavailable".to_string());
    d.last_duration_ms = Some(12);
    d.next_attempt_at = Some(t(60));
    d.updated_at = t(11);
    let a1 = AttemptRecord {
        delivery_id: "dlv_1".to_string(),
        attempt: 1,
        at: t(11),
        status: Some(503),
        error: Some("503 Service Unavailable".to_string()),
        duration_ms: 12,
    };
    n.record_attempt(&d, &a1).await.unwrap();
    d.attempts = 2;
    d.state = "succeeded".to_string();
    d.last_status = Some(200);
    d.last_error = None;
    d.next_attempt_at = None;
    let a2 = AttemptRecord {
        attempt: 2,
        at: t(61),
        status: Some(200),
        error: None,
        duration_ms: 3,
        ..a1.clone()
    };
    n.record_attempt(&d, &a2).await.unwrap();
    assert_eq!(n.get_delivery("dlv_1").await.unwrap(), Some(d.clone()));
    assert_eq!(n.attempts("dlv_1").await.unwrap(), vec![a1, a2.clone()]);
    let due: Vec<String> = n
        .due_deliveries(t(100), 0)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(due, ["dlv_2", "dlv_3"]);

    let of_target: Vec<String> = n
        .deliveries(Some(target), None, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(of_target, ["dlv_2", "dlv_1"]);
    let of_event: Vec<String> = n
        .deliveries(None, Some("evt_1"), 1)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(of_event, ["dlv_3"]);

    let mut ghost = d.clone();
    ghost.id = "dlv_ghost".to_string();
    let missing = n.record_attempt(&ghost, &a2).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })));
}

/// A customer's alert settings replace each other; only the customers with
/// an `upcoming_invoice_above` amount are listed for the billing worker; a
/// notice mark starts absent and keeps its last value.
async fn alert_settings_and_notice_marks_round_trip(store: Arc<dyn Store>) {
    for id in ["a", "b", "c"] {
        common::insert_customer(&store, id, "EUR", t(0)).await;
    }
    let notify = store.notify();
    assert_eq!(notify.get_alert_settings("a").await.unwrap(), None);
    assert!(
        notify
            .upcoming_invoice_thresholds()
            .await
            .unwrap()
            .is_empty()
    );
    let settings = |id: &str, amount: Option<Decimal>, at: i64| AlertSettingsRecord {
        customer_id: id.to_string(),
        upcoming_invoice_above: amount,
        updated_at: t(at),
    };
    notify
        .put_alert_settings(&settings("a", Some(dec!(500.50)), 1))
        .await
        .unwrap();
    notify
        .put_alert_settings(&settings("b", None, 1))
        .await
        .unwrap();
    notify
        .put_alert_settings(&settings("c", Some(dec!(10)), 1))
        .await
        .unwrap();
    assert_eq!(
        notify.get_alert_settings("a").await.unwrap(),
        Some(settings("a", Some(dec!(500.5)), 1))
    );
    let listed: Vec<String> = notify
        .upcoming_invoice_thresholds()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.customer_id)
        .collect();
    assert_eq!(listed, ["a", "c"]);
    // Replaced whole: c cleared, a raised.
    notify
        .put_alert_settings(&settings("c", None, 2))
        .await
        .unwrap();
    notify
        .put_alert_settings(&settings("a", Some(dec!(900)), 2))
        .await
        .unwrap();
    let listed = notify.upcoming_invoice_thresholds().await.unwrap();
    assert_eq!(listed, [settings("a", Some(dec!(900)), 2)]);
    assert_eq!(
        notify.get_alert_settings("c").await.unwrap(),
        Some(settings("c", None, 2))
    );

    assert_eq!(
        notify.notice_mark("usage.daily_summary").await.unwrap(),
        None
    );
    for day in ["2026-11-01", "2026-11-02"] {
        notify
            .set_notice_mark("usage.daily_summary", day)
            .await
            .unwrap();
    }
    assert_eq!(
        notify.notice_mark("usage.daily_summary").await.unwrap(),
        Some("2026-11-02".to_string())
    );
    assert_eq!(notify.notice_mark("other").await.unwrap(), None);
}
