//! Quantities are bounded per request so that no counter can overflow: a request
//! above the bound is a typed error that changes nothing, and the largest allowed
//! quantities, repeated, are counted exactly.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use rust_decimal::Decimal;
use tollgate_engine::{
    EngineError, IngestEvent, IngestResult, MAX_QUANTITY, TestClock, UsageRequest,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semantics_quantities_above_the_bound_are_refused_and_change_nothing() {
    for b in backends("bounds") {
        let clock = TestClock::new(t0());
        let engine = open(&b, &clock).await;
        customer(&engine, "big", "business").await; // minutes: unlimited (daily)

        // The largest quantity, three times over, on an unlimited feature: exact.
        for i in 0..3 {
            let d = engine
                .consume(UsageRequest::new("big", "minutes", MAX_QUANTITY).key(format!("m{i}")))
                .await
                .unwrap();
            assert!(d.allowed);
        }
        let used = |e: &tollgate_engine::Engine| {
            e.entitlements("big")
                .unwrap()
                .features
                .into_iter()
                .find(|f| f.feature == "minutes")
                .and_then(|f| f.used)
                .unwrap()
        };
        assert_eq!(used(&engine), MAX_QUANTITY * Decimal::from(3), "{}", b.name);

        // One unit more than the bound: a typed error, nothing counted.
        let over = MAX_QUANTITY + Decimal::ONE;
        for result in [
            engine
                .consume(UsageRequest::new("big", "minutes", over))
                .await,
            engine
                .check(UsageRequest::new("big", "minutes", over))
                .await,
            engine
                .gauge_set(UsageRequest::new("big", "seats", over))
                .await,
            engine
                .gauge_increment(UsageRequest::new("big", "seats", over))
                .await,
        ] {
            assert!(
                matches!(result, Err(EngineError::InvalidQuantity { .. })),
                "{result:?}"
            );
        }
        let results = engine
            .ingest(vec![IngestEvent {
                customer: "big".into(),
                feature: "minutes".into(),
                quantity: over,
                timestamp: t0(),
                idempotency_key: None,
                properties: Default::default(),
                billable: true,
            }])
            .await
            .unwrap();
        assert!(
            matches!(&results[0], IngestResult::Rejected { reason } if reason == "invalid_quantity"),
            "{results:?}"
        );
        assert_eq!(used(&engine), MAX_QUANTITY * Decimal::from(3), "{}", b.name);
        assert!(engine.verify("big", "minutes").await.unwrap().consistent);
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}
