//! Shared harness of the billing service tests: a catalog with five metered
//! features, a real SQLite store on a temp file (and PostgreSQL in a fresh
//! schema when `TOLLGATE_TEST_POSTGRES_URL` is set), an engine on a
//! `TestClock`, and helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use jiff::Timestamp;
use rust_decimal::Decimal;
use tollgate_billing::{Billing, BillingConfig};
use tollgate_core::catalog::{Catalog, load_catalog};
use tollgate_engine::{
    Engine, EngineConfig, NewCustomer, SubscribeOptions, TestClock, UsageRequest,
};
use tollgate_store::Store;
use tollgate_store::postgres::PgStore;
use tollgate_store::sqlite::SqliteStore;

/// Five metered features; `pro` ($49/month in arrears, calendar) prices each
/// per unit; `adv` ($20/month in advance) prices `calls` only; `inc`
/// ($30/month in advance) prices `calls` with 100 included; `vol` (no base)
/// prices `calls` by volume: to 1,000 at 0.01, to 10,000 at 0.005, then
/// 0.002.
pub const CATALOG: &str = r#"
[catalog]
name = "Billing test"
currency = "USD"

[features.calls]
kind = "metered"
name = "Calls"
reset = "billing_period"

[features.minutes]
kind = "metered"
name = "Minutes"
reset = "billing_period"

[features.storage_gb]
kind = "metered"
name = "Storage"
reset = "billing_period"

[features.egress_gb]
kind = "metered"
name = "Egress"
reset = "billing_period"

[features.tokens]
kind = "metered"
name = "Tokens"
reset = "billing_period"

[plans.pro]
name = "Pro"
tier = 1
base_price = "49.00"
anchoring = "calendar"
billing = "in_arrears"

[plans.pro.entitlements]
calls = "unlimited"
minutes = "unlimited"
storage_gb = "unlimited"
egress_gb = "unlimited"
tokens = "unlimited"

[[plans.pro.charges]]
metric = "calls"
name = "Calls"
price = { model = "per_unit", unit_price = "0.001" }

[[plans.pro.charges]]
metric = "minutes"
name = "Minutes"
price = { model = "per_unit", unit_price = "0.004" }

[[plans.pro.charges]]
metric = "storage_gb"
name = "Storage"
price = { model = "per_unit", unit_price = "0.10" }

[[plans.pro.charges]]
metric = "egress_gb"
name = "Egress"
price = { model = "per_unit", unit_price = "0.05" }

[[plans.pro.charges]]
metric = "tokens"
name = "Tokens"
price.group_by = ["model"]
price.prices = [ { when = { model = "big" }, model = "per_unit", unit_price = "0.00002" } ]
price.default = { model = "per_unit", unit_price = "0.00001" }

[plans.adv]
name = "Advance"
tier = 0
base_price = "20.00"
anchoring = "calendar"
billing = "in_advance"

[plans.adv.entitlements]
calls = "unlimited"

[[plans.adv.charges]]
metric = "calls"
name = "Calls"
price = { model = "per_unit", unit_price = "0.01" }

[plans.inc]
name = "Included"
tier = 2
base_price = "30.00"
anchoring = "calendar"
billing = "in_advance"

[plans.inc.entitlements]
calls = "unlimited"

[[plans.inc.charges]]
metric = "calls"
name = "Calls"
included = 100
price = { model = "per_unit", unit_price = "0.01" }

[plans.vol]
name = "Volume"
tier = 3
base_price = "0.00"
anchoring = "calendar"
billing = "in_arrears"

[plans.vol.entitlements]
calls = "unlimited"

[[plans.vol.charges]]
metric = "calls"
name = "Calls"
price = { model = "volume", tiers = [ { up_to = 1000, unit_price = "0.01" }, { up_to = 10000, unit_price = "0.005" }, { unit_price = "0.002" } ] }
"#;

pub fn catalog() -> Catalog {
    load_catalog("billing-test.toml", CATALOG).unwrap()
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub struct Env {
    pub billing: Arc<Billing>,
    pub engine: Arc<Engine>,
    pub store: Arc<dyn Store>,
    pub clock: TestClock,
    pub _dir: tempfile::TempDir,
    /// The PostgreSQL store of an [`envs_at`] environment (its schema is
    /// dropped by [`Env::cleanup`]).
    pub pg: Option<PgStore>,
}

pub async fn env_at(start: &str, config: BillingConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("t.db")).await.unwrap());
    env_on(store, dir, start, config).await
}

pub async fn env_on(
    store: Arc<dyn Store>,
    dir: tempfile::TempDir,
    start: &str,
    config: BillingConfig,
) -> Env {
    let clock = TestClock::new(ts(start));
    let engine = Arc::new(
        Engine::open(
            store.clone(),
            catalog(),
            Arc::new(clock.clone()),
            EngineConfig::default(),
        )
        .await
        .unwrap(),
    );
    let billing = Arc::new(Billing::new(engine.clone(), store.clone(), config));
    Env {
        billing,
        engine,
        store,
        clock,
        _dir: dir,
        pg: None,
    }
}

