//! A feature a restart's catalog removed and an apply adds back keeps its
//! period's usage (docs/catalog.md, "Applying a catalog to a running
//! server", "A feature added back keeps its usage"): the cases around the
//! apply itself (an apply abandoned while it waits, ...).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::faulty::Faulty;
use rust_decimal_macros::dec;
use tollgate_core::catalog::load_catalog;
use tollgate_engine::{Engine, TestClock, UsageRequest};
use tollgate_store::*;

/// The test catalog without `api_calls` (the feature and every plan's
/// entitlement to it).
fn without_calls() -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in common::CATALOG.lines() {
        if line.starts_with('[') {
            skip = line == "[features.api_calls]";
        }
        if skip || line.starts_with("api_calls =") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn document(text: &str) -> CatalogDocumentRecord {
    CatalogDocumentRecord {
        id: 0,
        source: CatalogSource::Api,
        name: "api".into(),
        fingerprint: format!("{:x}", text.len()),
        document: text.into(),
        applied_at: common::t0(),
    }
}

async fn open(store: Arc<dyn Store>, text: &str, clock: &TestClock) -> Engine {
    Engine::open(
        store,
        load_catalog("test.toml", text).unwrap(),
        Arc::new(clock.clone()),
        common::config(),
    )
    .await
    .unwrap()
}

/// An apply that adds `api_calls` back and is abandoned while it waits for
/// an admin operation (an HTTP client that hangs up drops the request) must
/// not lose what the start kept aside: the next apply restores it. Free has
/// 100 API calls a month (hard); 90 were used before the restart without the
/// feature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_apply_does_not_lose_the_usage_of_a_feature_added_back() {
    for b in common::backends("readd_abandoned") {
        let name = b.name;
        let clock = TestClock::new(common::t0());
        let store = b.store().await;
        let engine = open(store.clone(), common::CATALOG, &clock).await;
        common::customer(&engine, "c", "free").await;
        let d = engine
            .consume(UsageRequest::new("c", "api_calls", dec!(90)))
            .await
            .unwrap();
        assert!(d.allowed, "{name}");
        engine.close().await.unwrap();

        // A restart with a catalog without `api_calls`.
        let gated = Arc::new(Faulty::new(store.clone()));
        let engine = open(gated.clone(), &without_calls(), &clock).await;

        // An override of another feature, stuck in the store with the admin
        // lock held.
        gated.hold_override.store(true, Ordering::SeqCst);
        let e2 = engine.clone();
        let stuck = tokio::spawn(async move {
            let ent = serde_json::from_value(serde_json::json!({
                "kind": "metered", "limit": "20", "enforcement": "hard", "overage": false,
                "reset": null, "emergency_allowance": null, "emergency_unit_price": null,
                "alert_thresholds": null
            }))
            .unwrap();
            e2.set_override("c", "minutes", &ent).await
        });
        gated.entered.notified().await;

        // The apply waits for it, and its caller gives up.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(300),
            engine.apply_catalog(
                load_catalog("api", common::CATALOG).unwrap(),
                document(common::CATALOG),
                false,
            ),
        )
        .await;
        assert!(gave_up.is_err(), "{name}: the apply waited");
        gated.release.add_permits(1);
        stuck.await.unwrap().unwrap();

        // Applied again: the 90 calls are back.
        let (_, done) = engine
            .apply_catalog(
                load_catalog("api", common::CATALOG).unwrap(),
                document(common::CATALOG),
                false,
            )
            .await
            .unwrap();
        assert!(done, "{name}");
        let d = engine
            .consume(UsageRequest::new("c", "api_calls", dec!(20)))
            .await
            .unwrap();
        assert_eq!(
            (d.allowed, d.used),
            (false, dec!(90)),
            "{name}: 90 + 20 > 100"
        );
        let d = engine
            .consume(UsageRequest::new("c", "api_calls", dec!(10)))
            .await
            .unwrap();
        assert_eq!((d.allowed, d.used), (true, dec!(100)), "{name}");
        engine.close().await.unwrap();
        b.cleanup().await;
    }
}
