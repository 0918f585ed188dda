//! A failed group commit undoes the decisions it carried: the callers get an
//! error, the counters, grants, reservations and idempotency keys are as if the
//! requests never happened, and a retry with the same key is decided again.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::faulty::Faulty;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_engine::{Engine, EngineError, IngestEvent, TestClock, UsageRequest};
use tollgate_store::*;

/// An engine over a [`Faulty`] store of `b`, its clock at `t0`.
async fn flaky_engine(b: &common::Backend) -> (Arc<Faulty>, Engine) {
    let flaky = Arc::new(Faulty::new(b.store().await));
    let engine = Engine::open(
        flaky.clone(),
        common::catalog(),
        Arc::new(TestClock::new(common::t0())),
        common::config(),
    )
    .await
    .unwrap();
    (flaky, engine)
}

fn used(engine: &Engine, c: &str, f: &str) -> Option<Decimal> {
    engine
        .entitlements(c)
        .unwrap()
        .features
        .into_iter()
        .find(|s| s.feature == f)
        .unwrap()
        .used
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_failed_commit_undoes_the_decision() {
    for b in common::backends("compensation") {
        let (flaky, engine) = flaky_engine(&b).await;
        common::customer(&engine, "acme", "free").await; // api_calls hard 100
        engine
            .add_grant(tollgate_engine::NewGrant {
                customer: "acme".into(),
                feature: "api_calls".into(),
                kind: "top_up".into(),
                quantity: dec!(10),
                priority: 0,
                effective_at: None,
                expires_at: None,
                metadata: serde_json::Value::Null,
            })
            .await
            .unwrap();
        let ok = engine
            .consume(UsageRequest::new("acme", "api_calls", dec!(95)).key("a"))
            .await
            .unwrap();
        assert!(ok.allowed);

        flaky.fail_batches.store(true, Ordering::SeqCst);
        // 10 would take the plan's last 5 and 5 of the grant: undone.
        let e = engine
            .consume(UsageRequest::new("acme", "api_calls", dec!(10)).key("b"))
            .await
            .unwrap_err();
        assert!(matches!(e, EngineError::Store(_)), "{e}");
        assert_eq!(used(&engine, "acme", "api_calls"), Some(dec!(95)));
        assert_eq!(engine.grants("acme").unwrap()[0].1, dec!(10));
        // A reservation and a gauge change are undone too.
        assert!(
            engine
                .reserve(UsageRequest::new("acme", "api_calls", dec!(5)), None)
                .await
                .is_err()
        );
        assert!(engine.reservations("acme").unwrap().is_empty());
        assert!(
            engine
                .gauge_set(UsageRequest::new("acme", "seats", dec!(2)))
                .await
                .is_err()
        );
        assert_eq!(engine.gauge_level("acme", "seats").unwrap(), dec!(0));
        // An ingest batch fails as a whole and counts nothing.
        let ev = IngestEvent {
            customer: "acme".into(),
            feature: "api_calls".into(),
            quantity: dec!(3),
            timestamp: common::t0(),
            idempotency_key: Some("e".into()),
            properties: BTreeMap::new(),
            billable: true,
        };
        assert!(engine.ingest(vec![ev.clone()]).await.is_err());
        assert_eq!(used(&engine, "acme", "api_calls"), Some(dec!(95)));

        flaky.fail_batches.store(false, Ordering::SeqCst);
        // The failed keys were released: their retries are decided afresh.
        let retry = engine
            .consume(UsageRequest::new("acme", "api_calls", dec!(10)).key("b"))
            .await
            .unwrap();
        assert!(retry.allowed && !retry.replayed);
        assert_eq!(retry.used, dec!(105));
        assert_eq!(
            engine.ingest(vec![ev]).await.unwrap(),
            vec![tollgate_engine::IngestResult::Accepted {
                counted: true,
                over_limit: false
            }]
        );
        let replay = engine
            .consume(UsageRequest::new("acme", "api_calls", dec!(95)).key("a"))
            .await
            .unwrap();
        assert!(replay.replayed);
        assert!(engine.verify("acme", "api_calls").await.unwrap().consistent);
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

/// `(event type, threshold label)` of every outbox event, in order.
async fn alerts(store: &dyn Store) -> Vec<(String, String)> {
    store
        .notify()
        .events_after(0, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            let label = e.payload["threshold"]["label"]
                .as_str()
                .unwrap_or("")
                .to_string();
            (e.event_type, label)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_a_failed_commit_emits_no_alert() {
    for b in common::backends("compensation_alerts") {
        let (flaky, engine) = flaky_engine(&b).await;
        common::customer(&engine, "acme", "free").await; // api_calls hard 100
        engine
            .consume(UsageRequest::new("acme", "api_calls", dec!(79)))
            .await
            .unwrap();
        flaky.fail_batches.store(true, Ordering::SeqCst);
        // Crossing 80 % and 95 % in a batch that fails: no usage, no event.
        let e = engine
            .consume(UsageRequest::new("acme", "api_calls", dec!(17)).key("x"))
            .await
            .unwrap_err();
        assert!(matches!(e, EngineError::Store(_)), "{e}");
        // The first denial's announcement fails too; the denial is still answered.
        let d = engine
            .consume(UsageRequest::new("acme", "api_calls", dec!(50)))
            .await
            .unwrap();
        assert!(!d.allowed);
        assert!(alerts(&*flaky.inner).await.is_empty(), "{}", b.name);

        flaky.fail_batches.store(false, Ordering::SeqCst);
        let ok = engine
            .consume(UsageRequest::new("acme", "api_calls", dec!(17)).key("x"))
            .await
            .unwrap();
        assert_eq!(ok.used, dec!(96));
        let d = engine
            .consume(UsageRequest::new("acme", "api_calls", dec!(50)))
            .await
            .unwrap();
        assert!(!d.allowed);
        let expected: Vec<(String, String)> = [
            ("usage.threshold_reached", "80%"),
            ("usage.threshold_reached", "95%"),
            ("usage.denied", ""),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(alerts(&*flaky.inner).await, expected, "{}", b.name);
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}

/// On SQLite the store numbers each batch from the last seq it wrote, without
/// a query. A row appended by another writer of the file takes that seq: the
/// next batch collides with it and is written again, numbered from the
/// ledger, so no caller sees an error and nothing is lost or counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_another_writer_of_the_file_costs_no_caller_an_error() {
    use tollgate_store::sqlite::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let open = || async {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
        Engine::open(
            store.clone(),
            common::catalog(),
            Arc::new(TestClock::new(common::t0())),
            common::config(),
        )
        .await
        .map(|e| (store, e))
        .unwrap()
    };
    let (store, engine) = open().await;
    common::customer(&engine, "acme", "business").await; // api_calls 100,000
    engine
        .consume(UsageRequest::new("acme", "api_calls", dec!(1)).key("first"))
        .await
        .unwrap();

    // Another writer of the file takes the next seq.
    let other = SqliteStore::open(&path).await.unwrap();
    let at = common::t0();
    other
        .append_batch(&[WriteOp::AppendUsage(NewUsageRecord {
            customer_id: "someone-else".into(),
            feature: "api_calls".into(),
            quantity: dec!(7),
            timestamp: at,
            recorded_at: at,
            source: UsageSource::Event,
            properties: BTreeMap::new(),
            billable: true,
            idempotency_key: None,
            allocation: BTreeMap::new(),
            answer: serde_json::Value::Null,
        })])
        .await
        .unwrap();
    other.close().await;

    // 320 consumes from 64 tasks (any error would fail `race_64`).
    let answers = common::race_64(&engine, "acme").await;
    assert!(answers.iter().all(|d| d.allowed));
    assert_eq!(used(&engine, "acme", "api_calls"), Some(dec!(385)));
    engine.flush().await.unwrap();
    let rows = store
        .usage(&UsageQuery {
            customer_id: Some("acme".into()),
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    let keys: std::collections::BTreeSet<_> = rows
        .iter()
        .map(|r| r.record.idempotency_key.clone())
        .collect();
    assert_eq!((rows.len(), keys.len()), (321, 321));
    let total: Decimal = rows.iter().map(|r| r.record.quantity).sum();
    assert_eq!(total, dec!(385));
    engine.close().await.unwrap();

    // The restart counts the same from the ledger and its snapshot.
    let (_store, engine) = open().await;
    assert_eq!(used(&engine, "acme", "api_calls"), Some(dec!(385)));
    engine.close().await.unwrap();
}