/// The same environment on every backend: SQLite, and PostgreSQL in a fresh
/// schema when `TOLLGATE_TEST_POSTGRES_URL` is set (set but unusable fails).
pub async fn envs_at(start: &str, config: BillingConfig) -> Vec<Env> {
    let mut envs = vec![env_at(start, config.clone()).await];
    let Ok(url) = std::env::var("TOLLGATE_TEST_POSTGRES_URL") else {
        eprintln!("TOLLGATE_TEST_POSTGRES_URL not set: SQLite only");
        return envs;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("bil_{}_{:x}", std::process::id(), nanos % 0xffff_ffff);
    let pg = PgStore::connect_with_schema(&url, &schema)
        .await
        .unwrap_or_else(|e| panic!("TOLLGATE_TEST_POSTGRES_URL is set but unusable: {e}"));
    pg.migrate().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut env = env_on(Arc::new(pg.clone()), dir, start, config).await;
    env.pg = Some(pg);
    envs.push(env);
    envs
}

impl Env {
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Drops the PostgreSQL schema, if any.
    pub async fn cleanup(&self) {
        if let Some(pg) = &self.pg {
            pg.drop_schema().await.unwrap();
        }
    }

    /// Closes the engine and opens it again on the same store and clock
    /// with catalog `toml`: a plan whose definition changed is published as
    /// its next version (subscribers keep theirs).
    pub async fn reopen_with(self, toml: &str) -> Env {
        self.engine.close().await.unwrap();
        let catalog = load_catalog("billing-test-v2.toml", toml).unwrap();
        let engine = Arc::new(
            Engine::open(
                self.store.clone(),
                catalog,
                Arc::new(self.clock.clone()),
                EngineConfig::default(),
            )
            .await
            .unwrap(),
        );
        let billing = Arc::new(Billing::new(
            engine.clone(),
            self.store.clone(),
            self.billing.config.clone(),
        ));
        Env {
            billing,
            engine,
            ..self
        }
    }

    /// Creates a customer (no subscription).
    pub async fn new_customer(&self, id: &str) {
        self.engine
            .create_customer(NewCustomer::new(id))
            .await
            .unwrap();
    }

    /// Creates a customer and subscribes it through the billing service (as
    /// the API does), from now.
    pub async fn subscribed(&self, id: &str, plan: &str) {
        self.new_customer(id).await;
        self.billing
            .subscribe(id, plan, SubscribeOptions::default(), "test", None)
            .await
            .unwrap();
    }

    pub async fn customer(&self, id: &str, plan: &str, metadata: serde_json::Value) {
        let mut c = NewCustomer::new(id);
        c.name = Some(format!("Customer {id}"));
        c.metadata = metadata;
        self.engine.create_customer(c).await.unwrap();
        self.engine
            .subscribe(id, plan, SubscribeOptions::default())
            .await
            .unwrap();
    }

    pub async fn consume(&self, id: &str, feature: &str, q: Decimal) {
        let d = self
            .engine
            .consume(UsageRequest::new(id, feature, q))
            .await
            .unwrap();
        assert!(d.allowed, "{d:?}");
    }

    pub async fn consume_with(
        &self,
        id: &str,
        feature: &str,
        q: Decimal,
        props: serde_json::Value,
    ) {
        let mut r = UsageRequest::new(id, feature, q);
        if let serde_json::Value::Object(m) = props {
            r.properties = m.into_iter().collect();
        }
        let d = self.engine.consume(r).await.unwrap();
        assert!(d.allowed, "{d:?}");
    }
}

/// The final invoice of `inc` (30.00 in advance, 100 calls included)
/// subscribed on 11-10 with 150 calls and canceled now on 11-20: usage of
/// [11-10, 11-20), 50 × 0.01 = 0.50, and the 11 unused days credited,
/// −11.00, with nothing of it left pending.
pub async fn assert_final_invoice_of_the_20th(
    env: &Env,
    customer: &str,
    fin: &tollgate_core::billing::Invoice,
) {
    use tollgate_core::billing::InvoiceLineKind;
    let lines: Vec<_> = fin.lines.iter().map(|l| (l.kind, l.amount)).collect();
    assert_eq!(
        lines,
        [
            (InvoiceLineKind::Usage, rust_decimal_macros::dec!(0.50)),
            (
                InvoiceLineKind::Proration,
                rust_decimal_macros::dec!(-11.00)
            ),
        ],
        "{}",
        env.backend()
    );
    assert_eq!(
        (fin.period_start, fin.period_end),
        (ts("2026-11-10T00:00:00Z"), ts("2026-11-20T00:00:00Z"))
    );
    assert!(
        env.store
            .changes()
            .pending_items(customer)
            .await
            .unwrap()
            .is_empty()
    );
}
