//! A feature a restart's catalog removed and an apply adds back keeps its
//! period's usage (docs/catalog.md, "Applying a catalog to a running
//! server", "A feature added back keeps its usage"): the cases around the
//! apply itself (an apply abandoned while it waits, ...).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_core::catalog::load_catalog;
use tollgate_engine::{Engine, TestClock, UsageRequest};
use tollgate_store::*;

/// A store whose next `put_override`, once armed, waits for `release`
/// (an admin operation that holds the admin lock meanwhile); everything else
/// is the real backend. (When the `Store` trait gains a method, delegate it
/// here.)
#[derive(Debug)]
struct Gated {
    inner: Arc<dyn Store>,
    armed: AtomicBool,
    entered: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
}

#[async_trait]
impl Store for Gated {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn migrate(&self) -> Result<()> {
        self.inner.migrate().await
    }
    fn billing(&self) -> &dyn tollgate_store::billing::BillingStore {
        self.inner.billing()
    }
    async fn put_plan_version(&self, plan: &PlanVersionRecord) -> Result<()> {
        self.inner.put_plan_version(plan).await
    }
    async fn plan_versions(&self) -> Result<Vec<PlanVersionRecord>> {
        self.inner.plan_versions().await
    }
    async fn publish_catalog(
        &self,
        document: &tollgate_store::CatalogDocumentRecord,
        versions: &[PlanVersionRecord],
    ) -> Result<()> {
        self.inner.publish_catalog(document, versions).await
    }
    async fn latest_catalog_document(
        &self,
        source: Option<tollgate_store::CatalogSource>,
    ) -> Result<Option<tollgate_store::CatalogDocumentRecord>> {
        self.inner.latest_catalog_document(source).await
    }
    async fn insert_customer(&self, c: &CustomerRecord) -> Result<()> {
        self.inner.insert_customer(c).await
    }
    async fn update_customer(&self, c: &CustomerRecord) -> Result<()> {
        self.inner.update_customer(c).await
    }
    async fn get_customer(&self, id: &str) -> Result<Option<CustomerRecord>> {
        self.inner.get_customer(id).await
    }
    async fn list_customers(&self, f: &CustomerFilter) -> Result<Vec<CustomerRecord>> {
        self.inner.list_customers(f).await
    }
    async fn all_customers(&self) -> Result<Vec<CustomerRecord>> {
        self.inner.all_customers().await
    }
    async fn put_subscription(&self, s: &SubscriptionRecord) -> Result<()> {
        self.inner.put_subscription(s).await
    }
    async fn get_subscription(&self, c: &str) -> Result<Option<SubscriptionRecord>> {
        self.inner.get_subscription(c).await
    }
    async fn all_subscriptions(&self) -> Result<Vec<SubscriptionRecord>> {
        self.inner.all_subscriptions().await
    }
    async fn put_override(&self, o: &OverrideRecord) -> Result<()> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            if let Ok(p) = self.release.acquire().await {
                p.forget();
            }
        }
        self.inner.put_override(o).await
    }
    async fn delete_override(&self, c: &str, f: &str) -> Result<bool> {
        self.inner.delete_override(c, f).await
    }
    async fn all_overrides(&self) -> Result<Vec<OverrideRecord>> {
        self.inner.all_overrides().await
    }
    async fn insert_grant(&self, g: &GrantRecord, events: &[notify::OutboxEvent]) -> Result<()> {
        self.inner.insert_grant(g, events).await
    }
    async fn void_grant(&self, id: &str, at: Timestamp) -> Result<()> {
        self.inner.void_grant(id, at).await
    }
    async fn all_grants(&self) -> Result<Vec<GrantRecord>> {
        self.inner.all_grants().await
    }
    async fn append_batch(&self, ops: &[WriteOp]) -> Result<Vec<i64>> {
        self.inner.append_batch(ops).await
    }
    async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRecord>> {
        self.inner.usage(q).await
    }
    async fn usage_recorded_since(&self, since: Timestamp) -> Result<Vec<UsageRecord>> {
        self.inner.usage_recorded_since(since).await
    }
    async fn usage_after(&self, seq: i64, limit: u32) -> Result<Vec<UsageRecord>> {
        self.inner.usage_after(seq, limit).await
    }
    async fn max_seq(&self) -> Result<i64> {
        self.inner.max_seq().await
    }
    async fn sum_usage(
        &self,
        c: &str,
        f: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<BTreeMap<String, Decimal>> {
        self.inner.sum_usage(c, f, from, to).await
    }
    async fn open_reservations(&self) -> Result<Vec<ReservationRecord>> {
        self.inner.open_reservations().await
    }
    async fn get_reservation(&self, id: &str) -> Result<Option<ReservationRecord>> {
        self.inner.get_reservation(id).await
    }
    async fn save_snapshot(&self, seq: i64, c: &[CounterSnapshot]) -> Result<()> {
        self.inner.save_snapshot(seq, c).await
    }
    async fn load_snapshot(&self) -> Result<Option<(i64, Vec<CounterSnapshot>)>> {
        self.inner.load_snapshot().await
    }
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()> {
        self.inner.insert_api_key(key).await
    }
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        self.inner.api_keys().await
    }
    async fn revoke_api_key(&self, id: &str, at: Timestamp) -> Result<()> {
        self.inner.revoke_api_key(id, at).await
    }
    fn notify(&self) -> &dyn notify::NotifyStore {
        self.inner.notify()
    }
    fn changes(&self) -> &dyn changes::ChangeStore {
        self.inner.changes()
    }
}

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
        let gated = Arc::new(Gated {
            inner: store.clone(),
            armed: AtomicBool::new(false),
            entered: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        });
        let engine = open(gated.clone(), &without_calls(), &clock).await;

        // An override of another feature, stuck in the store with the admin
        // lock held.
        gated.armed.store(true, Ordering::SeqCst);
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
