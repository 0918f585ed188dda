//! A store for tests that inject faults: the real backend, with two faults a
//! test can switch on. (When the `Store` trait gains a method, delegate it
//! here.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use jiff::Timestamp;
use rust_decimal::Decimal;
use tollgate_store::*;

/// The real backend `inner`, with two faults.
#[derive(Debug)]
pub struct Faulty {
    pub inner: Arc<dyn Store>,
    /// While set, `append_batch` fails (a failed group commit).
    pub fail_batches: AtomicBool,
    /// Once set, the next `put_override` notifies `entered` and waits for a
    /// permit of `release` (an admin operation holding the engine's admin
    /// lock meanwhile).
    pub hold_override: AtomicBool,
    pub entered: tokio::sync::Notify,
    pub release: tokio::sync::Semaphore,
}

impl Faulty {
    /// `inner` with no fault switched on.
    pub fn new(inner: Arc<dyn Store>) -> Faulty {
        Faulty {
            inner,
            fail_batches: AtomicBool::new(false),
            hold_override: AtomicBool::new(false),
            entered: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        }
    }
}

#[async_trait]
impl Store for Faulty {
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
        if self.hold_override.swap(false, Ordering::SeqCst) {
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
        if self.fail_batches.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt("injected failure".into()));
        }
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
